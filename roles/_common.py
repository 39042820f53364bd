"""Values several roles derive from the same variables, computed in one place."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from provision.steps import UserSpec

USER_KEYS = {"name", "uid", "shell", "groups", "authorized_keys", "password_hash", "admin",
             "state", "comment"}
USER_STATES = ("present", "locked", "absent")


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


def home_of(facts: Any, name: str) -> str:
    """A user's home: from the host's passwd when the account exists, else the default
    useradd will give it."""
    cur = facts.users.get(name)
    return cur.home if cur else f"/home/{name}"


def managed_names(v: dict[str, Any]) -> list[str]:
    """Inventory users whose group memberships the roles keep exact (absent users are
    deleted with their memberships, so no group step names them)."""
    return [u["name"] for u in users(v) if u["state"] != "absent"]


def user_spec(u: dict[str, Any]) -> UserSpec:
    return UserSpec(name=u["name"], uid=u["uid"], shell=u["shell"], comment=u["comment"],
                    groups=tuple(u["groups"]), password_hash=u["password_hash"],
                    state=u["state"])


def active_users(v: dict[str, Any]) -> list[dict[str, Any]]:
    return [u for u in users(v) if u["state"] == "present"]


def admins(v: dict[str, Any]) -> list[str]:
    return [u["name"] for u in active_users(v) if u["admin"]]


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


def hub_api_url(v: dict[str, Any]) -> str:
    """The hub's own API, as the host itself reaches it (private port, not the proxy)."""
    ip = v.get("jupyterhub_hub_ip") or "127.0.0.1"
    if ip in ("0.0.0.0", "::", ""):
        ip = "127.0.0.1"
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{v['jupyterhub_hub_port']}{hub_urls(v).base_url}hub/api"


# Polls a URL from the host itself until it answers (handlers: after a restart or reload).
# The connection never leaves the host and checks routing, not identity: no certificate
# verification, so Apache's self-signed certificate is fine here.
WAIT_SCRIPT = """import ssl, sys, time, urllib.request
url, limit = sys.argv[1], float(sys.argv[2])
ctx = ssl._create_unverified_context()
deadline, last = time.time() + limit, None
while time.time() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=3, context=ctx) as r:
            sys.stdout.write(r.read().decode()[:500])
            sys.exit(0)
    except Exception as exc:
        last = exc
        time.sleep(0.3)
sys.stderr.write("no answer from %s after %.0fs: %s\\n" % (url, limit, last))
sys.exit(1)
"""


def wait_for_url(run: Any, url: str, limit: float, *, step: str) -> Any:
    """Run WAIT_SCRIPT on the host; the result's rc is 0 once ``url`` answered."""
    return run.run(["python3", "-c", WAIT_SCRIPT, url, str(limit)], check=False,
                   timeout=limit + 30, step=step)
