"""Pin sets: the whole Python package tree of one release of the stack, shipped in
``constraints/stack-RELEASE.txt`` and given to every pip install (``pip install -c``), so
two hosts installed a week apart get the same versions of everything, dependencies
included.

A pin set is made by ``invoke constraints`` (``resolve`` below): pip resolves the
stack's requirements for the oldest Python the hosts run (Debian 12's 3.11) from PyPI,
ignoring this machine's own pip configuration, then checks that exactly that set also
installs on the newest (Debian 13's 3.13).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .facts import normalize_dist
from .requirements import req_name_version

PINS_DIR = Path(__file__).resolve().parent.parent / "constraints"
PYTHONS = ("3.11", "3.13")  # Debian 12, Debian 13
# Wheels the hosts can install: CPython on x86_64 with glibc 2.17 (manylinux2014) up to
# Debian 13's 2.41.
PLATFORMS = [f"manylinux_2_{m}_x86_64" for m in range(17, 42)] + [
    "manylinux2014_x86_64", "linux_x86_64"]
LINE_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)")


def path_for(release: str) -> Path:
    return PINS_DIR / f"stack-{release}.txt"


def releases() -> list[str]:
    """The releases a pin set ships for, oldest first."""
    found = [p.name[len("stack-"):-len(".txt")] for p in PINS_DIR.glob("stack-*.txt")]
    return sorted(found, key=lambda r: [int(x) if x.isdigit() else x for x in r.split(".")])


def parse(text: str) -> dict[str, str]:
    """'name==version' lines (comments and blank lines skipped) by normalized name."""
    out = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = LINE_RE.fullmatch(line)
        if m is None:
            raise ValueError(f"not a pin: {raw!r}")
        out[normalize_dist(m.group(1))] = m.group(2)
    return out


def without(text: str, names: set[str]) -> str:
    """The pin set's text without the pins of ``names`` (normalized names)."""
    if not names:
        return text
    keep = []
    for raw in text.splitlines(keepends=True):
        m = LINE_RE.fullmatch(raw.split("#", 1)[0].strip())
        if m is None or normalize_dist(m.group(1)) not in names:
            keep.append(raw)
    return "".join(keep)


def effective(text: str, requirements: Sequence[str]) -> str:
    """The constraints a venv installs with: the pin set, less the pins of requirements
    pinned to another version (a course's own numpy==... wins; pip checks the rest still
    fit)."""
    pinned = parse(text)
    mine = dict(req_name_version(r) for r in requirements)
    return without(text, {n for n, ver in mine.items() if ver and pinned.get(n, ver) != ver})


def load(release: str) -> tuple[str, dict[str, str]]:
    """The pin set's text (as uploaded to hosts) and its pins; FileNotFoundError if the
    release has none."""
    text = _read(path_for(release))
    return text, parse(text)


def _read(path: Path) -> str:
    """The file's text, read once per version of it (every host's facts and plan ask)."""
    return _read_version(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _read_version(path: Path, mtime_ns: int) -> str:
    return path.read_text()


def _dry_run(requirements: Sequence[str], python: str, constraint: Path | None = None
             ) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="jhprov-pins-") as tmp:
        report = Path(tmp) / "report.json"
        argv = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run",
                "--ignore-installed", "--quiet", "--report", str(report),
                "--python-version", python, "--implementation", "cp",
                "--abi", "cp" + python.replace(".", ""), "--abi", "abi3", "--abi", "none",
                *[f"--platform={p}" for p in PLATFORMS], "--only-binary=:all:",
                "--target", str(Path(tmp) / "target")]
        if constraint:
            argv += ["-c", str(constraint)]
        proc = subprocess.run([*argv, *requirements], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pip could not resolve {' '.join(requirements)} for Python "
                               f"{python}:\n{proc.stderr[-3000:]}")
        data = json.loads(report.read_text())
    return {normalize_dist(i["metadata"]["name"]): i["metadata"]["version"]
            for i in data["install"]}


def resolve(release: str, requirements: Sequence[str]) -> str:
    """The pin set's text for ``requirements`` (resolved for PYTHONS[0], checked to
    install unchanged on the others)."""
    pins = _dry_run(requirements, PYTHONS[0])
    text = (f"# The Python packages of jhprovision's stack for JupyterHub {release}: every\n"
            "# pip install on a host is given this file (pip install -c). Made by\n"
            f"# `invoke constraints --release {release}` from: {' '.join(requirements)}\n"
            f"# (resolved for Python {PYTHONS[0]}, checked on {', '.join(PYTHONS[1:])}).\n"
            + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as fh:
        fh.write(text)
        fh.flush()
        for python in PYTHONS[1:]:
            other = _dry_run(requirements, python, Path(fh.name))
            differ = {n: (pins.get(n), v) for n, v in other.items() if pins.get(n) != v}
            if differ:
                raise RuntimeError(f"on Python {python} the set differs: {differ}")
    return text


def for_vars(v: dict) -> str:
    """The pin set's text for a host's ``jupyterhub_version`` (check() makes sure one
    ships)."""
    return load(str(v["jupyterhub_version"]))[0]


def check_release(v: dict) -> list[tuple[str, str]]:
    """A pin set ships for the host's ``jupyterhub_version``."""
    release = str(v.get("jupyterhub_version"))
    if path_for(release).is_file():
        return []
    have = ", ".join(releases()) or "none"
    return [("jupyterhub_version", f"no pin set ships for JupyterHub {release} "
             f"(constraints/: {have}): choose one of those, or make one with "
             f"`invoke constraints --release {release}`")]


def check_versions(v: dict, dists: dict[str, str]) -> list[tuple[str, str]]:
    """A role's own version variables (``{key: distribution}``) agree with the pin set of
    the host's release (nothing to say when there is no set: check_release says it)."""
    release = str(v.get("jupyterhub_version"))
    try:
        _, pinned = load(release)
    except FileNotFoundError:
        return []
    return [(key, f"{v[key]} is not the JupyterHub {release} pin set's {dist} "
                  f"{pinned[dist]}: leave it out, or make a pin set with "
                  f"`invoke constraints --release {release}`")
            for key, dist in dists.items()
            if key in v and dist in pinned and v[key] != pinned[dist]]
