"""Apache in front of the hub, end to end on lab host lab3 (and only lab3: other sessions
use lab1 and lab2): JupyterHub at /jhub/ behind Apache, first over HTTP, then over HTTPS
with a certificate made on the host. A browser-like client logs in, spawns, loads
JupyterLab and runs `1+1` in a kernel over a websocket through Apache (field notes 6 and
7); the hub's own port listens on loopback only; a second run changes nothing; a change
of the site reloads Apache once, gracefully, and restarts nothing.

The lab forwards lab3's ports 80 and 443 to 127.0.0.1:28103 and 28203.
"""

from __future__ import annotations

import json
import shlex
import ssl
import subprocess
import time

import pytest
import yaml

from provision import lab
from provision.hubclient import HubClient, HubError, pinned_context
from roles import apache

from e2e_support import invoke, main_pid, make_inventory, provision_json, sh

pytestmark = [pytest.mark.e2e, pytest.mark.lab3]
HOST = "lab3"
USER, UID, PASSWORD = "erin", "2301", "apache-e2e-pw-erin"
BASE = "/jhub/"
HOST_VARS = {"jupyterhub_base_url": BASE, "apache_enabled": True}


@pytest.fixture(scope="module")
def inv(lab3, tmp_path_factory):
    return make_inventory(tmp_path_factory.mktemp("inv-apache"),
                          host_vars={HOST: dict(HOST_VARS)})


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    return tmp_path_factory.mktemp("reports-apache")


@pytest.fixture(scope="module")
def converged(inv, reports):
    """A first provision of lab3 with Apache over HTTP, then a user (uid 2300+)."""
    start = time.monotonic()
    _, report = provision_json(inv, HOST, reports)
    first = time.monotonic() - start
    pw = reports / "erin.pw"
    pw.write_text(PASSWORD + "\n")
    invoke("add-user", USER, "--uid", UID, "--password-file", str(pw), "--hosts", HOST,
           "--inventory", str(inv), check=True)
    return report, first


def changed_steps(report: dict) -> list[str]:
    return [s["name"] for s in report["hosts"][HOST]["steps"] if s["status"] != "ok"]


def url(lab3: lab.LabHost, scheme: str) -> str:
    return f"{scheme}://127.0.0.1:{lab3.ports[scheme]}{BASE}"


# ----------------------------------------------------------------------- the client
def pinned(pem: str) -> ssl.SSLContext:
    return pinned_context(pem, HOST)


class Client(HubClient):
    """HubClient, over HTTPS with a given SSL context when one is given."""

    def __init__(self, base: str, context: ssl.SSLContext | None = None) -> None:
        super().__init__(base, timeout=30, context=context)


def lab_and_kernel(client: Client) -> str:
    client.login(USER, PASSWORD)
    client.start_server(USER)
    assert "JupyterLab" in client.open_lab(USER).body
    return client.execute(USER, client.start_kernel(USER), "1+1")


def graceful_reloads(host: str) -> int:
    return int(sh(host, "grep -c 'SIGUSR1 received' /var/log/apache2/error.log || true")
               .strip() or 0)


# -------------------------------------------------------------------------- over HTTP
def test_first_provision_puts_the_hub_behind_apache(converged, lab3):
    report, first = converged
    assert report["failed_hosts"] == [], changed_steps(report)
    print(f"first provision of lab3 with apache: {first:.1f}s")
    steps = changed_steps(report)
    assert "apt apache2" in steps and "handler: reload apache" in steps
    assert Client(url(lab3, "http")).api_version() == "6.1.1"
    assert sh(HOST, "systemctl is-active apache2").strip() == "active"
    assert sh(HOST, "readlink /etc/apache2/sites-enabled/jupyterhub.conf").strip() \
        == "../sites-available/jupyterhub.conf"
    assert sh(HOST, "test -e /etc/apache2/sites-enabled/000-default.conf || echo gone") \
        .strip() == "gone"


def test_hub_port_listens_on_loopback_only(converged):
    listening = sh(HOST, "ss -Hltn 'sport = :8000' | awk '{print $4}'").split()
    assert listening == ["127.0.0.1:8000"]
    config = sh(HOST, "cat /etc/jupyterhub/jupyterhub_config.py")
    assert "c.JupyterHub.bind_url = 'http://127.0.0.1:8000/jhub/'" in config


def test_second_run_changes_nothing(converged, inv, reports):
    _, report = provision_json(inv, HOST, reports)
    assert changed_steps(report) == []
    assert report["hosts"][HOST]["round_trips"] == 1


def test_http_login_spawn_lab_and_kernel_websocket(converged, lab3):
    assert lab_and_kernel(Client(url(lab3, "http"))) == "2"


def test_base_url_without_slash_redirects(converged, lab3):
    r = Client(url(lab3, "http")).request(url(lab3, "http").rstrip("/"), follow=False)
    assert r.status == 301 and r.headers["Location"].endswith(BASE)


def test_site_change_reloads_apache_once_and_restarts_nothing(converged, inv, reports):
    pids = {u: main_pid(HOST, u) for u in ("apache2", "jupyterhub", "configurable-http-proxy")}
    reloads = graceful_reloads(HOST)
    new_name = "--var", "apache_server_name=jhub.lab3.example.org"
    _, report = provision_json(inv, HOST, reports, *new_name)
    assert changed_steps(report) == ["site /etc/apache2/sites-available/jupyterhub.conf",
                                     "handler: reload apache"]
    assert report["hosts"][HOST]["handlers"] == ["reload apache"]
    assert "ServerName jhub.lab3.example.org" in sh(HOST, f"cat {apache.SITE_PATH}")
    assert graceful_reloads(HOST) == reloads + 1
    assert {u: main_pid(HOST, u) for u in pids} == pids
    _, report = provision_json(inv, HOST, reports, *new_name)
    assert report["hosts"][HOST]["handlers"] == []
    _, report = provision_json(inv, HOST, reports)  # back to the inventory's site
    assert report["hosts"][HOST]["handlers"] == ["reload apache"]
    assert graceful_reloads(HOST) == reloads + 2
    assert {u: main_pid(HOST, u) for u in pids} == pids


def verify(inv, tmp_path) -> str:
    """`invoke verify --smoke` on lab3 must pass (the smoke test logs in through Apache);
    returns its JUnit report (names what ran)."""
    junit = tmp_path / "junit.xml"
    pw = tmp_path / "smoke.pw"
    pw.write_text(PASSWORD + "\n")
    proc = invoke("verify", "--hosts", HOST, "--inventory", str(inv), "--junit", str(junit),
                  "--smoke", USER, "--password-file", str(pw))
    assert proc.returncode == 0, proc.stdout[-3000:]
    xml = junit.read_text()
    assert "test_smoke_login_spawn_lab" in xml
    return xml


def test_verify_passes_over_http(converged, inv, tmp_path):
    xml = verify(inv, tmp_path)
    assert "test_hub_answers_through_apache" in xml and "test_certificate" not in xml


# ------------------------------------------------------------------------- over HTTPS
@pytest.fixture(scope="module")
def tls(converged, inv, reports):
    """lab3 switched to HTTPS with a self-signed certificate made on the host."""
    (inv / "host_vars" / f"{HOST}.yml").write_text(
        yaml.safe_dump({**HOST_VARS, "apache_tls": "selfsigned"}))
    _, report = provision_json(inv, HOST, reports)
    pem = sh(HOST, f"cat {apache.SELFSIGNED_CRT}")
    return report, pem


def test_tls_provision_makes_the_certificate_on_the_host(tls):
    report, pem = tls
    steps = changed_steps(report)
    assert f"self-signed certificate {apache.SELFSIGNED_CRT}" in steps
    assert report["hosts"][HOST]["handlers"] == ["reload apache"]
    key = sh(HOST, f"stat -c '%a %U:%G' {apache.SELFSIGNED_KEY}").strip()
    assert key == "600 root:root"
    assert "PRIVATE KEY" not in json.dumps(report)
    assert apache.cert_problem(pem.encode(), HOST) is None


def test_tls_second_run_changes_nothing(tls, inv, reports):
    _, report = provision_json(inv, HOST, reports)
    assert changed_steps(report) == []


def test_http_redirects_to_https(tls, lab3):
    r = Client(url(lab3, "http")).request("hub/login", follow=False)
    assert r.status == 301
    assert r.headers["Location"] == f"https://{HOST}{BASE}hub/login"


def test_https_login_spawn_lab_and_kernel_websocket(tls, lab3):
    _, pem = tls
    client = Client(url(lab3, "https"), pinned(pem))
    assert client.api_version() == "6.1.1"
    assert lab_and_kernel(client) == "2"


def test_verify_passes_over_https(tls, inv, tmp_path):
    xml = verify(inv, tmp_path)
    assert "test_hub_answers_through_apache" in xml and "test_certificate" in xml


def test_https_refuses_an_unknown_certificate(tls, lab3):
    """The check above is real: a client that trusts only the usual CAs refuses."""
    with pytest.raises(HubError, match="CERTIFICATE_VERIFY_FAILED"):
        HubClient(url(lab3, "https")).api_version()


def test_a_site_that_fails_configtest_is_put_back(tls):
    """The site step's own script, fed a broken site: the old file stays, Apache serves on."""
    before = sh(HOST, f"sha256sum {apache.SITE_PATH}")
    argv = ["sh", "-c", apache.SWAP_SCRIPT, "sh", apache.SITE_PATH, "0644", "root", "root"]
    proc = subprocess.run(lab.ssh_argv(HOST, shlex.join(argv)), capture_output=True,
                          text=True, timeout=60, input="NoSuchDirective on\n")
    assert proc.returncode == 1, proc.stderr
    assert "Invalid command 'NoSuchDirective'" in proc.stderr
    assert "the previous file was put back" in proc.stderr
    assert sh(HOST, f"sha256sum {apache.SITE_PATH}") == before
    assert sh(HOST, "apache2ctl configtest 2>&1 | tail -1").strip() == "Syntax OK"
