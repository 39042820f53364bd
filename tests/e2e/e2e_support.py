"""Helpers for the end-to-end tests: a per-test inventory over the lab hosts, running the
real CLI (`invoke ...`) and the library, and reading a host's state over SSH."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from provision.lab import run_ssh

REPO = Path(__file__).resolve().parents[2]
INVOKE = [sys.executable, "-m", "invoke"]


OFFLINE_HOST = "lab6"  # test_offline's, booted with no way out (in lab4's session)


def make_inventory(path: Path, group_vars: dict[str, Any] | None = None,
                   host_vars: dict[str, dict[str, Any]] | None = None,
                   extra_hosts: dict[str, dict[str, Any]] | None = None) -> Path:
    """An inventory dir: the lab's own hosts file plus these variables."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "inventory" / "lab.yml", path / "lab.yml")
    (path / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
    (path / "group_vars" / "all" / "main.yml").write_text(yaml.safe_dump(group_vars or {}))
    for name, hv in (host_vars or {}).items():
        (path / "host_vars").mkdir(exist_ok=True)
        (path / "host_vars" / f"{name}.yml").write_text(yaml.safe_dump(hv))
    if extra_hosts:
        (path / "extra.yml").write_text(yaml.safe_dump({"all": {"hosts": extra_hosts}}))
    return path


def invoke(*args: str, stdin: str | None = None, check: bool = False,
           timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the real command line, as a sysadmin would."""
    env = dict(os.environ, NO_COLOR="1")
    proc = subprocess.run([*INVOKE, *args], cwd=REPO, input=stdin, text=True,
                          capture_output=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"invoke {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    return proc


def start_invoke(*args: str) -> subprocess.Popen:
    """Start the real command line without waiting, for a test that sends it Ctrl-C.

    Its SIGINT is the default, as in a sysadmin's terminal: scripts/test.sh starts two of
    its sessions with `&`, and a non-interactive shell starts those with SIGINT ignored,
    which every child would inherit (and Python then installs no KeyboardInterrupt).
    """
    import signal

    return subprocess.Popen([*INVOKE, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, NO_COLOR="1"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def provision_json(inventory: Path, hosts: str, tmp: Path, *extra: str,
                   check: bool = True) -> tuple[subprocess.CompletedProcess, dict]:
    """`invoke provision` with a JSON report; returns the process and the report."""
    report = tmp / f"report-{os.getpid()}-{len(list(tmp.glob('report-*')))}.json"
    proc = invoke("provision", "--hosts", hosts, "--inventory", str(inventory), "--json",
                  str(report), *extra)
    if check and proc.returncode != 0:
        raise AssertionError(f"provision failed ({proc.returncode}):\n{proc.stdout[-6000:]}"
                             f"\n{proc.stderr[-2000:]}")
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc, data


def sh(host: str, command: str, check: bool = True) -> str:
    """Run a shell command on a lab host as root; return stdout."""
    proc = run_ssh(host, command)
    if check and proc.returncode != 0:
        raise AssertionError(f"{host}: {command!r} failed ({proc.returncode}): "
                             f"{proc.stderr}{proc.stdout}")
    return proc.stdout


def main_pid(host: str, unit: str) -> int:
    return int(sh(host, f"systemctl show -p MainPID --value {unit}").strip())


def snapshot(host: str) -> str:
    """What a run could change on a host, as one text: accounts, managed files, units."""
    script = r"""
set -u
cat /etc/passwd /etc/group
cut -d: -f1,3- /etc/shadow
for f in /etc/sudoers.d/* /etc/jupyterhub/* /var/lib/jupyterhub/* /etc/systemd/system/*.service; do
  [ -e "$f" ] && stat -c '%n %a %U:%G %s' "$f" && sha256sum "$f"
done
ls /opt 2>/dev/null
for u in jupyterhub.service configurable-http-proxy.service; do
  systemctl show -p ActiveState,MainPID,UnitFileState "$u"
done
"""
    return sh(host, script)
