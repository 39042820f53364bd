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
uploaded (the key 0600, never shown in diffs or reports). With TLS, HTTP redirects to
HTTPS.
"""

from __future__ import annotations

import datetime
import ipaddress
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
    plan_apt,
    plan_directory,
    plan_file,
    plan_service,
)
from provision.variables import Var

from ._common import check_health, hub_urls, service_log

NAME = "apache"
SUMMARY = (
    "optional (`apache_enabled: true`): Apache in front of the hub at "
    "`jupyterhub_base_url`, the same variable as the hub's base URL; websockets and "
    "`X-Forwarded-Proto` proxied; the hub's port then on 127.0.0.1 only; HTTPS with a "
    "certificate made on the host (`apache_tls: selfsigned`) or your own (`files`), HTTP "
    "redirected; every change checked by `apache2ctl configtest` (and undone if it "
    "fails), then one graceful reload"
)

REQUIRES = ("jupyterhub",)

TLS_MODES = ("off", "selfsigned", "files")

VARIABLES = [
    Var("apache_enabled", False, "bool", "Put Apache in front of the hub as a reverse proxy "
        "at jupyterhub_base_url (websockets and X-Forwarded-Proto included). The hub's "
        "public port then listens on 127.0.0.1 only. Set back to false, Apache is left as "
        "it is (`a2dissite jupyterhub` on the host stops its site)."),
    Var("apache_server_name", None, "host", "The name Apache answers to (ServerName), also "
        "the self-signed certificate's CN and subjectAltName; default: the inventory host "
        "name.", nullable=True),
    Var("apache_http_port", 80, "port", "Apache's HTTP port (with TLS on, it only redirects "
        "to HTTPS)."),
    Var("apache_https_port", 443, "port", "Apache's HTTPS port (with apache_tls on)."),
    Var("apache_tls", "off", "str", "HTTPS in Apache: 'selfsigned' makes a certificate once "
        "on the host (the key never leaves it), 'files' uploads apache_tls_cert_file and "
        "apache_tls_key_file. Quote 'off' in YAML (unquoted, YAML reads it as false).",
        choices=TLS_MODES),
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


@dataclass(frozen=True)
class Site:
    """What the role derives from the variables, in one place."""

    tls: str  # off | selfsigned | files
    server_name: str
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
        http_port=v["apache_http_port"],
        https_port=v["apache_https_port"],
        base_url=urls.base_url,
        upstream=f"http://{urls.ip_for_url}:{urls.port}{urls.base_url}",
    )


def modules(v: dict[str, Any]) -> list[str]:
    """Modules the site uses: mod_proxy_http tunnels websockets itself (upgrade=websocket),
    so neither proxy_wstunnel nor rewrite is needed; alias serves the redirects."""
    mods = ["alias", "headers", "proxy", "proxy_http"]
    if site(v).tls != "off":
        mods.append("ssl")
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


def cert_problem(pem: bytes | None, name: str,
                 now: datetime.datetime | None = None) -> str | None:
    """Why the certificate in ``pem`` does not serve ``name`` (or soon will not), or None."""
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
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
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
    ))


def plan(v: dict[str, Any], facts: Facts) -> list[Action]:
    s = site(v)
    packages: dict[str, str | None] = {"apache2": None}
    if s.tls == "selfsigned":
        packages["openssl"] = None
    actions = [plan_apt(facts, packages), plan_modules(facts, modules(v))]
    if s.tls != "off":
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
    actions.append(plan_site_file(facts, render_site(v)))
    actions.append(plan_site_enabled(facts))
    actions.extend(plan_default_sites(facts, s))
    actions.append(plan_service(facts, UNIT))
    return actions


# --------------------------------------------------------------------------- handler
def reload_apache(run: HostRun) -> None:
    """Test the configuration, reload Apache gracefully (open connections finish), and
    check the hub answers through it."""
    host = run.host.name
    test = run.run(["apache2ctl", "configtest"], check=False, step=RELOAD)
    if test.rc != 0:
        raise ProvisionError("apache2ctl configtest fails: Apache was not reloaded and still "
                             "serves its previous configuration", host=host, step=RELOAD,
                             command="apache2ctl configtest", rc=test.rc, stderr=test.err)
    run.run(["systemctl", "reload", "--", UNIT], timeout=120, step=RELOAD)
    url = site(run.vars).local_url + "hub/api"
    health = check_health(run, UNIT, url, run.vars["apache_ready_timeout"], step=RELOAD)
    if not health.ok:
        journal, _ = service_log(run, UNIT, health.since)
        log = run.run(["tail", "-n", "20", "/var/log/apache2/error.log"], check=False).out
        raise ProvisionError(f"Apache was reloaded but the hub does not answer at {url}: "
                             f"{health.reason}", host=host, step=RELOAD, command=f"GET {url}",
                             stderr="\n".join(x for x in (journal, log) if x))


HANDLERS = [Handler(RELOAD, reload_apache, "apache2ctl configtest, then a graceful reload of "
                    "apache2 (no restart); check the hub answers through Apache")]
