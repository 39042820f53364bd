"""apache's site: the ``Site`` derived from the variables, where things live on the host,
and the steps that ensure the vhost (modules, the site file swapped in only when
``apache2ctl configtest`` passes, the site enabled, Debian's default sites off our ports).

The site's configuration names the certificate, key and mod_md files the TLS modes
(``tls.py``, ``acme.py``) write, so their paths are defined here, beside the ``Site``
that chooses between them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from provision.facts import Facts
from provision.render import render
from provision.steps import Action, Command, Upload, plan_file

from .._common import hub_urls

TLS_MODES = ("off", "selfsigned", "files", "acme")

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
LOOPBACK_NAMES = ("localhost",)
# mod_md (apache_tls: acme), as the site's configuration names it
MD_STORE = "/etc/apache2/md"  # Debian: MDStoreDir defaults to ServerRoot/md
MD_STATUS = "/md-status"
# Read by mod_md's renewal in Apache's children (www-data): not in the root-only TLS_DIR.
ACME_CA_ROOT = "/etc/apache2/jhprovision-acme-ca-root.pem"
ACME_HOOK = "/usr/local/sbin/jhprovision-md-event"
ACTIVATE = "jhprovision-acme-activate"


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


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
