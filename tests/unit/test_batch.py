"""Batched mutations (issue 15): a role's short steps go to the host in one round trip.

BATCH_PROGRAM runs for real here, on this machine through LocalTransport (harmless
commands only); the runner's grouping runs against the modelled host, where each batched
command is answered on its own (FakeTransport.run_batch)."""

from __future__ import annotations

import io
import json
import shlex

import pytest

from faketransport import FakeTransport
from hostmodel import HostState, inventory_vars
from roles.users import USERADD_BATCH
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


def users_run(n: int, fail: str | None = None, bulk: bool = False):  # noqa: ANN201
    v = inventory_vars(users=many_users(n), users_bulk_create=bulk)
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


@pytest.mark.parametrize("n", [2, 40])
def test_new_accounts_are_one_step_of_their_useradd_commands(n):
    """users_bulk_create: the accounts' useradd commands go to the host's batch writer
    together, in inventory order, one step before the accounts' own steps."""
    rep, t = users_run(n, bulk=True)
    assert not rep.failed, rep.error
    assert rep.round_trips == 2
    (batch,) = [stdin for argv, stdin in t.calls if USERADD_BATCH in argv]
    assert [a[-1] for a in json.loads(batch)] == [u["name"] for u in many_users(n)]
    assert not any(argv[:1] == ["useradd"] for argv, _ in t.calls)
    step = rep.steps[[s.name for s in rep.steps].index(f"accounts of {n} users")]
    assert step.status == "changed" and step.diff.count("+ user u") == n


def test_one_new_account_is_its_own_useradd():
    rep, t = users_run(1, bulk=True)
    assert not rep.failed and [argv[-1] for argv, _ in t.calls if argv[:1] == ["useradd"]] \
        == ["u000"]
    assert not any(USERADD_BATCH in argv for argv, _ in t.calls)


def test_a_failed_batch_writer_fails_its_step_with_what_it_said():
    v = inventory_vars(users=many_users(5))
    st = HostState()
    err = "/etc/passwd is locked by process 4321\n"
    t = FakeTransport("lab1", responder=st.responder(
        lambda argv: (1, "", err) if USERADD_BATCH in argv else None))
    rep = run([Host("lab1", vars=v)], USERS_ROLES, display=Display(io.StringIO(), color=False),
              transport_factory=lambda h: t).hosts["lab1"]
    assert rep.failed and rep.steps[-1].name == "accounts of 5 users"
    assert rep.steps[-1].error["stderr"] == err
    assert "u000, u001, u002, u003, u004" in rep.steps[-1].error["command"]
    assert not any(argv[:1] == ["gpasswd"] for argv, _ in t.calls)  # nothing after it


def test_check_mode_batches_nothing_and_sends_only_the_facts():
    v = inventory_vars(users=many_users(5))
    t = FakeTransport("lab1", responder=HostState().responder())
    report = run([Host("lab1", vars=v)], USERS_ROLES, check=True,
                 display=Display(io.StringIO(), color=False), transport_factory=lambda h: t)
    assert report.hosts["lab1"].round_trips == 1 and len(t.calls) == 1
