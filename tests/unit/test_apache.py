"""The apache role without SSH: the site template for HTTP, HTTPS and base URLs (its
proxied path is the hub's base URL, websockets and forwarded headers included), the
loopback rule, validation, and plans against a fresh and a converged modelled host."""

from __future__ import annotations

import datetime
import io
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fakeconfig import exec_config
from hostmodel import ROLES, RUNNING, HostState, converged, inventory_vars, request_for
from provision.display import Display
from provision.inventory import Host
from provision.render import render
from provision.runner import run
from provision.steps import MASK, Action, Command, Upload
from faketransport import FakeTransport
from roles import apache, jupyterhub, proxy
from roles.apache.acme import _acme_context as acme_context
from roles._common import hub_urls

HOST = "lab1"  # hostmodel.inventory_vars' inventory_hostname


# ------------------------------------------------------------------------- helpers
def make_cert(name: str, days: int = 365, *, key: Any = None) -> tuple[bytes, bytes]:
    """A self-signed certificate for ``name`` and its key, both PEM."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = make_cert("lab.example.org")
    (d / "lab.crt").write_bytes(cert)
    (d / "lab.key").write_bytes(key)
    return {"apache_tls_cert_file": str(d / "lab.crt"), "apache_tls_key_file": str(d / "lab.key")}


def apache_vars(**overrides: Any) -> dict[str, Any]:
    return inventory_vars(apache_enabled=True, **overrides)


def link(target: str) -> dict[str, Any]:
    return {"type": "link", "mode": "0777", "owner": "root", "group": "root", "target": target}


def converged_apache(v: dict[str, Any]) -> HostState:
    """The host the roles leave behind for ``v``, Apache included."""
    st = converged(v)
    s = apache.site(v)
    st.dpkg["apache2"] = "2.4.71-1~deb12u1"
    for m in apache.modules(v):
        st.files[f"{apache.MODS_ENABLED}/{m}.load"] = link(f"../mods-available/{m}.load")
    st.add_file(apache.SITE_PATH, apache.render_site(v))
    st.files[apache.SITE_LINK] = link(f"../sites-available/{apache.SITE}.conf")
    st.units[apache.UNIT] = dict(RUNNING)
    if s.tls != "off":
        st.add_dir(apache.TLS_DIR, "0700")
    if s.tls == "selfsigned":
        st.dpkg["openssl"] = "3.0.20-1~deb12u2"
        cert, key = make_cert(s.server_name, 3650)
        st.add_file(apache.SELFSIGNED_CRT, cert)
        st.add_file(apache.SELFSIGNED_KEY, key, "0600")
    elif s.tls == "files":
        st.add_file(apache.FILES_CRT, Path(v["apache_tls_cert_file"]).read_bytes())
        st.add_file(apache.FILES_KEY, Path(v["apache_tls_key_file"]).read_bytes(), "0600")
    elif s.tls == "acme":
        ctx = acme_context()
        if v.get("apache_acme_ca_root"):
            st.add_file(apache.ACME_CA_ROOT, Path(v["apache_acme_ca_root"]).read_bytes())
        st.add_dir(apache.ACME_EVENTS, "0700", "www-data", "root")
        st.add_file(apache.ACME_HOOK, render("apache/md-event.sh.j2", ctx), "0755")
        st.add_file(apache.ACTIVATE_SERVICE, render("apache/acme-activate.service.j2", ctx))
        st.add_file(apache.ACTIVATE_PATH, render("apache/acme-activate.path.j2", ctx))
        st.units[f"{apache.ACTIVATE}.path"] = dict(RUNNING, SubState="waiting")
        cert, _ = make_cert(s.server_name, 90)
        st.add_file(s.md_pubcert, cert, "0600")
    return st


def plan(v: dict[str, Any], st: HostState) -> list[Action]:
    return apache.plan(v, st.facts(request_for(v)).restrict(apache.facts(v)))


def changes(actions: list[Action]) -> list[str]:
    return [a.name for a in actions if a.changed]


def by_name(actions: list[Action], name: str) -> Action:
    return next(a for a in actions if a.name == name)


def vhosts(text: str) -> dict[str, str]:
    """The site's VirtualHost blocks by port."""
    return dict(re.findall(r"<VirtualHost \*:(\d+)>\n(.*?)</VirtualHost>", text, re.S))


# ----------------------------------------------------------------------- the template
SITES: dict[str, dict[str, Any]] = {
    "http-jhub": {"jupyterhub_base_url": "/jhub/"},
    "http-root": {},
    "http-nested-port-8080": {"jupyterhub_base_url": "/lab/hub2/", "apache_http_port": 8080},
    "bind-url": {"jupyterhub_bind_url": "http://:8010/jhub/"},
    "selfsigned-jhub": {"jupyterhub_base_url": "/jhub/", "apache_tls": "selfsigned"},
    "selfsigned-port-8443": {"jupyterhub_base_url": "/jhub/", "apache_tls": "selfsigned",
                             "apache_https_port": 8443, "apache_server_name": "jh.example.org"},
    "files": {"jupyterhub_base_url": "/jhub/", "apache_tls": "files"},
    "acme": {"jupyterhub_base_url": "/jhub/", "apache_tls": "acme",
             "apache_server_name": "lab.example.org"},
    "acme-aliases-ports": {"apache_tls": "acme", "apache_server_name": "lab.example.org",
                           "apache_server_aliases": ["jhub.example.org"],
                           "apache_http_port": 8080, "apache_https_port": 8443},
}


@pytest.mark.parametrize("case", SITES)
def test_site_proxies_the_hub_base_url(case, tls_files):
    extra = tls_files if SITES[case].get("apache_tls") == "files" else {}
    v = apache_vars(**SITES[case], **extra)
    text = apache.render_site(v)
    urls = hub_urls(v)
    hub = exec_config(jupyterhub.render_config(v))["JupyterHub"]["bind_url"]
    assert hub == f"http://127.0.0.1:{urls.port}{urls.base_url}"
    s = apache.site(v)
    blocks = vhosts(text)
    public = blocks[str(s.https_port if s.tls != "off" else s.http_port)]
    # One path, from one variable: Apache's equals the hub's (no redirect loops).
    assert re.findall(r"^\s*ProxyPass (\S+) (\S+) (.*)$", public, re.M) == [
        (urls.base_url, hub, "upgrade=websocket nocanon")]
    assert re.findall(r"^\s*ProxyPassReverse (\S+) (\S+)$", public, re.M) == [
        (urls.base_url, hub)]
    assert "ProxyPreserveHost On" in public
    scheme = "https" if s.tls != "off" else "http"
    assert f'RequestHeader set X-Forwarded-Proto "{scheme}"' in public
    assert f"ServerName {s.server_name}" in public
    if urls.base_url != "/":
        assert f"RedirectMatch permanent ^{urls.base_url[:-1]}$ {urls.base_url}" in public


@pytest.mark.parametrize("case", ["selfsigned-jhub", "selfsigned-port-8443", "files"])
def test_tls_site_redirects_http_and_names_its_certificate(case, tls_files):
    v = apache_vars(**SITES[case], **tls_files) if case == "files" \
        else apache_vars(**SITES[case])
    s = apache.site(v)
    blocks = vhosts(apache.render_site(v))
    assert set(blocks) == {str(s.http_port), str(s.https_port)}
    http = blocks[str(s.http_port)]
    assert "ProxyPass" not in http
    port = "" if s.https_port == 443 else f":{s.https_port}"
    assert f"Redirect permanent / https://{s.server_name}{port}/" in http
    https = blocks[str(s.https_port)]
    assert "SSLEngine on" in https
    assert f"SSLCertificateFile {s.cert}" in https and f"SSLCertificateKeyFile {s.key}" in https


@pytest.mark.parametrize("case, listens", [
    ("http-jhub", []), ("selfsigned-jhub", []), ("http-nested-port-8080", ["8080"]),
    ("selfsigned-port-8443", ["8443 https"]),
])
def test_listen_only_ports_debian_does_not_listen_on(case, listens):
    text = apache.render_site(apache_vars(**SITES[case]))
    assert re.findall(r"^Listen (.+)$", text, re.M) == listens


def test_hub_and_proxy_listen_on_loopback_with_apache():
    assert hub_urls(inventory_vars()).ip == ""
    v = apache_vars(jupyterhub_base_url="/jhub/")
    assert hub_urls(v).ip == "127.0.0.1"
    unit = render("proxy/configurable-http-proxy.service.j2",
                  proxy.unit_context(v, converged(v).facts(request_for(v))))
    assert '--ip "127.0.0.1" --port "8000"' in unit
    assert hub_urls(apache_vars(jupyterhub_ip="::1")).ip == "::1"
    assert hub_urls(apache_vars(jupyterhub_bind_url="http://localhost:8000/")).ip == \
        "127.0.0.1"


# ------------------------------------------------------------------------- validation
def problems(**overrides: Any) -> list[tuple[str, str]]:
    v = inventory_vars()
    v.update(overrides)
    return apache.check(v)


@pytest.mark.parametrize("overrides, key, words", [
    ({"jupyterhub_ip": "0.0.0.0"}, "jupyterhub_ip", "not a loopback address"),
    ({"jupyterhub_ip": "10.0.0.5"}, "jupyterhub_ip", "remove jupyterhub_ip"),
    ({"jupyterhub_bind_url": "http://10.0.0.5:8000/jhub/"}, "jupyterhub_bind_url",
     "not a loopback address"),
    ({"jupyterhub_bind_url": "https://:8443/"}, "jupyterhub_bind_url", "must be http://"),
    ({"apache_http_port": 8000}, "apache_http_port", "jupyterhub_port"),
    ({"apache_tls": "selfsigned", "apache_https_port": 80}, "apache_https_port",
     "must differ"),
    ({"apache_tls": "files"}, "apache_tls_cert_file", "must be set"),
    ({"apache_tls": "files", "apache_tls_cert_file": "/nonexistent/x.crt",
      "apache_tls_key_file": "/nonexistent/x.key"}, "apache_tls_key_file", "cannot read"),
    ({"apache_tls_cert_file": "/etc/ssl/x.crt"}, "apache_tls", "set apache_tls: files"),
])
def test_check_refuses(overrides, key, words):
    found = problems(apache_enabled=True, **overrides)
    assert any(k == key and words in why for k, why in found), found


@pytest.mark.parametrize("overrides", [
    {}, {"jupyterhub_ip": "127.0.0.1"}, {"jupyterhub_ip": "::1"},
    {"jupyterhub_bind_url": "http://:8000/jhub/"},
    {"jupyterhub_bind_url": "http://localhost:8000/"}, {"apache_tls": "selfsigned"},
])
def test_check_accepts(overrides):
    assert problems(apache_enabled=True, **overrides) == []


def test_check_leaves_a_disabled_role_alone():
    assert problems(jupyterhub_ip="10.0.0.5", apache_http_port=8000) == []


def test_check_explains_yaml_off():
    found = problems(apache_tls=False)
    assert found and "quoted" in found[0][1]


def test_check_tls_files(tls_files, tmp_path):
    assert problems(apache_enabled=True, apache_tls="files", **tls_files) == []
    _, other_key = make_cert("lab.example.org")
    (tmp_path / "other.key").write_bytes(other_key)
    found = problems(apache_enabled=True, apache_tls="files",
                     apache_tls_cert_file=tls_files["apache_tls_cert_file"],
                     apache_tls_key_file=str(tmp_path / "other.key"))
    assert found == [("apache_tls_key_file", f"{tmp_path / 'other.key'} is not the private "
                      f"key of the certificate {tls_files['apache_tls_cert_file']}")]
    (tmp_path / "bad.crt").write_text("not a certificate")
    found = problems(apache_enabled=True, apache_tls="files", **dict(
        tls_files, apache_tls_cert_file=str(tmp_path / "bad.crt")))
    assert found[0][0] == "apache_tls_cert_file" and "not a PEM certificate" in found[0][1]


# ------------------------------------------------------------------------------ facts
def test_facts_ask_for_module_links_and_never_for_the_self_signed_key(tls_files):
    req = apache.facts(apache_vars(apache_tls="selfsigned"))
    for m in ("proxy", "proxy_http", "headers", "ssl"):
        assert f"/etc/apache2/mods-enabled/{m}.load" in req.files
    assert apache.SITE_PATH in req.content and apache.SELFSIGNED_CRT in req.content
    assert apache.SELFSIGNED_KEY in req.secret and apache.SELFSIGNED_KEY not in req.content
    files = apache.facts(apache_vars(apache_tls="files", **tls_files))
    assert apache.FILES_KEY in files.files and apache.FILES_KEY not in files.content


# ----------------------------------------------------------------------------- plans
def test_fresh_host_plan():
    v = apache_vars(jupyterhub_base_url="/jhub/")
    actions = plan(v, HostState())
    assert changes(actions) == [
        "apt apache2", "apache modules alias, headers, proxy, proxy_http",
        f"site {apache.SITE_PATH}", f"site {apache.SITE} enabled",
        "default site 000-default disabled", "service apache2.service"]
    assert by_name(actions, "apache modules alias, headers, proxy, proxy_http").ops[0].argv \
        == ["a2enmod", "-q", "alias", "headers", "proxy", "proxy_http"]
    site = by_name(actions, f"site {apache.SITE_PATH}")
    (op,) = site.ops
    # Swapped in and kept only if `apache2ctl configtest` passes (not a plain Upload).
    assert isinstance(op, Command) and op.argv[:2] == ["sh", "-c"]
    assert "apache2ctl configtest" in op.argv[2] and op.stdin == apache.render_site(v).encode()
    assert op.argv[4:] == [apache.SITE_PATH, "0644", "root", "root"]
    # Installing apache2 enables 000-default in this same run: it is disabled anyway.
    assert by_name(actions, "default site 000-default disabled").ops[0].argv == \
        ["a2dissite", "-q", "000-default"]
    assert all(a.notify == (apache.RELOAD,) for a in actions
               if a.changed and a.name.startswith(("apache modules", "site", "default")))


def test_fresh_host_plan_selfsigned():
    v = apache_vars(apache_tls="selfsigned")
    actions = plan(v, HostState())
    assert changes(actions) == [
        "apt apache2, openssl", "apache modules alias, headers, proxy, proxy_http, ssl",
        "directory /etc/apache2/tls", f"self-signed certificate {apache.SELFSIGNED_CRT}",
        f"site {apache.SITE_PATH}", f"site {apache.SITE} enabled",
        "default site 000-default disabled", "service apache2.service"]
    (op,) = by_name(actions, f"self-signed certificate {apache.SELFSIGNED_CRT}").ops
    assert op.argv[4:] == [apache.SELFSIGNED_KEY, apache.SELFSIGNED_CRT, HOST, f"DNS:{HOST}",
                           "3650"]
    assert "openssl req -x509" in op.argv[2] and "umask 077" in op.argv[2]


def test_fresh_host_plan_files_never_shows_the_key(tls_files):
    v = apache_vars(apache_tls="files", **tls_files)
    actions = plan(v, HostState())
    key = by_name(actions, f"file {apache.FILES_KEY}")
    (op,) = key.ops
    assert isinstance(op, Upload) and (op.mode, op.owner) == ("0600", "root")
    assert op.content == Path(tls_files["apache_tls_key_file"]).read_bytes()
    assert key.diff == f"~ {apache.FILES_KEY}: {MASK}"
    assert "PRIVATE" not in op.shown()
    assert key.notify == (apache.RELOAD,)


CONVERGED = ["http-jhub", "http-root", "http-nested-port-8080", "bind-url", "selfsigned-jhub",
             "selfsigned-port-8443", "files", "acme", "acme-aliases-ports"]


@pytest.mark.parametrize("case", CONVERGED)
def test_converged_host_has_nothing_to_do(case, tls_files):
    extra = tls_files if case == "files" else {}
    v = apache_vars(**SITES[case], **extra)
    assert changes(plan(v, converged_apache(v))) == []


def test_converged_host_is_one_round_trip_for_every_role():
    v = apache_vars(jupyterhub_base_url="/jhub/", apache_tls="selfsigned")
    t = FakeTransport(HOST, responder=converged_apache(v).responder())
    report = run([Host(HOST, vars=v)], ROLES, display=Display(io.StringIO(), color=False),
                 transport_factory=lambda host: t)
    rep = report.hosts[HOST]
    assert [s.name for s in rep.steps if s.status != "ok"] == []
    assert rep.round_trips == 1 and rep.handlers == []


def test_site_change_is_one_tested_swap_and_one_reload():
    v = apache_vars(jupyterhub_base_url="/jhub/")
    st = converged_apache(v)
    st.add_file(apache.SITE_PATH, apache.render_site(apache_vars()))  # the old base URL
    actions = plan(v, st)
    assert changes(actions) == [f"site {apache.SITE_PATH}"]
    site = by_name(actions, f"site {apache.SITE_PATH}")
    assert "-    ProxyPass / http://127.0.0.1:8000/ upgrade=websocket nocanon" in site.diff
    assert "+    ProxyPass /jhub/ http://127.0.0.1:8000/jhub/ upgrade=websocket nocanon" \
        in site.diff
    assert site.notify == (apache.RELOAD,)


def test_default_site_is_left_alone_on_another_port():
    v = apache_vars(apache_http_port=8080)
    st = converged_apache(v)
    st.files["/etc/apache2/sites-enabled/000-default.conf"] = link(
        "../sites-available/000-default.conf")
    actions = plan(v, st)
    assert changes(actions) == []
    assert not any(a.name.startswith("default site") for a in actions)


def test_default_ssl_site_is_disabled_when_it_takes_443():
    v = apache_vars(apache_tls="selfsigned")
    st = converged_apache(v)
    st.files["/etc/apache2/sites-enabled/default-ssl.conf"] = link(
        "../sites-available/default-ssl.conf")
    actions = plan(v, st)
    assert changes(actions) == ["default site default-ssl disabled"]


def test_modules_only_the_missing_ones():
    v = apache_vars(apache_tls="selfsigned")
    st = converged_apache(v)
    del st.files[f"{apache.MODS_ENABLED}/ssl.load"]
    del st.files[f"{apache.MODS_ENABLED}/headers.load"]
    actions = plan(v, st)
    assert changes(actions) == ["apache modules alias, headers, proxy, proxy_http, ssl"]
    assert actions[1].ops[0].argv == ["a2enmod", "-q", "headers", "ssl"]


@pytest.mark.parametrize("state, why", [
    ("other-name", "the certificate is for other.example.org, not lab1"),
    ("expiring", "the certificate expires on"),
    ("no-key", "no key"),
])
def test_selfsigned_certificate_is_made_again_only_when_needed(state, why):
    v = apache_vars(apache_tls="selfsigned")
    st = converged_apache(v)
    if state == "other-name":
        st.add_file(apache.SELFSIGNED_CRT, make_cert("other.example.org", 3650)[0])
    elif state == "expiring":
        st.add_file(apache.SELFSIGNED_CRT, make_cert(HOST, 10)[0])
    else:
        del st.files[apache.SELFSIGNED_KEY]
    actions = plan(v, st)
    assert changes(actions) == [f"self-signed certificate {apache.SELFSIGNED_CRT}"]
    act = by_name(actions, f"self-signed certificate {apache.SELFSIGNED_CRT}")
    assert why in act.diff and act.notify == (apache.RELOAD,)


def test_selfsigned_key_mode_drift_is_a_chmod_not_a_new_key():
    v = apache_vars(apache_tls="selfsigned")
    st = converged_apache(v)
    st.files[apache.SELFSIGNED_KEY]["mode"] = "0644"
    act = by_name(plan(v, st), f"self-signed certificate {apache.SELFSIGNED_CRT}")
    assert [op.argv for op in act.ops] == [["chmod", "0600", "--", apache.SELFSIGNED_KEY]]


def test_selfsigned_for_an_ip_address():
    assert apache.subject_alt_name("192.0.2.7") == "IP:192.0.2.7"
    assert apache.subject_alt_name("lab.example.org") == "DNS:lab.example.org"


def test_a_certificate_that_is_not_a_regular_file_is_refused(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.symlink_to("/dev/zero")
    problems = apache.check_tls_files(str(cert), str(cert))
    assert problems and all("is not a regular file" in why for _, why in problems), problems


# ------------------------------------------------------------------------------ acme
@pytest.fixture(scope="module")
def ca_root(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ca") / "root.pem"
    path.write_bytes(make_cert("Lab private CA")[0])
    return str(path)


def acme_site(**more: Any) -> dict[str, Any]:
    return apache_vars(**SITES["acme"], **more)


def test_acme_site_is_a_managed_domain_with_mod_md_certificates(ca_root):
    v = acme_site(apache_server_aliases=["jhub.example.org"], apache_acme_ca_root=ca_root,
                  apache_acme_email="admin@example.org")
    text = apache.render_site(v)
    md = re.search(r"^<MDomain (.*)>\n(.*?)^</MDomain>", text, re.M | re.S)
    assert md and md.group(1) == "lab.example.org jhub.example.org"
    lines = [ln.strip() for ln in md.group(2).splitlines()]
    assert lines == [f"MDCertificateAuthority {apache.LETS_ENCRYPT}",
                     "MDCertificateAgreement accepted", "MDCAChallenges http-01",
                     "MDContactEmail admin@example.org", "MDRenewWindow 33%"]
    assert re.findall(r"^MD\w+ .*$", text, re.M) == [
        f"MDCACertificateFile {apache.ACME_CA_ROOT}", f"MDMessageCmd {apache.ACME_HOOK}"]
    blocks = vhosts(text)
    https = blocks["443"]
    assert "SSLEngine on" in https and "SSLCertificateFile" not in https
    assert "ServerAlias jhub.example.org" in https and "ServerAlias jhub.example.org" in \
        blocks["80"]
    http = blocks["80"]
    assert "ProxyPass" not in http and "Redirect permanent /" not in http
    # Everything to HTTPS but mod_md's status page, which only the host itself may read.
    assert 'RedirectMatch permanent "^/(?!md-status(?:/|$))(.*)" ' \
        '"https://lab.example.org/$1"' in http
    assert re.search(r'<Location "/md-status">\s+SetHandler md-status\s+Require local\s+'
                     r"</Location>", http)
    pattern = re.compile(r"^/(?!md-status(?:/|$))(.*)")
    assert pattern.match("/jhub/hub/login") and pattern.match("/md-statusx")
    assert not pattern.match("/md-status") and not pattern.match("/md-status/lab")


def test_acme_site_maps_its_ports_for_the_ca():
    text = apache.render_site(apache_vars(**SITES["acme-aliases-ports"]))
    assert re.findall(r"^MDPortMap (.*)$", text, re.M) == ["80:8080 443:8443"]
    assert "MDPortMap" not in apache.render_site(acme_site())
    assert "MDCACertificateFile" not in apache.render_site(acme_site())
    assert "MDContactEmail" not in apache.render_site(acme_site())


def test_acme_modules_add_md():
    assert apache.modules(acme_site()) == ["alias", "headers", "proxy", "proxy_http", "ssl",
                                           "md"]


def test_fresh_host_plan_acme(ca_root):
    v = acme_site(apache_acme_ca_root=ca_root)
    actions = plan(v, HostState())
    assert changes(actions) == [
        "apt apache2", "apache modules alias, headers, proxy, proxy_http, ssl, md",
        f"file {apache.ACME_CA_ROOT}",
        f"directory {apache.ACME_EVENTS}", f"file {apache.ACME_HOOK}",
        f"unit {apache.ACTIVATE}.service", f"unit {apache.ACTIVATE}.path",
        f"service {apache.ACTIVATE}.path", f"site {apache.SITE_PATH}",
        f"site {apache.SITE} enabled", "default site 000-default disabled",
        "service apache2.service"]
    events = by_name(actions, f"directory {apache.ACME_EVENTS}")
    assert ["chown", "www-data:root", "--", apache.ACME_EVENTS] in [
        getattr(op, "argv", None) for op in events.ops] or "www-data" in events.diff
    # The handler waits for the certificate: no note at plan time when a reload is due.
    assert all(not a.note for a in actions)


def test_acme_without_a_certificate_notes_it_and_changes_nothing():
    v = acme_site()
    st = converged_apache(v)
    del st.files[apache.site(v).md_pubcert]
    actions = plan(v, st)
    assert changes(actions) == []
    (noted,) = [a for a in actions if a.note]
    assert "no certificate from the CA yet for lab.example.org" in noted.note
    st.add_file(apache.site(v).md_pubcert, make_cert("other.example.org")[0])
    assert [a.note for a in plan(v, st) if a.note], "a certificate for another name"


def test_acme_events_hook_always_exits_0_and_writes_only_as_www_data():
    hook = render("apache/md-event.sh.j2", acme_context())
    assert hook.rstrip().endswith("exit 0")
    assert 'if [ "$(id -u)" = 0 ]; then' in hook
    assert f"systemctl --no-block start {apache.ACTIVATE}.service" in hook
    unit = render("apache/acme-activate.path.j2", acme_context())
    assert f"PathChanged={apache.ACME_RENEWED}" in unit


def test_switching_away_from_acme_removes_its_activation(ca_root):
    v_acme = acme_site(apache_acme_ca_root=ca_root)
    st = converged_apache(v_acme)
    v = apache_vars(**SITES["selfsigned-jhub"], apache_server_name="lab.example.org")
    actions = plan(v, st)
    removed = by_name(actions, f"acme renewal activation ({apache.ACTIVATE}.path) removed")
    argvs = [op.argv for op in removed.ops]
    assert argvs == [
        ["systemctl", "disable", "--now", "--quiet", "--", f"{apache.ACTIVATE}.path"],
        ["rm", "-f", "--", apache.ACTIVATE_PATH, apache.ACTIVATE_SERVICE, apache.ACME_HOOK],
        ["systemctl", "daemon-reload"],
        ["find", apache.ACME_EVENTS, "-mindepth", "1", "-maxdepth", "1", "!", "-type", "d",
         "-delete"],
        ["rmdir", "--", apache.ACME_EVENTS]]
    assert by_name(actions, f"absent {apache.ACME_CA_ROOT}").changed
    assert f"site {apache.SITE_PATH}" in changes(actions)


@pytest.mark.parametrize("overrides, key, words", [
    ({"apache_server_name": "10.0.0.5"}, "apache_server_name", "must be a DNS name"),
    ({"apache_server_name": "localhost"}, "apache_server_name", "must be a DNS name"),
    ({"apache_server_name": "lab.example.org", "apache_server_aliases": ["127.0.0.1"]},
     "apache_server_aliases", "not an IP address"),
    ({"apache_server_name": "lab.example.org", "apache_acme_ca_root": "/nonexistent/ca.pem"},
     "apache_acme_ca_root", "cannot read"),
])
def test_check_refuses_acme(overrides, key, words):
    found = problems(apache_enabled=True, apache_tls="acme", **overrides)
    assert any(k == key and words in why for k, why in found), found


def test_check_ca_root_must_be_certificates_only(tmp_path, ca_root):
    assert apache.check_ca_root(ca_root) == []
    cert, key = make_cert("x")
    (tmp_path / "both.pem").write_bytes(cert + key)
    assert "holds a private key" in apache.check_ca_root(str(tmp_path / "both.pem"))[0][1]
    (tmp_path / "junk.pem").write_text("junk")
    assert "not a PEM certificate" in apache.check_ca_root(str(tmp_path / "junk.pem"))[0][1]


@pytest.mark.parametrize("md, why, refused, words", [
    ({"state": 1, "renewal": {"errors": 1, "last": {
        "problem": "urn:ietf:params:acme:error:dns", "detail": "no such host"}}},
     "errors", True, "no such host (urn:ietf:params:acme:error:dns)"),
    ({"state": 1, "renewal": {"errors": 2, "last": {
        "status-description": "Connection refused",
        "activity": "Contacting ACME server for lab3 at https://ca/dir"}}}, "errors", False,
     "Connection refused"),
    ({"state": 1, "renewal": {"errors": 1, "last": {
        "status-description": "Invalid argument",
        "detail": "Error waiting on domain names to be validated",
        "activity": "Monitoring challenge status for lab3"}}}, "errors", True,
     "Error waiting on domain names to be validated"),
    ({"state": 1, "state-descr": "certificate(rsa) is missing"}, "waiting", None,
     "certificate(rsa) is missing"),
    ({"error": "http://127.0.0.1/md-status/x: HTTP Error 404"}, "waiting", None, "404"),
])
def test_md_status_words(md, why, refused, words):
    status = apache.MdStatus(why, md)
    if refused is not None:  # only asked when there are errors
        assert status.refused is refused
    assert words in status.problem


def test_md_status_script_compiles():
    compile(apache.MD_STATUS_SCRIPT, "md-status", "exec")


def test_a_note_is_shown_under_the_host_in_the_recap_and_kept_in_the_report():
    v = acme_site()
    st = converged_apache(v)
    del st.files[apache.site(v).md_pubcert]
    t = FakeTransport(HOST, responder=st.responder())
    out = io.StringIO()
    display = Display(out, color=False)
    report = run([Host(HOST, vars=v)], ROLES, display=display,
                 transport_factory=lambda host: t)
    display.recap(report)
    rep = report.hosts[HOST]
    assert not rep.failed and rep.count("changed") == 0 and rep.round_trips == 1
    from roles.backup import NO_BACKUPS

    (note,) = [n for n in rep.notes if n != NO_BACKUPS]  # the backup role's says none
    assert note.startswith("no certificate from the CA yet for lab.example.org")
    text = out.getvalue()
    assert f"{HOST}  note      {note}" in text
    recap = text[text.index("RECAP"):]
    assert f"      note: {note}" in recap
    assert report.as_dict()["hosts"][HOST]["notes"] == [note, NO_BACKUPS]
