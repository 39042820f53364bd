"""Health after a restart: the unit is watched as well as the URL, and the failure shows
the service's own log. HEALTH_SCRIPT runs here for real, against a fake ``systemctl`` (a
script on PATH answering from a file the test rewrites) and a loopback HTTP server."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hostmodel import converged, inventory_vars
from provision.runner import pending_marker
from roles import jupyterhub
from roles._common import HEALTH_SCRIPT, service_log
from test_runner import Lab

RUNNING = {"ActiveState": "active", "SubState": "running", "NRestarts": "0",
           "InvocationID": "aaa", "ExecMainStatus": "0"}


class FakeSystemd:
    def __init__(self, tmp: Path) -> None:
        self.state = tmp / "state.json"
        self.calls = tmp / "calls"  # a line per systemctl the script ran
        self.bin = tmp / "bin"
        self.bin.mkdir()
        script = self.bin / "systemctl"
        script.write_text(f"#!{sys.executable}\nimport json\n"
                          f"for k, v in json.load(open({str(self.state)!r})).items():\n"
                          "    print(f'{k}={v}')\n"
                          f"open({str(self.calls)!r}, 'a').write('called\\n')\n")
        script.chmod(0o755)
        self.set(**RUNNING)

    def set(self, **props: str) -> None:
        self.state.write_text(json.dumps(props))

    def env(self) -> dict[str, str]:
        return dict(os.environ, PATH=f"{self.bin}:{os.environ['PATH']}")


@pytest.fixture
def systemd(tmp_path):
    return FakeSystemd(tmp_path)


@pytest.fixture
def server():
    """A loopback HTTP server; ``codes`` is the status it answers with, in turn."""
    codes: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(codes.pop(0) if len(codes) > 1 else codes[0])
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/hub/api", codes
    httpd.shutdown()
    httpd.server_close()  # its listening socket, too


def health(systemd: FakeSystemd, url: str, limit: float = 20, below: int = 400,
           during=None) -> tuple[dict, float]:
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", HEALTH_SCRIPT, "jupyterhub.service", url,
                             str(limit), str(below)], env=systemd.env(),
                            stdout=subprocess.PIPE, text=True)
    if during:
        # the change happens after the script has read the unit once (however slowly a
        # loaded machine starts it), never before
        deadline = time.monotonic() + 30
        while not systemd.calls.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        during()
    out, _ = proc.communicate(timeout=limit + 10)
    data = json.loads(out)
    assert proc.returncode == (0 if data["ok"] else 1)
    return data, time.monotonic() - start


def test_a_service_that_answers_is_healthy(systemd, server):
    url, codes = server
    codes.append(200)
    data, _ = health(systemd, url)
    assert data["ok"] and data["reason"] == ""


def test_a_unit_waiting_to_be_restarted_fails_at_once(systemd):
    systemd.set(**dict(RUNNING, ActiveState="activating", SubState="auto-restart",
                       ExecMainStatus="1"))
    data, took = health(systemd, "http://127.0.0.1:9/", limit=60)
    assert not data["ok"]
    assert data["reason"] == ("jupyterhub.service is activating (auto-restart), its process "
                              "exited with status 1")
    assert took < 30  # far below the 60 s limit (not a timing assertion on the product)


def test_a_unit_restarted_by_systemd_meanwhile_fails(systemd):
    data, _ = health(systemd, "http://127.0.0.1:9/", limit=60, during=lambda: systemd.set(
        **dict(RUNNING, NRestarts="1", InvocationID="bbb", ExecMainStatus="1")))
    assert not data["ok"]
    assert data["reason"] == ("jupyterhub.service was restarted by systemd (its process "
                              "exited, status 1)")


@pytest.mark.parametrize("state, sub", [("failed", "failed"), ("inactive", "dead")])
def test_a_failed_or_stopped_unit_fails(systemd, state, sub):
    systemd.set(**dict(RUNNING, ActiveState=state, SubState=sub, ExecMainStatus="1"))
    data, _ = health(systemd, "http://127.0.0.1:9/", limit=60)
    assert not data["ok"] and f"is {state} ({sub})" in data["reason"]


def test_a_running_unit_that_does_not_answer_waits_for_the_limit(systemd):
    data, _ = health(systemd, "http://127.0.0.1:9/", limit=1.5)
    assert not data["ok"]
    assert data["reason"].startswith("jupyterhub.service is running but http://127.0.0.1:9/ "
                                     "did not answer within 2 s")


def test_an_error_status_is_not_an_answer_unless_below_the_threshold(systemd, server):
    url, codes = server
    codes.append(403)
    data, _ = health(systemd, url, limit=1.5)
    assert not data["ok"] and "(HTTP 403)" in data["reason"]
    assert health(systemd, url, limit=1.5, below=500)[0]["ok"]  # the proxy's API: 403 is up


# --------------------------------------------------------------------------- the log
def journal(*entries: dict) -> str:
    return "".join(json.dumps(e) + "\n" for e in entries)


HUB_CRASH = journal(
    {"_COMM": "jupyterhub-sing", "MESSAGE": "[W] 503 POST /hub/api/users/alice/activity"},
    {"_COMM": "jupyterhub", "MESSAGE": "[I app:3354] Running JupyterHub version 6.1.1"},
    {"_COMM": "jupyterhub", "MESSAGE": "[E app:3390] Failed to connect to db: "
                                       "sqlite:////nonexistent/dir/jupyterhub.sqlite"},
    {"_COMM": "jupyterhub", "MESSAGE": "sqlite3.OperationalError: unable to open database file"},
    {"_COMM": "systemd", "MESSAGE": "jupyterhub.service: Unit process 4711 "
                                    "(jupyterhub-sing) remains running after unit stopped."},
    {"_COMM": "systemd", "MESSAGE": "This usually indicates unclean termination of a previous "
                                    "run, or service implementation deficiencies."},
    {"_COMM": "systemd", "MESSAGE": "jupyterhub.service: Main process exited, code=exited, "
                                    "status=1/FAILURE"},
)


class LogRun:
    def __init__(self, out: str) -> None:
        self.out, self.argv = out, None

    def run(self, argv, **kw):
        self.argv = argv
        return type("R", (), {"out": self.out, "rc": 0, "err": ""})()


def test_the_log_is_the_services_own_with_its_first_error_marked():
    run = LogRun(HUB_CRASH)
    text, first = service_log(run, "jupyterhub.service", 1796000000,
                              exclude_comm=("jupyterhub-sing",))
    assert run.argv[:5] == ["journalctl", "--unit", "jupyterhub.service", "--since",
                            "@1796000000"]
    assert text.splitlines() == [
        "   [I app:3354] Running JupyterHub version 6.1.1",
        ">> [E app:3390] Failed to connect to db: sqlite:////nonexistent/dir/jupyterhub.sqlite",
        "   sqlite3.OperationalError: unable to open database file",
        "   jupyterhub.service: Main process exited, code=exited, status=1/FAILURE",
    ]
    assert first.startswith("[E app:3390] Failed to connect to db")


def test_an_error_older_than_the_tail_is_still_shown():
    entries = [{"_COMM": "x", "MESSAGE": "Traceback (most recent call last):"}]
    entries += [{"_COMM": "x", "MESSAGE": f"line {i}"} for i in range(30)]
    text, first = service_log(LogRun(journal(*entries)), "x.service", None, lines=5)
    assert text.splitlines() == [">> Traceback (most recent call last):", "   ...",
                                 *(f"   line {i}" for i in range(25, 30))]


class LaggingLogRun:
    """journalctl as journald answers while it has not read the service's stream yet:
    systemd's own lines first, the service's after ``lag`` reads."""

    def __init__(self, early: str, late: str, lag: int) -> None:
        self.early, self.late, self.lag, self.reads = early, late, lag, 0

    def run(self, argv, **kw):
        self.reads += 1
        out = self.early if self.reads <= self.lag else self.late
        return type("R", (), {"out": out, "rc": 0, "err": ""})()


SYSTEMD_ONLY = journal(
    {"_COMM": "systemd", "_PID": "1", "MESSAGE": "jupyterhub.service: Main process exited, "
                                                 "code=exited, status=1/FAILURE"},
    {"_COMM": "systemd", "_PID": "1", "MESSAGE": "jupyterhub.service: Failed with result "
                                                 "'exit-code'."},
)


def test_the_services_own_error_wins_over_systemds_even_when_logged_later():
    late = journal(
        {"_COMM": "systemd", "_PID": "1", "MESSAGE": "jupyterhub.service: Failed with result "
                                                     "'exit-code'."},
        {"_COMM": "jupyterhub", "_PID": "812", "MESSAGE": "sqlite3.OperationalError: unable "
                                                          "to open database file"},
    )
    run = LaggingLogRun(late, late, 0)
    _, first = service_log(run, "jupyterhub.service", None)
    assert first == "sqlite3.OperationalError: unable to open database file"
    assert run.reads == 1


def test_the_journal_is_read_again_until_the_services_own_lines_arrive():
    run = LaggingLogRun(SYSTEMD_ONLY, SYSTEMD_ONLY + HUB_CRASH, 2)
    text, first = service_log(run, "jupyterhub.service", None, settle=5)
    assert run.reads == 3
    assert first.startswith("[E app:3390] Failed to connect to db")
    assert ">> [E app:3390]" in text


def test_with_no_error_of_its_own_systemds_line_is_the_error_after_the_wait():
    run = LaggingLogRun(SYSTEMD_ONLY, SYSTEMD_ONLY, 99)
    start = time.monotonic()
    _, first = service_log(run, "jupyterhub.service", None, settle=1)
    assert time.monotonic() - start >= 1
    assert 2 <= run.reads <= 4
    assert first == "jupyterhub.service: Failed with result 'exit-code'."


# ------------------------------------------------------------------ through the runner
def test_a_hub_that_crashes_is_reported_with_its_error_and_rolled_back():
    v = inventory_vars()
    host = converged(v)
    host.add_file(pending_marker(jupyterhub.HANDLER), "")
    checks = []

    def hub(argv):
        if argv[:3] == ["python3", "-c", HEALTH_SCRIPT]:
            checks.append(argv)
            if len(checks) == 1:
                return 1, json.dumps({"ok": False, "since": 1796000000, "seconds": 1.2,
                                      "reason": "jupyterhub.service is activating "
                                                "(auto-restart), its process exited with "
                                                "status 1"}), ""
            return 0, json.dumps({"ok": True, "reason": "", "since": 1, "seconds": 2}), ""
        if argv[0] == "journalctl":
            return 0, HUB_CRASH, ""
        return None

    lab = Lab({"lab1": host}, v, fail={"lab1": hub})
    report = lab.run()
    rep = report.hosts["lab1"]
    step = rep.steps[-1]
    assert step.status == "failed"
    assert step.error["message"] == (
        "the hub did not come back after a restart (1.2 s): jupyterhub.service is "
        "activating (auto-restart), its process exited with status 1; the hub's error: "
        "[E app:3390] Failed to connect to db: sqlite:////nonexistent/dir/jupyterhub.sqlite;"
        " the previous jupyterhub_config.py was put back and the hub answers again")
    assert "remains running" not in step.error["stderr"]
    assert "503 POST" not in step.error["stderr"]
    assert checks[0][3:] == ["jupyterhub.service", "http://127.0.0.1:8081/hub/api",
                             str(v["jupyterhub_ready_timeout"]), "400"]
    assert report.as_dict()["hosts"]["lab1"]["reason"] == step.error["message"]
