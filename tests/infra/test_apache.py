"""Apache in front of the hub (apache_enabled): running, its site enabled and as rendered,
the hub answering through it at the base URL, the hub's own port on loopback only.

Collected only for hosts with apache_enabled (conftest deselects the others)."""

from __future__ import annotations

import json

import pytest

from roles import apache
from roles._common import hub_urls

pytestmark = pytest.mark.only_if.with_args(apache.enabled)
tls_on = pytest.mark.only_if.with_args(lambda hv: hv["apache_tls"] != "off")


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
