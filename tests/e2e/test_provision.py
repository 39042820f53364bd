"""The mission, end to end on booted lab hosts: provision two hosts, converge again with
zero changes, add users and log in to JupyterLab, restart only when something changed."""

from __future__ import annotations

import json

import pytest
import yaml

from provision.api import hash_password
from provision.hubclient import HubClient, HubError

from e2e_support import invoke, main_pid, make_inventory, provision_json, sh

pytestmark = pytest.mark.e2e
HOSTS = "lab1,lab2"
ALICE_PW = "correct horse battery staple"


@pytest.fixture(scope="module")
def inv(lab_hosts, tmp_path_factory):
    return make_inventory(tmp_path_factory.mktemp("inv-provision"),
                          {"jupyterhub_default_url": "/lab"})


@pytest.fixture(scope="module")
def converged(inv, tmp_path_factory):
    """A first provision of both hosts (the first one on fresh hosts installs everything)."""
    tmp = tmp_path_factory.mktemp("reports")
    proc, report = provision_json(inv, HOSTS, tmp)
    return proc, report, tmp


def hub(host: str, lab_hosts) -> HubClient:
    port = next(h.ports["hub"] for h in lab_hosts if h.name == host)
    return HubClient(f"http://127.0.0.1:{port}/", timeout=30)


def test_fresh_provision_gives_two_working_hubs(converged, lab_hosts):
    proc, report, _ = converged
    assert report["failed_hosts"] == []
    for name in ("lab1", "lab2"):
        assert report["hosts"][name]["failed"] == 0
        assert hub(name, lab_hosts).api_version() == "6.1.1"
    assert "RECAP" in proc.stdout


def test_second_run_changes_nothing_in_one_round_trip(converged, inv):
    _, _, tmp = converged
    proc, report = provision_json(inv, HOSTS, tmp)
    for name in ("lab1", "lab2"):
        h = report["hosts"][name]
        changed = [s["name"] for s in h["steps"] if s["status"] != "ok"]
        assert changed == [], f"{name}: second run changed {changed}"
        assert h["round_trips"] == 1, f"{name}: {h['round_trips']} round trips for a no-op"
    assert "nothing to do" in proc.stdout


def test_check_mode_changes_nothing_and_lists_pending(converged, inv):
    _, _, tmp = converged
    from e2e_support import snapshot

    before = snapshot("lab1")
    proc, report = provision_json(inv, "lab1", tmp, "--check", "--var",
                                  "jupyterhub_default_url=/tree")
    assert snapshot("lab1") == before
    steps = {s["name"]: s for s in report["hosts"]["lab1"]["steps"]}
    cfg = steps["file /etc/jupyterhub/jupyterhub_config.py"]
    assert cfg["status"] == "changed"
    assert "-c.Spawner.default_url = '/lab'" in cfg["diff"]
    assert "+c.Spawner.default_url = '/tree'" in cfg["diff"]
    assert "would change" in proc.stdout


def test_add_user_logs_in_and_gets_jupyterlab(converged, inv, lab_hosts, tmp_path):
    pw = tmp_path / "alice.pw"
    pw.write_text(ALICE_PW + "\n")
    before = main_pid("lab1", "jupyterhub.service")
    proc = invoke("add-user", "alice", "--password-file", str(pw), "--hosts", HOSTS,
                  "--inventory", str(inv), check=True)
    assert ALICE_PW not in proc.stdout + proc.stderr
    users = (inv / "group_vars" / "all" / "users.yml").read_text()
    assert "name: alice" in users and ALICE_PW not in users and "$6$" in users
    # No hub restart for a new user: access comes from group membership.
    assert main_pid("lab1", "jupyterhub.service") == before
    for name in ("lab1", "lab2"):
        client = hub(name, lab_hosts)
        client.login("alice", ALICE_PW)
        client.start_server("alice")
        page = client.open_lab("alice")
        assert "JupyterLab" in page.body
    bad = hub("lab1", lab_hosts)
    with pytest.raises(HubError, match="refused"):
        bad.login("alice", "wrong password")


def test_admin_in_wheel_is_hub_admin(converged, inv, lab_hosts, tmp_path):
    pw = tmp_path / "bob.pw"
    pw.write_text("bob-s3cret-pw\n")
    invoke("add-user", "bob", "--admin", "--password-file", str(pw), "--hosts", HOSTS,
           "--inventory", str(inv), check=True)
    assert "wheel" in sh("lab1", "id -nG bob").split()
    client = hub("lab1", lab_hosts)
    client.login("bob", "bob-s3cret-pw")
    me = json.loads(client.request("hub/api/user").body)
    assert me["name"] == "bob" and me["admin"] is True
    # alice, not in wheel, is no admin
    other = hub("lab1", lab_hosts)
    other.login("alice", ALICE_PW)
    assert json.loads(other.request("hub/api/user").body)["admin"] is False


def test_running_server_survives_add_user(converged, inv, lab_hosts, tmp_path):
    client = hub("lab2", lab_hosts)
    client.login("alice", ALICE_PW)
    client.start_server("alice")
    pid_before = sh("lab2", "pgrep -u alice -f jupyterhub-singleuser").split()
    assert pid_before
    invoke("add-user", "carol", "--hosts", HOSTS, "--inventory", str(inv), check=True,
           stdin="")
    assert sh("lab2", "pgrep -u alice -f jupyterhub-singleuser").split() == pid_before
    assert client.user("alice")["servers"][""]["ready"] is True
    client.open_lab("alice")


def test_config_change_restarts_hub_exactly_once(converged, inv, lab_hosts):
    _, _, tmp = converged
    before = main_pid("lab1", "jupyterhub.service")
    proxy_before = main_pid("lab1", "configurable-http-proxy.service")
    _, report = provision_json(inv, "lab1", tmp, "--var", "jupyterhub_start_timeout=75")
    assert report["hosts"]["lab1"]["handlers"] == ["restart jupyterhub"]
    after = main_pid("lab1", "jupyterhub.service")
    assert after != before
    assert main_pid("lab1", "configurable-http-proxy.service") == proxy_before
    _, report = provision_json(inv, "lab1", tmp, "--var", "jupyterhub_start_timeout=75")
    assert report["hosts"]["lab1"]["handlers"] == []
    assert main_pid("lab1", "jupyterhub.service") == after
    # back to the inventory's value: one more restart, then quiet again
    _, report = provision_json(inv, "lab1", tmp)
    assert report["hosts"]["lab1"]["handlers"] == ["restart jupyterhub"]
    assert hub("lab1", lab_hosts).api_version() == "6.1.1"


def test_remove_user_locks_then_purges(converged, inv, lab_hosts):
    invoke("remove-user", "carol", "--hosts", HOSTS, "--inventory", str(inv), check=True)
    assert "jupyterhub-users" not in sh("lab1", "id -nG carol").split()
    assert "1970" in sh("lab1", "chage -l carol")
    invoke("remove-user", "carol", "--purge", "--hosts", HOSTS, "--inventory", str(inv),
           check=True)
    assert sh("lab1", "getent passwd carol", check=False) == ""
    assert sh("lab1", "test -s /var/backups/jhprovision/carol-home.tar.gz && echo yes") \
        .strip() == "yes"


def test_locking_a_user_ends_their_server_and_session(converged, inv, lab_hosts, tmp_path):
    pw = tmp_path / "henry.pw"
    pw.write_text("henry-pw-77\n")
    invoke("add-user", "henry", "--password-file", str(pw), "--hosts", HOSTS, "--inventory",
           str(inv), check=True)
    client = hub("lab1", lab_hosts)
    client.login("henry", "henry-pw-77")
    client.start_server("henry")
    assert sh("lab1", "pgrep -u henry -f jupyterhub-singleuser").strip()
    proc = invoke("remove-user", "henry", "--hosts", HOSTS, "--inventory", str(inv),
                  check=True)
    assert "end henry's session" in proc.stdout
    assert sh("lab1", "pgrep -u henry || true").strip() == ""
    # The browser session that was logged in no longer works, and a new login is refused.
    assert client.request("hub/api/user").status in (401, 403)
    with pytest.raises(HubError, match="refused"):
        hub("lab1", lab_hosts).login("henry", "henry-pw-77")
    # Purging a user whose server had been running works too.
    invoke("remove-user", "henry", "--purge", "--hosts", HOSTS, "--inventory", str(inv),
           check=True)
    assert sh("lab1", "getent passwd henry", check=False) == ""


def test_a_class_made_in_one_run_logs_in(converged, inv, lab_hosts, tmp_path):
    """Accounts a run makes together (each by useradd, their hashes by one chpasswd)
    log in to the hub with their passwords and get JupyterLab like any other."""
    users_file = inv / "group_vars" / "all" / "users.yml"
    listed = yaml.safe_load(users_file.read_text())
    pupils = {"ivy": "ivy-pw-class-1", "jon": "jon-pw-class-2", "kim": "kim-pw-class-3"}
    listed["users"] += [{"name": n, "password_hash": hash_password(p)}
                        for n, p in pupils.items()]
    users_file.write_text(yaml.safe_dump(listed))
    _, report = provision_json(inv, HOSTS, tmp_path)
    for name in ("lab1", "lab2"):
        steps = {s["name"]: s for s in report["hosts"][name]["steps"]}
        assert all(steps[f"user {n}"]["status"] == "changed" for n in pupils)
        assert steps["passwords of 3 users"]["status"] == "changed"
        assert "new user: name=jon," in sh(name, "journalctl -q -o cat -t useradd")
    for pupil, password in pupils.items():
        client = hub("lab1", lab_hosts)
        client.login(pupil, password)
        assert json.loads(client.request("hub/api/user").body)["name"] == pupil
    client.start_server("kim")
    assert "JupyterLab" in client.open_lab("kim").body
    with pytest.raises(HubError, match="refused"):
        hub("lab2", lab_hosts).login("ivy", "jon-pw-class-2")
