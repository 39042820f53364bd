"""Typed, documented variables: every role declares its own in one list (``VARIABLES``).

Each ``Var`` carries its default, its type and the sentence a sysadmin reads in
docs/variables.md (generated from these lists by ``invoke docs``, and checked by a unit test
so the two cannot drift). ``validate`` checks one host's merged variables and returns every
problem at once, each naming the file and key it came from.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

USERNAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
GROUPNAME_RE = USERNAME_RE
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                         r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
BASE_URL_RE = re.compile(r"^/([A-Za-z0-9._~-]+/)*$")
PKG_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]*$")

# Accounts that exist on every Debian system or belong to the services this tool installs.
SYSTEM_ACCOUNTS = frozenset(
    "root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc "
    "gnats nobody nogroup _apt messagebus sshd systemd-network systemd-resolve "
    "systemd-timesync systemd-journal systemd-coredump polkitd wheel sudo adm staff users "
    "shadow utmp tty disk kmem dialout cdrom floppy tape audio video plugdev netdev "
    "operator src voice sasl input sgx kvm render crontab ssh jupyterhub "
    "configurable-http-proxy".split()
)


@dataclass(frozen=True)
class Var:
    """One inventory variable: name, default, type and the sentence that documents it."""

    name: str
    default: Any
    type: str
    doc: str
    nullable: bool = False
    choices: tuple = ()
    secret: bool = False


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def check_username(name: Any) -> str | None:
    """Why ``name`` is not acceptable as a managed Linux user, or None."""
    if not isinstance(name, str):
        return f"user name must be a string, not {type(name).__name__}"
    if not USERNAME_RE.match(name):
        return (f"{name!r} is not a valid user name (lower-case letters, digits, '_' and '-', "
                "starting with a letter or '_', at most 32 characters)")
    if name in SYSTEM_ACCOUNTS or name.startswith("systemd-"):
        return f"{name!r} is a system account and cannot be managed as a lab user"
    return None


def _check_base_url(v: str) -> str | None:
    if not BASE_URL_RE.match(v):
        return (f"{v!r} is not a base URL: it must start and end with '/' and contain only "
                "URL-safe path characters (e.g. '/' or '/jhub/')")
    return None


def check_bind_url(v: str) -> str | None:
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https"):
        return f"{v!r} is not a bind URL: the scheme must be http or https"
    try:
        port = parts.port
    except ValueError:
        return f"{v!r} is not a bind URL: bad port"
    if port is None:
        return f"{v!r} is not a bind URL: give the port, e.g. 'http://:8000/jhub/'"
    host = parts.hostname or ""
    if host and not (_is_ip(host) or HOSTNAME_RE.match(host)):
        return f"{v!r} is not a bind URL: {host!r} is not an IP or host name"
    if parts.query or parts.fragment:
        return f"{v!r} is not a bind URL: no query or fragment allowed"
    return _check_base_url(parts.path or "/")


def _list_of(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def inner(value: Any) -> str | None:
        if not isinstance(value, list):
            return f"must be a list, not {type(value).__name__}"
        for i, item in enumerate(value):
            why = check(item)
            if why:
                return f"item {i}: {why}"
        return None

    return inner


def _str(v: Any) -> str | None:
    return None if isinstance(v, str) else f"must be a string, not {type(v).__name__}"


def _oneline(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"must be a string, not {type(v).__name__}"
    if "\n" in v or "\r" in v or "\x00" in v:
        return "must be a single line"
    return None


def _int(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int):
        return f"must be an integer, not {type(v).__name__}"
    return None


def _port(v: Any) -> str | None:
    if _int(v) or not 1 <= v <= 65535:
        return f"{v!r} is not a TCP port (1-65535)"
    return None


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, not {v!r}"


def _ip(v: Any) -> str | None:
    """An IP address, or '' for all interfaces."""
    if not isinstance(v, str) or not (v == "" or _is_ip(v)):
        return f"{v!r} is not an IP address (or '' for all interfaces)"
    return None


def _host(v: Any) -> str | None:
    if not isinstance(v, str) or not (_is_ip(v) or HOSTNAME_RE.match(v)):
        return f"{v!r} is not an IP address or host name"
    return None


def _abspath(v: Any) -> str | None:
    if not isinstance(v, str) or not v.startswith("/") or "\n" in v or "\x00" in v:
        return f"{v!r} is not an absolute path"
    if any(part == ".." for part in v.split("/")):
        return f"{v!r} must not contain '..'"
    return None


def _notebook_dir(v: Any) -> str | None:
    if not isinstance(v, str) or not v or "\n" in v or "\x00" in v:
        return f"{v!r} is not a directory path"
    return None


def _mode(v: Any) -> str | None:
    if not isinstance(v, str) or not re.fullmatch(r"0?[0-7]{3,4}", v):
        return f"{v!r} is not an octal file mode as a string (e.g. '0750')"
    return None


def _pkg(v: Any) -> str | None:
    if not isinstance(v, str) or not PKG_NAME_RE.match(v):
        return f"{v!r} is not a package name"
    return None


PIP_REQ_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?(==[A-Za-z0-9.+!_-]+)?")


def _pip_req(v: Any) -> str | None:
    if not isinstance(v, str) or not PIP_REQ_RE.fullmatch(v):
        return f"{v!r} is not a pip requirement of the form 'name' or 'name==version'"
    return None


def _version(v: Any) -> str | None:
    if not isinstance(v, str) or not VERSION_RE.match(v):
        return f"{v!r} is not a version string (quote it in YAML, e.g. '6.1.1')"
    return None


def _group(v: Any) -> str | None:
    if not isinstance(v, str) or not GROUPNAME_RE.match(v):
        return f"{v!r} is not a valid group name"
    return None


def _dict(v: Any) -> str | None:
    return None if isinstance(v, dict) else f"must be a mapping, not {type(v).__name__}"


TYPES: dict[str, Callable[[Any], str | None]] = {
    "str": _str,
    "line": _oneline,
    "int": _int,
    "port": _port,
    "bool": _bool,
    "ip": _ip,
    "host": _host,
    "path": _abspath,
    "notebook_dir": _notebook_dir,
    "mode": _mode,
    "version": _version,
    "group": _group,
    "dict": _dict,
    "base_url": lambda v: _str(v) or _check_base_url(v),
    "bind_url": lambda v: _str(v) or check_bind_url(v),
    "username": check_username,
    "list[str]": _list_of(_str),
    "list[username]": _list_of(check_username),
    "list[group]": _list_of(_group),
    "list[pkg]": _list_of(_pkg),
    "list[pip]": _list_of(_pip_req),
    "list[dict]": _list_of(_dict),
}


def check_value(var: Var, value: Any) -> str | None:
    """Why ``value`` does not fit ``var``, or None."""
    if value is None:
        return None if var.nullable else "must be set (null is not allowed)"
    if var.choices and value not in var.choices:
        return f"{value!r} is not one of {', '.join(map(str, var.choices))}"
    return TYPES[var.type](value)


def suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
