"""The runner over FakeTransports answering from modelled hosts (no SSH, nothing run here)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

from faketransport import FakeTransport
from hostmodel import ALICE_HASH, DEBIAN_NODE, ROLES, HostState, converged, fresh, inventory_vars
from provision.display import Display
from provision.errors import UnreachableError
from provision.facts import COLLECTOR_ARGV
from provision.inventory import Host
from provision.runner import PENDING_DIR, pending_marker, run
from provision.transport import PUT_SCRIPT, Transport
from roles import jupyterhub, proxy

GATHER = COLLECTOR_ARGV
Fail = Callable[[list[str]], tuple[int, str, str] | None]


class Lab:
    """Hosts, their modelled state and the fake transport each one got."""

    def __init__(self, states: dict[str, HostState], v: dict[str, Any] | None = None,
                 fail: dict[str, Fail] | None = None) -> None:
        self.states = states
        self.v = v or inventory_vars()
        self.fail = fail or {}
        self.transports: dict[str, FakeTransport] = {}
        self.out = io.StringIO()

    def factory(self, host: Host) -> Transport:
        t = FakeTransport(host.name, responder=self.states[host.name].responder(
            self.fail.get(host.name)))
        self.transports[host.name] = t
        return t

    def run(self, *, check: bool = False, factory: Callable[[Host], Transport] | None = None):
        hosts = [Host(name, vars=dict(self.v, inventory_hostname=name))
                 for name in self.states]
        return run(hosts, ROLES, check=check, display=Display(self.out, color=False),
                   transport_factory=factory or self.factory)

    def argvs(self, name: str) -> list[list[str]]:
        return [argv for argv, _ in self.transports[name].calls]


def fail_on(word: str, rc: int = 1, err: str = "") -> Fail:
    return lambda argv: (rc, "", err) if word in argv else None


# -------------------------------------------------------------------- no-op / check mode
def test_noop_run_is_one_round_trip_per_host():
    v = inventory_vars()
    lab = Lab({"lab1": converged(v), "lab2": converged(v)}, v)
    report = lab.run()
    for name in ("lab1", "lab2"):
        host = report.hosts[name]
        assert not host.failed and host.count("changed") == 0, host.steps
        assert host.count("ok") == len(host.steps) > 20
        assert host.round_trips == 1
        assert lab.argvs(name) == [GATHER]
        assert host.handlers == []
    assert report.changed == 0 and report.failed_hosts == []


def test_check_mode_sends_only_the_fact_gathering_command():
    lab = Lab({"lab1": fresh(), "lab2": fresh()})
    report = lab.run(check=True)
    for name in ("lab1", "lab2"):
        calls = lab.transports[name].calls
        assert len(calls) == 1 and calls[0][0] == GATHER
        host = report.hosts[name]
        assert not host.failed and host.round_trips == 1
        changed = [s for s in host.steps if s.status == "changed"]
        assert changed and all(s.commands for s in changed
                               if not s.name.startswith("handler:"))
        assert "handler: restart jupyterhub" in [s.name for s in host.steps]
    assert "(would change)" in lab.out.getvalue()


def test_check_mode_reports_a_refusal_as_failed():
    v = inventory_vars(nodejs_source="apt")
    host = fresh()
    host.dpkg["nodejs"] = DEBIAN_NODE
    lab = Lab({"lab1": host}, v)
    report = lab.run(check=True)
    rep = report.hosts["lab1"]
    assert lab.argvs("lab1") == [GATHER]
    failed = [s for s in rep.steps if s.status == "failed"]
    assert [s.name for s in failed] == ["node version check"]
    assert "5.3.0" in failed[0].error["message"] and "18.19.0" in failed[0].error["message"]
    assert report.failed_hosts == ["lab1"]
    assert rep.steps[-1] is failed[0]  # the host stops at the refusal


# ----------------------------------------------------------------------- a real change
def test_changes_are_applied_in_order_and_handlers_run_once():
    lab = Lab({"lab1": fresh()})
    report = lab.run()
    rep = report.hosts["lab1"]
    assert not rep.failed, rep.error
    argvs = lab.argvs("lab1")
    # facts again only after a role changed something: 6 roles with steps (users, wheel,
    # nodejs, proxy, userenv, jupyterhub) all change -> 1 + 5
    assert argvs.count(GATHER) == 6
    # every command ran, in order, but each role's short steps went as one batch: one
    # round trip for users' 2 users, wheel's group and sudoers, ... (long steps on their own)
    assert rep.round_trips < len(argvs) / 1.5
    assert rep.handlers == ["restart proxy", "restart jupyterhub"]
    restart_hub = ["systemctl", "restart", "--", jupyterhub.UNIT]
    restart_proxy = ["systemctl", "restart", "--", proxy.UNIT]
    assert argvs.count(restart_hub) == 1 and argvs.count(restart_proxy) == 1
    assert argvs.index(restart_proxy) < argvs.index(restart_hub)
    # the restart is remembered on the host before the change, forgotten after the restart
    marker = pending_marker(jupyterhub.HANDLER)
    remember = [i for i, a in enumerate(argvs) if a[:2] == ["sh", "-c"] and marker in a]
    upload = next(i for i, a in enumerate(argvs)
                  if a[:3] == ["sh", "-c", PUT_SCRIPT] and a[4] == jupyterhub.config_path(
                      lab.v))
    assert remember and remember[0] < upload
    assert argvs[-1] == ["rm", "-f", "--", marker]
    assert all(PENDING_DIR in a for i, a in enumerate(argvs) if i in remember)


def test_password_hash_never_reaches_the_report():
    lab = Lab({"lab1": fresh()})
    report = lab.run()
    text = json.dumps(report.as_dict())
    assert "chpasswd --encrypted  # alice:(hash not shown)" in text
    assert ALICE_HASH not in text and ALICE_HASH not in lab.out.getvalue()
    stdin = [s for a, s in lab.transports["lab1"].calls if a == ["chpasswd", "--encrypted"]]
    assert stdin == [f"alice:{ALICE_HASH}\n".encode()]


def test_pending_restart_from_an_interrupted_run_is_done():
    v = inventory_vars()
    host = converged(v)
    host.add_file(pending_marker(jupyterhub.HANDLER), "")
    lab = Lab({"lab1": host}, v)
    rep = lab.run().hosts["lab1"]
    assert rep.handlers == [jupyterhub.HANDLER] and rep.count("changed") == 1
    argvs = lab.argvs("lab1")
    assert argvs[0] == GATHER and argvs.count(GATHER) == 1
    assert ["systemctl", "restart", "--", jupyterhub.UNIT] in argvs
    assert argvs[-1] == ["rm", "-f", "--", pending_marker(jupyterhub.HANDLER)]


def test_after_ctrl_c_no_handler_starts_and_the_next_run_does_them():
    """Ctrl-C while the last step runs: the step finishes, no handler starts, and their
    markers stay for the next run."""
    import threading

    from provision.runner import converge_host

    v = inventory_vars(jupyterhub_start_timeout=75, jupyterhub_user_packages=["tabulate"])
    host = converged(inventory_vars())
    cancel = threading.Event()
    answer = host.responder()

    def respond(argv: list[str], stdin: bytes | None) -> tuple[int, str, str]:
        if "tabulate" in argv:  # the users' pip install, the run's last step
            cancel.set()
        return answer(argv, stdin)

    t = FakeTransport("lab1", responder=respond)
    rep = converge_host(Host("lab1", vars=dict(v, inventory_hostname="lab1")), ROLES,
                        check=False, display=Display(io.StringIO(), color=False),
                        cancel=cancel, transport_factory=lambda h: t)
    assert rep.handlers == [] and rep.error == "interrupted"
    argvs = [a for a, _ in t.calls]
    assert not any(a[:2] == ["systemctl", "restart"] for a in argvs)
    assert not any(a[:3] == ["rm", "-f", "--"] and "pending" in a[3] for a in argvs)


def test_hub_that_does_not_answer_is_rolled_back():
    v = inventory_vars()
    host = converged(v)
    host.add_file(pending_marker(jupyterhub.HANDLER), "")
    waits = []

    def fail(argv: list[str]) -> tuple[int, str, str] | None:
        if argv[:2] == ["python3", "-c"]:
            waits.append(argv)
            return (1, "", "no answer") if len(waits) == 1 else (0, "{}", "")
        if argv[0] == "journalctl":
            return 0, "Traceback: bad config\n", ""
        return None

    lab = Lab({"lab1": host}, v, fail={"lab1": fail})
    rep = lab.run().hosts["lab1"]
    assert rep.failed
    step = rep.steps[-1]
    assert step.status == "failed" and step.name == f"handler: {jupyterhub.HANDLER}"
    assert "previous jupyterhub_config.py was put back" in step.error["message"]
    assert "Traceback: bad config" in step.error["stderr"]
    argvs = lab.argvs("lab1")
    assert argvs.count(["systemctl", "restart", "--", jupyterhub.UNIT]) == 2
    # the marker stays: the next run restarts again
    assert ["rm", "-f", "--", pending_marker(jupyterhub.HANDLER)] not in argvs


# ---------------------------------------------------------------- failures and hosts
def test_failed_command_fails_only_its_host():
    err = "useradd: cannot lock /etc/passwd; try again later.\n"
    lab = Lab({"lab1": fresh(), "lab2": fresh()},
              fail={"lab1": fail_on("useradd", rc=1, err=err)})
    report = lab.run()
    bad, good = report.hosts["lab1"], report.hosts["lab2"]
    assert report.failed_hosts == ["lab1"]
    last = bad.steps[-1]
    assert (last.role, last.name, last.status) == ("users", "user alice", "failed")
    assert last.error["command"].startswith("useradd ") and "alice" in last.error["command"]
    assert last.error["rc"] == 1 and last.error["stderr"] == err
    assert lab.argvs("lab1")[-1][0] == "useradd"  # nothing ran after the failure
    assert bad.handlers == []
    assert not good.failed and good.count("changed") > 0
    assert good.handlers == ["restart proxy", "restart jupyterhub"]
    out = bad.as_dict()
    assert out["failed"] == 1 and out["unreachable"] is False


class UnreachableTransport(FakeTransport):
    def connect(self) -> None:
        raise UnreachableError(f"{self.name}: cannot connect to root@{self.name}:22: "
                               "Connection refused", host=self.name)


def test_unreachable_host_is_reported_and_others_finish():
    v = inventory_vars()
    lab = Lab({"lab1": converged(v), "lab2": converged(v), "lab3": converged(v)}, v)

    def factory(host: Host) -> Transport:
        if host.name == "lab2":
            lab.transports["lab2"] = UnreachableTransport("lab2")
            return lab.transports["lab2"]
        return lab.factory(host)

    report = lab.run(factory=factory)
    down = report.hosts["lab2"]
    assert down.unreachable and "Connection refused" in down.error
    assert down.steps == [] and lab.transports["lab2"].calls == []
    assert down.as_dict()["unreachable"] is True and down.as_dict()["failed"] == 0
    for name in ("lab1", "lab3"):
        assert not report.hosts[name].failed and report.hosts[name].count("ok") > 20
    assert report.failed_hosts == ["lab2"]
    assert "unreachable" in lab.out.getvalue()


def test_connection_lost_mid_run_is_unreachable():
    lab = Lab({"lab1": fresh(), "lab2": fresh()})

    def factory(host: Host) -> Transport:
        t = lab.factory(host)
        if host.name == "lab1":
            answer = t.responder

            def drop(argv: list[str], stdin: bytes | None) -> tuple[int, str, str]:
                if argv[0] == "groupadd":
                    raise UnreachableError("lab1: connection lost while running a command",
                                           host="lab1")
                return answer(argv, stdin)

            t.responder = drop
        return t

    report = lab.run(factory=factory)
    assert report.hosts["lab1"].unreachable
    assert not report.hosts["lab2"].failed


def test_transport_factory_raising_unreachable_fails_only_that_host():
    v = inventory_vars()
    lab = Lab({"lab1": converged(v), "lab2": converged(v)}, v)

    def factory(host: Host) -> Transport:
        if host.name == "lab1":
            raise UnreachableError("lab1: known_hosts file /nope does not exist", host="lab1")
        return lab.factory(host)

    report = lab.run(factory=factory)
    assert report.hosts["lab1"].unreachable
    assert not report.hosts["lab2"].failed and report.hosts["lab2"].count("ok") > 20


def test_transport_factory_bug_fails_only_that_host():
    v = inventory_vars()
    lab = Lab({"lab1": converged(v), "lab2": converged(v)}, v)

    def factory(host: Host) -> Transport:
        if host.name == "lab1":
            raise ValueError("could not convert string to float: 'ten'")
        return lab.factory(host)

    report = lab.run(factory=factory)
    assert report.hosts["lab1"].failed and "ten" in report.hosts["lab1"].error
    assert not report.hosts["lab2"].failed and report.hosts["lab2"].count("ok") > 20


# ----------------------------------------------------------------------- JSON report
def test_json_report_shape():
    err = "E: Unable to locate package sudo\n"
    lab = Lab({"lab1": fresh(), "lab2": converged(inventory_vars())},
              fail={"lab1": lambda a: (100, "", err) if a[3:5] == ["apt-get", "install"]
                    else None})
    data = json.loads(json.dumps(lab.run().as_dict()))
    assert set(data) >= {"hosts", "failed_hosts", "check", "command"}
    assert data["failed_hosts"] == ["lab1"] and data["check"] is False
    for name in ("lab1", "lab2"):
        h = data["hosts"][name]
        assert set(h) >= {"ok", "changed", "failed", "unreachable", "steps"}
        assert all(isinstance(h[k], int) for k in ("ok", "changed", "failed"))
        assert h["unreachable"] is False
        for step in h["steps"]:
            assert set(step) >= {"role", "name", "status", "diff", "commands", "error"}
            assert step["status"] in ("ok", "changed", "failed")
    lab2 = data["hosts"]["lab2"]
    assert (lab2["changed"], lab2["failed"]) == (0, 0) and lab2["ok"] == len(lab2["steps"])
    lab1 = data["hosts"]["lab1"]
    assert lab1["failed"] == 1
    failed = [s for s in lab1["steps"] if s["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"]["stderr"] == err
    assert failed[0]["error"]["rc"] == 100
    assert "apt-get install" in failed[0]["error"]["command"]
    assert lab1["ok"] + lab1["changed"] + lab1["failed"] == len(lab1["steps"])


def test_one_failure_counts_once():
    lab = Lab({"lab1": fresh()})

    def factory(host: Host) -> Transport:
        return FakeTransport(host.name, responder=lambda argv, stdin: (
            127, "", "sh: 1: python3: not found"))

    data = lab.run(factory=factory).as_dict()["hosts"]["lab1"]
    assert [s["name"] for s in data["steps"]] == ["gather facts"]
    assert "apt-get install python3" in data["error"]
    assert data["failed"] == 1
