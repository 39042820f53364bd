"""apache: an optional Apache reverse proxy in front of the hub (off by default).

Labs often serve JupyterHub under a path of an existing web server, e.g.
``https://lab.example.org/jhub/``. With ``apache_enabled: true`` this role installs
apache2, enables the modules it needs (``a2enmod`` only for those whose link in
``mods-enabled`` is missing), writes one site from ``templates/apache/jupyterhub.conf.j2``
and enables it, disables Debian's default site when it would take the same port, and
reloads Apache (graceful, never a restart) only when one of those changed.

The three classic failures are designed out (docs: FIELD-NOTES 6 and 7): the site proxies
websockets on the hub's path (kernels connect), forwards ``X-Forwarded-Proto`` and keeps
the Host header (no 403 XSRF errors), and its path is rendered from the same variable as
the hub's base URL (no redirect loops). The hub's public proxy then listens on loopback
only (``roles._common.hub_urls``): Apache is the only way in.

TLS (``apache_tls``): ``off``; ``selfsigned``, a certificate made once on the host, whose
key never leaves it; ``files``, a certificate and key read from the workstation and
uploaded (the key 0600, never shown in diffs or reports); ``acme``, a certificate from an
ACME certificate authority (Let's Encrypt by default), got and renewed by Apache's own
mod_md over HTTP-01 on port 80: no other daemon, no cron job. mod_md keeps a renewed
certificate aside until Apache's next graceful reload; its MDMessageCmd tells a systemd
path unit, which reloads Apache. Until the first certificate arrives HTTPS serves mod_md's
temporary one, and the run says so (a note, the host is ok) or fails with mod_md's own
message when the CA refused. With TLS, HTTP redirects to HTTPS.

The role is a package (docs/roles.md): this module holds the contract (variables, checks,
facts, the plan in order, the reload handler); ``site.py`` the vhost and where things live
on the host, ``tls.py`` the selfsigned and files certificates, ``acme.py`` mod_md's extras
(the CA root, the message hook, the activation path unit, the status probe).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from provision.errors import ProvisionError
from provision.facts import FactRequest, Facts
from provision.hostrun import HostRun
from provision.role import Handler
from provision.steps import Action, plan_apt, plan_service
from provision.variables import Var

from .._common import check_health, hub_urls, service_log
from .acme import (
    ACME_EVENTS,
    ACME_RENEWED,
    ACTIVATE_PATH,
    ACTIVATE_SERVICE,
    MD_STATUS_SCRIPT,
    MdStatus,
    certificate_after_reload,
    check_acme,
    check_ca_root,
    plan_acme,
    plan_acme_removed,
    plan_acme_waiting,
)
from .site import (
    ACME_CA_ROOT,
    ACME_HOOK,
    ACTIVATE,
    DEFAULT_SITES,
    FILES_CRT,
    FILES_KEY,
    MD_STATUS,
    MODS_ENABLED,
    RELOAD,
    SELFSIGNED_CRT,
    SELFSIGNED_KEY,
    SITE,
    SITE_LINK,
    SITE_PATH,
    SWAP_SCRIPT,
    TLS_DIR,
    TLS_MODES,
    UNIT,
    Site,
    is_loopback,
    modules,
    plan_default_sites,
    plan_modules,
    plan_site_enabled,
    plan_site_file,
    render_site,
    site,
)
from .tls import cert_problem, check_tls_files, plan_tls, subject_alt_name

NAME = "apache"
SUMMARY = (
    "optional (`apache_enabled: true`): Apache in front of the hub at "
    "`jupyterhub_base_url`, the same variable as the hub's base URL; websockets and "
    "`X-Forwarded-Proto` proxied; the hub's port then on 127.0.0.1 only; HTTPS with a "
    "certificate made on the host (`apache_tls: selfsigned`), your own (`files`) or one "
    "from Let's Encrypt or another ACME CA, renewed by Apache's mod_md (`acme`), HTTP "
    "redirected; every change checked by `apache2ctl configtest` (and undone if it "
    "fails), then one graceful reload"
)

REQUIRES = ("jupyterhub",)

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"

VARIABLES = [
    Var("apache_enabled", False, "bool", "Put Apache in front of the hub as a reverse proxy "
        "at jupyterhub_base_url (websockets and X-Forwarded-Proto included). The hub's "
        "public port then listens on 127.0.0.1 only. Set back to false, Apache is left as "
        "it is (`a2dissite jupyterhub` on the host stops its site)."),
    Var("apache_server_name", None, "host", "The name Apache answers to (ServerName), also "
        "the self-signed certificate's CN and subjectAltName and the ACME certificate's "
        "first name; default: the inventory host name.", nullable=True),
    Var("apache_server_aliases", [], "list[host]", "More names Apache answers to "
        "(ServerAlias); with apache_tls: acme the certificate is for these too (each must "
        "reach this host's port 80)."),
    Var("apache_http_port", 80, "port", "Apache's HTTP port (with TLS on, it only redirects "
        "to HTTPS)."),
    Var("apache_https_port", 443, "port", "Apache's HTTPS port (with apache_tls on)."),
    Var("apache_tls", "off", "str", "HTTPS in Apache: 'selfsigned' makes a certificate once "
        "on the host (the key never leaves it), 'files' uploads apache_tls_cert_file and "
        "apache_tls_key_file, 'acme' gets one from apache_acme_ca with Apache's mod_md, "
        "which renews it by itself. Quote 'off' in YAML (unquoted, YAML reads it as false).",
        choices=TLS_MODES),
    Var("apache_acme_ca", LETS_ENCRYPT, "https_url", "With apache_tls: acme, the ACME "
        "directory URL of the certificate authority. Default: Let's Encrypt's production "
        f"directory; for trials use their staging directory, {LETS_ENCRYPT_STAGING} (its "
        "certificates are not trusted by browsers, its rate limits are far higher). Using "
        "it means agreeing to the CA's terms of service (MDCertificateAgreement)."),
    Var("apache_acme_email", None, "email", "With apache_tls: acme, the contact address of "
        "the ACME account (MDContactEmail); optional for Let's Encrypt.", nullable=True),
    Var("apache_acme_ca_root", None, "path", "With apache_tls: acme and a private CA, its "
        "root certificate(s) (PEM, on the workstation), uploaded to "
        "/etc/apache2/jhprovision-acme-ca-root.pem (0644: mod_md reads it as "
        "www-data). mod_md trusts it for the CA's directory (MDCACertificateFile, for "
        "every managed domain of this Apache), `invoke verify --smoke` for the certificate "
        "Apache serves.", nullable=True),
    Var("apache_acme_renew_window", "33%", "renew_window", "With apache_tls: acme, when "
        "mod_md renews: once less than this part of the certificate's lifetime is left "
        "('33%': a 90-day certificate after 60 days), or a duration ('30d', '12h', "
        "'90mi', '3600s'). A window longer than the lifetime renews at every check."),
    Var("apache_acme_wait", 60, "timeout", "With apache_tls: acme, seconds a run waits for "
        "the first certificate before it moves on (the host ok, with a note: mod_md keeps "
        "trying by itself)."),
    Var("apache_tls_cert_file", None, "path", "With apache_tls: files, the certificate (PEM, "
        "intermediates after it) as an absolute path on the workstation; uploaded to "
        "/etc/apache2/tls/jupyterhub.crt.", nullable=True),
    Var("apache_tls_key_file", None, "path", "With apache_tls: files, its private key (PEM, "
        "unencrypted) on the workstation; uploaded 0600 root to "
        "/etc/apache2/tls/jupyterhub.key, never shown in diffs or reports.", nullable=True),
    Var("apache_tls_selfsigned_days", 3650, "int", "Validity of the self-signed certificate; "
        "it is made again when fewer than 30 days are left or the server name changed."),
    Var("apache_ready_timeout", 60, "timeout", "Seconds the hub may take to answer through "
        "Apache after a reload (an apache2 unit that fails is a failure at once)."),
]

# The names tests, `invoke verify` and the end-to-end tests read from the role, wherever
# in the package they are defined.
__all__ = [
    "ACME_CA_ROOT", "ACME_EVENTS", "ACME_HOOK", "ACME_RENEWED", "ACTIVATE", "ACTIVATE_PATH",
    "ACTIVATE_SERVICE", "FILES_CRT", "FILES_KEY", "LETS_ENCRYPT", "MD_STATUS",
    "MD_STATUS_SCRIPT", "MODS_ENABLED", "RELOAD", "SELFSIGNED_CRT", "SELFSIGNED_KEY", "SITE",
    "SITE_LINK", "SITE_PATH", "SWAP_SCRIPT", "TLS_DIR", "UNIT", "MdStatus", "Site",
    "cert_problem", "check_ca_root", "check_tls_files", "modules", "render_site", "site",
    "subject_alt_name",
    # the contract
    "NAME", "SUMMARY", "REQUIRES", "VARIABLES", "HANDLERS", "enabled", "check", "facts",
    "plan",
]


def enabled(v: dict[str, Any]) -> bool:
    return bool(v["apache_enabled"])


# ------------------------------------------------------------------------- validation
def check(v: dict[str, Any]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if v.get("apache_tls") is False:
        problems.append(("apache_tls", "YAML reads an unquoted off as false: write "
                         "apache_tls: 'off' (quoted)"))
    if not v.get("apache_enabled"):
        return problems
    bind = v.get("jupyterhub_bind_url")
    if bind:
        parts = urlsplit(bind)
        host = parts.hostname or ""
        if parts.scheme != "http":
            problems.append(("jupyterhub_bind_url", "with apache_enabled Apache terminates "
                             "TLS (apache_tls): the hub's bind_url must be http://"))
        if host and not is_loopback(host):
            problems.append(("jupyterhub_bind_url", f"{host!r} is not a loopback address: "
                             "with apache_enabled the hub listens on 127.0.0.1 only (Apache "
                             "is the public side); leave the host out, e.g. "
                             "'http://:8000/jhub/'"))
    elif v.get("jupyterhub_ip") and not is_loopback(v["jupyterhub_ip"]):
        problems.append(("jupyterhub_ip", f"{v['jupyterhub_ip']!r} is not a loopback "
                         "address: with apache_enabled the hub listens on 127.0.0.1 only "
                         "(Apache is the public side); remove jupyterhub_ip or set it to "
                         "'127.0.0.1'"))
    s = site(v)
    if s.http_port == s.https_port and s.tls != "off":
        problems.append(("apache_https_port", "must differ from apache_http_port"))
    taken = {hub_urls(v).port: "jupyterhub_port", v.get("jupyterhub_hub_port"):
             "jupyterhub_hub_port", v.get("proxy_api_port"): "proxy_api_port"}
    for key, port in (("apache_http_port", s.http_port), ("apache_https_port", s.https_port)):
        if key == "apache_https_port" and s.tls == "off":
            continue
        if port in taken:
            problems.append((key, f"port {port} is already {taken[port]}'s"))
    if s.tls == "acme":
        problems += check_acme(v, s)
    files = (v.get("apache_tls_cert_file"), v.get("apache_tls_key_file"))
    if s.tls == "files":
        problems += check_tls_files(*files)
    elif any(files):
        problems.append(("apache_tls", f"is {s.tls!r}, so apache_tls_cert_file and "
                         "apache_tls_key_file are not used: set apache_tls: files"))
    return problems


# ------------------------------------------------------------------------------ facts
def facts(v: dict[str, Any]) -> FactRequest:
    s = site(v)
    files = {f"{MODS_ENABLED}/{m}.load" for m in modules(v)}
    files |= {SITE_LINK, TLS_DIR}
    files |= {f"/etc/apache2/sites-enabled/{name}.conf" for name in DEFAULT_SITES}
    req = FactRequest(files=files, content={SITE_PATH}, dpkg={"apache2"}, units={UNIT})
    if s.tls == "selfsigned":
        req.dpkg.add("openssl")
        req.content.add(SELFSIGNED_CRT)
        req.secret.add(SELFSIGNED_KEY)  # metadata only: never read, never hashed
    elif s.tls == "files":
        req.content.add(FILES_CRT)
        # Hash, owner and mode, no content: the hash is what tells a changed key.
        req.files.add(FILES_KEY)
    if s.tls == "acme":
        req.content |= {ACME_HOOK, ACTIVATE_PATH, ACTIVATE_SERVICE, ACME_CA_ROOT,
                        s.md_pubcert}
        req.files.add(ACME_EVENTS)
    else:  # left by an earlier apache_tls: acme, removed
        req.files |= {ACME_HOOK, ACTIVATE_PATH, ACTIVATE_SERVICE, ACME_CA_ROOT, ACME_EVENTS,
                      ACME_RENEWED}
    req.units |= {f"{ACTIVATE}.path", f"{ACTIVATE}.service"}
    return req


# ----------------------------------------------------------------------------- steps
def plan(v: dict[str, Any], facts: Facts) -> list[Action]:
    s = site(v)
    packages: dict[str, str | None] = {"apache2": None}
    if s.tls == "selfsigned":
        packages["openssl"] = None
    actions = [plan_apt(facts, packages), plan_modules(facts, modules(v))]
    actions += plan_tls(v, facts, s)
    if s.tls == "acme":
        actions += plan_acme(v, facts, s)
    else:
        actions += plan_acme_removed(facts)
    actions.append(plan_site_file(facts, render_site(v)))
    actions.append(plan_site_enabled(facts))
    actions.extend(plan_default_sites(facts, s))
    actions.append(plan_service(facts, UNIT))
    if s.tls == "acme":
        actions.append(plan_acme_waiting(v, facts, s, actions))
    return actions


# --------------------------------------------------------------------------- handler
def reload_apache(run: HostRun) -> None:
    """Test the configuration, reload Apache gracefully (open connections finish), and
    check the hub answers through it; with apache_tls: acme, wait (bounded) for mod_md's
    certificate first."""
    host = run.host.name
    test = run.run(["apache2ctl", "configtest"], check=False, step=RELOAD)
    if test.rc != 0:
        raise ProvisionError("apache2ctl configtest fails: Apache was not reloaded and still "
                             "serves its previous configuration", host=host, step=RELOAD,
                             command="apache2ctl configtest", rc=test.rc, stderr=test.err)
    run.run(["systemctl", "reload", "--", UNIT], timeout=120, step=RELOAD)
    s = site(run.vars)
    if s.tls == "acme" and not certificate_after_reload(run, s):
        return
    url = s.local_url + "hub/api"
    health = check_health(run, UNIT, url, run.vars["apache_ready_timeout"], step=RELOAD)
    if not health.ok:
        journal, _ = service_log(run, UNIT, health.since)
        log = run.run(["tail", "-n", "20", "/var/log/apache2/error.log"], check=False).out
        raise ProvisionError(f"Apache was reloaded but the hub does not answer at {url}: "
                             f"{health.reason}", host=host, step=RELOAD, command=f"GET {url}",
                             stderr="\n".join(x for x in (journal, log) if x))


HANDLERS = [Handler(RELOAD, reload_apache, "apache2ctl configtest, then a graceful reload of "
                    "apache2 (no restart; with apache_tls: acme, one restart when mod_md is "
                    "first loaded); check the hub answers through Apache")]
