"""Pure planners: (facts, desired state) -> Action. An Action with no ops means "ok".

Planners never touch the network, so they are tested with plain data (tests/unit/cases/).
Each returns an ``Action`` naming what it ensures, the argv lists or uploads that would
bring the host there, a human diff (unified for files, field-level for accounts, versions
``from -> to`` for packages) and the handlers to notify when it ran.
"""

from __future__ import annotations

import difflib
import hashlib
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from . import installer as inst
from .facts import Facts, FileFact, VenvFact
from .pins import effective, parse
from .requirements import req_name_version, same_version

APT_ENV = ["env", "DEBIAN_FRONTEND=noninteractive", "NEEDRESTART_MODE=a"]
MASK = "(secret: content not shown)"


@dataclass(frozen=True)
class Fetch:
    """What a command downloads from a registry, so ``provision_artifacts: push`` can
    fetch it on the workstation instead (``provision.artifacts``).

    ``kind``: ``apt-lists`` (apt-get update), ``apt`` (Debian packages, ``name`` or
    ``name=version``), ``pip`` (requirements, constrained by ``constraints``, for the
    interpreter ``python``) or ``npm`` (``package@version``)."""

    kind: str
    items: tuple[str, ...] = ()
    constraints: str | None = None
    python: str = "/usr/bin/python3"


@dataclass
class Command:
    """One argv list to run on the host; ``display`` replaces it in output and reports
    (for long scripts, or stdin/argv that must not be echoed); ``fetch``: what it
    downloads from a registry (None: nothing)."""

    argv: list[str]
    stdin: bytes | None = None
    display: str | None = None
    timeout: float | None = None
    fetch: Fetch | None = None

    def shown(self) -> str:
        return self.display or shlex.join(self.argv)


@dataclass
class Upload:
    """Replace ``path`` atomically with ``content``, validated by ``validate`` ({} = temp)."""

    path: str
    content: bytes
    mode: str
    owner: str = "root"
    group: str = "root"
    validate: list[str] | None = None
    run_as: str | None = None  # write as this user (files in users' homes)

    def shown(self) -> str:
        v = f", validate: {shlex.join(self.validate)}" if self.validate else ""
        return f"write {self.path} ({self.mode} {self.owner}:{self.group}{v})"


@dataclass
class Refuse:
    """The host is in a state this step must not change by itself: fail with ``message``
    (in check mode too), run nothing."""

    message: str

    def shown(self) -> str:
        return f"refused: {self.message}"


@dataclass
class Push:
    """Send the host what ``fetch`` names from the workstation's artifact cache (fetched
    there first when missing); files the host already has, by hash, are not sent."""

    fetch: Fetch

    def shown(self) -> str:
        return f"push {self.fetch.kind} artifacts from the workstation: " + \
            ", ".join(self.fetch.items)


Op = Command | Upload | Refuse | Push


@dataclass
class Action:
    """What one step ensures; ``ops`` empty means the host is already right."""

    name: str
    ops: list[Op] = field(default_factory=list)
    diff: str = ""
    notify: tuple[str, ...] = ()
    long: bool = False  # may take minutes: show progress while it runs
    #: something the sysadmin should know whether or not the step changes anything (e.g.
    #: "no certificate from the CA yet"): shown under the host and kept in the report
    note: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.ops)


def _mode(m: str | int) -> str:
    return "%04o" % (int(m, 8) if isinstance(m, str) else m)


# --------------------------------------------------------------------------- groups
def plan_group(
    facts: Facts,
    name: str,
    *,
    gid: int | None = None,
    system: bool = False,
    members: Iterable[str] | None = None,
    managed_users: Iterable[str] = (),
) -> Action:
    """Ensure group ``name`` exists (with ``gid``) and holds ``members``.

    Membership is exact only among ``managed_users``: a managed user who should not be in
    the group is removed, while accounts the inventory does not manage are left alone.

    Example: ``plan_group(facts, "wheel", members=["alice"], managed_users=["alice", "bob"])``
    """
    act = Action(f"group {name}")
    current = facts.groups.get(name)
    lines = []
    if current is None:
        argv = ["groupadd"]
        if gid is not None:
            argv += ["--gid", str(gid)]
        if system:
            argv.append("--system")
        act.ops.append(Command([*argv, "--", name]))
        lines.append(f"+ group {name}" + (f" (gid {gid})" if gid is not None else ""))
        have: set[str] = set()
    else:
        have = set(current.members)
        if gid is not None and current.gid != gid:
            act.ops.append(Command(["groupmod", "--gid", str(gid), "--", name]))
            lines.append(f"~ group {name}: gid {current.gid} -> {gid}")
    if members is not None:
        want = set(members)
        add, remove = sorted(want - have), sorted((have - want) & set(managed_users))
        lines += [f"+ {name} member {u}" for u in add] + [f"- {name} member {u}" for u in remove]
        if len(add) + len(remove) > 1:
            # One write of the group's whole list (gpasswd takes the same lock and writes
            # /etc/group and /etc/gshadow once, instead of once per member: 300 students
            # cost one command, not 300). Accounts the inventory does not manage stay.
            final = sorted((have | want) - set(remove))
            act.ops.append(Command(["gpasswd", "--members", ",".join(final), name]))
        for user in add if len(add) + len(remove) == 1 else ():
            act.ops.append(Command(["gpasswd", "--add", user, name]))
        for user in remove if len(add) + len(remove) == 1 else ():
            act.ops.append(Command(["gpasswd", "--delete", user, name]))
    act.diff = "\n".join(lines)
    return act


# ---------------------------------------------------------------------------- users
@dataclass
class UserSpec:
    """Desired state of one Linux account."""

    name: str
    uid: int | None = None
    shell: str = "/bin/bash"
    home: str | None = None
    comment: str = ""
    groups: tuple[str, ...] = ()
    password_hash: str | None = None
    state: str = "present"  # present | locked | absent
    home_mode: str | None = None  # mode of the home useradd creates (else login.defs')


def plan_user(facts: Facts, spec: UserSpec, *, purge: bool = False,
              archive_dir: str = "/var/backups/jhprovision") -> Action:
    """Ensure one account: created with ``useradd``, fields fixed with ``usermod``.

    ``state: locked`` locks the password and expires the account (so neither PAM login
    to the hub nor SSH keys work); ``absent`` deletes it, with ``purge`` after archiving
    the home directory. Supplementary group membership is planned by ``plan_group``.

    Example: ``plan_user(facts, UserSpec("alice", uid=2001, groups=("wheel",)))``
    """
    act = Action(f"user {spec.name}")
    cur = facts.users.get(spec.name)
    home = spec.home or f"/home/{spec.name}"
    shadow = facts.shadow.get(spec.name, {})
    lines: list[str] = []
    if spec.state == "absent":
        if cur is not None:
            if purge and facts.file(cur.home).type == "dir":
                archive = f"{archive_dir}/{spec.name}-home.tar.gz"
                act.ops.append(Command(["install", "-d", "-m", "0700", archive_dir]))
                act.ops.append(Command(
                    ["tar", "--create", "--gzip", "--file", archive, "--directory",
                     cur.home.rsplit("/", 1)[0] or "/", "--", cur.home.rsplit("/", 1)[1]],
                    display=f"archive {cur.home} to {archive}"))
                act.ops.append(Command(["userdel", "--remove", "--", spec.name]))
                lines.append(f"- user {spec.name} (home archived to {archive}, then removed)")
            elif purge:  # nothing to archive: the home is already gone
                act.ops.append(Command(["userdel", "--", spec.name]))
                lines.append(f"- user {spec.name} (no home to archive)")
            else:
                act.ops.append(Command(["userdel", "--", spec.name]))
                lines.append(f"- user {spec.name} (home {cur.home} kept)")
        act.diff = "\n".join(lines)
        return act
    if cur is None:
        argv = ["useradd", "--create-home", "--home-dir", home, "--shell", spec.shell,
                "--user-group"]
        if spec.uid is not None:
            argv += ["--uid", str(spec.uid)]
        if spec.comment:
            argv += ["--comment", spec.comment]
        if spec.home_mode:  # made with its mode: no chmod after, one command per account
            argv += ["--key", f"HOME_MODE={_mode(spec.home_mode)}"]
        act.ops.append(Command([*argv, "--", spec.name]))
        lines.append(f"+ user {spec.name}" + (f" uid={spec.uid}" if spec.uid else "")
                     + f" shell={spec.shell} home={home}"
                     + (f" (mode {_mode(spec.home_mode)})" if spec.home_mode else ""))
    else:
        if spec.uid is not None and cur.uid != spec.uid:
            act.ops.append(Command(["usermod", "--uid", str(spec.uid), "--", spec.name]))
            lines.append(f"~ user {spec.name}: uid {cur.uid} -> {spec.uid}")
        if cur.shell != spec.shell:
            act.ops.append(Command(["usermod", "--shell", spec.shell, "--", spec.name]))
            lines.append(f"~ user {spec.name}: shell {cur.shell} -> {spec.shell}")
        if spec.home and cur.home != spec.home:
            act.ops.append(Command(["usermod", "--home", spec.home, "--move-home", "--",
                                    spec.name]))
            lines.append(f"~ user {spec.name}: home {cur.home} -> {spec.home}")
        if spec.comment and cur.comment != spec.comment:
            act.ops.append(Command(["usermod", "--comment", spec.comment, "--", spec.name]))
            lines.append(f"~ user {spec.name}: comment {cur.comment!r} -> {spec.comment!r}")
    if spec.password_hash and (cur is None or not shadow.get("password_matches", False)):
        act.ops.append(Command(["chpasswd", "--encrypted"],
                               stdin=f"{spec.name}:{spec.password_hash}\n".encode(),
                               display=f"chpasswd --encrypted  # {spec.name}:(hash not shown)"))
        lines.append(f"~ user {spec.name}: password set (hash not shown)")
    # "locked" is marked by an expired account (expire day 1), which stops PAM and SSH
    # keys alike; a "!" in the hash alone is also what useradd leaves without a password.
    locked = shadow.get("expire") == "1"
    if spec.state == "locked" and (cur is None or not locked):
        act.ops.append(Command(["usermod", "--lock", "--expiredate", "1", "--", spec.name]))
        lines.append(f"~ user {spec.name}: locked")
    elif spec.state == "present" and cur is not None and locked:
        argv = ["usermod", "--expiredate", ""]
        if shadow.get("locked_hash"):
            argv.insert(1, "--unlock")
        act.ops.append(Command([*argv, "--", spec.name]))
        lines.append(f"~ user {spec.name}: unlocked")
    act.diff = "\n".join(lines)
    return act


# ---------------------------------------------------------------------------- files
def as_user(user: str | None, argv: list[str]) -> list[str]:
    """``argv`` run as ``user`` (for paths a user controls: their symlinks then cannot
    redirect root's change to another file); as root when ``user`` is None."""
    return ["runuser", "-u", user, "--", *argv] if user else argv


# chown for a path a user controls (below their home): root walks to it one component at
# a time with O_NOFOLLOW, so a symlink the user planted anywhere on the way (not only the
# last component, which `chown --no-dereference` covers) stops the walk instead of
# redirecting root's chown to another file. A user cannot chown, so this stays root's.
NOFOLLOW_CHOWN = """import grp, os, pwd, sys
path, owner, group = sys.argv[1:4]
parts = [p for p in path.split("/") if p]
if not path.startswith("/") or ".." in parts:
    sys.exit("refusing %r: not an absolute path without '..'" % path)
fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
try:
    for part in parts[:-1]:
        try:
            step = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except OSError as exc:
            sys.exit("refusing to chown %s: %s is a symlink or not a directory (%s)"
                     % (path, part, exc.strerror))
        os.close(fd)
        fd = step
    os.chown(parts[-1], pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid,
             dir_fd=fd, follow_symlinks=False)
finally:
    os.close(fd)
"""


def _attr_ops(path: str, f: FileFact, mode: str, owner: str, group: str,
              run_as: str | None = None) -> tuple[list[Op], list[str]]:
    ops: list[Op] = []
    lines: list[str] = []
    if (f.owner != owner or f.group != group) and run_as:
        ops.append(Command(["python3", "-I", "-c", NOFOLLOW_CHOWN, path, owner, group],
                           display=f"chown {owner}:{group} {path} (no symlink followed)"))
        lines.append(f"~ {path}: owner {f.owner}:{f.group} -> {owner}:{group}")
    elif f.owner != owner or f.group != group:
        ops.append(Command(["chown", "--no-dereference", f"{owner}:{group}", "--", path]))
        lines.append(f"~ {path}: owner {f.owner}:{f.group} -> {owner}:{group}")
    if f.mode != _mode(mode):
        # GNU chmod keeps a directory's setgid bit unless the mode has five digits.
        wanted = "0" + _mode(mode) if f.type == "dir" else _mode(mode)
        ops.append(Command(as_user(run_as, ["chmod", wanted, "--", path])))
        lines.append(f"~ {path}: mode {f.mode} -> {_mode(mode)}")
    return ops, lines


def plan_directory(facts: Facts, path: str, *, mode: str = "0755", owner: str = "root",
                   group: str = "root", run_as: str | None = None) -> Action:
    """Ensure ``path`` is a directory with this owner and mode.

    ``run_as`` (a directory in a user's home): created and chmod-ed as that user.
    Example: ``plan_directory(facts, "/var/lib/jupyterhub", mode="0700")``
    """
    act = Action(f"directory {path}")
    f = facts.file(path)
    if not f.exists:
        if run_as:
            act.ops.append(Command(as_user(run_as, ["mkdir", "-m", _mode(mode), "--", path])))
        else:
            act.ops.append(Command(["install", "-d", "-m", _mode(mode), "-o", owner, "-g",
                                    group, "--", path]))
        act.diff = f"+ directory {path} ({_mode(mode)} {owner}:{group})"
        return act
    if f.type != "dir":
        act.ops.append(Refuse(f"{path} exists and is a {f.type}, not a directory; move it "
                              "away"))
        return act
    act.ops, lines = _attr_ops(path, f, mode, owner, group, run_as)
    act.diff = "\n".join(lines)
    return act


def plan_attrs(facts: Facts, path: str, *, mode: str, owner: str = "root",
               group: str = "root", name: str | None = None) -> Action:
    """Only owner and mode of an existing file (its content is someone else's business:
    a file a program rewrites, compared by other means)."""
    act = Action(name or f"file {path}")
    act.ops, lines = _attr_ops(path, facts.file(path), mode, owner, group)
    act.diff = "\n".join(lines)
    return act


def file_diff(path: str, old: bytes | None, new: bytes, *, secret: bool = False) -> str:
    """Unified diff of a file's old and new content; secrets are masked."""
    if secret:
        return f"~ {path}: {MASK}"
    try:
        a = (old or b"").decode("utf-8").splitlines(keepends=True)
        b = new.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return f"~ {path}: binary content changed"
    fromfile = path if old is not None else "/dev/null"
    return "".join(difflib.unified_diff(a, b, fromfile=fromfile, tofile=path, n=2)).rstrip()


def plan_file(facts: Facts, path: str, content: str | bytes, *, mode: str = "0644",
              owner: str = "root", group: str = "root", validate: Sequence[str] | None = None,
              secret: bool = False, notify: Sequence[str] = (),
              run_as: str | None = None) -> Action:
    """Ensure ``path`` has exactly ``content`` (compared by sha256), owner and mode.

    A content change uploads atomically through ``validate`` (``{}`` is the temp file);
    an owner or mode change alone is a chown/chmod.

    Example: ``plan_file(facts, "/etc/sudoers.d/wheel", text, mode="0440",
    validate=["visudo", "-cf", "{}"])``
    """
    data = content.encode() if isinstance(content, str) else content
    act = Action(f"file {path}", notify=tuple(notify))
    f = facts.file(path)
    if f.exists and f.type not in ("file", "link"):
        act.ops.append(Refuse(f"{path} exists and is a {f.type}, not a file; move it away"))
        act.notify = ()
        return act
    if not f.exists or f.type != "file" or f.sha256 != hashlib.sha256(data).hexdigest():
        act.ops.append(Upload(path, data, _mode(mode), owner, group,
                              list(validate) if validate else None, run_as))
        act.diff = file_diff(path, f.content if f.exists else None, data, secret=secret)
        if f.type == "link":
            act.diff = f"~ {path}: the symlink (to {f.target}) is replaced by a file"
        elif f.exists and f.content is None and not secret:
            act.diff = f"~ {path}: content changed (sha256 {str(f.sha256)[:12]}... -> " \
                       f"{hashlib.sha256(data).hexdigest()[:12]}...)"
        return act
    act.ops, lines = _attr_ops(path, f, mode, owner, group, run_as)
    act.diff = "\n".join(lines)
    act.notify = ()  # same content: an owner or mode fix restarts nothing
    return act


# Generates a random secret on the host only if the file is missing or empty, in a file
# created 0600 from the start (umask), so the secret never crosses the network.
SECRET_SCRIPT = r"""set -eu
path=$1 prefix=$2
[ -s "$path" ] && exit 0
umask 077
tmp=$(mktemp "$path.XXXXXX")
printf '%s%s\n' "$prefix" "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" > "$tmp"
mv -f -- "$tmp" "$path"
"""


def plan_secret(facts: Facts, path: str, *, prefix: str = "", mode: str = "0600",
                owner: str = "root", group: str = "root", notify: Sequence[str] = ()) -> Action:
    """Ensure ``path`` holds a 256-bit random hex secret generated on the host.

    The secret is never read back, printed or diffed; only owner and mode are enforced
    after creation. ``prefix`` makes an environment file, e.g.
    ``plan_secret(facts, "/etc/jupyterhub/proxy.env", prefix="CONFIGPROXY_AUTH_TOKEN=")``.
    """
    act = Action(f"secret {path}", notify=tuple(notify))
    f = facts.file(path)
    if not f.exists or not f.size:
        act.ops.append(Command(["sh", "-c", SECRET_SCRIPT, "sh", path, prefix],
                               display=f"generate secret {path} on the host"))
        act.ops.append(Command(["chown", f"{owner}:{group}", "--", path]))
        act.ops.append(Command(["chmod", _mode(mode), "--", path]))
        act.diff = f"+ {path}: new random secret ({_mode(mode)} {owner}:{group}, not shown)"
        return act
    act.ops, lines = _attr_ops(path, f, mode, owner, group)
    act.diff = "\n".join(lines)
    act.notify = ()  # fixing mode or owner does not change the secret
    return act


# ------------------------------------------------------------------------- packages
def plan_apt(facts: Facts, packages: dict[str, str | None], *, update: bool = True) -> Action:
    """Ensure Debian packages are installed (at a version, when pinned).

    Example: ``plan_apt(facts, {"python3-venv": None, "sudo": None})``
    """
    act = Action("apt " + ", ".join(sorted(packages)), long=True)
    want: list[str] = []
    lines: list[str] = []
    for name, version in sorted(packages.items()):
        have = facts.packages.get(name)
        if have is None:
            want.append(f"{name}={version}" if version else name)
            lines.append(f"+ {name} {version or '(latest)'}")
        elif version and have != version:
            want.append(f"{name}={version}")
            lines.append(f"~ {name} {have} -> {version}")
    if want:
        if update:
            act.ops.append(Command([*APT_ENV, "apt-get", "update", "-q"], timeout=600,
                                   fetch=Fetch("apt-lists")))
        act.ops.append(Command([*APT_ENV, "apt-get", "install", "-y", "-q",
                                "--no-install-recommends", "--", *want], timeout=1800,
                               fetch=Fetch("apt", tuple(want))))
    act.diff = "\n".join(lines)
    return act


def pip_constraints_path(venv: str) -> str:
    """Where a virtualenv keeps the pin set its packages were installed with."""
    return f"{venv}/jhprovision-constraints.txt"


def plan_pip(facts: Facts, venv: str, requirements: Sequence[str], *,
             python: str = "/usr/bin/python3", notify: Sequence[str] = (),
             name: str | None = None, constraints: str | None = None,
             have: VenvFact | None = None, installer: str = "pip") -> Action:
    """Ensure a virtualenv at ``venv`` with ``requirements`` ('name' or 'name==version').

    Installed versions are read from dist-info folders; a pin that differs is a change.
    With ``constraints`` (a pin set's text, see ``provision.pins``) every install is
    constrained by it (``pip install -c``, the file kept in the venv), and any installed
    package whose version is not the pin set's is a change too, dependencies included.

    ``have`` replaces what the facts say is there (``provision.envs`` builds a new
    environment from nothing). ``installer`` (``uv`` or ``pip``) makes the venv and
    installs into it: its argv comes from ``provision.installer``.

    Example: ``plan_pip(facts, "/opt/jupyterhub", ["jupyterhub==6.1.1"])``
    """
    act = Action(name or f"pip {venv}", notify=tuple(notify), long=True)
    v = have if have is not None else facts.venv(venv)
    if constraints:
        constraints = effective(constraints, requirements)
    pins = parse(constraints) if constraints else {}
    lines: list[str] = []
    if not v.exists:
        act.ops.append(Command(inst.create_argv(installer, python, venv), timeout=300))
        lines.append(f"+ virtualenv {venv}")
    elif "pip" not in v.dists and (repair := inst.repair_pip_argv(installer, venv)):
        # A virtualenv without pip: `python3 -m venv` was cut short, or failed half way
        # (no ensurepip before python3-venv was installed). Its pip is put back.
        act.ops.append(Command(repair, timeout=300))
        lines.append(f"~ virtualenv {venv}: pip was missing")
    want: list[str] = []
    for req in [*requirements, *inst.seed(installer)]:
        dist, version = req_name_version(req)
        have = v.dists.get(dist) if v.exists else None
        version = version or pins.get(dist)
        if have is None:
            want.append(f"{dist}=={version}" if version else req)
            lines.append(f"+ {dist} {version or '(latest)'}")
        elif version and not same_version(have, version):
            want.append(f"{dist}=={version}")
            lines.append(f"~ {dist} {have} -> {version}")
    named = {req_name_version(r)[0] for r in requirements}
    for dist, have in sorted(v.dists.items() if v.exists else ()):
        pin = pins.get(dist)
        if pin and dist not in named and not same_version(have, pin):
            want.append(f"{dist}=={pin}")
            lines.append(f"~ {dist} {have} -> {pin} (pin set)")
    if constraints:
        path = pip_constraints_path(venv)
        if v.constraints != constraints:
            act.ops.append(Upload(path, constraints.encode(), "0644"))
            lines.append(f"~ {path}: the pin set")
    pip = inst.install_argv(installer, venv, pip_constraints_path(venv) if constraints else None)
    if want:
        act.ops.append(Command([*pip, "--", *want], timeout=1800,
                               fetch=Fetch("pip", tuple(want), constraints, python)))
    if not act.ops:
        act.notify = ()
    elif not want and v.exists:
        act.notify = ()  # only the pin set's file: nothing installed changed
    act.diff = "\n".join(lines)
    return act


def plan_npm(facts: Facts, prefix: str, package: str, version: str, *, npm: Sequence[str],
             path_env: str, notify: Sequence[str] = ()) -> Action:
    """Ensure ``package@version`` is installed globally under ``prefix`` by ``npm`` (argv).

    The installed version is read from its package.json (the fact
    ``{prefix}/lib/node_modules/{package}/package.json`` must be requested with content).
    ``--engine-strict`` makes npm refuse a Node.js its engines field rejects.
    """
    act = Action(f"npm {package}@{version}", notify=tuple(notify), long=True)
    data = facts.json_file(npm_package_json(prefix, package)) or {}
    have = data.get("version")
    if have == version:
        return Action(act.name)
    act.ops.append(Command(
        # NODE_EXTRA_CA_CERTS: trust the host's CA store (site CAs added with
        # update-ca-certificates), not only the CAs built into Node.js.
        ["env", f"PATH={path_env}", "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt",
         *npm, "install", "--global", "--prefix", prefix,
         "--engine-strict", "--no-fund", "--no-audit", "--no-update-notifier",
         "--", f"{package}@{version}"], timeout=900, fetch=Fetch("npm", (f"{package}@{version}",))))
    act.diff = f"+ {package} {version}" if have is None else f"~ {package} {have} -> {version}"
    return act


def npm_package_json(prefix: str, package: str) -> str:
    return f"{prefix}/lib/node_modules/{package}/package.json"


# -------------------------------------------------------------------------- systemd
def plan_unit(facts: Facts, path: str, content: str, *, notify: Sequence[str] = (),
              validate: Sequence[str] | None = None) -> Action:
    """Ensure a unit file; ``systemctl daemon-reload`` runs only when it changed."""
    act = plan_file(facts, path, content, mode="0644", validate=validate, notify=notify)
    unit = path.rsplit("/", 1)[-1]
    act.name = f"unit {unit}"
    if any(isinstance(op, Upload) for op in act.ops):
        act.ops.append(Command(["systemctl", "daemon-reload"]))
    elif facts.unit(unit).get("NeedDaemonReload") == "yes":
        # Right file, but systemd still runs the old one (a run died before reloading).
        act.ops.append(Command(["systemctl", "daemon-reload"]))
        act.diff = (act.diff + f"\n~ {unit}: systemd reloads the changed unit file").strip()
    else:
        act.notify = ()
    return act


def plan_service(facts: Facts, unit: str, *, enabled: bool = True,
                 running: bool | None = True) -> Action:
    """Ensure ``unit`` is enabled and active (does not restart a running service).

    ``running=None`` leaves the state alone (a handler starts it).

    Example: ``plan_service(facts, "jupyterhub.service")``
    """
    act = Action(f"service {unit}")
    props = facts.unit(unit)
    # enabled-runtime does not survive a reboot: it counts as not enabled.
    is_enabled = props.get("UnitFileState") in ("enabled", "static")
    is_active = props.get("ActiveState") in ("active", "reloading", "activating")
    lines = []
    if enabled and not is_enabled:
        act.ops.append(Command(["systemctl", "enable", "--quiet", "--", unit]))
        lines.append(f"~ {unit}: {props.get('UnitFileState') or 'not installed'} -> enabled")
    if running and not is_active:
        act.ops.append(Command(["systemctl", "start", "--", unit], timeout=180))
        lines.append(f"~ {unit}: {props.get('ActiveState') or 'inactive'} -> active")
    elif running is False and is_active:
        act.ops.append(Command(["systemctl", "stop", "--", unit], timeout=180))
        lines.append(f"~ {unit}: active -> stopped")
    act.diff = "\n".join(lines)
    return act


def plan_service_started_by(facts: Facts, unit: str, handler: str) -> Action:
    """Ensure ``unit`` is enabled; when it is not running, have ``handler`` start it.

    Starting is left to the handler so that a stopped or crashed service is started once,
    at the end, after everything it depends on is in place (and checked by the handler).
    A failed unit's start limit is reset so that the handler's start is not refused.
    """
    act = plan_service(facts, unit, running=None)
    if facts.unit(unit).get("ActiveState") != "active":
        act.ops.append(Command(["systemctl", "reset-failed", "--", unit]))
        act.notify = (handler,)
        act.diff = (act.diff + f"\n~ {unit}: not running -> started").strip()
    return act


def plan_absent(facts: Facts, path: str, *, notify: Sequence[str] = ()) -> Action:
    """Ensure ``path`` does not exist (a file or an empty directory)."""
    act = Action(f"absent {path}", notify=tuple(notify))
    f = facts.file(path)
    if f.exists and f.type == "dir":
        act.ops.append(Command(["rmdir", "--", path]))  # only when empty: never rm -r
        act.diff = f"- {path}/"
    elif f.exists:
        act.ops.append(Command(["rm", "-f", "--", path]))
        act.diff = f"- {path}"
    else:
        act.notify = ()
    return act
