"""A lab that lives through a semester, on lab3: per-user memory limits that the kernel
enforces, the users' own packages installed without restarting anything, sudo kept for
wheel in terminals, shared course data, verify over running servers, remove-user ending a
server's unit, and the idle culler stopping an idle server but not a busy one.

The culler is the slow part (minutes of waiting): its two servers start first, and the
last test checks them, so the waiting overlaps the other tests.
"""

from __future__ import annotations

import threading
import time

import pytest

from provision.api import hash_password
from provision.hubclient import HubClient, HubError, KernelDied

from e2e_support import invoke, main_pid, make_inventory, provision_json, sh

pytestmark = [pytest.mark.e2e, pytest.mark.lab3]
HOST = "lab3"
PASSWORD = "semester-e2e-pw-17"
USERS = {"tess": 2601, "sam": 2602, "sue": 2603, "ida": 2604, "bea": 2605}  # tess: wheel
IDLE_TIMEOUT, CULL_EVERY = 120, 30
GROUP_VARS = {
    "jupyterhub_mem_limit": "768M",
    "jupyterhub_cpu_limit": 1.0,
    "jupyterhub_user_packages": ["tabulate"],
    "jupyterhub_shared_dir": "/srv/course",
    "jupyterhub_idle_timeout": IDLE_TIMEOUT,
    "jupyterhub_idle_cull_every": CULL_EVERY,
    "wheel_sudo_nopasswd": True,
}
HUB = "jupyterhub.service"


def unit(user: str) -> str:
    return f"jupyter-{user}-singleuser.service"


@pytest.fixture(scope="module")
def semester(lab3, tmp_path_factory):
    """lab3 converged with limits, users' packages, shared data and a fast culler."""
    hashed = hash_password(PASSWORD)
    users = [{"name": n, "uid": uid, "password_hash": hashed, "admin": n == "tess"}
             for n, uid in USERS.items()]
    inv = make_inventory(tmp_path_factory.mktemp("inv-semester"),
                         group_vars=dict(GROUP_VARS, users=users))
    reports = tmp_path_factory.mktemp("reports-semester")
    _, first = provision_json(inv, HOST, reports)
    assert first["failed_hosts"] == [], first
    return {"inv": inv, "reports": reports, "first": first,
            "url": f"http://127.0.0.1:{lab3.ports['hub']}/"}


def client(semester, user: str) -> HubClient:
    c = HubClient(semester["url"], timeout=60)
    c.login(user, PASSWORD)
    c.start_server(user, wait=120)
    c.open_lab(user)
    return c


def changed(report: dict) -> list[str]:
    return [f"{s['role']}: {s['name']}" for s in report["hosts"][HOST]["steps"]
            if s["status"] != "ok"]


def write_vars(semester, **changes) -> None:
    import yaml

    path = semester["inv"] / "group_vars" / "all" / "main.yml"
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))


class Busy(threading.Thread):
    """Keeps a server busy the way a student running cells does: 1+1 every 20 s."""

    def __init__(self, c: HubClient, user: str) -> None:
        super().__init__(daemon=True)
        self.c, self.user, self.kernel = c, user, c.start_kernel(user)
        self.stop, self.errors, self.runs = threading.Event(), [], 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                assert self.c.execute(self.user, self.kernel, "1+1") == "2"
                self.runs += 1
            except (HubError, AssertionError, OSError) as exc:
                self.errors.append(repr(exc))
            self.stop.wait(20)


@pytest.fixture(scope="module")
def culling(semester):
    """ida's server left idle, bea's kept busy; started before the other tests run."""
    ida = client(semester, "ida")
    bea = client(semester, "bea")
    busy = Busy(bea, "bea")
    busy.start()
    yield {"ida": ida, "busy": busy, "since": time.monotonic()}
    busy.stop.set()
    busy.join(timeout=90)


# ------------------------------------------------------------------------------ tests
def test_converges_and_second_run_changes_nothing(semester, culling):
    steps = changed(semester["first"])
    for want in ("userenv: users' packages", "shared: directory /srv/course",
                 "shared: link /home/sam/shared", "jupyterhub: handler: restart jupyterhub"):
        assert want in steps, steps
    _, again = provision_json(semester["inv"], HOST, semester["reports"])
    assert changed(again) == []
    assert again["hosts"][HOST]["round_trips"] == 1


def test_a_kernel_past_the_memory_limit_dies_and_nothing_else_does(semester, culling):
    hub_pid = main_pid(HOST, HUB)
    sam = client(semester, "sam")
    sue = client(semester, "sue")
    sam_pid = main_pid(HOST, unit("sam"))
    props = sh(HOST, f"systemctl show -p MemoryMax,MemorySwapMax,OOMPolicy,"
                     f"CPUQuotaPerSecUSec -- {unit('sam')}")
    assert set(props.split()) == {"MemoryMax=805306368", "MemorySwapMax=0",
                                  "OOMPolicy=continue", "CPUQuotaPerSecUSec=1s"}
    with pytest.raises(KernelDied):
        sam.execute("sam", sam.start_kernel("sam"), "x = bytearray(1536 * 2**20); len(x)",
                    wait=180)
    assert sam.execute("sam", sam.start_kernel("sam"), "1+1") == "2"
    assert sue.execute("sue", sue.start_kernel("sue"), "1+1") == "2"
    assert main_pid(HOST, unit("sam")) == sam_pid  # the server itself lived on
    assert main_pid(HOST, HUB) == hub_pid
    # the kernel's own cgroup says it was the kernel, not a guess
    assert int(sh(HOST, "cat /sys/fs/cgroup/memory/system.slice/"
                        f"{unit('sam')}/memory.failcnt").strip()) > 0


def test_users_packages_arrive_without_restarting_anything(semester, culling):
    sam = client(semester, "sam")
    kernel = sam.start_kernel("sam")
    assert "tabulate" in sam.execute("sam", kernel, "import tabulate; tabulate.__name__")
    where = sam.execute("sam", kernel, "import sys; sys.executable")
    # the users' venv's interpreter (uv's scripts name it python, pip's python3)
    assert where in ("'/opt/jupyterhub-user/bin/python'", "'/opt/jupyterhub-user/bin/python3'")
    hub_pid, sam_pid = main_pid(HOST, HUB), main_pid(HOST, unit("sam"))
    write_vars(semester, jupyterhub_user_packages=["tabulate", "termcolor==2.5.0"])
    proc, report = provision_json(semester["inv"], HOST, semester["reports"], "--diff")
    assert changed(report) == ["userenv: users' packages"]
    assert "+ termcolor 2.5.0" in proc.stdout
    assert (main_pid(HOST, HUB), main_pid(HOST, unit("sam"))) == (hub_pid, sam_pid)
    assert sam.execute("sam", sam.start_kernel("sam"),
                       "import termcolor, importlib.metadata as m; m.version('termcolor')") \
        == "'2.5.0'"


def test_check_mode_shows_a_limit_change_and_changes_nothing(semester, culling):
    before = sh(HOST, "sha256sum /etc/jupyterhub/jupyterhub_config.py")
    proc, report = provision_json(semester["inv"], HOST, semester["reports"], "--check",
                                  "--diff", "--var", "jupyterhub_mem_limit=1G")
    assert changed(report) == ["jupyterhub: file /etc/jupyterhub/jupyterhub_config.py",
                               "jupyterhub: handler: restart jupyterhub"]
    assert "-c.SystemdSpawner.mem_limit = '768M'  # spawner" in proc.stdout
    assert "+c.SystemdSpawner.mem_limit = '1G'  # spawner" in proc.stdout
    assert sh(HOST, "sha256sum /etc/jupyterhub/jupyterhub_config.py") == before


def test_wheel_keeps_sudo_in_terminals_and_students_have_none(semester, culling):
    code = "import subprocess; subprocess.run(['sudo', '-n', 'true']).returncode"
    tess = client(semester, "tess")
    assert tess.execute("tess", tess.start_kernel("tess"), code) == "0"
    sue = client(semester, "sue")
    assert sue.execute("sue", sue.start_kernel("sue"), code) == "1"


def test_shared_data_written_by_wheel_read_by_all(semester, culling):
    tess = client(semester, "tess")
    assert tess.execute("tess", tess.start_kernel("tess"),
                        "open('shared/week1.txt', 'w').write('notes'); "
                        "import os; os.path.realpath('shared')") == "'/srv/course'"
    sue = client(semester, "sue")
    k = sue.start_kernel("sue")
    assert sue.execute("sue", k, "open('shared/week1.txt').read()") == "'notes'"
    with pytest.raises(HubError, match="PermissionError"):
        sue.execute("sue", k, "open('shared/mine.txt', 'w')")
    assert sh(HOST, "stat -c '%a %U:%G' /srv/course /home/sue/shared -L").split("\n")[0] \
        == "2775 root:wheel"


def test_verify_passes_with_servers_running(semester, culling):
    running = sh(HOST, "systemctl list-units --plain --no-legend --state=running "
                       "'jupyter-*-singleuser.service' | wc -l")
    assert int(running) >= 3
    junit = semester["reports"] / "verify.xml"
    proc = invoke("verify", "--hosts", HOST, "--inventory", str(semester["inv"]),
                  "--junit", str(junit))
    assert proc.returncode == 0, proc.stdout[-3000:]
    # The semester's own checks ran (not deselected) and passed, over running servers.
    import xml.etree.ElementTree as ET

    cases = {c.get("name", "").split("[")[0]: c for c in ET.parse(junit).iter("testcase")}
    for name in ("test_limits_on_running_servers", "test_shared_dir", "test_users_packages",
                 "test_idle_culler_runs_under_the_hub"):
        assert name in cases and not list(cases[name]), (name, sorted(cases))


def test_remove_user_ends_their_server_unit(semester, culling):
    client(semester, "sue")
    assert sh(HOST, f"systemctl is-active {unit('sue')}").strip() == "active"
    invoke("remove-user", "sue", "--hosts", HOST, "--inventory", str(semester["inv"]),
           check=True)
    assert sh(HOST, f"systemctl is-active {unit('sue')}", check=False).strip() != "active"
    assert sh(HOST, "pgrep -u sue || echo none").strip() == "none"


def test_idle_server_is_culled_and_a_busy_one_is_not(semester, culling):
    # Idle for the timeout, plus a cull period, plus the activity lag (a quarter timeout).
    deadline = culling["since"] + IDLE_TIMEOUT + CULL_EVERY + IDLE_TIMEOUT // 4 + 60
    admin = culling["ida"]
    # Culled: the unit is gone and the hub no longer lists the server (it records the
    # stop after the unit has stopped, so both are waited for).
    while time.monotonic() < deadline:
        if sh(HOST, f"systemctl is-active {unit('ida')}", check=False).strip() != "active" \
                and not (admin.user("ida").get("servers") or {}):
            break
        time.sleep(5)
    culled_after = time.monotonic() - culling["since"]
    assert sh(HOST, f"systemctl is-active {unit('ida')}", check=False).strip() != "active", \
        f"ida's idle server still runs {culled_after:.0f}s after it was last used"
    assert not (admin.user("ida").get("servers") or {})
    busy = culling["busy"]
    assert sh(HOST, f"systemctl is-active {unit('bea')}").strip() == "active"
    assert busy.errors == [] and busy.runs >= culled_after // 20 - 1, (busy.runs, busy.errors)
    print(f"idle server culled after {culled_after:.0f}s; busy one ran {busy.runs} cells")
