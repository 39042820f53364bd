"""Apache in front of the hub (apache_enabled): running, its site enabled and as rendered,
the hub answering through it at the base URL, the hub's own port on loopback only.

Collected only for hosts with apache_enabled (conftest deselects the others)."""

from __future__ import annotations

import json

import pytest

from roles import apache
from roles._common import hub_urls

pytestmark = pytest.mark.only_if.with_args(apache.enabled)
tls_on = pytest.mark.only_if.with_args(lambda hv: hv["apache_tls"] not in ("off", "acme"))
acme_on = pytest.mark.only_if.with_args(lambda hv: hv["apache_tls"] == "acme")


def test_apache_running(host):
    svc = host.service("apache2")
    assert svc.is_enabled, "apache2 is not enabled"
    assert svc.is_running, "apache2 is not running"


def test_site_enabled_and_as_rendered(host, hv):
    f = host.file(apache.SITE_PATH)
    assert f.exists, f"{apache.SITE_PATH} missing"
    assert (f.user, f.group, f.mode) == ("root", "root", 0o644), (
        f"{apache.SITE_PATH}: expected root:root 0644, found {f.user}:{f.group} {f.mode:04o}")
    assert f.content_string == apache.render_site(hv), \
        f"{apache.SITE_PATH}: content differs from the inventory's"
    link = host.file(apache.SITE_LINK)
    assert link.is_symlink, f"site {apache.SITE} is not enabled ({apache.SITE_LINK} missing)"


def test_modules_enabled(host, hv):
    missing = [m for m in apache.modules(hv)
               if not host.file(f"{apache.MODS_ENABLED}/{m}.load").exists]
    assert not missing, f"Apache modules not enabled: {', '.join(missing)}"


def test_config_valid(host):
    out = host.run("apache2ctl configtest")
    assert out.rc == 0, f"apache2ctl configtest fails: {out.stderr.strip()[-500:]}"


def _hub_version(host, url: str, *flags: str) -> str:
    out = host.run(f"curl -fsS --max-time 10 {' '.join(flags)} {url}")
    assert out.rc == 0, f"{url} did not answer through Apache: {out.stderr.strip()}"
    return json.loads(out.stdout)["version"]


def test_hub_answers_through_apache(host, hv):
    s = apache.site(hv)
    http = f"http://127.0.0.1:{s.http_port}{s.base_url}hub/api"
    if s.tls == "off":
        assert _hub_version(host, http) == hv["jupyterhub_version"]
        return
    out = host.run(f"curl -sS --max-time 10 -o /dev/null -w '%{{http_code}} "
                   f"%{{redirect_url}}' {http}")
    assert out.stdout.split() == ["301", f"{s.https_root}{s.base_url[1:]}hub/api"], (
        f"{http}: expected a redirect to HTTPS, found {out.stdout!r}")
    # -k: the host asks itself on 127.0.0.1, not the certificate's name; the certificate
    # is checked by test_certificate.
    https = f"https://127.0.0.1:{s.https_port}{s.base_url}hub/api"
    assert _hub_version(host, https, "-k") == hv["jupyterhub_version"]


def test_hub_public_port_only_on_loopback(host, hv):
    port = hub_urls(hv).port
    found = {s for s in host.socket.get_listening_sockets()
             if s.startswith("tcp") and s.endswith(f":{port}")}
    assert found and all(s.split("//")[1].rsplit(":", 1)[0] in ("127.0.0.1", "::1")
                         for s in found), (
        f"the hub's public port {port} must listen on loopback only behind Apache, found "
        f"{sorted(found) or 'nothing'}")


@tls_on
def test_certificate(host, hv):
    s = apache.site(hv)
    key = host.file(s.key)
    assert key.exists, f"{s.key} missing"
    assert (key.user, key.group, key.mode) == ("root", "root", 0o600), (
        f"{s.key}: expected root:root 0600, found {key.user}:{key.group} {key.mode:04o}")
    pem = host.file(s.cert).content
    if s.tls == "selfsigned":
        problem = apache.cert_problem(pem, s.server_name)
        assert problem is None, f"{s.cert}: {problem}"
    else:
        with open(hv["apache_tls_cert_file"], "rb") as fh:
            assert pem == fh.read(), f"{s.cert} differs from {hv['apache_tls_cert_file']}"


# Run on the host: mod_md's status of the site's managed domain (its md-status handler
# answers local requests only), and the certificate Apache serves for the site's name.
MD_PROBE = """import json, socket, ssl, sys, urllib.request
status_url, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with opener.open(urllib.request.Request(status_url, headers={"Host": name}), timeout=10) as r:
    md = json.load(r)
ctx = ssl._create_unverified_context()  # what is served is checked by the caller
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname=name) as tls:
        der = tls.getpeercert(binary_form=True)
print(json.dumps({"md": md, "served": ssl.DER_cert_to_PEM_cert(der)}))
"""


@acme_on
def test_acme_certificate(host, hv):
    """mod_md has a certificate for every name of the site, Apache serves that one, and it
    is not expired; its renewal window and activation unit are in place."""
    import datetime
    import shlex

    from cryptography import x509

    s = apache.site(hv)
    out = host.run(f"python3 -c {shlex.quote(MD_PROBE)} {s.md_status_url} {s.server_name} "
                   f"{s.https_port}")
    assert out.rc == 0, f"cannot read mod_md's status: {out.stderr.strip()[-500:]}"
    data = json.loads(out.stdout)
    md, served = data["md"], data["served"].encode()
    last = (md.get("renewal") or {}).get("last") or {}
    assert md.get("state") == 2, (
        f"mod_md has no valid certificate for {', '.join(s.names)}: "
        f"{md.get('state-descr') or last.get('detail') or md}")
    assert md.get("renew-window") == hv["apache_acme_renew_window"], (
        f"mod_md's renewal window is {md.get('renew-window')}, the inventory says "
        f"{hv['apache_acme_renew_window']} (Apache not reloaded?)")
    for name in s.names:
        problem = apache.cert_problem(served, name, renew_before=datetime.timedelta(0))
        assert problem is None, f"the certificate Apache serves for {name}: {problem}"
    cert = x509.load_pem_x509_certificate(served)
    active = {c.get("serial", "").lstrip("0").upper() for c in (md.get("cert") or {}).values()
              if isinstance(c, dict) and c.get("serial")}
    assert f"{cert.serial_number:X}" in active, (
        f"Apache serves certificate {cert.serial_number:X}, mod_md's is {active}: a renewed "
        "certificate is waiting for a graceful reload")
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    print(f"certificate for {', '.join(s.names)} from {cert.issuer.rfc4514_string()}, "
          f"{left.days} days left")
    assert host.service(f"{apache.ACTIVATE}.path").is_enabled, (
        f"{apache.ACTIVATE}.path is not enabled: renewed certificates are not activated")
