"""Batched mutations (issue 15): a role's short steps go to the host in one round trip.

BATCH_PROGRAM runs for real here, on this machine through LocalTransport (harmless
commands only); the runner's grouping runs against the modelled host, where each batched
command is answered on its own (FakeTransport.run_batch)."""

from __future__ import annotations

import io
import json
import shlex
import subprocess

import pytest

from faketransport import FakeTransport
from hostmodel import HostState, inventory_vars
from provision.display import Display
from provision.inventory import Host
from provision.role import load_roles
from provision.runner import run
from provision.transport import BATCH_PROGRAM, BatchOp, LocalTransport

SECRET = b"s3cret-never-in-a-command-line"


# ------------------------------------------------------------- the program, for real
HARMLESS = {"echo", "sh", "sleep", "/nonexistent/program"}
REAL_EXEC = LocalTransport._exec  # at import: before conftest's guard is put in place


@pytest.fixture(autouse=True)
def batch_program_may_run_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beside the collector (conftest), this module may run BATCH_PROGRAM on this machine,
    with the harmless commands of its own tests only."""
    guarded = LocalTransport._exec

    def allow(self: LocalTransport, command: str, stdin: bytes | None,
              timeout: float | None):  # noqa: ANN202
        if command == shlex.join(["python3", "-c", BATCH_PROGRAM]):
            ops = json.loads(stdin or b"[]")
            assert all(op["argv"][0] in HARMLESS for op in ops), ops
            return REAL_EXEC(self, command, stdin, timeout)
        return guarded(self, command, stdin, timeout)

    monkeypatch.setattr(LocalTransport, "_exec", allow)


class Recording(LocalTransport):
    def __init__(self) -> None:
        super().__init__("here")
        self.lines: list[str] = []

    def _exec(self, command, stdin, timeout):  # noqa: ANN001, ANN202
        self.lines.append(command)
        return super()._exec(command, stdin, timeout)


def test_batch_runs_in_order_with_each_commands_own_stdin_and_stops_at_the_first_failure():
    t = Recording()
    results = t.run_batch([
        BatchOp(["echo", "one"]),
        BatchOp(["sh", "-c", "cat"], stdin=SECRET, display="write the secret"),
        BatchOp(["sh", "-c", "cat; echo"]),  # no stdin: EOF at once, never the batch's
        BatchOp(["sh", "-c", "echo to-stderr >&2; exit 3"]),
        BatchOp(["echo", "never run"]),
    ])
    assert t.round_trips == 1
    assert [r.rc for r in results] == [0, 0, 0, 3]
    assert results[0].out == "one\n" and results[1].out == SECRET.decode()
    assert results[1].command == "write the secret"
    assert results[2].out == "\n"
    assert results[3].err == "to-stderr\n" and results[3].command.startswith("sh -c")
    assert all(r.duration >= 0 for r in results)
    (line,) = t.lines
    assert SECRET.decode() not in line and "python3 -c" in line


def test_batch_reports_a_timeout_and_a_missing_program_as_that_commands_failure():
    t = LocalTransport()
    (slow,) = t.run_batch([BatchOp(["sleep", "5"], timeout=0.3)])
    assert slow.rc == 124 and "timed out" in slow.err
    (missing,) = t.run_batch([BatchOp(["/nonexistent/program"])])
    assert missing.rc == 127 and "No such file" in missing.err


def test_batch_program_is_the_hosts_python_only():
    """It runs on the host's python3 with nothing but the standard library."""
    imports = [ln for ln in BATCH_PROGRAM.splitlines() if ln.startswith(("import", "from"))]
    assert imports == ["import base64, json, subprocess, sys, time"]
    compile(BATCH_PROGRAM, "batch", "exec")


# ------------------------------------------------------------------ the runner's side
USERS_ROLES = load_roles(("users",))


def many_users(n: int) -> list[dict]:
    return [{"name": f"u{i:03d}", "uid": 3000 + i} for i in range(n)]


def users_run(n: int, fail: str | None = None):  # noqa: ANN201
    v = inventory_vars(users=many_users(n))
    st = HostState()

    def failing(argv: list[str]):  # noqa: ANN202
        return (9, "", f"useradd: cannot create {fail}\n") if fail in argv else None

    t = FakeTransport("lab1", responder=st.responder(failing if fail else None))
    report = run([Host("lab1", vars=v)], USERS_ROLES,
                 display=Display(io.StringIO(), color=False), transport_factory=lambda h: t)
    return report.hosts["lab1"], t


@pytest.mark.parametrize("n", [3, 40])
def test_a_roles_steps_are_one_round_trip_however_many_users(n):
    rep, t = users_run(n)
    assert not rep.failed, rep.error
    assert rep.round_trips == 2  # the facts, then every step of the role at once
    created = [argv for argv, _ in t.calls if argv[:1] == ["useradd"]]
    assert [a[-1] for a in created] == [u["name"] for u in many_users(n)]  # in order
    steps = [s for s in rep.steps if s.name.startswith("user u")]
    assert len(steps) == n and all(s.status == "changed" and s.commands for s in steps)


def test_a_failure_in_a_batch_is_its_own_steps_and_nothing_after_it_runs():
    rep, t = users_run(10, fail="u004")
    assert rep.failed and rep.round_trips == 2
    names = [(s.name, s.status) for s in rep.steps if s.name.startswith("user u")]
    assert names[:4] == [(f"user u{i:03d}", "changed") for i in range(4)]
    assert names[4] == ("user u004", "failed") and len(names) == 5
    err = rep.steps[-1].error
    assert err["rc"] == 9 and err["stderr"] == "useradd: cannot create u004\n"
    assert "useradd" in err["command"] and "u004" in err["command"]
    assert not any("u005" in argv for argv, _ in t.calls)


def test_every_account_is_made_by_useradd_and_each_group_by_one_gpasswd():
    """No program of ours writes the account files: one ``useradd`` per new account (in
    inventory order), then one ``gpasswd --members`` for the hub's group, all in the same
    round trip."""
    rep, t = users_run(40)
    assert not rep.failed, rep.error
    assert rep.round_trips == 2
    assert all(argv[0] in {"useradd", "groupadd", "gpasswd", "sh", "getent", "python3"}
               or argv[:2] == ["sudo", "-u"] for argv, _ in t.calls), \
        sorted({argv[0] for argv, _ in t.calls})
    assert not any("-c" in argv and "passwd" in " ".join(argv) and argv[0] == "python3"
                   for argv, _ in t.calls[1:])
    gpasswd = [argv for argv, _ in t.calls if argv[:1] == ["gpasswd"]]
    assert len(gpasswd) == 1 and gpasswd[0][2] == ",".join(u["name"] for u in many_users(40))


def test_check_mode_batches_nothing_and_sends_only_the_facts():
    v = inventory_vars(users=many_users(5))
    t = FakeTransport("lab1", responder=HostState().responder())
    report = run([Host("lab1", vars=v)], USERS_ROLES, check=True,
                 display=Display(io.StringIO(), color=False), transport_factory=lambda h: t)
    assert report.hosts["lab1"].round_trips == 1 and len(t.calls) == 1


def test_the_benchmarks_bare_loop_is_the_commands_the_run_ran():
    """bench.py's comparison: the loop typed by hand is the same shadow commands, in the
    same order, with the hashes the report hides put back on chpasswd's stdin."""
    from bench.bench import bare_loop

    hashed = [{**u, "password_hash": f"$6$s{i}$h{i}"} for i, u in enumerate(many_users(4))]
    v = inventory_vars(users=hashed)
    st = HostState()
    t = FakeTransport("lab1", responder=st.responder(None))
    report = run([Host("lab1", vars=v)], USERS_ROLES,
                 display=Display(io.StringIO(), color=False), transport_factory=lambda h: t)
    script = bare_loop(report.as_dict(), "lab1", {u["name"]: u["password_hash"]
                                                   for u in hashed})
    lines = script.splitlines()
    assert lines[0] == "set -e"
    ran = [shlex.join(argv) for argv, _ in t.calls
           if argv[0] in {"useradd", "groupadd", "gpasswd"}]
    assert [line for line in lines if not line.startswith(("set", "printf"))] == ran
    (chpasswd,) = [line for line in lines if "chpasswd" in line]
    assert shlex.split(chpasswd)[:6] == ["printf", "%s\\n",
                                         *(f"u{i:03d}:$6$s{i}$h{i}" for i in range(4))]
    out = subprocess.run(["sh", "-c", chpasswd.split(" | ")[0]], capture_output=True,
                         text=True, check=True).stdout
    assert out == "".join(f"u{i:03d}:$6$s{i}$h{i}\n" for i in range(4))
