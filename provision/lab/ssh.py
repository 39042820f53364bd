"""SSH to lab hosts: key generation, the ssh command line, readiness checks.

Host keys are always verified against `.lab/known_hosts` (StrictHostKeyChecking=yes):
the lab generates each host's key before boot and writes the matching line, so there is
never a reason to trust a key on first use.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from provision.lab import config
from provision.lab.errors import LabError
from provision.lab.system import run

# 255 is ssh's own failure (connection refused/reset, auth); anything else is the
# remote command's exit code.
SSH_FAILED = 255


def keygen(path: Path, comment: str) -> None:
    """Create an ed25519 key pair at `path` (and `path`.pub) if there is none yet."""
    if path.exists() and path.with_name(path.name + ".pub").exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".pub").unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])


def ssh_argv(port: int, *, batch: bool = True) -> list[str]:
    """ssh options to reach the lab host on `port` as root, host key checked strictly.

    `-F /dev/null` ignores the user's ~/.ssh/config so the lab behaves the same for
    everyone; the destination comes last, so callers append `--` style command args.
    """
    argv = [
        "ssh",
        "-F", "/dev/null",
        "-i", str(config.KEY_FILE),
        "-p", str(port),
        "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={config.KNOWN_HOSTS_FILE}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "ConnectTimeout=5",
        "-o", "LogLevel=ERROR",
    ]  # fmt: skip
    if batch:
        argv += ["-o", "BatchMode=yes"]
    return argv + [f"root@{config.LISTEN_ADDR}"]


def remote_command(command: str | Sequence[str]) -> str:
    """The remote shell command: a string as is, an argv list quoted with shlex.join."""
    return command if isinstance(command, str) else shlex.join(command)


def ssh_run(
    port: int, command: str | Sequence[str], timeout: float | None = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run `command` on the host at `port`; output captured as text, never raises on rc."""
    argv = ssh_argv(port) + ["--", remote_command(command)]
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as err:
        raise LabError(f"ssh to port {port} timed out after {timeout:.0f}s: {argv[-1]}") from err


def wait_running(name: str, port: int, log: Path) -> str:
    """Wait until SSH answers on `port`, then until systemd has finished booting.

    Returns the system state (`running` when all is well); raises `LabError` if SSH never
    answers or the state is not `running`, with the failed units and the console log.
    """
    deadline = time.monotonic() + config.SSH_READY_TIMEOUT
    while True:
        # sshd starts late in boot; until then slirp4netns accepts and resets at once.
        probe = ssh_run(port, "true", timeout=15)
        if probe.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise LabError(
                f"{name}: no SSH on port {port} after {config.SSH_READY_TIMEOUT:.0f}s "
                f"({probe.stderr.strip()}); console log: {log}"
            )
        time.sleep(0.5)
    wait = ssh_run(
        port,
        ["timeout", str(int(config.SYSTEM_RUNNING_TIMEOUT)), "systemctl", "is-system-running",
         "--wait"],
        timeout=config.SYSTEM_RUNNING_TIMEOUT + 30,
    )  # fmt: skip
    state = wait.stdout.strip() or f"unknown ({wait.stderr.strip()})"
    if state != "running":
        failed = ssh_run(port, "systemctl --failed --no-legend --plain", timeout=30)
        raise LabError(
            f"{name}: systemd says {state!r}, not 'running'. Failed units:\n"
            f"{failed.stdout.strip() or '(none listed)'}\n"
            f"Look with `invoke lab.ssh {name}`; console log: {log}"
        )
    return state


# systemd-nspawn mounts a container's v1 controller hierarchies read-only; the host's
# systemd then cannot apply MemoryMax= or CPUQuota= to its units, and a per-user limit
# would be a number on paper, and slurmd cannot make a job's freezer cgroup. The host's own
# cgroups are below the lab's (system.py cgroup_roots), so making its memory, cpu and
# freezer mounts writable gives it only its subtree.
_DELEGATE = r"""
set -e
changed=
for c in memory cpu cpuacct cpu,cpuacct freezer; do
    m=/sys/fs/cgroup/$c
    mountpoint -q "$m" || continue
    findmnt -no OPTIONS "$m" | grep -qE '(^|,)ro(,|$)' || continue
    mount -o remount,bind,rw "$m"
    changed=1
done
# systemd reads which controllers it may use when it starts: re-execute it.
if [ -n "$changed" ]; then systemctl daemon-reexec; fi
"""


def delegate_controllers(name: str, port: int) -> None:
    """Let the host's systemd enforce memory and CPU limits on its units (see _DELEGATE)."""
    result = ssh_run(port, ["sh", "-c", _DELEGATE], timeout=60)
    if result.returncode != 0:
        raise LabError(f"{name}: cannot make the memory and cpu cgroups writable: "
                       f"{result.stderr.strip()}")
