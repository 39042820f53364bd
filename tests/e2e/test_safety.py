"""Safety under bad input and faults, on real lab hosts: rejected runs change nothing,
one bad host never stops the others, no half-written state, secrets never leak."""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest
from e2e_support import invoke, make_inventory, provision_json, sh, snapshot, start_invoke

pytestmark = pytest.mark.e2e
HOSTS = "lab1,lab2"
EVE_PW = "eve-never-printed-9"


@pytest.fixture(scope="module")
def base(lab_hosts, tmp_path_factory):
    """lab1 and lab2 converged with one user, eve, who has a password."""
    tmp = tmp_path_factory.mktemp("safety")
    inv = make_inventory(tmp / "inventory")
    pw = tmp / "eve.pw"
    pw.write_text(EVE_PW + "\n")
    invoke("add-user", "eve", "--uid", "2200", "--password-file", str(pw), "--hosts", HOSTS,
           "--inventory", str(inv), check=True)
    return inv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_inventory_is_rejected_before_any_connection(base, tmp_path):
    bad = make_inventory(tmp_path / "bad", {
        "jupyterhub_prot": 8000,
        "jupyterhub_hub_port": 70000,
        "jupyterhub_hub_ip": "10.0.0.300",
        "jupyterhub_base_url": "jhub",
        "jupyterhub_bind_url": "ftp://:8000/jhub/",
        "jupyterhub_admin_users": ["mallory"],
        "users": [{"name": "Bad Name"}, {"name": "root"}, {"name": "zed", "uid": 2500},
                  {"name": "zoe", "uid": 2500}],
    })
    before = {h: snapshot(h) for h in ("lab1", "lab2")}
    proc = invoke("provision", "--hosts", HOSTS, "--inventory", str(bad))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    for expected in ["unknown variable 'jupyterhub_prot' (did you mean 'jupyterhub_port'?)",
                     "70000 is not a TCP port", "'10.0.0.300' is not an IP address",
                     "'jhub' is not a base URL", "the scheme must be http or https",
                     "'Bad Name' is not a valid user name", "'root' is a system account",
                     "uid 2500 is also given to 'zed'", "'mallory' is not an inventory user",
                     "group_vars/all/main.yml", "nothing was changed on any host"]:
        assert expected in out, f"missing {expected!r} in:\n{out}"
    assert "Traceback" not in out
    assert {h: snapshot(h) for h in ("lab1", "lab2")} == before


@pytest.mark.parametrize("args, message", [
    (["--hosts", "lab1,nosuchhost"], "no host or group named 'nosuchhost'"),
    (["--hosts", "lab1", "--forks", "0"], "--forks 0: must be at least 1"),
    (["--hosts", "lab1", "--var", "jupyterhub_port=http"], "'http' is not a TCP port"),
])
def test_bad_command_line_is_rejected(base, args, message):
    before = snapshot("lab1")
    proc = invoke("provision", "--inventory", str(base), *args)
    assert proc.returncode == 2 and message in proc.stderr + proc.stdout
    assert snapshot("lab1") == before


def test_bad_user_name_is_rejected_by_add_user(base):
    users = (base / "group_vars" / "all" / "users.yml").read_text()
    proc = invoke("add-user", "Robert'); rm -rf /", "--inventory", str(base), stdin="")
    assert proc.returncode == 2 and "is not a valid user name" in proc.stderr
    assert (base / "group_vars" / "all" / "users.yml").read_text() == users


def test_unreachable_host_does_not_stop_the_others(base, tmp_path):
    inv = make_inventory(tmp_path / "inv", extra_hosts={
        "ghost": {"ansible_host": "127.0.0.1", "ansible_port": free_port(),
                  "ansible_user": "root"}})
    proc, report = provision_json(inv, "lab1,ghost", tmp_path, check=False)
    assert proc.returncode == 1
    assert report["hosts"]["ghost"]["unreachable"] is True
    assert "cannot connect" in report["hosts"]["ghost"]["error"]
    assert report["hosts"]["lab1"]["failed"] == 0 and not report["hosts"]["lab1"]["unreachable"]
    assert "unreachable=1" in proc.stdout and "ghost" in proc.stdout


def test_failing_step_isolated_and_retry_failed(base, tmp_path):
    inv = make_inventory(tmp_path / "inv", host_vars={
        "lab2": {"jupyterhub_user_packages": ["jhprov-no-such-package-xyz==1.0"]}})
    (inv / "group_vars" / "all" / "users.yml").write_text(
        (base / "group_vars" / "all" / "users.yml").read_text())
    proc, report = provision_json(inv, HOSTS, tmp_path, check=False)
    assert proc.returncode == 1
    lab2 = report["hosts"]["lab2"]
    failed = [s for s in lab2["steps"] if s["status"] == "failed"]
    assert [s["name"] for s in failed] == ["users' packages"]
    assert "jhprov-no-such-package-xyz" in failed[0]["error"]["stderr"]
    assert "pip install" in failed[0]["error"]["command"]
    assert report["hosts"]["lab1"]["failed"] == 0
    assert report["failed_hosts"] == ["lab2"]
    # Fix the inventory, then re-run only what failed.
    (inv / "host_vars" / "lab2.yml").write_text("{}\n")
    rep = tmp_path / "retry.json"
    proc = invoke("provision", "--retry-failed", "--inventory", str(inv), "--json", str(rep))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert list(json.loads(rep.read_text())["hosts"]) == ["lab2"]


def _pids(host: str, pattern: str) -> set[str]:
    # '[p]ip install' matches pip (and uv's pip), not this pgrep's own command line
    regex = f"[{pattern[0]}]{pattern[1:]}"
    return set(sh(host, f"pgrep -f {regex!r} || true").split())


def _wait_for(host: str, pattern: str, before: set[str], limit: float = 120) -> None:
    """Until a process matching ``pattern`` that was not there ``before`` runs on host
    (one left by an earlier test is not this run's)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if _pids(host, pattern) - before:
            return
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} never ran on {host}")


def _slow_inventory(base, tmp_path, extra: dict | None = None):
    inv = make_inventory(tmp_path / "inv", host_vars={
        "lab2": {"jupyterhub_user_packages": ["pandas==2.3.3"], **(extra or {})}})
    (inv / "group_vars" / "all" / "users.yml").write_text(
        (base / "group_vars" / "all" / "users.yml").read_text())
    return inv


def _start(inv, tmp_path, hosts=HOSTS):
    """The run, started; and the pip installs that were running on lab2 before it."""
    # Make sure the slow step has work to do, whatever an earlier test left installed or
    # in uv's cache (from the cache alone, uv would be done before the test could see it).
    sh("lab2", "/opt/jupyterhub-user/bin/pip uninstall --yes --quiet pandas polars "
               "2>/dev/null; env UV_CACHE_DIR=/var/cache/jhprovision-uv "
               "/opt/jhprovision-uv/bin/uv cache clean --quiet pandas polars 2>/dev/null; true")
    before = _pids("lab2", "pip install")
    report = tmp_path / "run.json"
    proc = start_invoke("provision", "--hosts", hosts, "--inventory", str(inv), "--json",
                        str(report))
    return proc, report, before


def test_host_dropping_mid_run_is_reported_while_others_finish(base, tmp_path):
    inv = _slow_inventory(base, tmp_path)
    proc, report, before = _start(inv, tmp_path)
    _wait_for("lab2", "pip install", before)
    # Cut lab2's SSH sessions (ours, inside our own lab host) while pip runs.
    sh("lab2", "for p in $(pgrep -f 'sshd: root@notty'); do "
               "[ $p != $PPID ] && kill -9 $p; done; true", check=False)
    out, err = proc.communicate(timeout=600)
    data = json.loads(report.read_text())
    assert proc.returncode == 1, out
    assert data["hosts"]["lab2"]["unreachable"] is True, out
    assert "connection lost" in data["hosts"]["lab2"]["error"]
    assert data["hosts"]["lab1"]["failed"] == 0
    # The next run converges with no manual repair.
    run, rep = provision_json(inv, "lab2", tmp_path)
    assert rep["hosts"]["lab2"]["failed"] == 0
    _, rep = provision_json(inv, "lab2", tmp_path)
    assert rep["hosts"]["lab2"]["changed"] == 0


def test_ctrl_c_mid_apply_leaves_old_or_new_and_next_run_converges(base, tmp_path):
    inv = _slow_inventory(base, tmp_path, {"jupyterhub_start_timeout": 90,
                                           "jupyterhub_user_packages": ["polars==1.35.2"]})
    hub_pid = sh("lab2", "systemctl show -p MainPID --value jupyterhub").strip()
    proc, _, before = _start(inv, tmp_path, "lab2")
    _wait_for("lab2", "pip install", before)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    leftovers = sh("lab2", "ls -a /etc/jupyterhub /etc/systemd/system /var/lib/jupyterhub")
    assert ".jhprov." not in leftovers
    # The config change did not happen yet, or happened whole; the hub still runs.
    assert sh("lab2", "systemctl is-active jupyterhub").strip() == "active"
    _, rep = provision_json(inv, "lab2", tmp_path)
    assert rep["hosts"]["lab2"]["failed"] == 0
    assert "restart jupyterhub" in rep["hosts"]["lab2"]["handlers"]
    assert sh("lab2", "systemctl show -p MainPID --value jupyterhub").strip() != hub_pid
    assert "c.Spawner.start_timeout = 90" in sh("lab2", "cat /etc/jupyterhub/jupyterhub_config.py")
    _, rep = provision_json(inv, "lab2", tmp_path)
    assert rep["hosts"]["lab2"]["changed"] == 0


def test_config_failing_validation_never_replaces_the_working_one(base, tmp_path):
    before = sh("lab1", "sha256sum /etc/jupyterhub/jupyterhub_config.py")
    pid = sh("lab1", "systemctl show -p MainPID --value jupyterhub")
    inv = make_inventory(tmp_path / "inv", {
        "jupyterhub_extra_config": "raise RuntimeError('broken on purpose')"})
    proc, report = provision_json(inv, "lab1", tmp_path, check=False)
    assert proc.returncode == 1
    step = next(s for s in report["hosts"]["lab1"]["steps"] if s["status"] == "failed")
    assert step["name"] == "file /etc/jupyterhub/jupyterhub_config.py"
    assert "broken on purpose" in step["error"]["stderr"]
    assert sh("lab1", "sha256sum /etc/jupyterhub/jupyterhub_config.py") == before
    assert sh("lab1", "systemctl show -p MainPID --value jupyterhub") == pid


def test_hub_that_does_not_come_back_is_rolled_back(base, tmp_path):
    before = sh("lab1", "cat /etc/jupyterhub/jupyterhub_config.py")
    inv = make_inventory(tmp_path / "inv", {
        "jupyterhub_extra_config": "c.JupyterHub.authenticator_class = 'no.such.Authenticator'"})
    proc, report = provision_json(inv, "lab1", tmp_path, check=False)
    assert proc.returncode == 1
    step = next(s for s in report["hosts"]["lab1"]["steps"] if s["status"] == "failed")
    assert step["name"] == "handler: restart jupyterhub"
    assert "previous jupyterhub_config.py was put back and the hub answers" in \
        step["error"]["message"]
    assert "no.such" in step["error"]["stderr"] or "Authenticator" in step["error"]["stderr"]
    assert sh("lab1", "cat /etc/jupyterhub/jupyterhub_config.py") == before
    assert json.loads(sh("lab1", "curl -fsS http://127.0.0.1:8081/hub/api"))["version"]


def test_hub_that_cannot_start_is_detected_in_seconds_with_its_own_error(base, tmp_path,
                                                                       lab_hosts):
    from provision.hubclient import HubClient

    port = next(h.ports["hub"] for h in lab_hosts if h.name == "lab1")
    eve = HubClient(f"http://127.0.0.1:{port}/", timeout=30)
    eve.login("eve", EVE_PW)
    eve.start_server("eve")  # its own unit (SystemdSpawner); with the local spawner, the hub's
    before = sh("lab1", "cat /etc/jupyterhub/jupyterhub_config.py")
    inv = make_inventory(tmp_path / "inv", {
        "jupyterhub_extra_config": "c.JupyterHub.db_url = "
                                   "'sqlite:////nonexistent/dir/jupyterhub.sqlite'"})
    start = time.monotonic()
    proc, report = provision_json(inv, "lab1", tmp_path, check=False)
    took = time.monotonic() - start
    print(f"\nbroken hub detected, rolled back and answering again in {took:.1f} s")
    assert proc.returncode == 1
    host = report["hosts"]["lab1"]
    step = next(s for s in host["steps"] if s["status"] == "failed")
    assert step["name"] == "handler: restart jupyterhub"
    message = step["error"]["message"]
    assert "jupyterhub.service" in message and "exited" in message, message
    assert "the hub's error: " in message and "sqlite" in message.split("the hub's error: ")[1]
    assert "previous jupyterhub_config.py was put back and the hub answers again" in message
    assert "Directory /nonexistent/dir does not exist" in step["error"]["stderr"], \
        step["error"]["stderr"]
    assert "jupyterhub-sing" not in step["error"]["stderr"]
    assert "remains running after unit stopped" not in step["error"]["stderr"]
    assert "unclean termination" not in step["error"]["stderr"]
    assert host["reason"] == message
    assert sh("lab1", "cat /etc/jupyterhub/jupyterhub_config.py") == before
    assert json.loads(sh("lab1", "curl -fsS http://127.0.0.1:8081/hub/api"))["version"]
    eve.open_lab("eve")  # the user's server lived through it
    eve.stop_server("eve")


def test_a_link_planted_in_a_home_cannot_redirect_root(base, tmp_path):
    nb = ("--var", "jupyterhub_notebook_dir=~/work/notebooks")  # eve is in base's users
    provision_json(base, "lab1", tmp_path, *nb)
    assert sh("lab1", "stat -c '%U %a %F' /home/eve/work/notebooks").split()[:2] == \
        ["eve", "750"]
    # eve replaces ~/work with a link to a root-owned tree; root must not chown/chmod it
    sh("lab1", "install -d -m 0755 /srv/target/notebooks && runuser -u eve -- sh -c "
               "'rm -rf ~/work && ln -s /srv/target ~/work'")
    try:
        before = sh("lab1", "stat -c '%U:%G %a' /srv/target /srv/target/notebooks")
        proc, report = provision_json(base, "lab1", tmp_path, *nb, check=False)
        assert proc.returncode == 1
        step = next(s for s in report["hosts"]["lab1"]["steps"] if s["status"] == "failed")
        assert step["name"] == "directory /home/eve/work"
        assert "is a link, not a directory" in step["error"]["message"]
        assert sh("lab1", "stat -c '%U:%G %a' /srv/target /srv/target/notebooks") == before
        assert before.split() == ["root:root", "755", "root:root", "755"]
    finally:
        sh("lab1", "rm -f /home/eve/work && rm -rf /srv/target")
    provision_json(base, "lab1", tmp_path)


def test_secrets_never_leak(base, tmp_path):
    secrets = {
        "cookie": sh("lab1", "cat /var/lib/jupyterhub/jupyterhub_cookie_secret").strip(),
        "token": sh("lab1", "cat /etc/jupyterhub/proxy.env").strip().split("=", 1)[1],
        "hash": sh("lab1", "getent shadow eve | cut -d: -f2").strip(),
        "api token": sh("lab1", "cat /etc/jupyterhub/jhprovision-api.env").strip()
        .split("=", 1)[1],
    }
    assert all(len(v) > 20 for v in secrets.values())
    outputs = []
    # what sysadmins put in jupyterhub_extra_config: OAuth client secrets
    secrets["oauth secret"] = "oauth-client-S3CRET-4711"
    oauth = f"jupyterhub_extra_config=c.Authenticator.client_secret = '{secrets['oauth secret']}'"
    for extra in (["--check", "--diff", "--verbose", "--var", "jupyterhub_port=8002"],
                  ["--check", "--diff", "--verbose", "--var", oauth],
                  ["--diff", "--verbose"]):
        proc, report = provision_json(base, "lab1", tmp_path, *extra, check=False)
        outputs += [proc.stdout, proc.stderr, json.dumps(report)]
    # A secret being created shows up masked in a diff, never in clear.
    sh("lab1", "cp -p /etc/jupyterhub/proxy.env /root/proxy.env.bak && "
               "rm /etc/jupyterhub/proxy.env")
    try:
        proc, report = provision_json(base, "lab1", tmp_path, "--check", "--diff",
                                      check=False)
        outputs += [proc.stdout, json.dumps(report)]
        assert "new random secret" in proc.stdout
    finally:
        sh("lab1", "mv /root/proxy.env.bak /etc/jupyterhub/proxy.env")
    v = invoke("verify", "--hosts", "lab1", "--inventory", str(base))
    outputs += [v.stdout, v.stderr]
    outputs.append(sh("lab1", "journalctl -u jupyterhub -u configurable-http-proxy "
                              "--no-pager -n 2000"))
    blob = "\n".join(outputs)
    for name, value in secrets.items():
        assert value not in blob, f"the {name} leaked"
    assert EVE_PW not in blob
