"""Unit tests of the lab's process and state helpers (no root, no containers)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provision.lab import host, system
from provision.lab.errors import LabError
from provision.lab.host import HostState, process_state
from provision.lab.system import LAUNCHER


def test_proc_of_self_is_alive() -> None:
    me = system.Proc.of(os.getpid())
    assert system.alive(me)
    assert not system.alive(system.Proc(me.pid, me.start + 1))  # a reused PID is not ours


def test_state_round_trips_through_json() -> None:
    state = HostState(
        name="lab1",
        base="/var/lib/jhprovision-lab/base/abc",
        nspawn=system.Proc(10, 20),
        slirp=None,
    )
    assert HostState.from_json(state.to_json()) == state


def test_process_state_of_dead_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not this machine's real lab cgroups: a lab may be running while the tests run.
    monkeypatch.setattr(host, "cgroup_dirs", lambda *parts: [])
    dead = system.Proc(os.getpid(), 0)  # our PID with a start time that is not ours
    assert process_state(None) == "stopped"
    assert process_state(HostState("lab1", "/b", nspawn=dead, slirp=dead)) == "stopped"
    me = system.Proc.of(os.getpid())
    assert process_state(HostState("lab1", "/b", nspawn=me, slirp=dead)) == "partial"
    assert process_state(HostState("lab1", "/b", nspawn=me, slirp=me)) == "running"


def test_mountinfo_unescape() -> None:
    assert system._unescape_mountinfo(r"/work/my\040repo\011x") == "/work/my repo\tx"


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "inventory" / "lab.yml"
    system.atomic_write(target, "one\n")
    system.atomic_write(target, "two\n", mode=0o600)
    assert target.read_text() == "two\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["lab.yml"]


def test_run_raises_lab_error_with_stderr() -> None:
    with pytest.raises(LabError, match="exit 3.*boom"):
        system.run(["sh", "-c", "echo boom >&2; exit 3"])


def test_require_commands_names_the_package() -> None:
    with pytest.raises(LabError, match="apt-get install -y slirp4netns"):
        system.require_commands(["slirp4netns-surely-missing"])


def test_launcher_detaches_and_reports_pid(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    result = subprocess.run(
        [sys.executable, str(LAUNCHER), "--log", str(log), "--",
         "sh", "-c", "echo started; sleep 30"],
        capture_output=True, text=True, check=True, timeout=10,
    )  # fmt: skip
    proc = system.Proc.of(int(result.stdout))
    try:
        # Its own session, and not our child: PID 1 (or a subreaper) reaps it.
        assert os.getsid(proc.pid) == proc.pid
        deadline = time.monotonic() + 5
        while "started" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.read_text() == "started\n"
    finally:
        system.stop(proc, timeout=5)
    assert not system.alive(proc)


def test_launcher_reports_exec_failure(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(LAUNCHER), "--log", str(tmp_path / "x.log"), "--",
         "/nonexistent/program"],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert result.returncode == 1
    assert "cannot start /nonexistent/program" in result.stderr
