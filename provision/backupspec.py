"""Backups: the values the backup roles and the backup tasks share, from the variables.

The backup role (on a backed-up host) and the backup_server role (on a repository host of
the inventory) never import each other; what both need (how ``backup_repository`` reads,
the account a client gets on its repository host, the paths on both sides) is computed
here, as ``provision.stack`` does for the hub. ``peers`` is what the engine gives every
host about the others (``provision.peers``).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

from .variables import HOSTNAME_RE, PATH_CHARS_RE, USERNAME_RE, _is_ip, bounded_repr, \
    has_control

ETC = "/etc/jhprovision-backup"
KEY = f"{ETC}/id_ed25519"
PASSWORD = f"{ETC}/password"
CONFIG = f"{ETC}/backup.json"
SSH_CONFIG = f"{ETC}/ssh_config"
KNOWN_HOSTS = f"{ETC}/known_hosts"
PROGRAM_DIR = "/usr/local/lib/jhprovision-backup"
PROGRAM = f"{PROGRAM_DIR}/backup.py"
STATE = "/var/lib/jhprovision-backup"
CACHE = "/var/cache/jhprovision-backup"
DB_COPY_DIR = f"{STATE}/hub"
SERVICE = "jhprovision-backup.service"
TIMER = "jhprovision-backup.timer"
# the Host of the client's ssh_config for its repository host (restic's sftp.command)
SSH_ALIAS = "jhprovision-backup-repository"
# the directory inside a client's chroot that holds its repository
REPO_DIR = "restic"
# on a repository host: every client's account is in this group (sshd's Match)
SERVER_GROUP = "jhprovision-backup"
SERVER_KEYS_DIR = "/etc/ssh/jhprovision-backup"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/jhprovision-backup.conf"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"
MD_STORE = "/etc/apache2/md"  # Debian's mod_md store (MDStoreDir: ServerRoot/md)

# The key the engine fills with every inventory host's variables and what each host
# shared before the run (provision.peers); absent outside `invoke provision`.
PEERS = "provision_peers"

# OnCalendar: the characters systemd's calendar syntax uses, nothing a unit file or a shell
# reads as more (no newline, '%', '$', quotes, ';', '#'); the host's systemd-analyze
# calendar checks the rest before the timer is written.
CALENDAR_RE = re.compile(r"[A-Za-z0-9*:/,.~+-]+( [A-Za-z0-9*:/,.~+-]+)*")
# Exclude patterns: restic's, one per argv (never a shell); no control characters.
EXCLUDE_MAX = 256


@dataclass(frozen=True)
class Repository:
    """``backup_repository`` read: a local path, or sftp to ``host`` as ``user`` (None:
    a host of the inventory, whose account the backup_server role makes)."""

    kind: str  # local | sftp
    path: str
    host: str = ""
    user: str | None = None

    @property
    def managed(self) -> bool:
        return self.kind == "sftp" and self.user is None


def expand(value: str, host: str) -> str:
    """``{host}`` in a value is the inventory name of the host it applies to (one
    group_vars line for every host)."""
    return value.replace("{host}", host)


def _path_problem(path: str) -> str | None:
    if not path.startswith("/"):
        return "the path must be absolute"
    if has_control(path) or not PATH_CHARS_RE.fullmatch(path):
        return "the path may hold letters, digits and . _ - + @ / only"
    if ".." in path.split("/") or path.rstrip("/") == "":
        return "the path must not be '/' or contain '..'"
    return None


def parse_repository(value: Any) -> tuple[Repository | None, str | None]:
    """(the repository, None) or (None, why ``value`` is not one we take)."""
    if not isinstance(value, str):
        return None, f"must be a string, not {type(value).__name__}"
    shown = bounded_repr(value)
    if value.startswith("/"):
        why = _path_problem(value)
        return (None, f"{shown}: {why}") if why else (Repository("local", value), None)
    if not value.startswith("sftp:") or value.startswith("sftp://"):
        return None, (f"{shown} is not a repository this tool sets up: a local path "
                      "('/mnt/backup/lab1') or sftp:[user@]host:/path")
    rest = value[len("sftp:"):]
    where, sep, path = rest.partition(":")
    if not sep:
        return None, f"{shown}: sftp:[user@]host:/path (the ':' before the path is missing)"
    user, at, host = where.rpartition("@")
    if at and not USERNAME_RE.fullmatch(user):
        return None, f"{shown}: {bounded_repr(user)} is not a user name"
    if not (HOSTNAME_RE.fullmatch(host) or _is_ip(host)):
        return None, f"{shown}: {bounded_repr(host)} is not a host name or IP address"
    why = _path_problem(path)
    if why:
        return None, f"{shown}: {why}"
    return Repository("sftp", path.rstrip("/"), host, user if at else None), None


def repository(v: dict[str, Any]) -> Repository | None:
    value = v.get("backup_repository")
    if value is None:
        return None
    repo, _ = parse_repository(expand(value, v.get("inventory_hostname", "")))
    return repo


def check_calendar(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 128 or not CALENDAR_RE.fullmatch(value):
        return (f"{bounded_repr(value)} is not a systemd calendar event (OnCalendar=), e.g. "
                "'daily', 'hourly', '*-*-* 02:30:00', 'Mon..Fri 22:00'")
    return None


def check_paths(key: str, value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list) or not value:
        return [(key, "must be a non-empty list of absolute paths")]
    out = []
    for path in value:
        why = _path_problem(path) if isinstance(path, str) else "must be a string"
        if why:
            out.append((key, f"{bounded_repr(path)}: {why}"))
    return out


def check_excludes(key: str, value: Any) -> list[tuple[str, str]]:
    out = []
    for pattern in value if isinstance(value, list) else []:
        if not isinstance(pattern, str) or not pattern or len(pattern) > EXCLUDE_MAX or \
                has_control(pattern):
            out.append((key, f"{bounded_repr(pattern)}: an exclude pattern is one line of "
                        "text (restic's --exclude syntax)"))
    return out


def account(client: str) -> str:
    """The system account a client has on its repository host: ``bk-`` and its name,
    made a user name (a long or odd one is shortened and made unique with a hash)."""
    name = re.sub(r"[^a-z0-9-]", "-", client.lower())
    full = f"bk-{name}"
    if USERNAME_RE.fullmatch(full) and len(full) <= 32 and name == client:
        return full
    digest = hashlib.sha256(client.encode()).hexdigest()[:8]
    return f"bk-{name[:20].strip('-')}-{digest}"


def password_file(v: dict[str, Any]) -> str:
    """The workstation's copy of the host's repository password (``~`` expanded);
    default ``$XDG_CONFIG_HOME/jhprovision/backup/HOST.password``."""
    host = v.get("inventory_hostname", "")
    given = v.get("backup_password_file")
    if given:
        return os.path.expanduser(expand(given, host))
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "jhprovision", "backup", f"{host}.password")


def default_paths(v: dict[str, Any]) -> list[str]:
    return ["/home", v["jupyterhub_state_dir"], v["jupyterhub_otp_dir"],
            v["jupyterhub_config_dir"], MD_STORE]


def paths(v: dict[str, Any]) -> list[str]:
    """What is backed up, the hub's database copy included."""
    chosen = v.get("backup_paths") or default_paths(v)
    return list(dict.fromkeys([*chosen, DB_COPY_DIR]))


def hub_db(v: dict[str, Any]) -> str:
    return f"{v['jupyterhub_state_dir']}/jupyterhub.sqlite"


def excludes(v: dict[str, Any]) -> list[str]:
    """The variable's patterns, and the hub's live database (its consistent copy is
    backed up instead: a file copied while SQLite writes it may be torn)."""
    db = hub_db(v)
    return [*(v.get("backup_exclude") or []), db, f"{db}-journal", f"{db}-wal", f"{db}-shm"]


def peers(v: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return v.get(PEERS) or {}


def shared(v: dict[str, Any], host: str, role: str) -> dict[str, Any] | None:
    """What ``host`` shared before the run for ``role`` (None: not in this run, or it
    could not be read)."""
    return (peers(v).get(host) or {}).get("shared", {}).get(role)


@dataclass(frozen=True)
class Client:
    """A host of the inventory that keeps its backups on this one."""

    name: str
    account: str
    chroot: str
    key: str | None  # its public key, when it shared it in this run


def clients(v: dict[str, Any]) -> list[Client]:
    """The inventory's hosts whose backup_repository is sftp to this host (by its
    inventory name), in name order."""
    me = v.get("inventory_hostname")
    out = []
    for name, peer in sorted(peers(v).items()):
        hv = peer.get("vars") or {}
        repo = repository(hv)
        if name == me or repo is None or not repo.managed or repo.host != me:
            continue
        data = shared(v, name, "backup") or {}
        out.append(Client(name, account(name), repo.path, data.get("key")))
    return out
