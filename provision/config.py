"""Load, merge and validate everything a run needs before any host is touched.

``load_run`` reads the inventory, resolves the hosts ``--hosts`` selects, merges their
variables (precedence in ``provision.inventory``) and validates them: unknown names (with
the nearest known name suggested), types, cross-variable rules of each role, and rules
across hosts (one user, one uid). Every problem is collected and raised together as a
``ConfigError``; a rejected run has not opened a single connection.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from .errors import ConfigError
from .inventory import Host, Inventory
from .role import load_roles
from .variables import Var, check_value, suggest

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
    Var("provision_connect_timeout", 10, "timeout", "Seconds to wait for an SSH connection."),
    Var("lab_ports", None, "dict", "Written by `invoke lab.up`: 127.0.0.1 ports forwarded "
        "to this lab host (ssh, hub, http, https).", nullable=True),
]

# Names the engine sets itself, or that Ansible inventories commonly carry for other tools.
RESERVED = {"inventory_hostname"}


@dataclass
class RunConfig:
    inventory: Inventory
    hosts: list[Host]
    roles: list[ModuleType]
    variables: dict[str, Var]


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
        if not sep or not name.strip():
            problems.append(f"--var {item!r}: expected name=value")
            continue
        try:
            out[name.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[name.strip()] = value
    if problems:
        raise ConfigError(problems)
    return out


def validate_host(host: Host, variables: dict[str, Var], roles: list[ModuleType]) -> list[str]:
    problems: list[str] = []
    known = sorted(variables)
    for name, value in host.vars.items():
        if name in RESERVED:
            continue
        var = variables.get(name)
        if var is None:
            if name.startswith("ansible_"):
                continue  # other Ansible connection settings: accepted, not used
            problems.append(f"{host.origin(name)}: unknown variable {name!r}"
                            f"{suggest(name, known)}")
            continue
        why = check_value(var, value)
        if why:
            problems.append(f"{host.origin(name)}: {why}")
    type_problems = bool(problems)
    for role in roles:
        check = getattr(role, "check", None)
        if not check:
            continue
        try:
            found = check(host.vars)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError):
            # A variable this rule reads has the wrong type: already reported above.
            if not type_problems:
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
        for user in host.vars.get("users") or []:
            if isinstance(user, dict) and isinstance(user.get("uid"), int):
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
    inventory = Inventory(Path(inventory_path or DEFAULT_INVENTORY))
    names = inventory.select(pattern)
    extra = cli_vars if isinstance(cli_vars, dict) else parse_cli_vars(cli_vars)
    base = defaults(variables)
    hosts = [inventory.resolve(n, base, extra) for n in names]
    by_message: dict[str, list[str]] = {}
    for host in hosts:
        for problem in validate_host(host, variables, roles):
            by_message.setdefault(problem, []).append(host.name)
    problems = [f"{'host' if len(h) == 1 else 'hosts'} {', '.join(h)}: {p}"
                for p, h in by_message.items()]
    problems += check_across_hosts(hosts)
    if problems:
        raise ConfigError(problems)
    return RunConfig(inventory, hosts, roles, variables)
