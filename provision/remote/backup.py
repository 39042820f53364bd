"""The backup program on a backed-up host: restic runs, snapshots, restores, checks.

Installed by the backup role as ``/usr/local/lib/jhprovision-backup/backup.py`` (the
service ``jhprovision-backup.service`` runs ``backup.py run``), and sent as ``python3 -c``
for what runs before it is installed (``share``). Everything it needs is in its config
file (``backup.json``, written by the role): the repository, the password file's path, the
paths, the excludes, the hub's database. The repository password reaches restic as
``RESTIC_PASSWORD_FILE``: a path in restic's environment, never the password itself, in no
argv and no unit file.

Every subcommand prints one JSON document on stdout (``run`` also keeps it in
``last.json``); the exit code is 0 only when it did what it says.
"""

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time

CONFIG = "/etc/jhprovision-backup/backup.json"
STATE = "/var/lib/jhprovision-backup"
LAST = STATE + "/last.json"  # the last run's result, ok or not
LAST_OK = STATE + "/last-ok.json"  # the last successful run's result
OWN = STATE + "/own"  # this host made or restored a snapshot of this repository
TAG = "jhprovision"
# restic's message when the repository is not there (0.14 has no exit code of its own)
NO_REPO = ("Is there a repository at the following location?",)


def load(path=CONFIG):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def env_of(cfg):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env.update(RESTIC_REPOSITORY=cfg["repository"], RESTIC_PASSWORD_FILE=cfg["password_file"],
               RESTIC_CACHE_DIR=cfg["cache_dir"])
    return env


def restic_argv(cfg, *args):
    argv = ["restic", "--no-lock"] if args[:1] == ("--no-lock",) else ["restic"]
    args = args[1:] if args[:1] == ("--no-lock",) else args
    if cfg.get("sftp_command"):
        argv += ["-o", "sftp.command=" + cfg["sftp_command"]]
    return argv + list(args)


def restic(cfg, *args, timeout=None):
    """Run restic; (rc, stdout, stderr). SIGINT/SIGTERM reach it (its process group is
    ours), and it ends its run cleanly: its lock removed, no snapshot half written."""
    proc = subprocess.Popen(restic_argv(cfg, *args), env=env_of(cfg), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    return proc.returncode, out, err


def last_lines(text, n=8):
    return "\n".join(text.strip().splitlines()[-n:])


def write_json(path, data, mode=0o600):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as fh:
        json.dump(data, fh)
        fh.write("\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------ share (phase one)
def share_client(key, password_file, check, send_password):
    """This host's public key for the repository host (made here when missing, never in
    check mode; the private key never leaves the host) and its password's sha256."""
    made = False
    if not os.path.exists(key) and not check:
        os.makedirs(os.path.dirname(key), mode=0o700, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                        "jhprovision-backup@" + os.uname().nodename, "-f", key],
                       check=True, stdin=subprocess.DEVNULL)
        made = True
    out = {"key": None, "made_key": made, "password_sha256": None}
    try:
        with open(key + ".pub", encoding="utf-8") as fh:
            out["key"] = fh.read().strip()
    except OSError:
        pass
    try:
        with open(password_file, "rb") as fh:
            data = fh.read()
    except OSError:
        data = None
    if data:
        out["password_sha256"] = hashlib.sha256(data).hexdigest()
        if send_password:  # the workstation has lost its copy: it gets this one back
            out["password"] = data.decode()
    return out


def share_server(host_key):
    try:
        with open(host_key, encoding="utf-8") as fh:
            return {"host_key": " ".join(fh.read().split()[:2])}
    except OSError:
        return {"host_key": None}


# ----------------------------------------------------------------------------- run
def copy_database(src, dest):
    """The hub's SQLite database copied by SQLite's online backup (what ``sqlite3
    .backup`` does): a consistent copy while the hub runs, never a torn file."""
    os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
    tmp = dest + ".tmp"
    if os.path.exists(tmp):
        os.unlink(tmp)
    source = sqlite3.connect("file:%s?mode=ro" % src, uri=True, timeout=60)
    try:
        target = sqlite3.connect(tmp)
        with target:
            source.backup(target)
        target.close()
    finally:
        source.close()
    st = os.stat(src)
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.replace(tmp, dest)


def ensure_repository(cfg):
    """The repository, made when it is not there; None, or why it cannot be used."""
    rc, _, err = restic(cfg, "--no-lock", "cat", "config", timeout=300)
    if rc == 0:
        return None
    if any(m in err for m in NO_REPO):
        rc, _, err = restic(cfg, "init", timeout=300)
        if rc == 0:
            return None
        return "restic init failed: " + last_lines(err)
    return "the repository cannot be opened: " + last_lines(err)


def snapshots(cfg):
    rc, out, err = restic(cfg, "--no-lock", "snapshots", "--json", "--tag", TAG, timeout=300)
    if rc != 0:
        raise RuntimeError("restic snapshots failed: " + last_lines(err))
    return json.loads(out or "[]") or []


def summary_of(out):
    for line in reversed(out.splitlines()):
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("message_type") == "summary":
            return msg
    return {}


def run(cfg, adopt=False):
    """One backup: the hub's database copied, restic backup, forget --prune; the result
    in last.json (and last-ok.json when it succeeded)."""
    start = time.time()
    result = {"ok": False, "started": int(start), "snapshot": None, "error": None}
    try:
        result.update(_run(cfg, adopt))
    except KeyboardInterrupt:
        result["error"] = "interrupted: no snapshot was made (the repository stays valid)"
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none is ok
        result["error"] = "%s: %s" % (type(exc).__name__, exc)
    result["seconds"] = round(time.time() - start, 1)
    write_json(LAST, result)
    if result["ok"]:
        write_json(LAST_OK, result)
    return result


def _run(cfg, adopt):
    why = ensure_repository(cfg)
    if why:
        return {"error": why}
    if adopt:
        write_json(OWN, {"adopted": int(time.time())})
    if not os.path.exists(OWN):
        found = snapshots(cfg)
        if found:
            return {"error": "the repository has %d snapshot(s) this host neither made nor "
                    "restored (a rebuilt host?): restore first (invoke restore), or keep "
                    "this host's files as they are with invoke backup --adopt" % len(found)}
    db, copy = cfg.get("hub_db"), cfg.get("hub_db_copy")
    if db and copy and os.path.exists(db):
        copy_database(db, copy)
    paths = [p for p in cfg["paths"] if os.path.lexists(p)]
    if not paths:
        return {"error": "none of the paths exists: %s" % ", ".join(cfg["paths"])}
    restic(cfg, "unlock", timeout=300)  # only locks of processes that are gone
    args = ["backup", "--json", "--tag", TAG, "--exclude-caches"]
    for pattern in cfg.get("exclude", []):
        args += ["--exclude", pattern]
    rc, out, err = restic(cfg, *args, "--", *paths)
    summary = summary_of(out)
    res = {"snapshot": summary.get("snapshot_id"), "paths": paths,
           "files_new": summary.get("files_new"), "files_changed": summary.get("files_changed"),
           "files": summary.get("total_files_processed"),
           "bytes_added": summary.get("data_added"),
           "bytes": summary.get("total_bytes_processed")}
    if rc != 0:
        what = "incomplete snapshot (some files could not be read)" if rc == 3 else \
            "restic backup failed"
        res["error"] = "%s (exit %d): %s" % (what, rc, last_lines(err))
        return res
    write_json(OWN, {"snapshot": res["snapshot"]})
    rc, _, err = restic(cfg, "forget", "--prune", "--tag", TAG, "--group-by", "host,tags",
                        "--keep-daily", str(cfg["keep_daily"]),
                        "--keep-weekly", str(cfg["keep_weekly"]))
    if rc != 0:
        res["error"] = "the snapshot was saved, but restic forget --prune failed: " + \
            last_lines(err)
        return res
    res["ok"] = True
    return res


# ------------------------------------------------------------------------- restore
def _under(path, roots):
    return any(path == r or path.startswith(r.rstrip("/") + "/") or
               r.startswith(path.rstrip("/") + "/") for r in roots)


STAGE = ".jhprovision-restore"  # below a homes' root: root's, 0700, same file system


def _home_parts(want, roots):
    """Split the paths asked for into those outside the homes (restored in place: trees
    only root writes), the homes' roots with the homes asked for (None: every home), and
    the paths refused: inside a home (restic would write them as root through directories
    the user owns: a link planted there would take root's write elsewhere), or above a
    homes' root ('/': restic cannot include it and exclude the homes at once)."""
    direct, homes, refused = [], {}, []
    for p in want:
        p = p.rstrip("/") or "/"
        root = next((r for r in roots if p == r or p.startswith(r + "/")), None)
        if root is None:
            if any(r.startswith(p.rstrip("/") + "/") for r in roots):
                refused.append(p)  # '/': the homes must come apart from the rest
            else:
                direct.append(p)
        elif p == root:
            homes[root] = None
        elif "/" not in p[len(root) + 1:]:
            if homes.get(root, ()) is not None:
                homes.setdefault(root, []).append(p[len(root) + 1:])
        else:
            refused.append(p)
    return direct, homes, refused


def _only_skeleton(home, skel="/etc/skel"):
    """Whether ``home`` holds nothing but what useradd copied from the skeleton (a fresh
    host's new account): then nothing is lost when the restored home replaces it."""
    for top, dirs, files in os.walk(home):  # links are not followed, here or below
        for name in dirs + files:
            path = os.path.join(top, name)
            twin = os.path.join(skel, os.path.relpath(path, home))
            if not os.path.lexists(twin):
                return False
            mine, theirs = os.lstat(path), os.lstat(twin)
            if stat.S_IFMT(mine.st_mode) != stat.S_IFMT(theirs.st_mode) or (
                    stat.S_ISREG(mine.st_mode) and mine.st_size != theirs.st_size):
                return False
    return True


def _restore_homes(cfg, snapshot, root, names):
    """The homes below ``root`` (``names``, or all) restored into a staging directory of
    root's (0700), then each renamed into place: restic never writes through a directory a
    user owns. A home that was there is put aside (``.NAME.before-restore-TIME``) unless it
    held only the skeleton."""
    stage = os.path.join(root, STAGE)
    if os.path.lexists(stage):
        shutil.rmtree(stage)
    os.mkdir(stage, 0o700)
    try:
        args = ["restore", snapshot, "--target", stage]
        for name in names or [""]:
            args += ["--include", os.path.join(root, name).rstrip("/") or root]
        rc, out, err = restic(cfg, *args)
        if rc != 0:
            return None, "restic restore failed: " + last_lines(err)
        staged = stage + root
        aside, moved = [], []
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for name in sorted(os.listdir(staged)) if os.path.isdir(staged) else []:
            src, dest = os.path.join(staged, name), os.path.join(root, name)
            if name == STAGE or os.path.islink(src) or not os.path.isdir(src):
                continue
            if os.path.lexists(dest):
                if os.path.isdir(dest) and not os.path.islink(dest) and _only_skeleton(dest):
                    shutil.rmtree(dest)
                else:
                    keep = os.path.join(root, ".%s.before-restore-%s" % (name, stamp))
                    os.rename(dest, keep)
                    aside.append(keep)
            os.rename(src, dest)
            moved.append(dest)
        return {"homes": moved, "aside": aside, "output": last_lines(out, 3)}, None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def restore(cfg, snapshot="latest", paths=None):
    """Restore ``paths`` (default: everything backed up) of ``snapshot`` onto this host.

    The hub, the proxy and the users' servers are stopped first when their files are
    restored; the hub's database copy is put in place; the restarts are left due for the
    next ``invoke provision`` (the runner's pending markers), which starts them with it.
    Homes are restored whole, through a staging directory (``_restore_homes``)."""
    want = paths or cfg["paths"]
    direct, homes, refused = _home_parts(want, cfg["homes"])
    if refused:
        return {"ok": False, "stopped": [], "error": "cannot be restored in one piece with "
                "the homes' staging: %s (restore a whole home, e.g. /home/alice, and other "
                "paths by name; a file inside a home: have its user copy it from a restored "
                "copy)" % ", ".join(refused)}
    stop = []
    if _under(cfg["hub_state_dir"], want) or _under(cfg["hub_config_dir"], want):
        stop += cfg["hub_units"]
    if homes:
        stop.append("jupyter-*-singleuser.service")
    if stop:
        subprocess.run(["systemctl", "stop", "--", *stop], check=False,
                       capture_output=True, timeout=300)
    include = list(direct)
    copy = cfg.get("hub_db_copy")
    restores_db = bool(copy) and _under(cfg["hub_state_dir"], want)
    if restores_db:
        include.append(copy)
    out = ""
    if include:
        args = ["restore", snapshot, "--target", "/"]
        for p in include:
            args += ["--include", p]
        rc, out, err = restic(cfg, *args)
        if rc != 0:
            return {"ok": False, "error": "restic restore failed: " + last_lines(err),
                    "stopped": stop}
    restored_homes, aside = [], []
    for root, names in homes.items():
        done, why = _restore_homes(cfg, snapshot, root, names)
        if why:
            return {"ok": False, "error": why, "stopped": stop}
        restored_homes += done["homes"]
        aside += done["aside"]
        out = out or done["output"]
    if restores_db and os.path.exists(copy):
        tmp = cfg["hub_db"] + ".restored"
        shutil.copy2(copy, tmp)
        st = os.stat(copy)
        os.chown(tmp, st.st_uid, st.st_gid)
        for suffix in ("-journal", "-wal", "-shm"):
            if os.path.exists(cfg["hub_db"] + suffix):
                os.unlink(cfg["hub_db"] + suffix)
        os.replace(tmp, cfg["hub_db"])
    pending = []
    if stop:
        os.makedirs(cfg["pending_dir"], mode=0o700, exist_ok=True)
        for name in cfg["pending"]:
            open(os.path.join(cfg["pending_dir"], name.replace(" ", "-")), "w").close()
            pending.append(name)
    write_json(OWN, {"restored": snapshot})
    return {"ok": True, "snapshot": snapshot, "paths": include + restored_homes,
            "aside": aside, "stopped": stop, "pending": pending,
            "database": restores_db and os.path.exists(copy),
            "output": last_lines(out, 3)}


# -------------------------------------------------------------------------- status
def check(cfg):
    # a lock left by a backup that died (its process gone) would fail the check: restic
    # unlock removes only such stale locks, never a live run's
    restic(cfg, "unlock", timeout=300)
    rc, out, err = restic(cfg, "check", timeout=3600)
    return {"ok": rc == 0, "output": last_lines(out + err)}


def read_json(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def status(cfg):
    """The last run, the last successful one, and the schedule's interval (seconds
    between its next two elapses, from systemd-analyze calendar)."""
    proc = subprocess.run(["systemd-analyze", "calendar", "--iterations=2", "--",
                           cfg["schedule"]], capture_output=True, text=True, check=False)
    stamps = [ln.split(":", 1)[1].strip() for ln in proc.stdout.splitlines()
              if "Next elapse" in ln or ln.strip().startswith("Iter. #2")]
    interval = None
    if len(stamps) == 2:
        parsed = []
        for s in stamps:
            out = subprocess.run(["date", "-d", s, "+%s"], capture_output=True, text=True,
                                 check=False).stdout.strip()
            parsed.append(int(out) if out.isdigit() else None)
        if None not in parsed:
            interval = parsed[1] - parsed[0]
    return {"last": read_json(LAST), "last_ok": read_json(LAST_OK), "interval": interval,
            "now": int(time.time())}


def main(argv):
    command, args = argv[0], argv[1:]
    if command == "share-client":
        print(json.dumps(share_client(args[0], args[1], "--check" in args,
                                      "--send-password" in args)))
        return 0
    if command == "share-server":
        print(json.dumps(share_server(args[0])))
        return 0
    cfg = load()
    if command == "run":
        res = run(cfg, adopt="--adopt" in args)
    elif command == "snapshots":
        res = {"ok": True, "snapshots": snapshots(cfg)}
    elif command == "restore":
        snapshot = args[args.index("--snapshot") + 1] if "--snapshot" in args else "latest"
        paths = [args[i + 1] for i, a in enumerate(args) if a == "--path"]
        res = restore(cfg, snapshot, paths or None)
    elif command == "adopt":  # this host's files as they are: its backups may begin
        write_json(OWN, {"adopted": int(time.time())})
        res = {"ok": True}
    elif command == "check":
        res = check(cfg)
    elif command == "status":
        res = dict(status(cfg), ok=True)
    else:
        sys.stderr.write("unknown command %r\n" % command)
        return 2
    print(json.dumps(res))
    return 0 if res.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
