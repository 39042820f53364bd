"""One lab host: boot it (overlay, network namespace, slirp4netns, systemd-nspawn) and
tear it down again, leaving nothing behind.

A host's state lives in `.lab/hosts/labK/`: `state.json` (PIDs with start times),
`upper/` and `work/` (its changes over the base tree), `merged/` (the mount point),
its SSH host key, and the logs `nspawn.log` (the console) and `slirp.log`.
`state.json` is written before each step, so `teardown` can undo a half-finished boot.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from provision.lab import config, render, slirp, ssh
from provision.lab.errors import LabError
from provision.lab.system import (
    Proc,
    alive,
    atomic_write,
    cgroup_dirs,
    cgroup_kill,
    cgroup_pids,
    cgroup_remove,
    drop_default_route,
    launch_detached,
    mount_overlay,
    mounts_under,
    lan_attach,
    netns_add,
    netns_delete,
    netns_path,
    netns_users,
    port_in_use,
    proc_start_time,
    stop,
    umount,
    wait_reaped,
)

log = logging.getLogger(__name__)

RUNNING, PARTIAL, STOPPED = "running", "partial", "stopped"
_OUR_COMMANDS = ("systemd-nspawn", "slirp4netns")


@dataclass
class HostState:
    """What `state.json` records about a host the lab started."""

    name: str
    base: str
    nspawn: Proc | None = None
    slirp: Proc | None = None
    suite: str = config.SUITE  # Debian suite of its base (older state files: the default)
    offline: bool = False  # booted with no way out (lab.up --offline)
    shared_home: bool = False  # /home is the lab's shared directory (lab.up --shared-home)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> HostState:
        data = json.loads(text)
        for key in ("nspawn", "slirp"):
            if data.get(key):
                data[key] = Proc(**data[key])
        return cls(**data)


def host_dir(name: str) -> Path:
    return config.HOSTS_DIR / name


def known_names() -> list[str]:
    """Hosts that have a state directory, in numeric order."""
    if not config.HOSTS_DIR.is_dir():
        return []
    names = [p.name for p in config.HOSTS_DIR.iterdir() if p.is_dir()]
    return sorted((n for n in names if _is_host_name(n)), key=render.host_index)


def _is_host_name(name: str) -> bool:
    try:
        render.host_index(name)
    except LabError:
        return False
    return True


def load_state(name: str) -> HostState | None:
    try:
        return HostState.from_json((host_dir(name) / "state.json").read_text())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as err:
        path = host_dir(name) / "state.json"
        raise LabError(f"{path} is corrupt ({err}); run `invoke lab.down` to clean up") from err


def save_state(state: HostState) -> None:
    atomic_write(host_dir(state.name) / "state.json", state.to_json())


def process_state(state: HostState | None) -> str:
    """running (container and network up), partial (some of it), stopped (nothing)."""
    if state is None:
        return STOPPED
    up = [alive(state.nspawn), alive(state.slirp)]
    if all(up):
        return RUNNING
    if any(up):
        return PARTIAL
    # The container's own processes outlive a killed systemd-nspawn.
    if not foreign_owners(state.name) and any(
        proc_start_time(pid) is not None
        for cgroup in cgroup_dirs(state.name)
        for pid in cgroup_pids(cgroup)
    ):
        return PARTIAL
    return STOPPED


# --- boot ------------------------------------------------------------------------------


def check_free(name: str) -> None:
    """Refuse to boot `name` over another lab's live host or over ports in use.

    A namespace or cgroup named after the host whose systemd-nspawn and slirp4netns are
    gone is what remains of a lab whose processes were killed (e.g. at the end of a
    session; the container's systemd survives a killed nspawn): it is cleared.
    """
    owners = foreign_owners(name)
    if owners:
        raise LabError(
            f"{name} is running for another lab (another clone of the repository?): "
            + "; ".join(f"PID {pid} ({args})" for pid, args in owners.items())
            + ". Run `invoke lab.down` in that clone first."
        )
    _clear_remnants(name)
    for role, port in render.ports_for(render.host_index(name)).items():
        if port_in_use(port):
            raise LabError(
                f"port {port} on {config.LISTEN_ADDR} ({role} of {name}) is already in use; "
                f"see what holds it with `ss -ltnp 'sport = :{port}'`"
            )


def _lab_commands() -> Iterator[tuple[int, list[str]]]:
    """(PID, argv) of every live systemd-nspawn and slirp4netns on this machine."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or _comm(int(entry.name)) not in _OUR_COMMANDS:
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if proc_start_time(int(entry.name)) is not None:
            yield int(entry.name), [arg for arg in args if arg]


def foreign_owners(name: str) -> dict[int, str]:
    """Live systemd-nspawn/slirp4netns processes of *another* lab (another clone's
    directory) that use /run/netns/`name`, with their command lines.

    While there are any, the namespace and the cgroups named after `name` are that lab's
    and are never touched. (Inode numbers cannot tell: the kernel reuses them.)
    """
    path, mine = str(netns_path(name)), f"{host_dir(name)}/"
    return {
        pid: _describe_lab_command(args)
        for pid, args in _lab_commands()
        if any(arg == path or arg.endswith(f"={path}") for arg in args)
        and not any(mine in arg for arg in args)
    }


def _describe_lab_command(args: list[str]) -> str:
    """`slirp4netns of /other/clone/.lab/hosts/lab1`: which lab a process belongs to."""
    program = "slirp4netns" if "slirp4netns" in args else args[0] if args else "?"
    for arg in args:
        _, _, value = arg.rpartition("=")
        if "/.lab/hosts/" in value:
            return f"{program} of {value.rsplit('/', 1)[0]}"
    return " ".join(args)


def _clear_remnants(name: str) -> None:
    """End what runs in the host's cgroups and network namespace, then remove them.

    Only called when no other lab owns `name`: what is there was started by this lab, by
    its container (e.g. a shell from `ip netns exec`), or by a lab that is dead.
    """
    for directory in cgroup_dirs(name):
        cgroup_kill(directory)
    for pid in netns_users(name):
        start = proc_start_time(pid)
        if start is not None:
            stop(Proc(pid, start), signal.SIGKILL, 5.0)
    netns_delete(name)
    for directory in cgroup_dirs(name):
        cgroup_remove(directory)


def boot(name: str, base: Path, authorized_key: str, suite: str = config.SUITE, *,
         offline: bool = False, shared_home: bool = False) -> HostState:
    """Start host `name` over the base tree `base`; returns once systemd is starting.
    `offline`: no default route, so no registry (or anything past the lab) is reachable.
    `shared_home`: the host's /home is `config.SHARED_HOME_DIR`, the same directory in
    every host booted so (the lab's stand-in for a site's NFS-mounted /home).

    Waiting for the boot to finish is the caller's job, so hosts boot in parallel. On
    failure everything done so far is undone before the error is raised.
    """
    directory = host_dir(name)
    if directory.exists():
        raise LabError(f"{directory} exists already; run `invoke lab.down` first")
    state = HostState(name=name, base=str(base), suite=suite, offline=offline,
                      shared_home=shared_home)
    try:
        for sub in ("upper", "work", "merged"):
            (directory / sub).mkdir(parents=True)
        save_state(state)
        ssh.keygen(directory / "ssh_host_ed25519_key", f"root@{name}")
        mount_overlay(base, directory / "upper", directory / "work", directory / "merged")
        _write_identity(name, directory, authorized_key)
        netns_add(name)
        index = render.host_index(name)
        lan_attach(name, render.lan_address(index), index)
        state.slirp = slirp.start(name, directory)
        save_state(state)
        slirp.add_forwards(name, directory / "slirp.sock")
        if offline:  # before systemd starts: nothing in the host ever had a way out
            drop_default_route(name)
        if shared_home:  # nspawn refuses to bind a directory that does not exist
            config.SHARED_HOME_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        state.nspawn = launch_detached(
            _nspawn_argv(name, directory, shared_home=shared_home),
            directory / "nspawn.log",
            [str(d) for d in cgroup_dirs(name, "nspawn")],
        )
        save_state(state)
    except BaseException:
        teardown(name)
        raise
    return state


def _write_identity(name: str, directory: Path, authorized_key: str) -> None:
    """Per-host files, written through the overlay so they land in its upper dir."""
    root = directory / "merged"
    (root / "etc" / "hostname").write_text(f"{name}\n")
    (root / "etc" / "hosts").write_text(render.hosts_file(name))
    (root / "etc" / "machine-id").write_text(f"{uuid.uuid4().hex}\n")
    for suffix, mode in (("", 0o600), (".pub", 0o644)):
        target = root / "etc" / "ssh" / f"ssh_host_ed25519_key{suffix}"
        shutil.copyfile(directory / f"ssh_host_ed25519_key{suffix}", target)
        os.chmod(target, mode)
    dot_ssh = root / "root" / ".ssh"
    dot_ssh.mkdir(mode=0o700, exist_ok=True)
    keys = dot_ssh / "authorized_keys"
    keys.write_text(authorized_key)
    os.chmod(keys, 0o600)


def _nspawn_argv(name: str, directory: Path, *, shared_home: bool = False) -> list[str]:
    return [
        "systemd-nspawn",
        "--boot",
        "--quiet",
        # No systemd/machined on this machine: do not register, do not ask for a scope.
        "--register=no",
        "--keep-unit",
        f"--network-namespace-path={netns_path(name)}",
        "--resolv-conf=off",  # the image's resolv.conf points at slirp4netns' DNS
        "--link-journal=no",
        # read-only rather than passive: the console is copied to nspawn.log (boot
        # messages to debug a failed boot), and a console nobody reads cannot fill up
        # and block the container.
        "--console=read-only",
        f"--directory={directory / 'merged'}",
        f"--machine={name}",
        *([f"--bind={config.SHARED_HOME_DIR}:/home"] if shared_home else []),
    ]


# --- teardown --------------------------------------------------------------------------


def teardown(name: str) -> None:
    """Stop host `name` and remove all its traces; safe on a half-booted host.

    Ends the processes `state.json` records (by PID and start time) and the nspawn and
    slirp4netns started off this host's directory; then, unless another lab owns the
    name, whatever is left in the host's cgroups and network namespace.
    """
    directory = host_dir(name)
    state = load_state(name) if directory.exists() else None
    stopped: list[Proc | None] = []
    if state is not None:
        # SIGTERM makes nspawn ask systemd in the container for a clean poweroff.
        stop(state.nspawn, signal.SIGTERM, config.SHUTDOWN_TIMEOUT)
        stop(state.slirp, signal.SIGTERM, 5.0)
        stopped += [state.nspawn, state.slirp]
    for pid in lab_processes(name):  # started, but not recorded (a crash in between)
        start = proc_start_time(pid)
        if start is not None:
            stopped.append(Proc(pid, start))
            stop(stopped[-1], signal.SIGTERM, 5.0)
    if not foreign_owners(name):
        _clear_remnants(name)
    if directory.exists():
        umount(directory)
        if mounts_under(directory):
            raise LabError(f"{directory} still has mounts: {mounts_under(directory)}")
        _remove_empty_dir(Path("/run/systemd/nspawn/propagate") / name)
        shutil.rmtree(directory)
    wait_reaped(stopped)
    left = leftovers(name)
    if left:
        raise LabError(f"{name} was not fully removed: " + "; ".join(left))


def _remove_empty_dir(path: Path) -> None:
    # nspawn leaves this behind when /run is not a tmpfs (it refuses to rm -rf there).
    try:
        path.rmdir()
    except OSError:
        pass


def lab_processes(name: str) -> list[int]:
    """systemd-nspawn and slirp4netns processes started for host `name`, found by the
    host directory in their command line (so even without a state file). The directory
    is unique to this clone of the repository; the namespace name is not."""
    mine = f"{host_dir(name)}/"
    return sorted(pid for pid, args in _lab_commands() if any(mine in arg for arg in args))


def leftovers(name: str) -> list[str]:
    """What is left of this lab's host `name` on this machine (empty once it is gone):
    processes, mounts, and (unless another lab owns the name) its cgroups and network
    namespace."""
    left = [f"process {pid} ({_comm(pid)})" for pid in lab_processes(name)]
    left += [f"mount {mp}" for mp in mounts_under(host_dir(name))]
    if not foreign_owners(name):
        left += [f"cgroup {cgroup}" for cgroup in cgroup_dirs(name) if cgroup.exists()]
        if netns_path(name).exists():
            left.append(f"network namespace {netns_path(name)}")
    return left


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def system_state(name: str, timeout: float = 10.0) -> str:
    """systemd's own view (`is-system-running`, no wait), or `unreachable`."""
    port = render.ports_for(render.host_index(name))["ssh"]
    try:
        result = ssh.ssh_run(port, "systemctl is-system-running", timeout=timeout)
    except LabError:
        return "unreachable"
    if result.returncode == ssh.SSH_FAILED:
        return "unreachable"
    return result.stdout.strip() or "unknown"
