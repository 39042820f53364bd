"""Apache in front of the hub, end to end on lab host lab3 (and only lab3: other sessions
use lab1 and lab2): JupyterHub at /jhub/ behind Apache, first over HTTP, then over HTTPS
with a certificate made on the host. A browser-like client logs in, spawns, loads
JupyterLab and runs `1+1` in a kernel over a websocket through Apache (field notes 6 and
7); the hub's own port listens on loopback only; a second run changes nothing; a change
of the site reloads Apache once, gracefully, and restarts nothing.

The lab forwards lab3's ports 80 and 443 to 127.0.0.1:28103 and 28203.
"""

from __future__ import annotations

import datetime
import json
import shlex
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import Encoding

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


def notes_of(report: dict) -> list[str]:
    """The host's notes but the backup role's "no backups" (this inventory sets none)."""
    from roles.backup import NO_BACKUPS

    return [n for n in report["hosts"][HOST]["notes"] if n != NO_BACKUPS]


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


# ---------------------------------------------------------------- HTTPS from an ACME CA
# Pebble, the ACME test server Let's Encrypt publishes (Debian's package), runs on lab3
# with its HTTP-01 validation on: it fetches the challenge from http://lab3/ (the name
# lab3 resolves on the host), so mod_md answers a real CA over Apache's port 80.
PEBBLE = "/opt/jhprovision-e2e-pebble"
ACME_CA = "https://localhost:14000/dir"
ACTIVATE_LOG = f"journalctl -u {apache.ACTIVATE}.service -o cat --no-pager"


def make_ca(common_name: str) -> tuple[Any, Any, str]:
    """A CA made here (key, certificate, PEM): pebble's listener and the files mode."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert, cert.public_bytes(serialization.Encoding.PEM).decode()


def issue(ca: tuple[Any, Any, str], dns: list[str], ips: list[str] = ()) -> tuple[str, str]:
    """A leaf certificate and its key (PEM) signed by ``ca``."""
    import ipaddress as ip

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_key, ca_cert, _ = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ip.ip_address(a)) for a in ips]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def put(host: str, path: str, text: str, mode: str = "0644") -> None:
    argv = lab.ssh_argv(host, f"umask 077; cat > {shlex.quote(path)} && chmod {mode} "
                              f"{shlex.quote(path)}")
    proc = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def host_get(path_and_args: str) -> str:
    """GET a URL on lab3 from lab3 itself (python3: the host has no curl to rely on)."""
    code = ("import ssl, sys, urllib.request\n"
            f"ctx = ssl.create_default_context(cafile='{PEBBLE}/listener-ca.pem')\n"
            "print(urllib.request.urlopen(sys.argv[1], context=ctx, timeout=10).read()"
            ".decode())")
    return sh(HOST, f"python3 -c {shlex.quote(code)} {shlex.quote(path_and_args)}")


@dataclass
class Pebble:
    roots: Path  # on this machine: the listener's CA and pebble's issuing root, one file
    issuing_root: str  # PEM of the root that signs the certificates pebble issues


@pytest.fixture(scope="module")
def pebble(tls, tmp_path_factory) -> Iterator[Pebble]:
    d = tmp_path_factory.mktemp("pebble")
    ca = make_ca("jhprovision e2e pebble listener CA")
    cert, key = issue(ca, ["localhost"], ["127.0.0.1"])
    sh(HOST, f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q pebble >/dev/null "
             f"&& mkdir -p {PEBBLE}")
    put(HOST, f"{PEBBLE}/listener-ca.pem", ca[2])
    put(HOST, f"{PEBBLE}/cert.pem", cert)
    put(HOST, f"{PEBBLE}/key.pem", key, "0600")
    put(HOST, f"{PEBBLE}/config.json", json.dumps({"pebble": {
        "listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
        "certificate": f"{PEBBLE}/cert.pem", "privateKey": f"{PEBBLE}/key.pem",
        "httpPort": 80, "tlsPort": 5001, "ocspResponderURL": "",
        "externalAccountBindingRequired": False}}))
    sh(HOST, "systemctl stop jhprovision-e2e-pebble 2>/dev/null; "
             "systemctl reset-failed jhprovision-e2e-pebble 2>/dev/null; "
             "systemd-run --quiet --unit jhprovision-e2e-pebble -E PEBBLE_VA_NOSLEEP=1 "
             f"/usr/bin/pebble -config {PEBBLE}/config.json")
    deadline = time.monotonic() + 30
    while True:
        try:
            host_get(ACME_CA)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    issuing_root = host_get("https://localhost:15000/roots/0")
    roots = d / "ca-roots.pem"
    roots.write_text(ca[2] + issuing_root)
    yield Pebble(roots, issuing_root)
    sh(HOST, "systemctl stop jhprovision-e2e-pebble", check=False)


def acme_vars(peb: Pebble, **more: Any) -> dict:
    return {**HOST_VARS, "apache_tls": "acme", "apache_acme_ca": ACME_CA,
            "apache_acme_ca_root": str(peb.roots), "apache_acme_email": "admin@example.org",
            **more}


def set_host_vars(inv: Path, hv: dict) -> None:
    (inv / "host_vars" / f"{HOST}.yml").write_text(yaml.safe_dump(hv))


def md_status() -> dict:
    """mod_md's status of lab3's managed domain, asked on the host (Require local)."""
    code = ("import urllib.request as u; print(u.urlopen(u.Request("
            f"'http://127.0.0.1{apache.MD_STATUS}/{HOST}', headers={{'Host': '{HOST}'}}), "
            "timeout=10).read().decode())")
    return json.loads(sh(HOST, f"python3 -c {shlex.quote(code)}"))


def served(lab3: lab.LabHost, context: ssl.SSLContext) -> Any:
    """The certificate lab3's Apache serves on HTTPS, verified by ``context``."""
    from cryptography import x509

    with socket.create_connection(("127.0.0.1", lab3.ports["https"]), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=HOST) as tls_sock:
            return x509.load_der_x509_certificate(tls_sock.getpeercert(binary_form=True))


def pebble_context(peb: Pebble) -> ssl.SSLContext:
    return pinned_context(peb.issuing_root, HOST)  # trusts pebble's root, checks the name


@pytest.fixture(scope="module")
def acme(pebble, inv, reports):
    """lab3 switched from the self-signed certificate to one from pebble."""
    set_host_vars(inv, acme_vars(pebble))
    reloads = graceful_reloads(HOST)
    _, report = provision_json(inv, HOST, reports)
    return report, reloads


def test_acme_provision_gets_the_certificate_from_the_ca(acme, pebble, lab3):
    report, _ = acme
    assert report["failed_hosts"] == [], report["hosts"][HOST]
    assert notes_of(report) == []
    steps = changed_steps(report)
    assert f"unit {apache.ACTIVATE}.path" in steps and "handler: reload apache" in steps
    status = md_status()
    assert status["state"] == 2, status
    cert = served(lab3, pebble_context(pebble))
    assert cert.issuer.rfc4514_string().startswith("CN=Pebble Intermediate CA")
    assert cert.serial_number == int(status["cert"]["rsa"]["serial"], 16)
    assert apache.cert_problem(cert.public_bytes(Encoding.PEM), HOST) is None
    assert sh(HOST, f"systemctl is-enabled {apache.ACTIVATE}.path").strip() == "enabled"


def test_acme_second_run_changes_nothing(acme, inv, reports):
    _, report = provision_json(inv, HOST, reports)
    assert changed_steps(report) == [] and notes_of(report) == []


def test_acme_https_login_spawn_and_kernel_over_wss(acme, pebble, lab3):
    """Verified against pebble's root, the name checked: no --insecure anywhere."""
    client = Client(url(lab3, "https"), pebble_context(pebble))
    assert client.api_version() == "6.1.1"
    assert lab_and_kernel(client) == "2"
    with pytest.raises(HubError, match="CERTIFICATE_VERIFY_FAILED"):
        HubClient(url(lab3, "https")).api_version()


def test_acme_http_redirects_and_md_status_is_for_the_host_only(acme, lab3):
    r = Client(url(lab3, "http")).request("hub/login", follow=False)
    assert r.status == 301 and r.headers["Location"] == f"https://{HOST}{BASE}hub/login"
    r = Client(f"http://127.0.0.1:{lab3.ports['http']}/").request(
        f"http://127.0.0.1:{lab3.ports['http']}{apache.MD_STATUS}", follow=False)
    assert r.status == 403  # from outside the host: refused (Require local)


def test_verify_passes_over_acme(acme, inv, tmp_path):
    xml = verify(inv, tmp_path)
    assert "test_acme_certificate" in xml and "test_hub_answers_through_apache" in xml


def test_acme_renewal_is_forced_once_and_served_after_the_graceful_reload(acme, pebble, inv,
                                                                           reports, lab3):
    """A renewal window a little shorter than the certificate's lifetime but longer than
    what is left of it: mod_md renews once (the new certificate has more left than the
    window), its MDMessageCmd starts the path unit, which reloads Apache gracefully."""
    context = pebble_context(pebble)
    before = served(lab3, context)
    lifetime = before.not_valid_after_utc - before.not_valid_before_utc
    age = datetime.datetime.now(datetime.UTC) - before.not_valid_before_utc
    if age < datetime.timedelta(seconds=60):
        time.sleep(60 - age.total_seconds())
        age = datetime.timedelta(seconds=60)
    window = int((lifetime - age / 2).total_seconds())
    activations = sh(HOST, ACTIVATE_LOG).count("Finished")
    _, report = provision_json(inv, HOST, reports, "--var",
                               f"apache_acme_renew_window={window}s")
    assert report["failed_hosts"] == [], report["hosts"][HOST]
    deadline = time.monotonic() + 90
    while (now := served(lab3, context)).serial_number == before.serial_number:
        assert time.monotonic() < deadline, f"no renewed certificate: {md_status()}"
        time.sleep(1)
    assert now.not_valid_before_utc > before.not_valid_before_utc
    assert sh(HOST, ACTIVATE_LOG).count("Finished") > activations  # the path unit did it
    assert md_status()["cert"]["rsa"]["serial"].lstrip("0") == f"{now.serial_number:X}"
    _, report = provision_json(inv, HOST, reports)  # the window back to the default
    assert report["hosts"][HOST]["handlers"] == ["reload apache"]
    _, report = provision_json(inv, HOST, reports)
    assert changed_steps(report) == []
    assert served(lab3, context).serial_number == now.serial_number  # renewed only once


def test_acme_a_name_the_ca_cannot_validate_fails_the_host_with_its_reason(acme, pebble,
                                                                           inv, reports):
    """lab99 is in lab3's /etc/hosts but no host has that address: pebble cannot fetch the
    challenge (and no query leaves the lab)."""
    set_host_vars(inv, acme_vars(pebble, apache_server_aliases=["lab99"],
                                 apache_acme_wait=30))
    try:
        proc, report = provision_json(inv, HOST, reports, check=False)
        assert proc.returncode == 1 and report["failed_hosts"] == [HOST], proc.stdout[-3000:]
        error = next(s["error"] for s in report["hosts"][HOST]["steps"] if s["error"])
        assert "gave no certificate for lab3, lab99" in error["message"]
        assert "validated" in error["message"]  # mod_md's words
        assert "domain authorization for lab99 failed" in error["stderr"]  # and the CA's
    finally:
        set_host_vars(inv, acme_vars(pebble))
    _, report = provision_json(inv, HOST, reports)
    assert report["failed_hosts"] == [] and notes_of(report) == []


def test_acme_an_unreachable_ca_is_a_note_and_the_host_ok(acme, pebble, inv, reports):
    set_host_vars(inv, acme_vars(pebble, apache_server_aliases=["lab3-alias"],
                                 apache_acme_ca="https://localhost:14999/dir",
                                 apache_acme_wait=10))
    try:
        _, report = provision_json(inv, HOST, reports)
        assert report["failed_hosts"] == [], report["hosts"][HOST]
        notes = notes_of(report)
        assert len(notes) == 1 and "no certificate from the CA yet for lab3, lab3-alias" \
            in notes[0], notes
        _, report = provision_json(inv, HOST, reports)  # no change, the note stays
        assert changed_steps(report) == [] and len(notes_of(report)) == 1
    finally:
        set_host_vars(inv, acme_vars(pebble))
    _, report = provision_json(inv, HOST, reports)
    assert report["failed_hosts"] == [] and notes_of(report) == []


@pytest.fixture(scope="module")
def own_files(tmp_path_factory) -> tuple[dict, str]:
    """apache_tls: files with a certificate for lab3 from a CA made here, and that CA."""
    d = tmp_path_factory.mktemp("own-tls")
    ca = make_ca("jhprovision e2e lab CA")
    cert, key = issue(ca, [HOST])
    (d / "lab3.crt").write_text(cert)
    (d / "lab3.key").write_text(key)
    return {"apache_tls": "files", "apache_tls_cert_file": str(d / "lab3.crt"),
            "apache_tls_key_file": str(d / "lab3.key")}, ca[2]


def test_every_tls_mode_switches_to_every_other_with_one_reload(acme, pebble, own_files, inv,
                                                                  reports, lab3):
    """acme -> files -> selfsigned -> acme -> selfsigned -> files -> acme: each switch is
    one run with one graceful reload, serves the new mode's certificate (verified), and
    the next run changes nothing."""
    files_vars, own_ca = own_files
    modes = {"acme": acme_vars(pebble), "files": {**HOST_VARS, **files_vars},
             "selfsigned": {**HOST_VARS, "apache_tls": "selfsigned"}}
    trust = {"acme": lambda: pebble.issuing_root, "files": lambda: own_ca,
             "selfsigned": lambda: sh(HOST, f"cat {apache.SELFSIGNED_CRT}")}
    walk = ["files", "selfsigned", "acme", "selfsigned", "files", "acme"]
    for before, mode in zip(["acme", *walk[:-1]], walk, strict=True):
        set_host_vars(inv, modes[mode])
        reloads = graceful_reloads(HOST)
        _, report = provision_json(inv, HOST, reports)
        where = f"{before} -> {mode}"
        assert report["failed_hosts"] == [], (where, report["hosts"][HOST])
        assert report["hosts"][HOST]["handlers"] == ["reload apache"], where
        assert graceful_reloads(HOST) == reloads + 1, where
        served(lab3, pinned_context(trust[mode](), HOST))  # verified, or it raises
        _, report = provision_json(inv, HOST, reports)
        assert changed_steps(report) == [], (where, changed_steps(report))
        active = sh(HOST, f"systemctl is-active {apache.ACTIVATE}.path", check=False).strip()
        assert (active == "active") == (mode == "acme"), (where, active)
    assert lab_and_kernel(Client(url(lab3, "https"), pebble_context(pebble))) == "2"
