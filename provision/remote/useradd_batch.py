"""Several ``useradd`` commands as one locked update of the account files.

Run on the host as ``python3 -c`` (this file), the root directory as its one argument
(``/``; a scratch tree in the tests) and the commands on stdin as a JSON list of argv
lists, each exactly what the users role would otherwise run.

Why: each ``useradd`` locks, rewrites and syncs passwd, shadow, group, gshadow, subuid,
subgid and their backups, and forks cache flushes: ~20 ms per account on a lab host, six
seconds for a class of 300. Here the files are locked once (``/etc/.pwd.lock`` as
lckpwdf(3) takes it, then each file's ``FILE.lock`` link as shadow's tools take it, so a
``useradd``, ``passwd`` or ``vipw`` run meanwhile waits, and this waits for them), read
once and written once the way shadow writes them (the old file kept as ``FILE-``, the new
one written to ``FILE+``, synced, renamed over it), with exactly the lines, subordinate id
ranges and home directories that the same ``useradd`` commands leave:
``tests/unit/test_useradd_batch.py`` runs both on copies of one tree and compares them.

A command is run as ``useradd`` itself where this could differ from it: an option the
users role does not give, a name, uid or gid (= uid) already taken, a home that exists or
whose parent is not root's alone; and all of them on a host with useradd hook directories,
SELinux, auditd, tcb, mail spools, NIS lines, subordinate ids from NSS, or a skeleton with
more than plain files, directories and symlinks.

Signals that would end it are held while it writes: a run cut short by Ctrl-C or a lost
connection leaves each file old or new, and every account it wrote with its home. It
prints one JSON line: ``{"written": [names], "useradd": [names], "why": reason}``.
"""

import json
import os
import signal
import stat
import subprocess
import sys
import time

ROOT = sys.argv[1] if len(sys.argv) > 1 else "/"
# the order useradd locks them in; shadow is renamed right after passwd
FILES = ("passwd", "group", "gshadow", "subuid", "subgid", "shadow")
COMMIT = ("passwd", "shadow", "group", "gshadow", "subuid", "subgid")
LOCK_TRIES, LOCK_SLEEP, PWD_LOCK_WAIT = 15, 1.0, 15.0  # shadow's and glibc's numbers
RECORDS = (("/var/log/lastlog", 292), ("/var/log/faillog", 32))  # struct sizes, 64-bit
HELD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE)
TAKES = {"--home-dir", "--shell", "--uid", "--comment", "--key"}
FLAGS = {"--create-home", "--user-group"}


class Slow(Exception):
    """This command (or, raised for the host, every command) is left to useradd."""


def at(path):
    return os.path.join(ROOT, path.lstrip("/"))


def strtol(text, default):
    """A login.defs number as shadow reads it (0x.. hex, 0.. octal, else decimal)."""
    text = (text or "").strip()
    if not text:
        return default
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    try:
        if text[:2].lower() == "0x":
            return sign * int(text[2:], 16)
        if len(text) > 1 and text.startswith("0"):
            return sign * int(text[1:], 8)
        return sign * int(text, 10)
    except ValueError:
        return default


def read_settings():
    defs, defaults = {}, {}
    for name, into, sep in (("/etc/login.defs", defs, None), ("/etc/default/useradd",
                                                               defaults, "=")):
        try:
            with open(at(name), encoding="utf-8", errors="replace") as fh:
                lines = fh.read().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if sep:
                key, _, value = line.partition(sep)
            else:
                key, _, value = line.replace("\t", " ").partition(" ")
            into[key.strip()] = value.strip().strip('"')
    return defs, defaults


def parse(argv):
    """The account a users-role ``useradd`` argv asks for; Slow for any other argv."""
    if argv[:1] != ["useradd"]:
        raise ValueError("not a useradd command: %r" % argv[:1])
    opts, names, i = {}, [], 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            names = argv[i + 1:]
            break
        if arg in FLAGS:
            opts[arg] = True
        elif arg in TAKES and i + 1 < len(argv):
            opts.setdefault(arg, []).append(argv[i + 1])
            i += 1
        else:
            raise Slow("option %s" % arg)
        i += 1
    if len(names) != 1 or not all(f in opts for f in (*FLAGS, "--home-dir", "--shell",
                                                       "--uid")):
        raise Slow("not the users role's useradd")
    keys = dict(k.partition("=")[::2] for k in opts.get("--key", []))
    if set(keys) - {"HOME_MODE"} or any(len(opts[o]) > 1 for o in TAKES if o in opts):
        raise Slow("options given twice or other --key settings")
    acct = {"name": names[0], "home": opts["--home-dir"][0], "shell": opts["--shell"][0],
            "comment": opts.get("--comment", [""])[0], "home_mode": keys.get("HOME_MODE")}
    if not opts["--uid"][0].isdigit():
        raise Slow("uid %r" % opts["--uid"][0])
    acct["uid"] = int(opts["--uid"][0])
    for field in ("name", "home", "shell", "comment"):
        if any(c in acct[field] for c in ":\n"):
            raise Slow("%s %r" % (field, acct[field]))
    if not acct["home"].startswith("/") or acct["home"].rstrip("/") in ("", "/"):
        raise Slow("home %r" % acct["home"])
    return acct


def host_reason(defs, defaults):
    """Why no command here may skip useradd, or None."""
    for hook in ("useradd-pre.d", "useradd-post.d"):
        if os.path.lexists(at("/etc/shadow-maint/" + hook)):
            return "useradd hooks in /etc/shadow-maint/" + hook
    if ROOT == "/" and os.path.exists("/sys/fs/selinux/enforce"):
        return "SELinux (useradd labels the home)"
    if ROOT == "/" and (os.path.exists("/run/auditd.pid")
                        or os.path.exists("/var/run/auditd.pid")):
        return "auditd runs (useradd writes its audit records)"
    if defs.get("USE_TCB", "no").lower() == "yes":
        return "USE_TCB in login.defs"
    if defaults.get("CREATE_MAIL_SPOOL", "no").lower() == "yes":
        return "CREATE_MAIL_SPOOL in /etc/default/useradd"
    if defaults.get("EXPIRE"):
        return "EXPIRE in /etc/default/useradd"
    if os.path.lexists(at("/usr/etc/skel")):
        return "a second skeleton in /usr/etc/skel"
    try:
        with open(at("/etc/nsswitch.conf"), encoding="utf-8", errors="replace") as fh:
            if any(line.split(":")[0].strip() == "subid" for line in fh):
                return "subordinate ids from NSS (nsswitch.conf subid:)"
    except FileNotFoundError:
        pass
    return skel_reason(at(defaults.get("SKEL") or "/etc/skel"))


def skel_reason(skel):
    try:
        st = os.lstat(skel)
    except FileNotFoundError:
        return "no skeleton directory %s" % skel
    if not stat.S_ISDIR(st.st_mode):
        return "the skeleton %s is not a directory" % skel
    for top, dirs, files in os.walk(skel):
        for entry in dirs + files:
            path = os.path.join(top, entry)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            if kind not in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
                return "the skeleton holds %s, not a file, directory or symlink" % path
            if kind == stat.S_IFREG and st.st_nlink > 1:
                return "the skeleton holds a hard link, %s" % path
            if kind != stat.S_IFLNK and os.listxattr(path, follow_symlinks=False):
                return "the skeleton holds extended attributes (ACLs), %s" % path
    return None


# ------------------------------------------------------------------------------ locks
class Locks:
    """lckpwdf(3)'s lock, then shadow's ``FILE.lock`` links (written with our pid, so a
    lock left by a process that died is recognised and taken over, as shadow does)."""

    def __init__(self):
        self.fd, self.held = None, []

    def take(self):
        import fcntl

        self.fd = os.open(at("/etc/.pwd.lock"), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC,
                          0o600)
        deadline = time.monotonic() + PWD_LOCK_WAIT
        while True:
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the account files are locked (/etc/.pwd.lock) by "
                                     "another program for more than %ds" % PWD_LOCK_WAIT
                                     ) from None
                time.sleep(0.05)
        for name in FILES:
            self._link(at("/etc/" + name))

    def _link(self, path):
        mine = "%s.%d" % (path, os.getpid())
        fd = os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, b"%d\0" % os.getpid())
            os.fdatasync(fd)
        finally:
            os.close(fd)
        holder = None
        try:
            for _ in range(LOCK_TRIES):
                try:
                    os.link(mine, path + ".lock")
                    self.held.append(path + ".lock")
                    return
                except FileExistsError:
                    holder = self._holder(path + ".lock")
                    if holder is not None and not self._alive(holder):
                        os.unlink(path + ".lock")  # left by a process that is gone
                        continue
                    time.sleep(LOCK_SLEEP)
        finally:
            os.unlink(mine)
        raise SystemExit("%s is locked by process %s" % (path, holder))

    @staticmethod
    def _holder(lock):
        try:
            with open(lock, "rb") as fh:
                return int(fh.read(32).split(b"\0")[0])
        except (OSError, ValueError):
            return None

    @staticmethod
    def _alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True

    def release(self):
        for lock in reversed(self.held):
            try:
                os.unlink(lock)
            except FileNotFoundError:
                pass
        self.held = []
        if self.fd is not None:
            os.close(self.fd)  # closing releases lckpwdf's lock
            self.fd = None


# -------------------------------------------------------------------- the account files
def read_files():
    texts = {}
    for name in FILES:
        path = at("/etc/" + name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise Slow("no " + path) from None
        if not stat.S_ISREG(st.st_mode):
            raise Slow("%s is not a regular file" % path)
        with open(path, "rb") as fh:
            texts[name] = fh.read().decode("utf-8", "surrogateescape")
    for name in ("passwd", "group", "shadow", "gshadow"):
        if any(line[:1] in ("+", "-") for line in texts[name].splitlines()):
            raise Slow("NIS lines in /etc/" + name)
    return texts


def fields(text, index):
    return {line.split(":")[index] for line in text.splitlines() if line.count(":") > index}


def ranges(text, path):
    """Subordinate id ranges as shadow parses them (owner:start:count)."""
    out = []
    for line in text.splitlines():
        parts = line.split(":")
        if (len(parts) != 3 or not parts[0] or not all(
                p.isdigit() and (p == "0" or not p.startswith("0")) for p in parts[1:])):
            raise Slow("a line of %s that shadow may read otherwise: %r" % (path, line))
        out.append((int(parts[1]), int(parts[2]), parts[0], line))
    return out


def free_range(entries, low, high, count):
    """The lowest start of ``count`` free ids in [low, high], as shadow finds it
    (entries sorted by start, count, owner first, which also sorts the file)."""
    entries.sort(key=lambda e: e[:3])
    for start, size, _, _ in entries:
        top = min(start, high + 1)
        if top > low and top - low >= count:
            return low
        low = max(low, start + size)
        if low > high:
            return None
    return low if high - low + 1 >= count else None


def nss_taken(acct):
    """A name or id another source (LDAP, sssd...) already has, as useradd checks."""
    if ROOT != "/":
        return None
    import grp
    import pwd

    for lookup, key, what in ((pwd.getpwnam, acct["name"], "user"),
                              (pwd.getpwuid, acct["uid"], "uid"),
                              (grp.getgrnam, acct["name"], "group"),
                              (grp.getgrgid, acct["uid"], "gid")):
        try:
            lookup(key)
            return "%s %s exists" % (what, key)
        except KeyError:
            continue
    return None


def safe_parent(home):
    """The home's parent, if every directory up to it is root's and writable by root
    alone (else a user could swap it while root creates the home)."""
    parent = os.path.realpath(at(os.path.dirname(home.rstrip("/"))))
    top = os.path.realpath(ROOT)
    if os.path.commonpath([parent, top]) != top:
        return None
    path = parent
    while True:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            return None
        if path == top:
            return parent
        path = os.path.dirname(path)


def taken(acct, names, uids, groups, gids, gid_range):
    """Why ``useradd`` must make this account (a name or id taken, a home there or not
    safe to make), or None; a safe home's parent is kept for ``make_home``."""
    name, uid, home = acct["name"], acct["uid"], acct["home"]
    if name in names:
        return "user %s exists" % name
    if str(uid) in uids:
        return "uid %d is taken" % uid
    if name in groups:
        return "group %s exists" % name
    if str(uid) in gids or not gid_range[0] <= uid <= gid_range[1]:
        return "gid %d is taken or out of GID_MIN..GID_MAX" % uid
    if os.path.lexists(at(home)):
        return "%s exists" % home
    acct["parent"] = safe_parent(home)
    if acct["parent"] is None:
        return "the parent of %s is missing or not root's alone" % home
    return nss_taken(acct)


def plan(accounts, texts, defs):
    """Split ``accounts`` into the ones written here and the ones left to useradd
    (as (argv, why))."""
    names = fields(texts["passwd"], 0) | fields(texts["shadow"], 0)
    uids = fields(texts["passwd"], 2)
    groups = fields(texts["group"], 0) | fields(texts["gshadow"], 0)
    gids = fields(texts["group"], 2)
    gid_range = strtol(defs.get("GID_MIN"), 1000), strtol(defs.get("GID_MAX"), 60000)
    fast, slow = [], []
    for acct in accounts:
        if isinstance(acct, tuple):  # (argv, why) from parse
            slow.append(acct)
            continue
        why = taken(acct, names, uids, groups, gids, gid_range)
        if why:
            slow.append((acct["argv"], why))
            continue
        names.add(acct["name"])
        uids.add(str(acct["uid"]))
        groups.add(acct["name"])
        gids.add(str(acct["uid"]))
        fast.append(acct)
    return fast, slow


def days_now():
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    now = int(epoch) if epoch.isdigit() else int(time.time())
    return now // 86400


def new_texts(fast, texts, defs, defaults):
    """The account files with ``fast`` added, as the same useradds would leave them."""
    def num(value):
        return "" if value == -1 else str(value)

    out = dict(texts)
    day = days_now()
    shadow_tail = ":".join(num(strtol(defs.get(k), -1)) for k in
                           ("PASS_MIN_DAYS", "PASS_MAX_DAYS", "PASS_WARN_AGE"))
    inactive = num(strtol(defaults.get("INACTIVE"), -1))
    uid_min, uid_max = strtol(defs.get("UID_MIN"), 1000), strtol(defs.get("UID_MAX"), 60000)
    sub = {}
    for kind, key in (("subuid", "SUB_UID"), ("subgid", "SUB_GID")):
        count = strtol(defs.get(key + "_COUNT"), 65536)
        low, high = strtol(defs.get(key + "_MIN"), 100000), strtol(defs.get(key + "_MAX"),
                                                                  600100000)
        if count > 0 and (low > high or count >= high or low + count - 1 > high):
            raise Slow("invalid %s_MIN/_MAX/_COUNT in login.defs" % key)
        sub[kind] = (ranges(texts[kind], "/etc/" + kind), low, high, count)
    lines = {name: [] for name in FILES}
    for acct in fast:
        name, uid = acct["name"], acct["uid"]
        lines["passwd"].append("%s:x:%d:%d:%s:%s:%s" % (name, uid, uid, acct["comment"],
                                                        acct["home"], acct["shell"]))
        lines["shadow"].append("%s:!:%s:%s:%s::" % (name, num(day or -1), shadow_tail,
                                                     inactive))
        lines["group"].append("%s:x:%d:" % (name, uid))
        lines["gshadow"].append("%s:!::" % name)
        for kind, (entries, low, high, count) in sub.items():
            if count <= 0 or not uid_min <= uid <= uid_max:
                continue
            start = free_range(entries, low, high, count)
            if start is None:
                raise Slow("no free %s range for %s" % (kind, name))
            entries.append((start, count, name, "%s:%d:%d" % (name, start, count)))
            acct[kind] = start
    for name in ("passwd", "shadow", "group", "gshadow"):
        if lines[name]:
            text = texts[name]
            if text and not text.endswith("\n"):
                text += "\n"
            out[name] = text + "".join(line + "\n" for line in lines[name])
    for kind, (entries, _, _, _) in sub.items():
        if any(kind in acct for acct in fast):  # untouched otherwise, as useradd leaves it
            out[kind] = "".join(e[3] + "\n" for e in entries)
    return out


def write_like_shadow(path, old_text, new_text):
    """``FILE-`` (the old content) and ``FILE+`` (the new), each with the file's owner and
    mode, synced; returns the ``FILE+`` path to rename."""
    st = os.lstat(path)
    for suffix, text in (("-", old_text), ("+", new_text)):
        fd = os.open(path + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                     0)
        try:
            os.fchown(fd, st.st_uid, st.st_gid)
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
            data = text.encode("utf-8", "surrogateescape")
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
    os.utime(path + "-", ns=(time.time_ns(), st.st_mtime_ns))
    return path + "+"


# ----------------------------------------------------------------------------- homes
def copy_tree(src_fd, dst_fd, uid, gid, links):
    """What useradd's copy_tree does for files, directories and symlinks: the user's own,
    with the skeleton's modes and times, links into the skeleton pointed at the home."""
    for entry in os.listdir(src_fd):
        st = os.stat(entry, dir_fd=src_fd, follow_symlinks=False)
        times = (st.st_atime_ns, st.st_mtime_ns)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(entry, 0o700, dir_fd=dst_fd)
            sfd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=src_fd)
            dfd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dst_fd)
            try:
                os.fchown(dfd, uid, gid)
                os.fchmod(dfd, stat.S_IMODE(st.st_mode))
                copy_tree(sfd, dfd, uid, gid, links)
                os.utime(dfd, ns=times)
            finally:
                os.close(sfd)
                os.close(dfd)
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(entry, dir_fd=src_fd)
            if target.startswith(links[0]):  # into the skeleton: into the home instead
                target = links[1] + target[len(links[0]):]
            os.symlink(target, entry, dir_fd=dst_fd)
            os.chown(entry, uid, gid, dir_fd=dst_fd, follow_symlinks=False)
            os.utime(entry, ns=times, dir_fd=dst_fd, follow_symlinks=False)
        else:
            sfd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=src_fd)
            dfd = os.open(entry, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                          dir_fd=dst_fd)
            try:
                os.fchown(dfd, uid, gid)
                os.fchmod(dfd, stat.S_IMODE(st.st_mode))
                while True:
                    block = os.read(sfd, 1 << 16)
                    if not block:
                        break
                    while block:
                        block = block[os.write(dfd, block):]
                os.utime(dfd, ns=times)
            finally:
                os.close(sfd)
                os.close(dfd)


def make_home(acct, skel, defs):
    """The home, made root's and closed to others until it is filled, then given to the
    user with its mode: nothing the user could touch is followed meanwhile."""
    home, parent = at(acct["home"]), acct["parent"]
    mode = acct["home_mode"]
    mode = (strtol(mode, 0o755) if mode is not None else
            strtol(defs.get("HOME_MODE"), 0o777 & ~strtol(defs.get("UMASK"), 0o022)))
    pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        base = os.path.basename(home.rstrip("/"))
        os.mkdir(base, 0o700, dir_fd=pfd)
        hfd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
    finally:
        os.close(pfd)
    try:
        sfd = os.open(skel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            copy_tree(sfd, hfd, acct["uid"], acct["uid"], (skel, home))
        finally:
            os.close(sfd)
        os.fchown(hfd, acct["uid"], acct["uid"])
        os.fchmod(hfd, mode & 0o7777)
    finally:
        os.close(hfd)


def reset_records(uid, defs, defaults):
    """lastlog and faillog records of a new uid zeroed, where the file reaches it (an
    earlier account's logins must not show as the new one's), as useradd does."""
    if defaults.get("LOG_INIT", "yes").lower() == "no":
        return
    for name, size in RECORDS:
        path = at(name)
        if name.endswith("lastlog") and uid > strtol(defs.get("LASTLOG_UID_MAX"), 2 ** 32 - 1):
            continue
        try:
            if os.stat(path).st_size <= uid * size:
                continue
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            os.pwrite(fd, b"\0" * size, uid * size)
            os.fsync(fd)
        finally:
            os.close(fd)


def after_write(fast):
    """What useradd does once the files are written: flush the name caches, log."""
    if ROOT != "/":
        return
    for argv in (["/usr/sbin/nscd", "-i", "passwd"], ["/usr/sbin/nscd", "-i", "group"],
                 ["/usr/sbin/sss_cache", "-UG"]):
        if os.path.exists(argv[0]):
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
    import syslog

    syslog.openlog("jhprovision-useradd", 0, syslog.LOG_AUTHPRIV)
    for acct in fast:
        syslog.syslog(syslog.LOG_INFO, "new group: name=%s, GID=%d" % (acct["name"],
                                                                        acct["uid"]))
        syslog.syslog(syslog.LOG_INFO, "new user: name=%s, UID=%d, GID=%d, home=%s, "
                      "shell=%s, from=jhprovision" % (acct["name"], acct["uid"], acct["uid"],
                                                      acct["home"], acct["shell"]))


# ------------------------------------------------------------------------------ main
def write_accounts(accounts, defs, defaults):
    """Lock, plan, write and unlock; then the homes. Returns what is left to useradd.

    Waiting for a lock can be interrupted; from the moment the locks are held until the
    last home is made, the signals that would end the program wait."""
    locks, old_mask = Locks(), None
    try:
        try:
            locks.take()
            old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
            texts = read_files()
            fast, slow = plan(accounts, texts, defs)
            if fast:
                new = new_texts(fast, texts, defs, defaults)
                staged = [(write_like_shadow(at("/etc/" + n), texts[n], new[n]),
                           at("/etc/" + n)) for n in COMMIT if new[n] != texts[n]]
                for tmp, path in staged:
                    os.rename(tmp, path)
        finally:
            locks.release()
        skel = at(defaults.get("SKEL") or "/etc/skel")
        for acct in fast:
            make_home(acct, skel, defs)
            reset_records(acct["uid"], defs, defaults)
        if fast:
            after_write(fast)
    finally:
        if old_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return fast, slow


def run_useradd(argv, defaults):
    if ROOT != "/":  # a tree of the tests: useradd --prefix would copy the host's skeleton
        argv = [argv[0], "--prefix", ROOT, "--skel", at(defaults.get("SKEL") or "/etc/skel"),
                *argv[1:]]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True)
    sys.stderr.write(proc.stderr.decode("utf-8", "replace"))
    if proc.returncode != 0:
        sys.stderr.write("useradd exited with %d for %s\n" % (proc.returncode, argv[-1]))
        sys.exit(proc.returncode)


def all_to_useradd(accounts, why):
    """Every account as (argv, why) for useradd: the ones parse already left to it keep
    their own reason."""
    return [(a["argv"], why) if isinstance(a, dict) else a for a in accounts]


def main():
    commands = json.loads(sys.stdin.buffer.read())
    defs, defaults = read_settings()
    accounts = []
    for argv in commands:
        try:
            accounts.append(dict(parse(argv), argv=argv))
        except Slow as exc:
            accounts.append((argv, str(exc)))
    why = host_reason(defs, defaults)
    fast, slow = [], all_to_useradd(accounts, why)
    if why is None:
        try:
            fast, slow = write_accounts(accounts, defs, defaults)
        except Slow as exc:
            slow = all_to_useradd(accounts, str(exc))
        except OSError as exc:
            sys.exit("useradd_batch: %s%s" % (exc.strerror, ": " + exc.filename
                                              if exc.filename else ""))
    reasons = sorted({reason for _, reason in slow})
    print(json.dumps({"written": [a["name"] for a in fast],
                      "useradd": [argv[-1] for argv, _ in slow],
                      "why": "; ".join(reasons)}), flush=True)
    for argv, _ in slow:
        run_useradd(argv, defaults)


if __name__ == "__main__":
    main()
