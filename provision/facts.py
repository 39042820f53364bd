"""Facts: one batched read of a host's state, and pure parsers for what it returns.

Roles say what they need in a ``FactRequest``; the runner merges every role's request and
sends ``remote/collect.py`` once per host (one round trip, however many users, files and
packages the inventory names). Versions are read from files (dpkg status, dist-info
folder names, package.json), never by running pip or npm, which cost over a second each.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from . import remote
from .errors import ProvisionError
from .transport import Transport

COLLECTOR_ARGV = ["python3", "-I", "-S", "-"]

UNIT_PROPS = (
    "Id", "LoadState", "ActiveState", "SubState", "UnitFileState", "MainPID",
    "NeedDaemonReload", "FragmentPath", "ExecMainStartTimestampMonotonic",
)


@dataclass
class FactRequest:
    """What a run needs to know about a host; requests from all roles are merged.

    A file path may start with ``~user``: the collector looks it up in that user's real
    home, and planners find it under its real path.
    """

    files: set[str] = field(default_factory=set)
    content: set[str] = field(default_factory=set)
    secret: set[str] = field(default_factory=set)
    read: set[str] = field(default_factory=lambda: {"/etc/passwd", "/etc/group"})
    dpkg: set[str] = field(default_factory=set)
    venvs: set[str] = field(default_factory=set)
    units: set[str] = field(default_factory=set)
    shadow: set[str] = field(default_factory=set)
    password: dict[str, str] = field(default_factory=dict)

    def merge(self, other: FactRequest) -> FactRequest:
        for name in ("files", "content", "secret", "read", "dpkg", "venvs", "units", "shadow"):
            getattr(self, name).update(getattr(other, name))
        self.password.update(other.password)
        return self

    def to_json(self) -> str:
        return json.dumps({
            "files": sorted(self.files | self.content | self.secret),
            "content": sorted(self.content),
            "secret": sorted(self.secret),
            "read": sorted(self.read),
            "dpkg": sorted(self.dpkg),
            "venvs": sorted(self.venvs),
            "units": sorted(self.units),
            "unit_props": list(UNIT_PROPS),
            "shadow": sorted(self.shadow | set(self.password)),
            "password": self.password,
        })


# ------------------------------------------------------------------------- parsers
@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    comment: str
    home: str
    shell: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def parse_passwd(text: str) -> dict[str, PasswdEntry]:
    """Parse /etc/passwd text into entries by name (malformed lines are skipped)."""
    out: dict[str, PasswdEntry] = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) != 7 or not parts[2].isdigit() or not parts[3].isdigit():
            continue
        out[parts[0]] = PasswdEntry(parts[0], int(parts[2]), int(parts[3]), parts[4],
                                    parts[5], parts[6])
    return out


def parse_group(text: str) -> dict[str, GroupEntry]:
    """Parse /etc/group text into entries by name."""
    out: dict[str, GroupEntry] = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) != 4 or not parts[2].isdigit():
            continue
        members = tuple(m for m in parts[3].split(",") if m)
        out[parts[0]] = GroupEntry(parts[0], int(parts[2]), members)
    return out


def parse_dpkg_stanza(stanza: str) -> str | None:
    """The installed version from a dpkg status stanza, or None if not fully installed."""
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        if line[:1] in (" ", "\t") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    if fields.get("Status", "").split()[-1:] != ["installed"]:
        return None
    return fields.get("Version")


_DIST_RE = re.compile(r"^(?P<name>.+?)-(?P<version>[^-]+)\.dist-info$")


def normalize_dist(name: str) -> str:
    """PEP 503 normalization: 'Jupyter_Server' and 'jupyter-server' are the same dist."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_dist_infos(names: list[str]) -> dict[str, str]:
    """Map normalized distribution name to version from ``*.dist-info`` folder names."""
    out: dict[str, str] = {}
    for entry in names:
        m = _DIST_RE.match(entry)
        if m:
            out[normalize_dist(m.group("name"))] = m.group("version")
    return out


def parse_systemctl_show(text: str) -> dict[str, dict[str, str]]:
    """Parse ``systemctl show -p ... UNIT...`` (blank-line separated blocks) by unit Id."""
    out: dict[str, dict[str, str]] = {}
    for block in text.strip().split("\n\n"):
        props: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                props[key] = value
        if "Id" in props:
            out[props["Id"]] = props
    return out


def parse_os_release(text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value.strip().strip('"')
    return out


# --------------------------------------------------------------------------- facts
@dataclass
class FileFact:
    exists: bool
    type: str | None = None
    mode: str | None = None
    owner: str | None = None
    group: str | None = None
    sha256: str | None = None
    content: bytes | None = None
    size: int | None = None
    target: str | None = None


@dataclass
class VenvFact:
    exists: bool
    dists: dict[str, str]
    python_version: str | None
    constraints: str | None = None  # the pin set it was installed with, if any


class UnrequestedFact(LookupError):
    """A planner read a fact its role's ``facts()`` did not request (a programming error)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} was read but not requested: add it to the role's facts()")
        self.what = what


@dataclass
class Facts:
    """A host's state as read in one round trip, parsed."""

    users: dict[str, PasswdEntry]
    groups: dict[str, GroupEntry]
    files: dict[str, FileFact]
    packages: dict[str, str | None]
    venvs: dict[str, VenvFact]
    units: dict[str, dict[str, str]]
    shadow: dict[str, dict[str, Any]]
    reads: dict[str, str | None]
    os: dict[str, str]
    python: str
    euid: int

    #: set by ``restrict``: what one role asked for, {"file"|"unit"|"venv": names}
    requested: dict[str, set[str]] | None = None

    def restrict(self, request: FactRequest) -> Facts:
        """These facts as one role may read them: only what ``request`` asked for.

        A planner reading a fact its role did not request would see "absent" (or another
        role's fact, until that role changes) and plan wrongly: with this view it fails
        loudly instead, naming the fact. ``~user/path`` matches the user's real home, or
        ``/home/user/path`` while the account does not exist (what ``useradd`` will give).
        """
        files = set()
        for path in request.files | request.content | request.secret:
            if path.startswith("~"):
                name, sep, rest = path[1:].partition("/")
                entry = self.users.get(name)
                home = entry.home if entry else f"/home/{name}"
                path = home + (sep + rest if sep else "")
            files.add(path)
        return replace(self, requested={"file": files, "unit": set(request.units),
                                        "venv": set(request.venvs)})

    def _check(self, kind: str, name: str) -> None:
        if self.requested is not None and name not in self.requested[kind]:
            raise UnrequestedFact(f"{kind} {name!r}")

    def file(self, path: str) -> FileFact:
        self._check("file", path)
        return self.files.get(path, FileFact(exists=False))

    def unit(self, name: str) -> dict[str, str]:
        self._check("unit", name)
        return self.units.get(name, {})

    def venv(self, path: str) -> VenvFact:
        self._check("venv", path)
        return self.venvs.get(path, VenvFact(False, {}, None))

    def groups_of(self, user: str) -> set[str]:
        """Supplementary groups of ``user`` (from /etc/group member lists)."""
        return {g.name for g in self.groups.values() if user in g.members}

    def json_file(self, path: str) -> dict | None:
        f = self.file(path)
        if not f.exists or f.content is None:
            return None
        try:
            return json.loads(f.content.decode("utf-8"))
        except ValueError:
            return None


def parse_collected(raw: dict[str, Any]) -> Facts:
    """Turn the collector's JSON into ``Facts`` (pure; tested from captured output)."""
    reads = raw.get("read", {})
    files = {}
    for path, f in raw.get("files", {}).items():
        content = base64.b64decode(f["content_b64"]) if "content_b64" in f else None
        fact = FileFact(
            exists=f.get("exists", False), type=f.get("type"), mode=f.get("mode"),
            owner=f.get("owner"), group=f.get("group"), sha256=f.get("sha256"),
            content=content, size=f.get("size"), target=f.get("target"),
        )
        files[path] = fact
        if f.get("path"):  # '~alice/x' requested: also known by its real path
            files[f["path"]] = fact
    venvs = {}
    for path, v in raw.get("venvs", {}).items():
        cfg = v.get("pyvenv_cfg") or ""
        m = re.search(r"^version(?:_info)?\s*=\s*(\S+)", cfg, re.M)
        venvs[path] = VenvFact(v.get("exists", False), parse_dist_infos(v.get("dists", [])),
                               m.group(1) if m else None, v.get("constraints"))
    return Facts(
        users=parse_passwd(reads.get("/etc/passwd") or ""),
        groups=parse_group(reads.get("/etc/group") or ""),
        files=files,
        packages={k: parse_dpkg_stanza(v) for k, v in raw.get("dpkg", {}).items()},
        venvs=venvs,
        units=parse_systemctl_show(raw.get("systemd", "")),
        shadow=raw.get("shadow", {}),
        reads=reads,
        os=parse_os_release(raw.get("os_release")),
        python=raw.get("python", ""),
        euid=raw.get("euid", -1),
    )


def collector_source() -> str:
    return remote.source("collect.py")


def collector_program(request: FactRequest) -> str:
    """The collector with its request appended as a Python literal (repr of plain data:
    str, int, bool, None, lists, dicts), so it needs no json module to read it."""
    return collector_source() + f"\nmain({json.loads(request.to_json())!r})\n"


def gather(transport: Transport, request: FactRequest) -> Facts:
    """Read everything ``request`` names from the host in one round trip."""
    program = collector_program(request)
    # -I -S: no site packages or environment: a third of the start-up time, and nothing
    # on the host (PYTHONPATH, sitecustomize) can change what the collector runs.
    result = transport.run(COLLECTOR_ARGV, stdin=program.encode(), check=False,
                           step="gather facts", display="python3 - (fact collector)")
    if result.rc != 0:
        hint = ""
        if "python3" in result.err and "not found" in result.err:
            hint = " (the host needs python3: apt-get install python3)"
        raise ProvisionError(f"gathering facts failed{hint}", host=transport.name,
                             step="gather facts", command="python3 - (fact collector)",
                             rc=result.rc, stderr=result.err)
    try:
        raw = json.loads(result.out)
    except ValueError as exc:
        raise ProvisionError("fact collector printed something that is not JSON",
                             host=transport.name, step="gather facts",
                             stderr=result.out[:500]) from exc
    return parse_collected(raw)
