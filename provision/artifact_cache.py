"""A bound on the workstation's artifact cache (``provision_artifacts: push``).

The cache (``provision.artifacts``) keeps every .deb, wheel, npm set, apt list and tool a
push fetched, so that the next run fetches nothing again; without a bound it only grows.
It is pruned after each run that pushed, and by ``invoke artifacts --prune``:

1. what no run has used for ``provision_artifacts_cache_days`` days goes;
2. then, while the cache is larger than ``provision_artifacts_cache_max``, the least
   recently used goes first.

A file the current run uses is never removed, whatever its age or the bound. Use is
recorded by the store itself (``Store.use``: the file's mtime is set to now, which
neither ``noatime`` mounts nor a reader changes), so "last used" is the mtime.

The unit of removal is what the store reuses as a whole: one ``.deb`` (``debs/``), one
wheel (``wheels/``), one set's manifest (``sets/``), one npm set (``npm/<spec>/``), one
host's apt lists (``apt/<key>/``), one workstation tool (``tools/<name>/``). A set whose
files were pruned is fetched again when a run needs it (its manifest no longer matches).
Nothing else under the cache (a run's temporary directories, apt's ``partial/``) is
touched, and no symlink is followed.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .variables import byte_count

DEFAULT_MAX = "5G"
DEFAULT_DAYS = 30
DAY = 86400

# (folder, what is one unit in it): a file, or a directory as a whole.
UNITS = (("debs", "file"), ("wheels", "file"), ("sets", "file"), ("npm", "dir"),
         ("apt", "dir"), ("tools", "dir"))


@dataclass(frozen=True)
class Entry:
    """One unit of the cache: its path, bytes and when a run last used it (epoch s)."""

    path: Path
    size: int
    used: float

    def rel(self, root: Path) -> str:
        return self.path.relative_to(root).as_posix()


@dataclass
class Pruned:
    removed: list[Entry] = field(default_factory=list)
    kept_size: int = 0  # what is left
    #: set when the files the current run uses alone exceed the bound
    over_by_used: int = 0

    @property
    def freed(self) -> int:
        return sum(e.size for e in self.removed)


def _tree(path: Path) -> tuple[int, float]:
    """Bytes and newest mtime of a directory's files, without following a symlink."""
    size, newest = 0, os.lstat(path).st_mtime
    for base, dirs, files in os.walk(path):  # os.walk follows no symlinked directory
        for name in files + dirs:
            st = os.lstat(os.path.join(base, name))
            newest = max(newest, st.st_mtime)
            if stat.S_ISREG(st.st_mode):
                size += st.st_size
    return size, newest


def entries(root: Path) -> list[Entry]:
    """Every unit of the cache at ``root``, least recently used first."""
    out = []
    for folder, kind in UNITS:
        try:
            items = list(os.scandir(root / folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for item in items:
            path = Path(item.path)
            if item.name.startswith(".") or item.name == "partial":
                continue
            if kind == "file" and item.is_file(follow_symlinks=False):
                st = item.stat(follow_symlinks=False)
                out.append(Entry(path, st.st_size, st.st_mtime))
            elif kind == "dir" and item.is_dir(follow_symlinks=False):
                size, used = _tree(path)
                out.append(Entry(path, size, used))
    return sorted(out, key=lambda e: (e.used, str(e.path)))


def _in_use(entry: Entry, used: set[Path]) -> bool:
    return any(p == entry.path or entry.path in p.parents for p in used)


def plan(found: list[Entry], *, max_bytes: int, days: float, used: Iterable[Path] = (),
         now: float | None = None) -> Pruned:
    """What to remove from ``found`` (pure: nothing is removed here)."""
    now = time.time() if now is None else now
    used = {Path(p) for p in used}
    result = Pruned()
    left = []
    for e in found:  # least recently used first
        if not _in_use(e, used) and e.used < now - days * DAY:
            result.removed.append(e)
        else:
            left.append(e)
    total = sum(e.size for e in left)
    for e in list(left):
        if total <= max_bytes:
            break
        if _in_use(e, used):
            continue
        result.removed.append(e)
        left.remove(e)
        total -= e.size
    result.kept_size = total
    if total > max_bytes:
        result.over_by_used = total - max_bytes
    return result


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def prune(root: Path, *, max_bytes: int, days: float, used: Iterable[Path] = (),
          now: float | None = None) -> Pruned:
    """Bound the cache at ``root`` (see the module's docstring); returns what went."""
    root = Path(root)
    if not root.is_dir():
        return Pruned()
    result = plan(entries(root), max_bytes=max_bytes, days=days, used=used, now=now)
    gone = []
    for e in result.removed:
        try:
            _remove(e.path)
        except OSError as exc:
            raise ConfigError(f"artifact cache: cannot remove {e.path}: "
                              f"{exc.strerror}") from None
        gone.append(e)
    result.removed = gone
    return result


def limits(max_size: str | int | None, days: int | str | None) -> tuple[int, int]:
    """(bytes, days) from a size such as '5G' and a number of days; ConfigError if bad."""
    max_size = DEFAULT_MAX if max_size is None else max_size
    try:
        max_bytes = byte_count(int(max_size) if str(max_size).isdigit() else max_size)
    except ValueError:
        raise ConfigError(f"--max {max_size!r}: not a size (e.g. '5G', '500M', bytes as a "
                          "number)") from None
    try:
        n = int(DEFAULT_DAYS if days is None else days)
    except (TypeError, ValueError):
        n = -1
    if n < 0:
        raise ConfigError(f"--days {days!r}: not a number of days (0 or more)")
    return max_bytes, n


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def summary(root: Path, result: Pruned, now: float | None = None) -> list[str]:
    """Lines saying what was removed and how much space it freed."""
    now = time.time() if now is None else now
    lines = [f"removed {e.rel(root)} ({human(e.size)}, last used "
             f"{max(0, int((now - e.used) // DAY))} days ago)" for e in result.removed]
    lines.append(f"{root}: removed {len(result.removed)}, freed {human(result.freed)}; "
                 f"{human(result.kept_size)} kept")
    if result.over_by_used:
        lines.append(f"{root}: the files this run uses are {human(result.over_by_used)} over "
                     "the bound; raise provision_artifacts_cache_max")
    return lines


def after_run(hosts: list) -> list[str]:
    """Prune each cache a run pushed from, with the bound of its hosts (the smallest,
    when hosts disagree), keeping every file the run used; lines to show. A cache that
    cannot be pruned is a line too: the run itself is done."""
    from .artifacts import cache_root, store

    bounds: dict[Path, tuple[int, int]] = {}
    for host in hosts:
        v = host.vars
        if v.get("provision_artifacts") != "push":
            continue
        root = cache_root(v)
        b = limits(v.get("provision_artifacts_cache_max"),
                   v.get("provision_artifacts_cache_days"))
        old = bounds.get(root)
        bounds[root] = b if old is None else (min(old[0], b[0]), min(old[1], b[1]))
    lines = []
    for root, (max_bytes, days) in sorted(bounds.items()):
        used = store(root).used
        if not used:
            continue  # this run pushed nothing from it
        try:
            result = prune(root, max_bytes=max_bytes, days=days, used=used)
        except ConfigError as exc:
            lines.append(f"warning: {exc}")
            continue
        if result.removed or result.over_by_used:
            lines += summary(root, result)
    return lines
