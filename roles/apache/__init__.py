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
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from provision.errors import ProvisionError
from provision.facts import FactRequest, Facts
from provision.render import render
from provision.role import Handler
from provision.runner import HostRun
from provision.steps import (
    Action,
    Command,
    Upload,
    _attr_ops,
    plan_absent,
    plan_apt,
    plan_directory,
    plan_file,
    plan_service,
    plan_unit,
)
from provision.variables import Var

from .._common import check_health, hub_urls, service_log

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

TLS_MODES = ("off", "selfsigned", "files", "acme")
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

UNIT = "apache2.service"
RELOAD = "reload apache"
SITE = "jupyterhub"
SITE_PATH = f"/etc/apache2/sites-available/{SITE}.conf"
SITE_LINK = f"/etc/apache2/sites-enabled/{SITE}.conf"
MODS_ENABLED = "/etc/apache2/mods-enabled"
TLS_DIR = "/etc/apache2/tls"
SELFSIGNED_CRT = f"{TLS_DIR}/selfsigned.crt"
SELFSIGNED_KEY = f"{TLS_DIR}/selfsigned.key"
FILES_CRT = f"{TLS_DIR}/jupyterhub.crt"
FILES_KEY = f"{TLS_DIR}/jupyterhub.key"
# Debian's own sites: the port each takes, and whether installing apache2 enables it. One
# on our port would answer first for any Host header that is not our ServerName, hiding
# the hub's path.
DEFAULT_SITES = {"000-default": ("http", True), "default-ssl": ("https", False)}
# Ports Debian's /etc/apache2/ports.conf already listens on (443 when mod_ssl is loaded).
DEBIAN_LISTEN = {"http": 80, "https": 443}
RENEW_BEFORE = datetime.timedelta(days=30)
LOOPBACK_NAMES = ("localhost",)
# mod_md (apache_tls: acme)
MD_STORE = "/etc/apache2/md"  # Debian: MDStoreDir defaults to ServerRoot/md
MD_STATUS = "/md-status"
# Read by mod_md's renewal in Apache's children (www-data): not in the root-only TLS_DIR.
ACME_CA_ROOT = "/etc/apache2/jhprovision-acme-ca-root.pem"
ACME_HOOK = "/usr/local/sbin/jhprovision-md-event"
ACME_EVENTS = "/var/lib/apache2/jhprovision-acme"  # written by the hook, as www-data
ACME_RENEWED = f"{ACME_EVENTS}/renewed"
ACTIVATE = "jhprovision-acme-activate"
ACTIVATE_PATH = f"/etc/systemd/system/{ACTIVATE}.path"
ACTIVATE_SERVICE = f"/etc/systemd/system/{ACTIVATE}.service"
APACHE_USER = "www-data"


@dataclass(frozen=True)
class Site:
    """What the role derives from the variables, in one place."""

    tls: str  # off | selfsigned | files | acme
    server_name: str
    aliases: tuple[str, ...]
    http_port: int
    https_port: int
    base_url: str
    upstream: str  # the hub's public proxy, on loopback, with the base URL

    @property
    def cert(self) -> str:
        return SELFSIGNED_CRT if self.tls == "selfsigned" else FILES_CRT

    @property
    def key(self) -> str:
        return SELFSIGNED_KEY if self.tls == "selfsigned" else FILES_KEY

    @property
    def names(self) -> list[str]:
        """Every name the site answers to (and an ACME certificate is for)."""
        return [self.server_name, *(a for a in self.aliases if a != self.server_name)]

    @property
    def md_pubcert(self) -> str:
        """Where mod_md keeps the active certificate of this site's managed domain."""
        return f"{MD_STORE}/domains/{self.server_name}/pubcert.pem"

    @property
    def md_status_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}{MD_STATUS}/{self.server_name}"

    @property
    def https_root(self) -> str:
        port = "" if self.https_port == 443 else f":{self.https_port}"
        return f"https://{self.server_name}{port}/"

    @property
    def local_url(self) -> str:
        """How the host itself reaches the hub through Apache (health check)."""
        if self.tls != "off":
            return f"https://127.0.0.1:{self.https_port}{self.base_url}"
        return f"http://127.0.0.1:{self.http_port}{self.base_url}"


def site(v: dict[str, Any]) -> Site:
    urls = hub_urls(v)
    return Site(
        tls=v["apache_tls"] if v["apache_tls"] in TLS_MODES else "off",
        server_name=v.get("apache_server_name") or v.get("inventory_hostname") or "localhost",
        aliases=tuple(v.get("apache_server_aliases") or ()),
        http_port=v["apache_http_port"],
        https_port=v["apache_https_port"],
        base_url=urls.base_url,
        upstream=f"http://{urls.ip_for_url}:{urls.port}{urls.base_url}",
    )


def modules(v: dict[str, Any]) -> list[str]:
    """Modules the site uses: mod_proxy_http tunnels websockets itself (upgrade=websocket),
    so neither proxy_wstunnel nor rewrite is needed; alias serves the redirects."""
    mods = ["alias", "headers", "proxy", "proxy_http"]
    tls = site(v).tls
    if tls != "off":
        mods.append("ssl")
    if tls == "acme":
        mods.append("md")
    return mods


def enabled(v: dict[str, Any]) -> bool:
    return bool(v["apache_enabled"])


# ------------------------------------------------------------------------- validation
def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_pem(path: str | None) -> tuple[bytes | None, str | None]:
    if not path:
        return None, "must be set with apache_tls: files"
    from provision.errors import ConfigError
    from provision.files import read_text

    try:  # a regular file of at most 4 MiB, PEM text (never /dev/zero or a FIFO)
        return read_text(path, what="on this machine", limit=1024 * 1024).encode(), None
    except ConfigError as exc:
        return None, str(exc)


def check_tls_files(cert_path: str | None, key_path: str | None) -> list[tuple[str, str]]:
    """The certificate and key exist here, parse, and belong together (a mismatched pair
    would pass apache2ctl configtest and then stop Apache at its reload)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    problems = []
    cert_pem, why = _read_pem(cert_path)
    if why:
        problems.append(("apache_tls_cert_file", why))
    key_pem, why = _read_pem(key_path)
    if why:
        problems.append(("apache_tls_key_file", why))
    if problems:
        return problems
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError:
        return [("apache_tls_cert_file", f"{cert_path} is not a PEM certificate")]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return [("apache_tls_key_file", f"{key_path} is not an unencrypted PEM private key "
                 "(Apache would ask for a passphrase at every start)")]
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
        return [("apache_tls_key_file", f"{key_path} is not the private key of the "
                 f"certificate {cert_path}")]
    return []


def check_ca_root(path: str) -> list[tuple[str, str]]:
    """The private CA's root file exists here and holds PEM certificates only."""
    from cryptography import x509

    pem, why = _read_pem(path)
    if why:
        return [("apache_acme_ca_root", why)]
    try:
        x509.load_pem_x509_certificates(pem or b"")
    except ValueError:
        return [("apache_acme_ca_root", f"{path} is not a PEM certificate (or several)")]
    if b"PRIVATE KEY" in (pem or b""):
        return [("apache_acme_ca_root", f"{path} holds a private key: give the CA's "
                 "certificate only")]
    return []


def check_acme(v: dict[str, Any], s: Site) -> list[tuple[str, str]]:
    problems = []
    for key, name in [("apache_server_name", s.server_name)] + [
            ("apache_server_aliases", a) for a in s.aliases]:
        if subject_alt_name(name).startswith("IP:") or is_loopback(name):
            problems.append((key, f"{name!r}: with apache_tls: acme every name must be a "
                             "DNS name the CA can reach on port 80 (not an IP address or "
                             "localhost); set apache_server_name"))
    if v.get("apache_acme_ca_root"):
        problems += check_ca_root(v["apache_acme_ca_root"])
    return problems


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
# Runs as `sh -c SCRIPT sh DEST MODE OWNER GROUP`, the new content on stdin.
#
# Why not Upload(validate=...)? Its validator checks the temp file alone, but
# `apache2ctl configtest` checks the whole server configuration (apache2.conf and what it
# includes) and cannot be pointed at one file: a temp file beside the site is never read,
# and including it next to the enabled old version defines its Listen lines twice. So the
# new file is swapped in and the real configuration is tested at once, in one command; if
# the test fails the previous file is put back (a new one removed) before the command
# returns. Apache only re-reads its files at a reload, which the handler does after its own
# configtest, so the running server never sees a broken site.
SWAP_SCRIPT = r"""set -eu
dest=$1 mode=$2 owner=$3 group=$4
dir=$(dirname -- "$dest")
tmp=$(mktemp "$dir/.jhprov.XXXXXXXX")
prev=$(mktemp "$dir/.jhprov-prev.XXXXXXXX")
trap 'rm -f -- "$tmp" "$prev"' EXIT INT TERM HUP
cat > "$tmp"
chown -- "$owner:$group" "$tmp"
chmod -- "$mode" "$tmp"
had=no
if [ -e "$dest" ]; then cp -p -- "$dest" "$prev"; had=yes; fi
mv -f -- "$tmp" "$dest"
if ! out=$(apache2ctl configtest 2>&1); then
  if [ "$had" = yes ]; then mv -f -- "$prev" "$dest"; else rm -f -- "$dest"; fi
  printf '%s\n' "$out" >&2
  echo "apache2ctl configtest failed with the new $dest (see above); the previous file" \
    "was put back" >&2
  exit 1
fi
"""

# Runs as `sh -c SCRIPT sh SITE`: enable the site, test, and disable it again on failure.
ENABLE_SCRIPT = r"""set -eu
a2ensite -q "$1"
if ! out=$(apache2ctl configtest 2>&1); then
  a2dissite -q "$1"
  printf '%s\n' "$out" >&2
  echo "apache2ctl configtest failed with site $1 enabled; it was disabled again" >&2
  exit 1
fi
"""

# Runs as `sh -c SCRIPT sh KEY CRT CN SAN DAYS`. The key is made on the host, 0600 from
# the start (umask), and never leaves it; both files replace the old ones by rename.
SELFSIGNED_SCRIPT = r"""set -eu
key=$1 crt=$2 cn=$3 san=$4 days=$5
umask 077
tk=$(mktemp "$key.XXXXXX")
tc=$(mktemp "$crt.XXXXXX")
trap 'rm -f -- "$tk" "$tc"' EXIT INT TERM HUP
if ! out=$(openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days "$days" \
    -subj "/CN=$cn" -addext "subjectAltName=$san" -keyout "$tk" -out "$tc" 2>&1); then
  printf '%s\n' "$out" >&2
  exit 1
fi
chmod 0644 "$tc"
mv -f -- "$tk" "$key"
mv -f -- "$tc" "$crt"
trap - EXIT INT TERM HUP
"""


def subject_alt_name(name: str) -> str:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return f"DNS:{name}"
    return f"IP:{name}"


def cert_problem(pem: bytes | None, name: str, now: datetime.datetime | None = None,
                 renew_before: datetime.timedelta = RENEW_BEFORE) -> str | None:
    """Why the certificate in ``pem`` does not serve ``name`` (or will not within
    ``renew_before``), or None."""
    from cryptography import x509

    if not pem:
        return "no certificate"
    try:
        cert = x509.load_pem_x509_certificate(pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return "the certificate cannot be read or has no subjectAltName"
    found = [str(n) for n in sans.get_values_for_type(x509.DNSName)]
    found += [str(n) for n in sans.get_values_for_type(x509.IPAddress)]
    want = str(ipaddress.ip_address(name)) if subject_alt_name(name).startswith("IP") \
        else name
    if want not in found:
        return f"the certificate is for {', '.join(found) or 'nothing'}, not {name}"
    now = now or datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc - now < renew_before:
        return f"the certificate expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    return None


def plan_selfsigned(facts: Facts, s: Site, days: int) -> Action:
    """Ensure a self-signed certificate for ``s.server_name``, made on the host once.

    Made again only when the key is missing, the certificate is for another name, or it
    expires within 30 days. Example: ``plan_selfsigned(facts, site(v), 3650)``
    """
    act = Action(f"self-signed certificate {SELFSIGNED_CRT}", notify=(RELOAD,))
    key, crt = facts.file(SELFSIGNED_KEY), facts.file(SELFSIGNED_CRT)
    why = "no key" if not key.exists or not key.size else cert_problem(crt.content,
                                                                      s.server_name)
    if why:
        act.ops.append(Command(
            ["sh", "-c", SELFSIGNED_SCRIPT, "sh", SELFSIGNED_KEY, SELFSIGNED_CRT,
             s.server_name, subject_alt_name(s.server_name), str(days)],
            display=f"openssl req -x509 ... (CN={s.server_name}, key made and kept on the "
                    "host, 0600)"))
        act.diff = f"+ {SELFSIGNED_CRT} for {s.server_name}, {days} days ({why})"
        return act
    ops, lines = _attr_ops(SELFSIGNED_KEY, key, "0600", "root", "root")
    more, more_lines = _attr_ops(SELFSIGNED_CRT, crt, "0644", "root", "root")
    act.ops, act.diff = ops + more, "\n".join(lines + more_lines)
    return act


def _tls_file(v: dict[str, Any], var: str) -> bytes:
    data, why = _read_pem(v.get(var))
    if why:
        raise ProvisionError(f"{var}: {why}", host=v.get("inventory_hostname"),
                             step="tls files")
    return data or b""


def plan_modules(facts: Facts, mods: list[str]) -> Action:
    """Ensure Apache modules are enabled, like ``a2enmod`` (which runs only for those whose
    ``mods-enabled/NAME.load`` link is missing; it also enables their dependencies)."""
    act = Action("apache modules " + ", ".join(mods), notify=(RELOAD,))
    missing = [m for m in mods if not facts.file(f"{MODS_ENABLED}/{m}.load").exists]
    if missing:
        act.ops.append(Command(["a2enmod", "-q", *missing]))
        act.diff = "\n".join(f"+ module {m}" for m in missing)
    return act


def plan_site_file(facts: Facts, text: str) -> Action:
    """Ensure the site file; a new version is swapped in only if configtest passes."""
    act = plan_file(facts, SITE_PATH, text, mode="0644", notify=(RELOAD,))
    act.name = f"site {SITE_PATH}"
    act.ops = [
        Command(["sh", "-c", SWAP_SCRIPT, "sh", op.path, op.mode, op.owner, op.group],
                stdin=op.content, display=f"write {op.path} ({op.mode} {op.owner}:{op.group}),"
                " keep it only if apache2ctl configtest passes")
        if isinstance(op, Upload) else op
        for op in act.ops
    ]
    return act


def plan_site_enabled(facts: Facts) -> Action:
    """Ensure the site is enabled (``a2ensite``), kept only if configtest passes."""
    act = Action(f"site {SITE} enabled", notify=(RELOAD,))
    if not facts.file(SITE_LINK).exists:
        act.ops.append(Command(["sh", "-c", ENABLE_SCRIPT, "sh", SITE],
                               display=f"a2ensite {SITE}, kept only if apache2ctl configtest "
                                       "passes"))
        act.diff = f"+ {SITE_LINK}"
    return act


def plan_default_sites(facts: Facts, s: Site) -> list[Action]:
    """Disable Debian's default sites that take our port (``a2dissite``).

    Before apache2 is installed the facts cannot show the site its package will enable
    in this same run, so that one is disabled (``a2dissite`` is a no-op if it is not).
    """
    ours = {"http": s.http_port, "https": s.https_port if s.tls != "off" else None}
    installing = facts.packages.get("apache2") is None
    out = []
    for name, (kind, by_package) in DEFAULT_SITES.items():
        if DEBIAN_LISTEN[kind] != ours[kind]:
            continue
        act = Action(f"default site {name} disabled", notify=(RELOAD,))
        if facts.file(f"/etc/apache2/sites-enabled/{name}.conf").exists or (
                installing and by_package):
            act.ops.append(Command(["a2dissite", "-q", name]))
            act.diff = f"- site {name} (it would answer on port {ours[kind]} before the hub's)"
        out.append(act)
    return out


def _acme_context() -> dict[str, str]:
    return dict(activate_unit=ACTIVATE, events_dir=ACME_EVENTS, renewed=ACME_RENEWED,
                hook=ACME_HOOK)


def plan_acme(v: dict[str, Any], facts: Facts, s: Site) -> list[Action]:
    """What mod_md needs besides the site: the private CA's root (or none), the hook that
    MDMessageCmd runs, the directory it writes in (www-data's), and the systemd path unit
    that reloads Apache when a renewed certificate is ready."""
    actions = []
    if v.get("apache_acme_ca_root"):
        root = _read_pem(v["apache_acme_ca_root"])[0] or b""
        actions.append(plan_file(facts, ACME_CA_ROOT, root, mode="0644", notify=(RELOAD,)))
    else:
        actions.append(plan_absent(facts, ACME_CA_ROOT, notify=(RELOAD,)))
    ctx = _acme_context()
    actions.append(plan_directory(facts, ACME_EVENTS, mode="0700", owner=APACHE_USER,
                                  group="root"))
    actions.append(plan_file(facts, ACME_HOOK, render("apache/md-event.sh.j2", ctx),
                             mode="0755"))
    actions.append(plan_unit(facts, ACTIVATE_SERVICE,
                             render("apache/acme-activate.service.j2", ctx)))
    actions.append(plan_unit(facts, ACTIVATE_PATH, render("apache/acme-activate.path.j2", ctx)))
    actions.append(plan_service(facts, f"{ACTIVATE}.path"))
    return actions


def plan_acme_waiting(v: dict[str, Any], facts: Facts, s: Site,
                      actions: list[Action]) -> Action:
    """A step that changes nothing but says when mod_md has no certificate yet (when a
    reload is due, its handler waits for the certificate and says it instead)."""
    act = Action(f"certificate for {', '.join(s.names)} from {v['apache_acme_ca']}")
    reloading = any(a.changed and RELOAD in a.notify for a in actions)
    pem = facts.file(s.md_pubcert).content
    # mod_md renews by itself: only a missing, expired or too narrow one is worth a note
    if not reloading and any(cert_problem(pem, n, renew_before=datetime.timedelta(0))
                             for n in s.names):
        act.note = (f"no certificate from the CA yet for {', '.join(s.names)}: until "
                    "mod_md has one, HTTPS serves its temporary certificate (mod_md keeps "
                    "trying by itself; `invoke verify` shows its status)")
    return act


def plan_acme_removed(facts: Facts) -> list[Action]:
    """Undo what apache_tls: acme set up besides the site (mod_md's store is left: its
    account and certificates serve a later switch back)."""
    act = Action(f"acme renewal activation ({ACTIVATE}.path) removed")
    unit = facts.unit(f"{ACTIVATE}.path")
    if facts.file(ACTIVATE_PATH).exists or unit.get("ActiveState") == "active":
        act.ops.append(Command(["systemctl", "disable", "--now", "--quiet", "--",
                                f"{ACTIVATE}.path"]))
    files = [f for f in (ACTIVATE_PATH, ACTIVATE_SERVICE, ACME_HOOK, ACME_RENEWED)
             if facts.file(f).exists]
    if files:
        act.ops.append(Command(["rm", "-f", "--", *files]))
    if facts.file(ACTIVATE_PATH).exists or facts.file(ACTIVATE_SERVICE).exists:
        act.ops.append(Command(["systemctl", "daemon-reload"]))
    if facts.file(ACME_EVENTS).exists:
        # www-data's directory: what the hook left (a temp file of a renewal cut short) is
        # unlinked, never followed (find -P); a subdirectory would make rmdir fail.
        act.ops.append(Command(["find", ACME_EVENTS, "-mindepth", "1", "-maxdepth", "1",
                                "!", "-type", "d", "-delete"]))
        act.ops.append(Command(["rmdir", "--", ACME_EVENTS]))
        files.append(ACME_EVENTS + "/")
    act.diff = "\n".join(f"- {f}" for f in files)
    return [act, plan_absent(facts, ACME_CA_ROOT, notify=(RELOAD,))]


def render_site(v: dict[str, Any]) -> str:
    s = site(v)
    return render("apache/jupyterhub.conf.j2", dict(
        v,
        tls=s.tls != "off",
        server_name=s.server_name,
        base_url=s.base_url,
        base_url_regex=re.escape(s.base_url[:-1]),
        upstream=s.upstream,
        https_root=s.https_root,
        http_listen=s.http_port != DEBIAN_LISTEN["http"],
        https_listen=s.https_port != DEBIAN_LISTEN["https"],
        cert_file=s.cert,
        key_file=s.key,
        acme=s.tls == "acme",
        names=s.names,
        aliases=s.names[1:],
        md_status=MD_STATUS,
        acme_hook=ACME_HOOK,
        acme_ca_root=ACME_CA_ROOT if v.get("apache_acme_ca_root") else None,
        activate_unit=ACTIVATE,
        port_map=" ".join(f"{public}:{local}" for public, local in
                          ((80, s.http_port), (443, s.https_port)) if public != local),
    ))


def plan(v: dict[str, Any], facts: Facts) -> list[Action]:
    s = site(v)
    packages: dict[str, str | None] = {"apache2": None}
    if s.tls == "selfsigned":
        packages["openssl"] = None
    actions = [plan_apt(facts, packages), plan_modules(facts, modules(v))]
    if s.tls in ("selfsigned", "files"):
        # Only root reads them: Apache's parent process loads keys before dropping to
        # www-data.
        actions.append(plan_directory(facts, TLS_DIR, mode="0700"))
    if s.tls == "selfsigned":
        actions.append(plan_selfsigned(facts, s, v["apache_tls_selfsigned_days"]))
    elif s.tls == "files":
        actions.append(plan_file(facts, FILES_CRT, _tls_file(v, "apache_tls_cert_file"),
                                 mode="0644", notify=(RELOAD,)))
        actions.append(plan_file(facts, FILES_KEY, _tls_file(v, "apache_tls_key_file"),
                                 mode="0600", secret=True, notify=(RELOAD,)))
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
# Runs on the host as `python3 -c SCRIPT URL HOST LIMIT`: polls mod_md's status of one
# managed domain until it has an active certificate, a new one waiting for a reload, an
# error from the CA, or mod_md is not driving it (loaded by a graceful reload: its
# watchdog starts only at a full start); prints what it found as one JSON line.
MD_STATUS_SCRIPT = r"""import json, sys, time, urllib.request
url, host, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
start, why = time.monotonic(), "waiting"
while True:
    try:
        with opener.open(urllib.request.Request(url, headers={"Host": host}), timeout=5) as r:
            md = json.load(r)
    except Exception as exc:
        md = {"error": f"{url}: {exc}"}
    t = time.monotonic() - start
    renewal = md.get("renewal") or {}
    if md.get("state") == 2:
        why = "complete"
    elif renewal.get("errors"):
        why = "errors"
    elif renewal.get("finished"):
        why = "staged"
    elif t > 3 and md.get("watched") is False:
        why = "unwatched"
    if why != "waiting" or t > limit:
        break
    time.sleep(0.5)
print(json.dumps({"why": why, "seconds": round(t, 1), "md": md}))
"""


# mod_md's last error lines in Apache's log (the CA's own answer is in them), shortened.
MD_LOG_SCRIPT = ("grep -a '\\[md:error\\]' /var/log/apache2/error.log | tail -n 4 "
                 "| cut -c 1-700")


@dataclass
class MdStatus:
    why: str  # complete | staged | errors | unwatched | waiting (the wait ran out)
    md: dict[str, Any]

    @property
    def refused(self) -> bool:
        """The last attempt failed for another reason than not reaching the CA: an ACME
        error (RFC 8555 section 6.7), a challenge the CA found invalid, a local problem.
        Not reaching the CA is left to mod_md, which retries (a note, not a failure)."""
        last = (self.md.get("renewal") or {}).get("last") or {}
        if str(last.get("problem", "")).startswith("urn:ietf:params:acme:error:"):
            return True
        return not str(last.get("activity", "")).startswith("Contacting ACME server")

    @property
    def problem(self) -> str:
        """mod_md's own words for what went wrong last (or what it is waiting for)."""
        renewal = self.md.get("renewal") or {}
        last = renewal.get("last") or {}
        text = last.get("detail") or last.get("status-description") or \
            self.md.get("state-descr") or self.md.get("error") or "no status from mod_md"
        problem = last.get("problem")
        return f"{text} ({problem})" if problem else str(text)


def md_status(run: HostRun, s: Site, limit: float) -> MdStatus:
    res = run.run(["python3", "-c", MD_STATUS_SCRIPT, s.md_status_url, s.server_name,
                   str(limit)], check=False, timeout=limit + 30, step=RELOAD)
    try:
        data = json.loads(res.out.strip().splitlines()[-1])
        return MdStatus(str(data["why"]), data.get("md") or {})
    except (ValueError, IndexError, KeyError, TypeError):
        why = (res.err or res.out).strip().splitlines()[-1:] or [f"exit code {res.rc}"]
        return MdStatus("waiting", {"error": why[0]})


def wait_for_certificate(run: HostRun, s: Site) -> MdStatus:
    """After a reload with apache_tls: acme: until mod_md serves a certificate (at most
    apache_acme_wait seconds), restarting Apache once if mod_md was loaded by a graceful
    reload, reloading it once more when a new certificate is ready."""
    limit = run.vars["apache_acme_wait"]
    status = md_status(run, s, limit)
    if status.why == "unwatched":
        run.log("mod_md was loaded by a graceful reload, which does not start its renewal "
                "watchdog: Apache is restarted once")
        run.run(["systemctl", "restart", "--", UNIT], timeout=120, step=RELOAD)
        status = md_status(run, s, limit)
    if status.why == "staged":  # ready: the path unit reloads too, one more is harmless
        run.run(["systemctl", "reload", "--", UNIT], timeout=120, step=RELOAD)
        status = md_status(run, s, limit)
    return status


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
    if s.tls == "acme":
        status = wait_for_certificate(run, s)
        names = ", ".join(s.names)
        if status.why == "errors" and status.refused and status.md.get("state") != 2:
            log = run.run(["sh", "-c", MD_LOG_SCRIPT], check=False, step=RELOAD).out
            raise ProvisionError(
                f"the CA {run.vars['apache_acme_ca']} gave no certificate for {names}: "
                f"{status.problem}. HTTPS serves mod_md's temporary certificate; mod_md "
                "tries again by itself", host=host, step=RELOAD,
                command=f"GET {s.md_status_url}", stderr=log)
        if status.why != "complete":
            when = "" if status.why == "errors" else f" after {run.vars['apache_acme_wait']}s"
            run.note(f"no certificate from the CA yet for {names}{when} ({status.problem}): "
                     "HTTPS serves mod_md's temporary certificate until it has one (mod_md "
                     "keeps trying by itself; `invoke verify` shows its status)")
            return
        if (status.md.get("renewal") or {}).get("errors"):
            run.note(f"mod_md's last renewal for {names} failed ({status.problem}); the "
                     "current certificate is still valid and served")
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
