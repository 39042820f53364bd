"""The lab's operations: `up`, `down`, `status`, `run_ssh` (re-exported by the package).

`up` and `down` hold `.lab/lock` so two of them never interleave; the base image build
holds a machine-wide lock, as the cache is shared by every clone of the repository.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from provision.lab import config, host, image, render, ssh
from provision.lab.errors import LabError
from provision.lab.system import (
    alive,
    atomic_write,
    cgroup_dirs,
    lan_remove_if_unused,
    require_commands,
    require_root,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabHost:
    """One lab host as seen from this machine.

    `state` is `running` (container and its network up), `partial` (one of them died) or
    `stopped`; `pid` is the systemd-nspawn process, None unless it runs.
    """

    name: str
    ssh_port: int
    ports: dict[str, int]
    state: str
    pid: int | None
    suite: str = config.SUITE
    offline: bool = False  # booted with no way out (lab.up --offline)

    @property
    def hub_url(self) -> str:
        return render.hub_url(self.ports)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _describe(name: str) -> LabHost:
    state = host.load_state(name)
    ports = render.ports_for(render.host_index(name))
    nspawn = state.nspawn if state else None
    pid = nspawn.pid if nspawn is not None and alive(nspawn) else None
    return LabHost(name, ports["ssh"], ports, host.process_state(state), pid,
                   state.suite if state else config.SUITE,
                   bool(state and state.offline))


def status() -> list[LabHost]:
    """Every host the lab knows of (has a state directory for), in numeric order."""
    return [_describe(name) for name in host.known_names()]


def up(count: int = 0, *, names: Sequence[str] = (), suite: str = config.SUITE,
       offline: bool = False, shared_home: bool = False) -> list[LabHost]:
    """Boot lab1..lab`count` (those not already running) and wait until all are up; with
    `names` (e.g. ["lab3"]), exactly those hosts. Hosts booted now run Debian `suite`
    (bookworm or trixie, each from a cached base of its own); running hosts keep theirs.
    With `offline`, the hosts booted now have no way out (no default route: no registry,
    nothing past the lab's network); running hosts are left as they are. With
    `shared_home`, their /home is one directory of this machine (`config.SHARED_HOME_DIR`),
    the same in every host booted so.

    Example: `up(2)` returns the two LabHost entries once `systemctl is-system-running
    --wait` says `running` on both over SSH. Hosts already running are left alone (a
    warning is logged if their systemd is not `running`). Writes `.lab/known_hosts` and
    `inventory/lab.yml`.
    """
    if names:
        names = [render.host_name(render.host_index(name)) for name in names]
    elif not 1 <= count <= config.MAX_HOSTS:
        raise LabError(f"--count must be between 1 and {config.MAX_HOSTS}, not {count}")
    else:
        names = [render.host_name(index) for index in range(1, count + 1)]
    image.check_suite(suite)
    require_root()
    require_commands(config.REQUIRED_COMMANDS)
    with _locked(config.LOCK_FILE):
        ssh.keygen(config.KEY_FILE, "jhprovision-lab")
        existing = {n for n in names if host.process_state(host.load_state(n)) == host.RUNNING}
        to_boot = [n for n in names if n not in existing]
        if to_boot:  # running hosts need no base (and keep their own suite's)
            with _locked(config.CACHE_DIR / "lock"):
                base = image.ensure_base(suite)
        authorized_key = config.KEY_FILE.with_name(config.KEY_FILE.name + ".pub").read_text()
        for name in to_boot:
            if host.host_dir(name).exists():
                log.info("%s: not running; removing what is left of it", name)
                host.teardown(name)
            host.check_free(name)
        try:
            for name in to_boot:
                host.boot(name, base, authorized_key, suite, offline=offline,
                          shared_home=shared_home)
                log.info(
                    "%s: booting %s%s (ssh port %d)",
                    name,
                    suite,
                    (", offline" if offline else "")
                    + (", shared /home" if shared_home else ""),
                    render.ports_for(render.host_index(name))["ssh"],
                )
        finally:
            # Even a partly failed `up` leaves accurate files for what does run.
            _write_known_hosts()
        errors = _wait_all(names, existing)
        _write_inventory()
    if errors:
        raise LabError("\n".join(errors))
    return [_describe(name) for name in names]


def _wait_all(names: Sequence[str], existing: set[str]) -> list[str]:
    """Wait for every host in parallel; return the errors of hosts booted just now."""

    def wait(name: str) -> str | None:
        port = render.ports_for(render.host_index(name))["ssh"]
        try:
            ssh.wait_running(name, port, host.host_dir(name) / "nspawn.log")
            if name not in existing:
                ssh.delegate_controllers(name, port)
        except LabError as err:
            if name in existing:  # not ours to judge: e.g. a provisioning run broke it
                log.warning("%s (already running, left alone): %s", name, err)
                return None
            return str(err)
        return None

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return [err for err in pool.map(wait, names) if err]


def down(names: Iterable[str] | None = None) -> None:
    """Stop and delete lab hosts (all of them by default), leaving no process, mount,
    network namespace or cgroup behind; raises `LabError` listing anything left.

    `inventory/lab.yml` and `.lab/known_hosts` are rewritten for the hosts that remain,
    and deleted when none does; the shared /home once no host uses it. The lab's key pair
    is kept.
    """
    require_root()
    with _locked(config.LOCK_FILE):
        targets = (
            host.known_names()
            if names is None
            else [render.host_name(render.host_index(name)) for name in names]
        )
        errors = _teardown_all(targets)
        if config.SHARED_HOME_DIR.exists() and not any(
                (state := host.load_state(n)) and state.shared_home for n in host.known_names()):
            shutil.rmtree(config.SHARED_HOME_DIR)  # its last host is gone
        _write_known_hosts()
        _write_inventory()
    if errors:
        raise LabError("\n".join(errors))


def _teardown_all(names: Sequence[str]) -> list[str]:
    """Tear hosts down in parallel (each waits seconds for its clean poweroff)."""

    def teardown(name: str) -> str | None:
        try:
            host.teardown(name)
        except LabError as err:
            return f"{name}: {err}"
        return None

    if not names:
        return []
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        errors = [err for err in pool.map(teardown, names) if err]
    for cgroup in cgroup_dirs():
        with contextlib.suppress(OSError):  # only if empty: other hosts may still run
            cgroup.rmdir()
    try:
        lan_remove_if_unused()
    except LabError as err:
        errors.append(f"the lab's network: {err}")
    return errors


def run_ssh(
    name: str, command: str | Sequence[str], timeout: float | None = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run `command` as root on lab host `name` over SSH (host key checked strictly).

    A string runs as a shell command line; a list is quoted with shlex.join. Output is
    captured as text; the exit code is the command's (255: ssh itself failed).
    Example: `run_ssh("lab1", "hostname").stdout == "lab1\\n"`.
    """
    port = render.ports_for(render.host_index(name))["ssh"]
    return ssh.ssh_run(port, command, timeout=timeout)


def ssh_argv(name: str, command: str | None = None) -> list[str]:
    """The ssh command line for `invoke lab.ssh` (interactive when `command` is None)."""
    port = render.ports_for(render.host_index(name))["ssh"]
    argv = ssh.ssh_argv(port, batch=command is not None)
    return argv if command is None else [*argv, "--", command]


def _live_hosts() -> list[str]:
    """Hosts whose container runs (a host that died is left out of the files)."""
    return [n for n in host.known_names() if host.process_state(host.load_state(n)) != host.STOPPED]


def _write_known_hosts() -> None:
    entries = []
    for name in host.known_names():  # includes hosts still booting
        pub = host.host_dir(name) / "ssh_host_ed25519_key.pub"
        if pub.is_file():
            entries.append((render.ports_for(render.host_index(name))["ssh"], pub.read_text()))
    if entries:
        atomic_write(config.KNOWN_HOSTS_FILE, render.render_known_hosts(entries))
    else:
        config.KNOWN_HOSTS_FILE.unlink(missing_ok=True)


def _write_inventory() -> None:
    names = _live_hosts()
    if not names:
        config.INVENTORY_FILE.unlink(missing_ok=True)
        return
    hosts = [(n, render.ports_for(render.host_index(n))) for n in names]
    text = render.render_inventory(hosts, config.KEY_FILE, config.KNOWN_HOSTS_FILE)
    atomic_write(config.INVENTORY_FILE, text)
