"""Thin wrappers over the Linux facilities the lab uses: commands, processes, mounts,
network namespaces, cgroups.

Every function here acts only on what it is given (a PID with its start time, a path
under the lab's own directories, a namespace or cgroup named after a lab host), so the
lab never ends or removes anything it did not create. Failures become `LabError` with
the command and its stderr.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from provision.lab import config
from provision.lab.errors import LabError


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    timeout: float | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run `argv`, capture its output; raise `LabError` naming it if it fails."""
    args = [str(a) for a in argv]
    try:
        proc = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as err:
        raise LabError(f"command not found: {args[0]}") from err
    except subprocess.TimeoutExpired as err:
        raise LabError(f"timed out after {timeout:.0f}s: {shlex.join(args)}") from err
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise LabError(f"{shlex.join(args)} failed (exit {proc.returncode}): {detail}")
    return proc


def require_root() -> None:
    """The lab mounts, makes namespaces and boots containers: all of it needs root."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (mounts, network namespaces, systemd-nspawn)")


def require_commands(names: Iterable[str]) -> None:
    """Fail with the apt-get command that installs every missing command."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        packages = sorted({config.REQUIRED_COMMANDS.get(name, name) for name in missing})
        raise LabError(
            f"missing command(s): {', '.join(missing)}. Install them with "
            f"`apt-get install -y {' '.join(packages)}` (or `bash .ci/lab-deps.sh`)"
        )


def atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write `text` to a temp file beside `path`, then rename: readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- processes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    """A process the lab started: its PID plus its start time, so that a PID reused by
    an unrelated process after a reboot is never mistaken for ours."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> Proc:
        start = proc_start_time(pid)
        if start is None:
            raise LabError(f"process {pid} ended right after it was started")
        return cls(pid, start)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after it.
    return text[text.rindex(")") + 2 :].split()


def proc_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot; None if gone or a zombie."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 of /proc/PID/stat, counted after the name


def alive(proc: Proc | None) -> bool:
    """True if `proc` is still the same running (not zombie) process."""
    return proc is not None and proc_start_time(proc.pid) == proc.start


def reap(pid: int) -> None:
    """Collect `pid` if it is our child, so no zombie is left behind.

    The launcher double-forks, so lab processes are normally children of PID 1, which
    reaps them; this covers a process started by this very Python process.
    """
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(proc: Proc | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Send `sig` to `proc` (if it is still ours), then SIGKILL it after `timeout`."""
    if proc is None or not alive(proc):
        return
    for signum, wait in ((sig, timeout), (signal.SIGKILL, 5.0)):
        if not alive(proc):
            break
        try:
            os.kill(proc.pid, signum)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while alive(proc) and time.monotonic() < deadline:
            reap(proc.pid)
            time.sleep(0.1)
    reap(proc.pid)
    if alive(proc):
        raise LabError(f"process {proc.pid} does not end, even after SIGKILL")


def wait_reaped(procs: Iterable[Proc | None], timeout: float = 10.0) -> None:
    """Give PID 1 a moment to reap the zombies of `procs`, so that a check right after
    `lab.down` finds no trace of them. (PID 1 on these machines reaps orphans lazily,
    about every 2 s; the lab's processes are its children, see launch.py.)"""
    pending = [proc for proc in procs if proc is not None]
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for proc in pending:
            reap(proc.pid)
        pending = [proc for proc in pending if _is_zombie_of(proc)]
        if pending:
            time.sleep(0.1)


def _is_zombie_of(proc: Proc) -> bool:
    fields = _stat_fields(proc.pid)
    return fields is not None and int(fields[19]) == proc.start


LAUNCHER = Path(__file__).with_name("launch.py")


def launch_detached(argv: Sequence[str], log_file: Path, cgroups: Sequence[str]) -> Proc:
    """Start `argv` detached (own session, in `cgroups`, output to `log_file`; see
    launch.py) and return it as a Proc. It is PID 1's child, not ours."""
    cmd = [sys.executable, str(LAUNCHER), "--log", str(log_file)]
    for cgroup in cgroups:
        cmd += ["--cgroup", cgroup]
    result = run([*cmd, "--", *argv], timeout=30)
    return Proc.of(int(result.stdout.strip()))


def port_in_use(port: int) -> bool:
    """True if something already listens on (or holds) 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As slirp4netns does for its forwards: connections of a previous lab host in
        # TIME_WAIT must not count as "in use", a listener must.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((config.LISTEN_ADDR, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return True
            raise
    return False


# --- mounts ----------------------------------------------------------------------------


def _unescape_mountinfo(field: str) -> str:
    # /proc/self/mountinfo writes space, tab, newline and backslash as \ooo octal.
    return field.encode().decode("unicode_escape")


def mount_points() -> list[Path]:
    """Every mount point of this mount namespace."""
    text = Path("/proc/self/mountinfo").read_text()
    return [Path(_unescape_mountinfo(line.split()[4])) for line in text.splitlines() if line]


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below `path`."""
    return [mp for mp in mount_points() if mp == path or path in mp.parents]


def mount_overlay(lower: Path, upper: Path, work: Path, merged: Path) -> None:
    """Mount an overlayfs: the shared base tree read-only below, per-host changes above."""
    for option_path in (lower, upper, work):
        if "," in str(option_path) or ":" in str(option_path):
            raise LabError(f"overlayfs cannot use a path with ',' or ':': {option_path}")
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    run(["mount", "-t", "overlay", "overlay", "-o", options, merged])


def umount(path: Path) -> None:
    """Unmount `path` and anything mounted below it, deepest first."""
    for mount_point in sorted(mounts_under(path), key=lambda p: len(p.parts), reverse=True):
        run(["umount", mount_point])


# --- network namespaces ----------------------------------------------------------------


def netns_path(name: str) -> Path:
    return config.NETNS_DIR / name


def netns_users(name: str) -> list[int]:
    """PIDs of the processes inside network namespace `name` (empty if it is unused)."""
    try:
        target = os.stat(netns_path(name))
    except FileNotFoundError:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            st = os.stat(entry / "ns" / "net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            pids.append(int(entry.name))
    return pids


def netns_add(name: str) -> None:
    run(["ip", "netns", "add", name])


def netns_delete(name: str) -> None:
    if netns_path(name).exists():
        run(["ip", "netns", "delete", name])


def lan_attach(name: str, address: str, index: int) -> None:
    """Put host `name`'s namespace on the lab's network: `eth1` with `address`/24, its
    veth peer `lanK` on the bridge. The bridge's namespace is made on first use."""
    lan, bridge = config.LAN_NETNS, config.LAN_BRIDGE
    if not netns_path(lan).exists():
        netns_add(lan)
        run(["ip", "-n", lan, "link", "add", bridge, "type", "bridge"])
        run(["ip", "-n", lan, "link", "set", bridge, "up"])
    peer = f"lan{index}"
    run(["ip", "-n", lan, "link", "add", peer, "type", "veth", "peer", "name", "eth1",
         "netns", name])
    run(["ip", "-n", lan, "link", "set", peer, "master", bridge, "up"])
    run(["ip", "-n", name, "addr", "add", f"{address}/24", "dev", "eth1"])
    run(["ip", "-n", name, "link", "set", "eth1", "up"])


def drop_default_route(name: str, wait: float = 10.0) -> None:
    """Take host `name`'s way out: its default route (slirp4netns' gateway) is deleted, so
    it reaches only the lab's network and the port forwards still reach it (they answer
    on the tap's own subnet). Waits for slirp4netns to have set the route first."""
    deadline = time.monotonic() + wait
    while not run(["ip", "-n", name, "route", "show", "default"]).stdout.strip():
        if time.monotonic() > deadline:
            raise LabError(f"{name}: slirp4netns set no default route within {wait:.0f}s")
        time.sleep(0.05)
    run(["ip", "-n", name, "route", "del", "default"])


def lan_ports() -> list[str]:
    """The veth ends on the lab's bridge (one per host attached), [] without the bridge."""
    if not netns_path(config.LAN_NETNS).exists():
        return []
    out = run(["ip", "-n", config.LAN_NETNS, "-o", "link", "show", "master",
               config.LAN_BRIDGE]).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line]


def lan_remove_if_unused() -> None:
    """Delete the lab's network once no host is on it (a host's veth pair goes with its
    namespace)."""
    if netns_path(config.LAN_NETNS).exists() and not lan_ports():
        netns_delete(config.LAN_NETNS)


# --- cgroups ---------------------------------------------------------------------------


# v1 controllers a lab host gets a subtree of its own in: its systemd uses memory and cpu
# for per-unit limits (MemoryMax=, CPUQuota=), and Slurm's slurmd puts each job in a
# freezer cgroup (ProctrackType=proctrack/cgroup) and a memory one (ConstrainRAMSpace).
RESOURCE_CONTROLLERS = frozenset({"memory", "cpu", "cpuacct", "freezer"})


def _own_cgroups() -> dict[frozenset[str], str]:
    """This process's cgroup in each v1 hierarchy, keyed by the hierarchy's controllers."""
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers:
            own[frozenset(controllers.split(","))] = path
    return own


def cgroup_roots() -> list[Path]:
    """Where the lab makes its cgroups: the roots of the hierarchies that track processes
    (cgroup2 and name=systemd), and this process's own cgroup in the v1 memory, cpu and
    freezer hierarchies.

    Each lab process is put in its own cgroup in each of them: systemd-nspawn creates
    `payload/` and `supervisor/` below its own cgroup, two containers sharing a cgroup
    would fight over those; and a host's systemd makes its units' memory and cpu cgroups
    below its own (the limits a SystemdSpawner unit sets must be the kernel's, not
    numbers on paper), and a compute node's slurmd its jobs' freezer cgroups. Those are
    nested below ours, so the lab never escapes a limit put on the process that started
    it. Other v1 controllers are left as they are.
    """
    own = _own_cgroups()
    roots = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = right.split()
        if len(fields) < 3:
            continue
        fstype, super_opts = fields[0], fields[2].split(",")
        mount = Path(_unescape_mountinfo(left.split()[4]))
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in super_opts):
            roots.append(mount)
        elif fstype == "cgroup" and RESOURCE_CONTROLLERS & set(super_opts):
            controllers = {c for key in own for c in key}
            path = own.get(frozenset(o for o in super_opts if o in controllers))
            if path is not None:
                roots.append(mount.joinpath(path.lstrip("/")))
    return roots


def cgroup_dirs(*parts: str) -> list[Path]:
    """The lab's cgroup directory for `parts` (e.g. "lab1", "nspawn") in each hierarchy."""
    return [root.joinpath(config.CGROUP_PARENT, *parts) for root in cgroup_roots()]


def cgroup_pids(directory: Path) -> list[int]:
    """PIDs in `directory` and every cgroup below it."""
    pids: list[int] = []
    if not directory.is_dir():
        return pids
    for dirpath, _dirs, _files in os.walk(directory):
        try:
            text = (Path(dirpath) / "cgroup.procs").read_text()
        except OSError:
            continue
        pids.extend(int(pid) for pid in text.split())
    return pids


def cgroup_kill(directory: Path, timeout: float = 60.0) -> None:
    """SIGKILL every process in the cgroup tree `directory` until it is empty.

    Used after a clean shutdown had its chance: what is left there is ours by
    construction (the lab created the cgroup and started its first process in it).
    A killed process may take a while to be gone on a loaded machine (ten hosts going
    down at once, each freeing a hub's memory: one took over 10 s), hence the minute.
    """
    deadline = time.monotonic() + timeout
    while True:
        pids = [pid for pid in cgroup_pids(directory) if proc_start_time(pid) is not None]
        if not pids:
            return
        if time.monotonic() > deadline:
            raise LabError(f"processes {pids} in {directory} survive SIGKILL")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            reap(pid)
        time.sleep(0.1)


def cgroup_remove(directory: Path) -> None:
    """Remove the (empty) cgroup tree `directory`, deepest first."""
    if not directory.is_dir():
        return
    for dirpath, _dirs, _files in os.walk(directory, topdown=False):
        try:
            os.rmdir(dirpath)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise LabError(f"cannot remove cgroup {dirpath}: {err.strerror}") from err
