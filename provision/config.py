"""Load, merge and validate everything a run needs before any host is touched.

``load_run`` reads the inventory, resolves the hosts ``--hosts`` selects, merges their
variables (precedence in ``provision.inventory``) and validates them: unknown names (with
the nearest known name suggested), types, cross-variable rules of each role, and rules
across hosts (one user, one uid). Every problem is collected and raised together as a
``ConfigError``; a rejected run has not opened a single connection.
"""

from __future__ import annotations

from collections import defaultdict
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from . import artifact_cache, installer
from .errors import ConfigError
from .inventory import Host, Inventory
from .role import load_roles
from .variables import Var, check_value, describe_key, suggest, variable_name_problem

REPO = Path(__file__).resolve().parent.parent
DEFAULT_INVENTORY = REPO / "inventory"

ENGINE_VARIABLES = [
    Var("ansible_host", None, "host", "Address to connect to (default: the inventory name, "
        "looked up in ~/.ssh/config).", nullable=True),
    Var("ansible_port", None, "port", "SSH port (default: ~/.ssh/config, else 22).",
        nullable=True),
    Var("ansible_user", None, "line", "Login user (default: ~/.ssh/config, else the local "
        "user). A user other than root needs passwordless sudo.", nullable=True),
    Var("ansible_ssh_private_key_file", None, "line", "Private key for SSH.", nullable=True),
    Var("ansible_host_key_checking", True, "bool", "Check the host's SSH key against "
        "known_hosts. Turn off only for throwaway hosts; never the default."),
    Var("provision_known_hosts_file", None, "line", "An extra known_hosts file to check "
        "host keys against (the lab writes its own).", nullable=True),
    Var("provision_artifacts", "host", "str", "Where packages come from: `host` (each host "
        "downloads its own from apt, PyPI and npm) or `push` (the workstation fetches each "
        "set once into provision_artifacts_cache and pushes it over SSH; hosts need no "
        "route to any registry). See docs/offline.md.", choices=("host", "push")),
    Var("provision_artifacts_cache", None, "line", "Workstation directory of the pushed "
        "artifacts (default: ~/.cache/jhprovision, or under $XDG_CACHE_HOME).",
        nullable=True),
    Var("provision_artifacts_cache_max", artifact_cache.DEFAULT_MAX, "bytes", "Bound on "
        "provision_artifacts_cache: after a run that pushed, the least recently used files "
        "go until the cache is this small (K, M, G, T: powers of 1024); never a file the "
        "run used. `invoke artifacts --prune` does the same at any time."),
    Var("provision_artifacts_cache_days", artifact_cache.DEFAULT_DAYS, "timeout", "Files of "
        "provision_artifacts_cache that no run has used for this many days go after a run "
        "that pushed."),
    installer.VARIABLE,
    Var("provision_connect_timeout", 10, "timeout", "Seconds to wait for an SSH connection."),
    Var("lab_ports", None, "dict", "Written by `invoke lab.up`: 127.0.0.1 ports forwarded "
        "to this lab host (ssh, hub, http, https).", nullable=True),
]

# Names the engine sets itself, or that Ansible inventories commonly carry for other tools.
RESERVED = {"inventory_hostname", "provision_peers"}

# A variable is ours when it is ``users`` or starts with one of these prefixes (a role may add
# its own with ``PREFIXES``); any other name belongs to another playbook and is ignored.
PREFIXES = ("users_", "wheel_", "nodejs_", "proxy_", "jupyterhub_", "apache_", "provision_",
            "lab_")
OWN_NAMES = ("users",)

# ansible_* names that change how a host is reached: honoured when their value is one we
# support, an error otherwise (never silently ignored). Other ansible_* names are ignored.
SUPPORTED_CONNECTIONS = ("ssh", "paramiko", "smart", "local")
PROXYJUMP_RE = re.compile(r"^\s*-o\s*ProxyJump=(\S+)\s*$")


def proxy_jump(value: Any) -> str | None:
    """The jump host of ``ansible_ssh_common_args: -o ProxyJump=HOST``, else None."""
    m = PROXYJUMP_RE.match(value) if isinstance(value, str) else None
    return m.group(1) if m else None


def check_reach(v: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, problem) for connection settings we cannot honour."""
    out = []
    conn = v.get("ansible_connection")
    if conn is not None and conn not in SUPPORTED_CONNECTIONS:
        out.append(("ansible_connection", f"ansible_connection {conn!r} is not supported "
                    f"(supported: {', '.join(SUPPORTED_CONNECTIONS)})"))
    args = v.get("ansible_ssh_common_args")
    if args not in (None, "") and not proxy_jump(args):
        out.append(("ansible_ssh_common_args", f"ansible_ssh_common_args {args!r} is not "
                    "supported (only '-o ProxyJump=[user@]host[:port]')"))
    for key in ("ansible_ssh_extra_args", "ansible_ssh_args"):
        if v.get(key) not in (None, ""):
            out.append((key, f"{key} is not supported (use ~/.ssh/config or "
                        "ansible_ssh_common_args: -o ProxyJump=...)"))
    method = v.get("ansible_become_method")
    if method is not None and method != "sudo":
        out.append(("ansible_become_method", f"ansible_become_method {method!r} is not "
                    "supported (only sudo)"))
    buser = v.get("ansible_become_user")
    if buser is not None and buser != "root":
        out.append(("ansible_become_user", f"ansible_become_user {buser!r} is not supported "
                    "(only root)"))
    if v.get("ansible_become") is False and v.get("ansible_user") not in (None, "root"):
        out.append(("ansible_become", "ansible_become: false with a non-root ansible_user "
                    "is not supported (every change needs root)"))
    return out


def own_prefixes(roles: list[ModuleType]) -> tuple[str, ...]:
    extra = tuple(p for r in roles for p in getattr(r, "PREFIXES", ()))
    return PREFIXES + tuple(p for p in extra if p not in PREFIXES)


def is_ours(name: str, prefixes: tuple[str, ...]) -> bool:
    return name in OWN_NAMES or name.startswith(prefixes)


@dataclass
class RunConfig:
    inventory: Inventory
    hosts: list[Host]
    roles: list[ModuleType]
    variables: dict[str, Var]
    ignored: list[str] = field(default_factory=list)
    #: "file: key: what to use instead", for deprecated variables the inventory sets
    notices: list[str] = field(default_factory=list)


def all_variables(roles: list[ModuleType]) -> dict[str, Var]:
    out: dict[str, Var] = {v.name: v for v in ENGINE_VARIABLES}
    for role in roles:
        for var in role.VARIABLES:
            if var.name in out:
                raise RuntimeError(f"variable {var.name} declared twice")  # programming error
            out[var.name] = var
    return out


def defaults(variables: dict[str, Var]) -> dict[str, Any]:
    import copy

    return {name: copy.deepcopy(var.default) for name, var in variables.items()}


def parse_cli_vars(items: list[str] | None) -> dict[str, Any]:
    """``--var name=value`` pairs; the value is read as YAML (``port=8000`` is an int)."""
    out: dict[str, Any] = {}
    problems = []
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            problems.append(f"--var {describe_key(item).removeprefix('the key ')}: expected "
                            "name=value")
            continue
        why = variable_name_problem(name)
        if why:
            problems.append(f"command line: --var: {why}")
            continue
        try:
            out[name] = yaml.safe_load(value) if value.strip() else ""
        except (yaml.YAMLError, RecursionError):  # not YAML, or nested past the stack
            out[name] = value
    if problems:
        raise ConfigError(problems)
    return out


def validate_host(host: Host, variables: dict[str, Var], roles: list[ModuleType],
                  ignored: set[str] | None = None) -> list[str]:
    """Problems of one host; names that are not ours are added to ``ignored``."""
    problems: list[str] = []
    known = sorted(variables)
    prefixes = own_prefixes(roles)
    for name, value in host.vars.items():
        if name in RESERVED:
            continue
        var = variables.get(name)
        if var is None:
            if name.startswith("ansible_") or not is_ours(name, prefixes):
                if ignored is not None:
                    ignored.add(name)
                continue  # another playbook's variable, or an unused Ansible setting
            problems.append(f"{host.origin(name)}: unknown variable {name!r}"
                            f"{suggest(name, known)}")
            continue
        why = check_value(var, value)
        if why:
            problems.append(f"{host.origin(name)}: {why}")
    for key, why in check_reach(host.vars):
        problems.append(f"{host.origin(key)}: {why}")
    for role in roles:
        check = getattr(role, "check", None)
        if not check:
            continue
        try:
            found = check(host.vars)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError):
            # A variable this rule reads has the wrong type: already reported above (by
            # the variable's type, or an earlier role's check, e.g. a user name that is a
            # list). Without such a report it is a bug, and it says so.
            if not problems:
                raise
            continue
        for key, why in found:
            problems.append(f"{host.origin(key)}: {why}")
    return problems


def check_across_hosts(hosts: list[Host]) -> list[str]:
    """One user name, one uid, on every host (and one uid, one user)."""
    problems = []
    uid_of: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    name_of: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for host in hosts:
        listed = host.vars.get("users")
        for user in listed if isinstance(listed, list) else []:  # else: reported per host
            if isinstance(user, dict) and isinstance(user.get("name"), str) and \
                    isinstance(user.get("uid"), int):
                uid_of[user["name"]][user["uid"]].append(host.name)
                name_of[user["uid"]][user["name"]].append(host.name)
    for name, uids in sorted(uid_of.items()):
        if len(uids) > 1:
            detail = "; ".join(f"uid {u} on {', '.join(h)}" for u, h in sorted(uids.items()))
            problems.append(f"user {name!r} has different uids across hosts: {detail}")
    for uid, names in sorted(name_of.items()):
        if len(names) > 1:
            detail = "; ".join(f"{n} on {', '.join(h)}" for n, h in sorted(names.items()))
            problems.append(f"uid {uid} is given to more than one user: {detail}")
    return problems


def find_inventory(given: str | Path | None, cwd: Path | None = None) -> Path:
    """``-i``, else ./inventory, else ``inventory =`` of ansible.cfg ($ANSIBLE_CONFIG, then
    ./ansible.cfg), else the repository's inventory/."""
    import configparser

    if given:
        return Path(given)
    cwd = cwd or Path.cwd()
    if (cwd / "inventory").exists():
        return cwd / "inventory"
    candidates = [Path(os.environ["ANSIBLE_CONFIG"])] if os.environ.get("ANSIBLE_CONFIG") else []
    candidates.append(cwd / "ansible.cfg")
    for cfg in candidates:
        if not cfg.is_file():
            continue
        parser = configparser.ConfigParser(inline_comment_prefixes=("#", ";"),
                                           interpolation=None)
        try:
            parser.read(cfg, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{cfg}: cannot read: {exc}") from None
        value = parser.get("defaults", "inventory", fallback="").strip()
        if value:
            first = value.split(",")[0].strip()
            path = Path(os.path.expanduser(first))
            return path if path.is_absolute() else cfg.resolve().parent / path
        break
    return DEFAULT_INVENTORY


def load_run(
    inventory_path: str | Path | None,
    pattern: str,
    cli_vars: list[str] | dict[str, Any] | None = None,
    roles: list[ModuleType] | None = None,
    only_roles: str | None = None,
) -> RunConfig:
    """Everything a run needs, validated; raises ``ConfigError`` listing all problems.

    ``only_roles`` ('users,wheel') limits the run to those roles; variables of all roles
    are still known and validated.
    """
    roles = roles if roles is not None else load_roles()
    variables = all_variables(roles)
    if only_roles:
        wanted = [r.strip() for r in only_roles.split(",") if r.strip()]
        names = [r.NAME for r in roles]
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise ConfigError(f"--roles: no role named {', '.join(map(repr, unknown))}; roles: "
                              f"{', '.join(names)}")
        roles = [r for r in roles if r.NAME in wanted]
    inventory = Inventory(find_inventory(inventory_path))
    names = inventory.select(pattern)
    extra = cli_vars if isinstance(cli_vars, dict) else parse_cli_vars(cli_vars)
    base = defaults(variables)
    hosts = [inventory.resolve(n, base, extra) for n in names]
    by_message: dict[str, list[str]] = {}
    ignored: set[str] = set()
    for host in hosts:
        for problem in validate_host(host, variables, roles, ignored):
            by_message.setdefault(problem, []).append(host.name)
    problems = [f"{'host' if len(h) == 1 else 'hosts'} {', '.join(h)}: {p}"
                for p, h in by_message.items()]
    problems += check_across_hosts(hosts)
    if problems:
        raise ConfigError(problems)
    notices = sorted({f"{host.origin(name)}: {var.deprecated}" for host in hosts
                      for name, var in variables.items()
                      if var.deprecated and name in host.origins})
    return RunConfig(inventory, hosts, roles, variables, sorted(ignored), notices)
