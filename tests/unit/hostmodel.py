"""A modelled Debian host for unit tests, answering fact requests like the real collector.

``HostState`` declares a host (passwd/group/shadow text, files, dpkg packages, virtualenvs,
systemd units). ``collect`` runs the real ``provision/remote/collect.py`` ``main`` with only
its file-system layer swapped (``open``, ``file_fact``, ``venv_fact``, ``systemctl_show``
serve the declared state), so what a role sees is exactly what it asked for: an unrequested
path is missing, a secret file has neither content nor hash, a password hash never leaves.

``converged(v)`` is the host the roles leave behind: the real runner converges a fresh host
whose commands ``Shell`` carries out on the model (useradd adds the account, a put writes
the file, pip adds dist-infos...), so no hand-written list of files can drift from the
roles. ``fresh()`` is this Debian 12 machine's captured passwd/group and nothing else.
"""

from __future__ import annotations

import ast
import base64
import copy
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from faketransport import FakeTransport
from provision.config import all_variables, defaults, validate_host
from provision.facts import (
    COLLECTOR_ARGV,
    FactRequest,
    Facts,
    collector_source,
    parse_collected,
    parse_group,
    parse_passwd,
)
from provision.inventory import Host
from provision.role import load_roles
from provision import envs
from provision.steps import npm_package_json
from roles import jupyterhub, userenv

HERE = Path(__file__).resolve().parent
CAPTURED = HERE / "captured"
BASE_PASSWD = (CAPTURED / "passwd.txt").read_text()
BASE_GROUP = (CAPTURED / "group.txt").read_text()
OS_RELEASE = (CAPTURED / "os-release.txt").read_text()

# The order systemd 252 prints these properties in (service properties, then unit ones).
SYSTEMD_ORDER = ("MainPID", "ExecMainStartTimestampMonotonic", "Id", "LoadState",
                 "ActiveState", "SubState", "FragmentPath", "UnitFileState",
                 "NeedDaemonReload")
RUNNING = {"ActiveState": "active", "SubState": "running", "UnitFileState": "enabled",
           "MainPID": "4242", "ExecMainStartTimestampMonotonic": "51234567"}
DEBIAN_NODE = "18.19.0+dfsg-6~deb12u2"
DEBIAN_NPM = "9.2.0~ds1-2"
ALICE_HASH = "$6$rounds=5000$saltsalt$" + "A" * 86
_COLLECTOR = compile(collector_source(), "provision/remote/collect.py", "exec")

# ----------------------------------------------------------------------- the host model


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def set_line(text: str, name: str, line: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.split(":", 1)[0] != name]
    return "\n".join([*lines, line]) + "\n"


@dataclass
class HostState:
    """What a host holds, declared; ``collect`` answers a fact request from it."""

    passwd: str = BASE_PASSWD
    group: str = BASE_GROUP
    shadow: str = ""
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    dpkg: dict[str, str] = field(default_factory=dict)  # name -> version, or a whole stanza
    venvs: dict[str, list[str]] = field(default_factory=dict)  # path -> dist-info names
    units: dict[str, dict[str, str]] = field(default_factory=dict)
    python: str = "3.11.2"
    euid: int = 0

    # ------------------------------------------------------------- building
    def add_user(self, name: str, uid: int, *, gid: int | None = None, comment: str = "",
                 home: str | None = None, shell: str = "/bin/bash",
                 password: str = "!", expire: str = "") -> None:
        gid = uid if gid is None else gid
        self.passwd = set_line(self.passwd, name,
                                f"{name}:x:{uid}:{gid}:{comment}:{home or '/home/' + name}:"
                                f"{shell}")
        if name not in parse_group(self.group):
            self.add_group(name, gid)
        self.shadow = set_line(self.shadow, name,
                                f"{name}:{password}:20000:0:99999:7::{expire}:")

    def add_group(self, name: str, gid: int, members: list[str] | tuple = ()) -> None:
        cur = parse_group(self.group).get(name)
        gid = cur.gid if cur else gid
        self.group = set_line(self.group, name, f"{name}:x:{gid}:{','.join(members)}")

    def add_file(self, path: str, content: str | bytes, mode: str = "0644",
                 owner: str = "root", group: str = "root") -> None:
        data = content.encode() if isinstance(content, str) else content
        self.files[path] = {"type": "file", "mode": mode, "owner": owner, "group": group,
                            "content": data}

    def add_dir(self, path: str, mode: str = "0755", owner: str = "root",
                group: str = "root") -> None:
        self.files[path] = {"type": "dir", "mode": mode, "owner": owner, "group": group}

    def dpkg_status(self) -> str:
        stanzas = []
        for name, value in sorted(self.dpkg.items()):
            if "\n" in value:
                stanzas.append(value.strip("\n"))
            else:
                stanzas.append(f"Package: {name}\nStatus: install ok installed\n"
                               f"Priority: optional\nSection: misc\nArchitecture: amd64\n"
                               f"Version: {value}\nDescription: {name}\n a package")
        return "\n\n".join(stanzas) + "\n"

    # ------------------------------------------------- the collector's file-system layer
    def _open(self, path: str, *args: Any, **kwargs: Any) -> io.StringIO:
        texts = {"/etc/passwd": self.passwd, "/etc/group": self.group,
                 "/etc/shadow": self.shadow, "/var/lib/dpkg/status": self.dpkg_status(),
                 "/etc/os-release": OS_RELEASE}
        f = self.files.get(path)
        if f and f["type"] == "file":
            texts[path] = f["content"].decode("utf-8", "replace")
        if path not in texts:
            raise FileNotFoundError(2, "No such file or directory", path)
        return io.StringIO(texts[path])

    def _file_fact(self, path: str, want_content: bool, read: bool = True) -> dict[str, Any]:
        f = self.files.get(path)
        if f is None:
            return {"exists": False}
        users = parse_passwd(self.passwd)
        groups = parse_group(self.group)
        fact = {"exists": True, "type": f["type"], "mode": f["mode"], "owner": f["owner"],
                "group": f["group"],
                "uid": users[f["owner"]].uid if f["owner"] in users else 0,
                "gid": groups[f["group"]].gid if f["group"] in groups else 0,
                "size": 4096}
        if f["type"] == "link":
            fact["target"] = f["target"]
            fact["size"] = len(f["target"])
        if f["type"] == "file":
            data = f["content"]
            fact["size"] = len(data)
            if not read:  # the collector does not read secret files
                return fact
            fact["sha256"] = _sha(data)
            if want_content and len(data) <= 256 * 1024:
                fact["content_b64"] = base64.b64encode(data).decode()
        return fact

    def real(self, path: str) -> str:
        """``path`` with a symlink at it followed (a venv's path links to its environment)."""
        f = self.files.get(path)
        return f["target"] if f and f["type"] == "link" else path

    def _venv_fact(self, root: str) -> dict[str, Any]:
        root = self.real(root)
        if root not in self.venvs:
            return {"exists": False, "dists": [], "pyvenv_cfg": None}
        cfg = f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {self.python}\n"
        held = self.files.get(f"{root}/jhprovision-constraints.txt", {}).get("content")
        return {"exists": True, "dists": list(self.venvs[root]), "pyvenv_cfg": cfg,
                "constraints": held.decode() if held is not None else None}

    def _systemctl_show(self, units: list[str], props: list[str]) -> str:
        if not units:
            return ""
        blocks = []
        for name in units:
            p = {"MainPID": "0", "ExecMainStartTimestampMonotonic": "0", "Id": name,
                 "LoadState": "not-found", "ActiveState": "inactive", "SubState": "dead",
                 "FragmentPath": "", "UnitFileState": "", "NeedDaemonReload": "no"}
            if name in self.units:
                p.update(LoadState="loaded", FragmentPath=f"/etc/systemd/system/{name}",
                         UnitFileState="disabled")
                p.update(self.units[name])
            blocks.append("\n".join(f"{k}={p[k]}" for k in SYSTEMD_ORDER if k in props))
        return "\n\n".join(blocks) + "\n"

    def _expanduser(self, path: str) -> str:
        """'~alice/x' -> alice's home from the modelled passwd (unchanged if unknown)."""
        name, sep, rest = path[1:].partition("/")
        entry = parse_passwd(self.passwd).get(name)
        if entry is None:
            return path
        return entry.home + (sep + rest if sep else "")

    # ------------------------------------------------------------------ answering
    def collect(self, request: dict[str, Any]) -> str:
        """The collector's stdout for ``request`` (the JSON ``FactRequest.to_json`` makes)."""
        ns: dict[str, Any] = {"__name__": "collect"}
        exec(_COLLECTOR, ns)  # noqa: S102 - the project's own collector
        out = io.StringIO()
        version = tuple(int(x) for x in self.python.split("."))
        ns.update(open=self._open, file_fact=self._file_fact, venv_fact=self._venv_fact,
                  systemctl_show=self._systemctl_show,
                  sys=SimpleNamespace(stdout=out, version_info=version),
                  os=SimpleNamespace(geteuid=lambda: self.euid,
                                     path=SimpleNamespace(expanduser=self._expanduser)))
        ns["main"](copy.deepcopy(request))
        return out.getvalue()

    def facts(self, request: FactRequest) -> Facts:
        return parse_collected(json.loads(self.collect(json.loads(request.to_json()))))

    def everything(self) -> FactRequest:
        """A request naming every declared thing (content of every file, no secret)."""
        files = set(self.files)
        return FactRequest(
            files=files, content={p for p, f in self.files.items() if f["type"] == "file"},
            dpkg=set(self.dpkg), venvs=set(self.venvs), units=set(self.units),
            shadow={ln.split(":", 1)[0] for ln in self.shadow.splitlines() if ln},
        )

    def responder(self, fail: Callable[[list[str]], tuple[int, str, str] | None] | None = None
                  ) -> Callable[[list[str], bytes | None], tuple[int, str, str]]:
        """A ``FakeTransport`` responder: the collector answers ``python3 -``; every other
        command succeeds unless ``fail(argv)`` returns an (rc, out, err)."""

        def respond(argv: list[str], stdin: bytes | None) -> tuple[int, str, str]:
            if argv == COLLECTOR_ARGV:
                return 0, self.collect(request_from_program(stdin or b"")), ""
            if fail:
                answer = fail(argv)
                if answer:
                    return answer
            return 0, "", ""

        return respond


# ------------------------------------------------------------- running the roles' ops
# What Debian 12's apt gives for the packages the roles install (versions from the lab).
APT_VERSIONS = {"sudo": "1.9.13p3-1+deb12u1", "python3-venv": "3.11.2-1+b1",
                "nodejs": DEBIAN_NODE, "npm": DEBIAN_NPM, "apache2": "2.4.71-1~deb12u1",
                "openssl": "3.0.20-1~deb12u2", "libpam-google-authenticator": "20191231-2",
                "graphviz": "2.42.2-7+deb12u1"}
DEBIAN_HOME_MODE = "0700"  # login.defs HOME_MODE on Debian 12


class UnmodelledCommand(AssertionError):
    """A role ran a command the host model does not know: model it (here), or the
    converged host would silently differ from what the role really leaves behind."""


class Shell:
    """Runs the commands roles and handlers send, on a ``HostState``: the model's answer
    to each argv is the change the real command makes (useradd adds the account, a put
    writes the file, pip adds dist-infos, systemctl restart leaves the unit running...)."""

    def __init__(self, st: HostState) -> None:
        self.st = st
        self.pid = 4242

    # helpers
    def _users(self) -> dict[str, Any]:
        return parse_passwd(self.st.passwd)

    def _groups(self) -> dict[str, Any]:
        return parse_group(self.st.group)

    def _free_id(self, taken: set[int], system: bool) -> int:
        if system:  # shadow allocates system ids from the top down
            return max(i for i in range(100, 1000) if i not in taken)
        return min(i for i in range(1000, 60000) if i not in taken)

    def _owner_of(self, user: str) -> tuple[str, str]:
        entry = self._users()[user]
        group = next(g.name for g in self._groups().values() if g.gid == entry.gid)
        return user, group

    def _set_members(self, group: str, change: Callable[[list[str]], list[str]]) -> None:
        g = self._groups()[group]
        self.st.group = set_line(self.st.group, group,
                                 f"{group}:x:{g.gid}:{','.join(change(list(g.members)))}")

    def _shadow(self, name: str, field_no: int, value: str) -> None:
        line = next(ln for ln in self.st.shadow.splitlines() if ln.split(":", 1)[0] == name)
        parts = line.split(":")
        parts[field_no] = value(parts[field_no]) if callable(value) else value
        self.st.shadow = set_line(self.st.shadow, name, ":".join(parts))

    def _running(self, unit: str) -> None:
        props = self.st.units.setdefault(unit, {"UnitFileState": "disabled"})
        self.pid += 1
        props.update(ActiveState="active", SubState="running", MainPID=str(self.pid),
                     ExecMainStartTimestampMonotonic=str(51234567 + self.pid))

    # the commands
    def __call__(self, argv: list[str], stdin: bytes | None) -> tuple[int, str, str]:
        as_user = None
        if argv[:2] == ["runuser", "-u"]:
            as_user, argv = argv[2], argv[4:]
        if argv == COLLECTOR_ARGV:
            return 0, self.st.collect(request_from_program(stdin or b"")), ""
        if argv[:1] == ["env"]:  # env NAME=VALUE... COMMAND ARGS (whose own '=' stay)
            argv = argv[1:]
            while argv and "=" in argv[0] and not argv[0].startswith("-"):
                argv = argv[1:]
        handler = getattr(self, "_" + argv[0].rsplit("/", 1)[-1].replace("-", "_"), None)
        if handler is None:
            raise UnmodelledCommand(f"the host model does not run {argv[:4]}")
        return handler(argv, stdin, as_user) or (0, "", "")

    def _sh(self, argv, stdin, as_user):
        from provision.runner import MARK_PENDING
        from provision.steps import SECRET_SCRIPT
        from provision.transport import PUT_SCRIPT

        script, args = argv[2], argv[4:]
        if script == MARK_PENDING:
            self.st.add_dir(args[0], "0700")
            self.st.add_file(args[1], "")
        elif script == SECRET_SCRIPT:
            path, prefix = args
            if not self.st.files.get(path, {}).get("content"):
                self.st.add_file(path, prefix + _sha(path.encode()) + "\n", "0600")
        elif script == PUT_SCRIPT:
            path, mode, owner, group = args[:4]
            self.st.add_file(path, stdin or b"", mode, owner, group)
        elif script == envs.SWITCH:
            self.switch(*args)
        elif script == envs.ADOPT:
            link, target, mark = args
            self.st.files[target] = self.st.files.pop(link)
            self.st.venvs[target] = self.st.venvs.pop(link)
            for name in [n for n in self.st.files if n.startswith(link + "/")]:
                self.st.files[target + name[len(link):]] = self.st.files.pop(name)
            self.switch(link, target, "")
            self.st.add_file(f"{target}/{mark}", target.rsplit("/", 1)[1] + "\n")
        elif script == envs.PRUNE:
            return 0, "".join(f"{p}\n" for p in self.prune(args[0], args[1:])), ""
        elif script == jupyterhub.ROLLBACK_SCRIPT:
            unit, link, previous, backup, db = args[:5]
            self.st.units.setdefault(unit, {}).update(ActiveState="inactive", SubState="dead")
            if previous:
                self.switch(link, previous, args[6])
            if backup:
                self.st.files[db] = copy.deepcopy(self.st.files[backup])
        elif script == jupyterhub.PUT_BACK_CONFIG:
            if args[0] not in self.st.files:
                return 1, "", ""
            self.st.files[args[1]] = self.st.files.pop(args[0])
        elif script == jupyterhub.PROVEN_SCRIPT:
            self.st.add_file(args[1], args[0] + "\n")
            self.st.files.pop(args[2], None)
        else:
            raise UnmodelledCommand(f"the host model does not run the script {script[:60]!r}")

    def switch(self, link: str, target: str, legacy: str) -> None:
        f = self.st.files.get(link)
        if f and f["type"] == "dir":  # a plain-directory venv moves aside
            self.st.files[legacy] = self.st.files.pop(link)
            self.st.venvs[legacy] = self.st.venvs.pop(link)
        self.st.files[link] = {"type": "link", "mode": "0777", "owner": "root",
                               "group": "root", "target": target}

    def prune(self, where: str, keep: list[str]) -> list[str]:
        gone = sorted(p for p in self.st.venvs if p.startswith(where + "/") and p not in keep)
        for path in gone:
            del self.st.venvs[path]
            for name in [n for n in self.st.files if n.startswith(path + "/")]:
                del self.st.files[name]
        return gone

    def _python3(self, argv, stdin, as_user):
        from roles._common import HEALTH_SCRIPT

        if argv[1:3] == ["-c", HEALTH_SCRIPT]:  # the service answers
            return 0, '{"ok": true, "reason": "", "since": 1796000000, "seconds": 0.4}', ""
        if argv[1:3] == ["-c", jupyterhub.UPGRADE_SCRIPT]:
            unit, link, target, db, backups = argv[3:8]
            cur = self.st.files.get(link)
            previous = (None if cur is None else argv[12] if cur["type"] == "dir"
                        else cur["target"] if cur["target"] != target else None)
            was = self.jupyterhub_version(link) if cur else None
            self.st.units.setdefault(unit, {}).update(ActiveState="inactive", SubState="dead")
            backup = None
            if db in self.st.files:
                backup = f"{backups}/jupyterhub-20261203T120000Z-{was}.sqlite"
                self.st.files[backup] = copy.deepcopy(self.st.files[db])
            self.switch(link, target, argv[12])
            out = {"previous": previous, "from": was, "backup": backup}
            if db in self.st.files:
                out.update(upgrade_rc=0, upgrade_log=[])
            return 0, json.dumps(out) + "\n", ""
        if argv[1:3] == ["-c", envs.RELINK]:  # the model's venvs hold no scripts
            return None
        if argv[1:3] == ["-c", userenv.SWITCH_SCRIPT]:  # no server runs in the model
            link, target, legacy = argv[6], argv[7], argv[9]
            cur = self.st.files.get(link)
            previous = None if cur is None else legacy if cur["type"] == "dir" else cur["target"]
            self.switch(link, target, legacy)
            return 0, json.dumps({"restarted": [], "failed": {}, "hub": True,
                                  "previous": previous}) + "\n", ""
        if argv[1:3] == ["-c", jupyterhub.API_VERSION_SCRIPT]:
            return 0, self.jupyterhub_version("/opt/jupyterhub") + "\n", ""
        from provision.steps import NOFOLLOW_CHOWN

        if argv[1:4] == ["-I", "-c", NOFOLLOW_CHOWN]:
            self.st.files[argv[4]].update(owner=argv[5], group=argv[6])
            return None
        if argv[1:3] == ["-m", "venv"]:
            self.st.venvs[argv[-1]] = ["pip-23.0.1.dist-info"]
            return None
        raise UnmodelledCommand(f"the host model does not run python3 {argv[1:3]}")

    def jupyterhub_version(self, venv: str) -> str:
        for d in self.st.venvs.get(self.st.real(venv), []):
            if d.startswith("jupyterhub-"):
                return d[len("jupyterhub-"):-len(".dist-info")]
        return ""

    def _journalctl(self, argv, stdin, as_user):  # the model's services log nothing
        return 0, "", ""

    def _test(self, argv, stdin, as_user):
        return (0 if argv[-1] in self.st.files else 1), "", ""

    def _pip(self, argv, stdin, as_user):
        venv = self.st.real(argv[0].rsplit("/bin/", 1)[0])
        self._add_dists(venv, argv)

    def _uv(self, argv, stdin, as_user):  # provision.installer's argv, the installer uv
        if argv[1] == "venv":
            self.st.venvs[argv[-1]] = []  # uv venv: no pip (the first install adds it)
        elif argv[1:3] == ["pip", "install"]:
            python = argv[argv.index("--python") + 1]
            self._add_dists(self.st.real(python.rsplit("/bin/", 1)[0]), argv)
        else:
            raise UnmodelledCommand(f"the host model does not run uv {argv[1:3]}")

    def _add_dists(self, venv, argv):
        dists = self.st.venvs[venv]
        for req in argv[argv.index("--") + 1:]:
            name, _, version = req.partition("==")
            dist = name.split("[")[0].replace("-", "_")
            dists[:] = [d for d in dists if d.lower().split("-")[0] != dist.lower()]
            dists.append(f"{dist}-{version or '1.0'}.dist-info")

    def _node(self, argv, stdin, as_user):  # npm, run by the wheel's node
        from roles import proxy

        prefix = argv[argv.index("--prefix") + 1]
        package, _, version = argv[-1].rpartition("@")
        major = next((m for p, m in proxy.ENGINES_MIN_MAJOR.items()
                      if version.startswith(p)), 10)
        self.st.add_file(npm_package_json(prefix, package), json.dumps(
            {"name": package, "version": version, "engines": {"node": f">= {major}"}},
            indent=2))

    _npm = _node

    def _apt_get(self, argv, stdin, as_user):
        if argv[1] == "install":
            for pkg in argv[argv.index("--") + 1:]:
                name, _, version = pkg.partition("=")
                self.st.dpkg[name] = version or APT_VERSIONS[name]

    def _groupadd(self, argv, stdin, as_user):
        name = argv[-1]
        gid = int(argv[argv.index("--gid") + 1]) if "--gid" in argv else \
            self._free_id({g.gid for g in self._groups().values()}, "--system" in argv)
        self.st.add_group(name, gid)

    def _gpasswd(self, argv, stdin, as_user):
        op, user, group = argv[1:4]
        if op == "--members":  # the whole list at once ('' empties it)
            users = self._users()
            listed = [u for u in user.split(",") if u]
            unknown = [u for u in listed if u not in users]
            if unknown:  # gpasswd refuses the whole list
                return 3, "", f"gpasswd: user '{unknown[0]}' does not exist\n"
            self._set_members(group, lambda m: listed)
        elif op == "--add":
            self._set_members(group, lambda m: m + [user] if user not in m else m)
        else:
            self._set_members(group, lambda m: [x for x in m if x != user])

    def _useradd(self, argv, stdin, as_user):
        name = argv[-1]

        def opt(flag, default=None):
            return argv[argv.index(flag) + 1] if flag in argv else default

        system = "--system" in argv
        taken = {u.uid for u in self._users().values()}
        uid = int(opt("--uid")) if opt("--uid") else self._free_id(taken, system)
        gid = self._groups()[opt("--gid")].gid if opt("--gid") else uid
        home = opt("--home-dir", f"/home/{name}")
        self.st.add_user(name, uid, gid=gid, comment=opt("--comment", ""), home=home,
                         shell=opt("--shell", "/bin/sh"))
        keys = dict(argv[i + 1].partition("=")[::2] for i, a in enumerate(argv)
                    if a == "--key")
        if "--create-home" in argv:
            self.st.add_dir(home, keys.get("HOME_MODE", DEBIAN_HOME_MODE), name, name)

    def _usermod(self, argv, stdin, as_user):
        name = argv[-1]
        if "--lock" in argv:
            self._shadow(name, 1, lambda pw: "!" + pw)
        if "--expiredate" in argv:
            self._shadow(name, 7, argv[argv.index("--expiredate") + 1])
        if {"--uid", "--shell", "--home", "--comment", "--unlock"} & set(argv):
            raise UnmodelledCommand(f"the host model does not run {argv}")

    def _chpasswd(self, argv, stdin, as_user):
        for line in (stdin or b"").decode().splitlines():  # one account per line
            name, _, hashed = line.partition(":")
            if name not in self._users():
                return 1, "", f"chpasswd: line 1: user '{name}' does not exist\n"
            self._shadow(name, 1, hashed)

    def _chmod(self, argv, stdin, as_user):
        self.st.files[argv[-1]]["mode"] = f"{int(argv[1], 8):04o}"

    def _chown(self, argv, stdin, as_user):
        owner, _, group = argv[-3].partition(":")
        self.st.files[argv[-1]].update(owner=owner, group=group)

    def _install(self, argv, stdin, as_user):
        mode = argv[argv.index("-m") + 1]
        owner = argv[argv.index("-o") + 1] if "-o" in argv else "root"
        group = argv[argv.index("-g") + 1] if "-g" in argv else "root"
        self.st.add_dir(argv[-1], mode, owner, group)

    def _mkdir(self, argv, stdin, as_user):
        owner, group = self._owner_of(as_user) if as_user else ("root", "root")
        self.st.add_dir(argv[-1], argv[argv.index("-m") + 1], owner, group)

    def _ln(self, argv, stdin, as_user):
        assert argv[1] == "-sfn" and argv[2] == "--", argv
        existing = self.st.files.get(argv[-1])
        assert existing is None or existing["type"] == "link", f"ln -sfn over {existing}"
        owner, group = self._owner_of(as_user) if as_user else ("root", "root")
        self.st.files[argv[-1]] = {"type": "link", "mode": "0777", "owner": owner,
                                   "group": group, "target": argv[-2]}

    def _cp(self, argv, stdin, as_user):  # the hub's config kept before a new one
        src, dst = argv[-2], argv[-1]
        if self.st.files.get(src, {}).get("type") != "file":
            return 1, "", f"cp: cannot stat '{src}': No such file or directory"
        self.st.files[dst] = copy.deepcopy(self.st.files[src])
        return None

    def _rm(self, argv, stdin, as_user):
        path = argv[-1]
        self.st.files.pop(path, None)
        if "-rf" in argv:
            self.st.venvs.pop(path, None)
            for name in [n for n in self.st.files if n.startswith(path + "/")]:
                del self.st.files[name]

    def _systemctl(self, argv, stdin, as_user):
        verb, unit = argv[1], argv[-1]
        if verb == "daemon-reload":
            return None
        if verb == "enable":
            self.st.units.setdefault(unit, {})["UnitFileState"] = "enabled"
        elif verb in ("restart", "start"):
            self._running(unit)
        elif verb == "stop":
            self.st.units.setdefault(unit, {}).update(ActiveState="inactive", SubState="dead")
        elif verb == "is-active":
            active = self.st.units.get(unit, {}).get("ActiveState") == "active"
            return (0 if active else 3), "", ""
        elif verb != "reset-failed":
            raise UnmodelledCommand(f"the host model does not run systemctl {verb}")
        return None


def request_from_program(program: bytes) -> dict[str, Any]:
    """The request ``provision.facts.gather`` appends to the collector as its last line."""
    last = program.decode().rstrip("\n").rsplit("\n", 1)[-1]
    head, tail = "main(", ")"
    if not (last.startswith(head) and last.endswith(tail)):
        raise ValueError(f"not a collector program: last line {last[:80]!r}")
    return ast.literal_eval(last[len(head):-len(tail)])


# ---------------------------------------------------------------------- inventories
ROLES = load_roles()
VARIABLES = all_variables(ROLES)
KEY_BOB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJvYmJvYmJvYmJvYmJvYmJvYmJvYmJvYmJvYmJvYmJv bob@lab"

LAB_USERS = [
    {"name": "alice", "uid": 2001, "admin": True, "groups": ["docker"],
     "password_hash": ALICE_HASH, "comment": "Alice Liddell"},
    {"name": "bob", "authorized_keys": [KEY_BOB], "groups": ["docker", "gpu"]},
    {"name": "carol", "uid": 2003, "state": "locked"},
    {"name": "dave", "uid": 2004, "state": "absent"},
]


def inventory_vars(**overrides: Any) -> dict[str, Any]:
    """A host's merged variables: role defaults, the lab users, then ``overrides``.

    Validated like ``invoke provision`` would, so a test never plans an inventory the
    engine would refuse.
    """
    v = defaults(VARIABLES)
    v["users"] = copy.deepcopy(LAB_USERS)
    v.update(copy.deepcopy(overrides))
    v["inventory_hostname"] = "lab1"
    problems = validate_host(Host("lab1", vars=v), VARIABLES, ROLES)
    if problems:
        raise AssertionError("test inventory is invalid:\n" + "\n".join(problems))
    return v


# ------------------------------------------------------------------- host states
def fresh() -> HostState:
    """This Debian 12 machine's accounts (captured), nothing installed by the roles."""
    return HostState()


# Apache's state is modelled by hand on top (test_apache.converged_apache): its packages
# bring default sites and modules the model would have to invent.
MODELLED_ROLES = [r for r in ROLES if r.NAME != "apache"]


def converged(v: dict[str, Any], start: HostState | None = None) -> HostState:
    """The host the roles leave behind for ``v``: a fresh host (or ``start``) on which the
    runner applied every enabled role's planned ops and ran its handlers (through
    ``Shell``)."""
    from provision.display import Display
    from provision.runner import run

    key = json.dumps(v, sort_keys=True, default=repr)
    if start is None and key in _CONVERGED:
        return copy.deepcopy(_CONVERGED[key])
    st = start if start is not None else HostState()
    shell = Shell(st)
    report = run([Host("lab1", vars=v)], MODELLED_ROLES,
                 display=Display(io.StringIO(), color=False),
                 transport_factory=lambda host: FakeTransport(host.name, responder=shell))
    rep = report.hosts["lab1"]
    if rep.failed:
        raise AssertionError(f"converging the model host failed: {rep.error}\n"
                             + "\n".join(f"{s.name}: {s.error}" for s in rep.steps
                                         if s.status == "failed"))
    if start is None:
        _CONVERGED[key] = copy.deepcopy(st)
    return st


_CONVERGED: dict[str, HostState] = {}


def role(name: str) -> Any:
    return next(r for r in ROLES if r.NAME == name)


def request_for(v: dict[str, Any]) -> FactRequest:
    """What the runner asks a host for: every enabled role's request, merged."""
    from provision.role import role_enabled

    req = FactRequest()
    for r in ROLES:
        if role_enabled(r, v):
            req.merge(r.facts(v) if hasattr(r, "facts") else FactRequest())
    return req
