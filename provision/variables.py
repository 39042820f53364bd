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

# Every pattern is used with fullmatch: '$' would let a trailing newline through.
USERNAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
GROUPNAME_RE = USERNAME_RE
HOSTNAME_RE = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                         r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
BASE_URL_RE = re.compile(r"/([A-Za-z0-9._~-]+/)*")
PKG_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
VERSION_RE = re.compile(r"[0-9][A-Za-z0-9._+~-]*")  # a pin, not a tag like 'latest'
# An IPv6 zone ID (after '%') limited to what an interface name can be.
ZONE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Directories that must never be a tool-owned state, config, venv or prefix directory:
# the tool chmods and chowns them.
SYSTEM_DIRS = frozenset(
    "/ /bin /boot /dev /etc /home /lib /lib32 /lib64 /libx32 /media /mnt /opt /proc /root "
    "/run /sbin /srv /sys /tmp /usr /var /usr/bin /usr/lib /usr/local /usr/local/bin "
    "/usr/local/lib /usr/sbin /usr/share /usr/include /var/lib /var/log /var/tmp /var/cache "
    "/var/run /var/spool /var/mail /var/www /etc/systemd /etc/ssh /etc/sudoers.d "
    "/etc/apache2 /run/user /var/lib/systemd".split()
)

# Trees where a user controls the path (a planted symlink on the way): a tool-owned
# directory is never below them.
USER_WRITABLE_TREES = ("/home/", "/root/", "/tmp/", "/var/tmp/", "/dev/shm/")

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
    #: set for a variable on its way out: what to use instead (printed when it is set)
    deprecated: str = ""


def _is_ip(value: str) -> bool:
    """An IP address; an IPv6 zone ID only of interface-name characters (``ipaddress``
    accepts anything after '%', newlines included)."""
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return False
    zone = getattr(addr, "scope_id", None)
    return zone is None or bool(ZONE_RE.fullmatch(zone))


def has_control(value: str) -> bool:
    """True if ``value`` holds a control character (C0, DEL, C1) or a Unicode line break."""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029\x85" for c in value)


def bounded_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: an echoed value is never huge.

    Containers are summarised without walking them (an alias bomb expands to gigabytes).
    """
    if isinstance(value, dict | list | tuple | set):
        return f"<{type(value).__name__} of {len(value)} items>"
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]
        return repr(value) + "..."
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# The markers of crypt(3) hashes: MD5, bcrypt, SHA-256/512, yescrypt, gost-yescrypt,
# scrypt, and passlib's. A key holding one is never echoed, even cut short.
PASSWORD_HASH_RE = re.compile(r"\$(?:1|2[abxy]?|5|6|7|y|gy|md5|sha1|argon2(?:id|i|d))\$")
KEY_ECHO_LIMIT = 20


def describe_key(key: Any) -> str:
    """A mapping key for a message: a repr-escaped prefix of at most ``KEY_ECHO_LIMIT``
    characters, or only "a key that looks like a password hash" (a shadow file read as
    YAML has a hash in every key)."""
    text = key if isinstance(key, str) else repr(key)
    if PASSWORD_HASH_RE.search(text):
        return "a key that looks like a password hash"
    if not isinstance(key, str):
        return f"the key {bounded_repr(key, KEY_ECHO_LIMIT)}"
    cut = repr(key[:KEY_ECHO_LIMIT])
    return f"the key {cut}{'...' if len(key) > KEY_ECHO_LIMIT else ''}"


def variable_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a variable's name, or None: Ansible's rule (a Python
    identifier, ASCII, not a keyword), so a file that is not a vars file is refused."""
    import keyword

    if isinstance(name, str) and name.isascii() and name.isidentifier() \
            and not keyword.iskeyword(name):
        return None
    if isinstance(name, str) and keyword.iskeyword(name):
        return f"{describe_key(name)} is not a valid variable name (a Python keyword)"
    return (f"{describe_key(name)} is not a valid variable name (letters, digits and '_', "
            "not starting with a digit)")


def check_username(name: Any) -> str | None:
    """Why ``name`` is not acceptable as a managed Linux user, or None."""
    if not isinstance(name, str):
        return f"user name must be a string, not {type(name).__name__}"
    if not USERNAME_RE.fullmatch(name):
        return (f"{bounded_repr(name)} is not a valid user name (lower-case letters, digits, "
                "'_' and '-', "
                "starting with a letter or '_', at most 32 characters)")
    if name in SYSTEM_ACCOUNTS or name.startswith("systemd-"):
        return f"{name!r} is a system account and cannot be managed as a lab user"
    return None


def _check_base_url(v: str) -> str | None:
    if not BASE_URL_RE.fullmatch(v):
        return (f"{bounded_repr(v)} is not a base URL: it must start and end with '/' and "
                "contain only "
                "URL-safe path characters (e.g. '/' or '/jhub/')")
    return None


def check_bind_url(v: str) -> str | None:
    if has_control(v) or any(c.isspace() for c in v):
        return f"{bounded_repr(v)} is not a bind URL: no spaces or control characters"
    try:
        parts = urlsplit(v)
    except ValueError:
        return f"{bounded_repr(v)} is not a bind URL"
    if parts.scheme not in ("http", "https"):
        return f"{bounded_repr(v)} is not a bind URL: the scheme must be http or https"
    try:
        port = parts.port
    except ValueError:
        return f"{bounded_repr(v)} is not a bind URL: bad port"
    if port is None:
        return f"{bounded_repr(v)} is not a bind URL: give the port, e.g. 'http://:8000/jhub/'"
    host = parts.hostname or ""
    if host and not (_is_ip(host) or HOSTNAME_RE.fullmatch(host)):
        return f"{bounded_repr(v)} is not a bind URL: {host!r} is not an IP or host name"
    if parts.query or parts.fragment:
        return f"{bounded_repr(v)} is not a bind URL: no query or fragment allowed"
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
    if has_control(v):
        return "must be a single line without control characters"
    return None


def _int(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int):
        return f"must be an integer, not {type(v).__name__}"
    return None


def _port(v: Any) -> str | None:
    if _int(v) or not 1 <= v <= 65535:
        return f"{bounded_repr(v)} is not a TCP port (1-65535)"
    return None


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, not {bounded_repr(v)}"


def _ip(v: Any) -> str | None:
    """An IP address, or '' for all interfaces."""
    if not isinstance(v, str) or not (v == "" or _is_ip(v)):
        return f"{bounded_repr(v)} is not an IP address (or '' for all interfaces)"
    return None


def check_host(v: Any) -> str | None:
    """Why ``v`` is not an IP address or DNS host name, or None."""
    if not isinstance(v, str) or not (_is_ip(v) or HOSTNAME_RE.fullmatch(v)):
        return f"{bounded_repr(v)} is not an IP address or host name"
    return None


_host = check_host


# What a path may hold: it lands in unit lines (ExecStart, WorkingDirectory, PATH=), shell
# argv, Apache directives and Python literals, so only characters that mean nothing in any
# of them: no space or control character, no quote, '$' or '%' (systemd's expansions and
# specifiers), ':' (PATH's separator), '\\', ';', '#', '*', '?' or '~'.
PATH_CHARS_RE = re.compile(r"[A-Za-z0-9._/+@-]+")


def _path_chars(v: str) -> str | None:
    if has_control(v) or any(c.isspace() for c in v):
        return "must not contain spaces or control characters"
    if not PATH_CHARS_RE.fullmatch(v):
        bad = sorted({c for c in v if not PATH_CHARS_RE.fullmatch(c)})
        return (f"must not contain {' '.join(map(repr, bad))} (a path here may hold "
                "letters, digits and . _ - + @ /)")
    if any(part == ".." for part in v.split("/")):
        return "must not contain '..'"
    return None


def _abspath(v: Any) -> str | None:
    if not isinstance(v, str) or not v.startswith("/"):
        return f"{bounded_repr(v)} is not an absolute path"
    why = _path_chars(v)
    return f"{bounded_repr(v)} {why}" if why else None


def _owned_dir(v: Any) -> str | None:
    """An absolute path the tool owns (state, config, venv, prefix): never a system dir."""
    why = _abspath(v)
    if why:
        return why
    norm = "/" + "/".join(p for p in v.split("/") if p and p != ".")
    if norm in SYSTEM_DIRS or norm.startswith("/home/") and norm.count("/") == 2:
        return (f"{bounded_repr(v)} is a system directory: give a directory of its own, "
                "e.g. '/opt/jupyterhub' or '/var/lib/jupyterhub'")
    if norm.startswith(USER_WRITABLE_TREES):
        return ("must not be in a home directory or a world-writable one (/tmp, /var/tmp, "
                "/dev/shm): root would create and chown it where a user controls the path")
    return None


def _notebook_dir(v: Any) -> str | None:
    """c.Spawner.notebook_dir as JupyterHub reads it: '~' (each user's own home, also
    '~{username}'), '~/sub', an absolute path; '{username}' filled in by the hub."""
    if not isinstance(v, str) or not v:
        return f"{bounded_repr(v)} is not a directory path"
    home = next((p for p in ("~{username}", "~") if v == p or v.startswith(p + "/")), None)
    if home is None and v.startswith("~"):
        return (f"{bounded_repr(v)}: '~name' is another user's home: write '~' or '~/...' "
                "for each user's own")
    if home is None and not v.startswith("/"):
        return (f"{bounded_repr(v)} is a relative path: write '~/...' for a directory in "
                "each user's home, or an absolute path")
    rest = v[len(home):] if home else v
    for m in re.finditer(r"\{([^{}]*)\}", rest):
        if m.group(1) != "username":
            return (f"{bounded_repr(v)}: the placeholder {bounded_repr(m.group(0), 20)} is "
                    "not one JupyterHub fills in here (only {username})")
    plain = rest.replace("{username}", "u")
    if "{" in plain or "}" in plain:
        return f"{bounded_repr(v)}: a lone '{{' or '}}' (only {{username}} is filled in)"
    why = _path_chars(plain or "/")
    return f"{bounded_repr(v)} {why}" if why else None


def _mode(v: Any) -> str | None:
    if not isinstance(v, str) or not re.fullmatch(r"0?[0-7]{3,4}", v):
        return f"{bounded_repr(v)} is not an octal file mode as a string (e.g. '0750')"
    return None


def _pkg(v: Any) -> str | None:
    if not isinstance(v, str) or not PKG_NAME_RE.fullmatch(v):
        return f"{bounded_repr(v)} is not a package name"
    return None


PIP_REQ_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?(==[A-Za-z0-9.+!_-]+)?")


def _pip_req(v: Any) -> str | None:
    if not isinstance(v, str) or not PIP_REQ_RE.fullmatch(v):
        return f"{bounded_repr(v)} is not a pip requirement of the form 'name' or 'name==version'"
    return None


MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _module(v: Any) -> str | None:
    if not isinstance(v, str) or not MODULE_RE.fullmatch(v):
        return f"{bounded_repr(v)} is not a Python module name (e.g. jupyter_lsp)"
    return None


def _version(v: Any) -> str | None:
    if not isinstance(v, str) or not VERSION_RE.fullmatch(v):
        return f"{bounded_repr(v)} is not a version string (quote it in YAML, e.g. '6.1.1')"
    return None


def _group(v: Any) -> str | None:
    if not isinstance(v, str) or not GROUPNAME_RE.fullmatch(v):
        return f"{bounded_repr(v)} is not a valid group name"
    return None


BYTES_RE = re.compile(r"([1-9][0-9]*)([KMGT]?)")
_BYTE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def byte_count(v: str | int) -> int:
    """'768M' -> 805306368 (JupyterHub's ByteSpecification: K, M, G, T are powers of 1024)."""
    if isinstance(v, int):
        return v
    m = BYTES_RE.fullmatch(v) if isinstance(v, str) else None
    if m is None:
        raise ValueError(f"not a memory size: {bounded_repr(v)}")
    return int(m.group(1)) * _BYTE_UNITS[m.group(2)]


def _bytes(v: Any) -> str | None:
    """A memory size: bytes as an integer, or a string like '768M', '2G'."""
    if isinstance(v, bool) or not (
            (isinstance(v, int) and v > 0) or (isinstance(v, str) and BYTES_RE.fullmatch(v))):
        return f"{bounded_repr(v)} is not a memory size (e.g. '768M', '2G')"
    return None


def _cpus(v: Any) -> str | None:
    """A number of cores, e.g. 0.5, 1, 2."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.01 <= v <= 1024:
        return f"{bounded_repr(v)} is not a number of cores between 0.01 and 1024 (e.g. 1.5)"
    return None


# An https:// URL that lands in an Apache directive (MDCertificateAuthority) unquoted: a
# host name or IP, an optional port, a path of URL-safe characters; no query, no fragment.
# ('$' and quotes excluded: Apache reads ${NAME} and quoted words in its directives.)
URL_PATH_RE = re.compile(r"(/[A-Za-z0-9._~!&()*+,;=:@%-]*)*")


def check_https_url(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"must be a string, not {type(v).__name__}"
    if has_control(v) or any(c.isspace() or c in "\"<>\\" for c in v):
        return f"{bounded_repr(v)} is not a URL: no spaces, quotes, '<', '>' or '\\'"
    try:
        parts = urlsplit(v)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return f"{bounded_repr(v)} is not a URL"
    if parts.scheme != "https":
        return f"{bounded_repr(v)} is not an https:// URL"
    host = parts.hostname or ""
    if parts.username or parts.password:
        return f"{bounded_repr(v)} is not a URL for this: no user or password in it"
    if not (_is_ip(host) or HOSTNAME_RE.fullmatch(host)):
        return f"{bounded_repr(v)} is not a URL: {host!r} is not an IP or host name"
    if parts.query or parts.fragment or not URL_PATH_RE.fullmatch(parts.path):
        return f"{bounded_repr(v)} is not a URL: a path only, no query or fragment"
    return None


# An e-mail address for an Apache directive (MDContactEmail): one local part and a host
# name, nothing that Apache or a mailto: URL would read as something else.
EMAIL_RE = re.compile(r"[A-Za-z0-9._+-]{1,64}@")


def check_email(v: Any) -> str | None:
    if isinstance(v, str) and "@" in v:
        local, _, domain = v.rpartition("@")
        if EMAIL_RE.fullmatch(local + "@") and HOSTNAME_RE.fullmatch(domain) and "." in domain:
            return None
    return f"{bounded_repr(v)} is not an e-mail address (e.g. 'admin@lab.example.org')"


# mod_md's MDRenewWindow: a percentage of the certificate's lifetime, or a duration
# (days without a unit; d, h, mi, s).
RENEW_WINDOW_RE = re.compile(r"([1-9][0-9]?%)|([1-9][0-9]{0,9}(d|h|mi|s)?)")


def _renew_window(v: Any) -> str | None:
    if not isinstance(v, str) or not RENEW_WINDOW_RE.fullmatch(v):
        return (f"{bounded_repr(v)} is not a renewal window: a percentage of the "
                "certificate's lifetime ('33%') or a duration ('30d', '12h')")
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
    "dir": _owned_dir,
    "timeout": lambda v: _int(v) or (None if v > 0 else f"{v!r} must be a positive number"),
    "notebook_dir": _notebook_dir,
    "mode": _mode,
    "version": _version,
    "group": _group,
    "dict": _dict,
    "bytes": _bytes,
    "cpus": _cpus,
    "base_url": lambda v: _str(v) or _check_base_url(v),
    "bind_url": lambda v: _str(v) or check_bind_url(v),
    "username": check_username,
    "https_url": check_https_url,
    "email": check_email,
    "renew_window": _renew_window,
    "list[str]": _list_of(_str),
    "list[host]": _list_of(check_host),
    "list[username]": _list_of(check_username),
    "list[group]": _list_of(_group),
    "list[pkg]": _list_of(_pkg),
    "list[pip]": _list_of(_pip_req),
    "list[dict]": _list_of(_dict),
    "list[module]": _list_of(_module),
}


# Directories the tool creates, chmods and chowns as its own: a system directory is refused.
OWNED_DIRS = frozenset({"jupyterhub_venv", "jupyterhub_config_dir", "jupyterhub_state_dir",
                        "nodejs_prefix", "proxy_prefix", "jupyterhub_user_venv",
                        "jupyterhub_shared_dir"})


def check_value(var: Var, value: Any) -> str | None:
    """Why ``value`` does not fit ``var``, or None."""
    if value is None:
        return None if var.nullable else "must be set (null is not allowed)"
    if var.choices and value not in var.choices:
        return f"{bounded_repr(value)} is not one of {', '.join(map(str, var.choices))}"
    if var.name in OWNED_DIRS:
        return _owned_dir(value)
    return TYPES[var.type](value)


def suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
