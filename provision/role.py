"""The role contract, and the registry that loads and orders the roles.

A role is one module in ``roles/``, or a package there whose ``__init__`` holds the
contract and imports the rest from its own submodules (names starting with ``_`` are
helpers, not roles; a package's submodules are its own, never roles of their own),
exposing:

- ``NAME``: short name shown in output (``users``, ``jupyterhub``...);
- ``DESCRIPTION`` (optional; default: the docstring's first line): one line for the docs;
- ``VARIABLES``: list of ``Var`` (defaults and documentation, in one place);
- ``AFTER`` (optional): roles this one runs after when they are in the run;
- ``REQUIRES`` (optional): roles that must exist and run before this one;
- ``enabled(v) -> bool`` (optional; default True): whether the role applies to a host;
- ``facts(v) -> FactRequest``: what it needs to read from the host;
- ``plan(v, facts) -> list[Action]``: what it ensures, in order (a role without ``plan``
  and ``facts`` only contributes to the hub, and costs no round trip);
- ``HANDLERS`` (optional): list of ``Handler``, run once at the end when notified;
- ``NOTIFIES`` (optional): other roles' handlers its actions may notify (its own
  handlers need not be listed);
- ``USER_FIELDS`` (optional): ``{field: check}`` fields this role adds to each entry of
  ``users`` (``check(value) -> problem or None``; the problem never quotes the value);
- ``hub(v) -> HubContribution`` (optional): hub services, RBAC roles, config lines,
  users' servers' environment and packages the jupyterhub role renders into the hub's
  config and virtualenv;
- ``check(v) -> list[tuple[str, str]]`` (optional): (key, problem) pairs between
  variables, found before connecting.

The order of the roles is computed from ``AFTER``/``REQUIRES``; a cycle, an unknown role
name, or a ``notify`` naming no handler is an error when the roles are
loaded, before any host is touched. Roles hold no SSH code and import no other role: the
runner gathers facts, runs the ops and the handlers; values several roles share come from
``provision.stack``. docs/roles.md walks through adding one.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hostrun import HostRun

ROLES_PACKAGE = "roles"


class RoleError(Exception):
    """The roles do not fit together (a programming error, found at load time)."""


@dataclass
class Handler:
    """Runs once per host at the end of a run when notified (e.g. restart a service).

    Handlers run in role order; one may read ``run.notified`` to leave work to a later
    one (the proxy's restart leaves the hub's routes to a hub restart that is due anyway).
    """

    name: str
    run: Callable[[HostRun], None]
    description: str = ""


_TRAIT_RE = re.compile(r"[A-Z][A-Za-z0-9_]*\.[a-z_][A-Za-z0-9_]*")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")


@dataclass
class HubService:
    """A JupyterHub service (``c.JupyterHub.services``).

    ``command``: the hub starts and stops it (a managed service); ``token_env``: the
    variable, in the hub's environment, holding its API token (the jupyterhub role makes
    the 0600 file on the host and names it in the unit); ``environment``: for its process.
    """

    name: str
    description: str
    command: list[str] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    token_env: str | None = None

    def literal(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.command:
            out["command"] = list(self.command)
        if self.environment:
            out["environment"] = dict(self.environment)
        return out


@dataclass
class HubRole:
    """An RBAC role (``c.JupyterHub.load_roles``) granting scopes to services/users."""

    name: str
    scopes: list[str]
    services: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def literal(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "scopes": list(self.scopes)}
        for key in ("services", "users", "groups"):
            if getattr(self, key):
                out[key] = list(getattr(self, key))
        return out


@dataclass
class HubContribution:
    """What a role adds to the hub; every value is rendered as a Python literal."""

    services: list[HubService] = field(default_factory=list)
    roles: list[HubRole] = field(default_factory=list)
    #: ("Class.trait", value) lines, e.g. ("Spawner.mem_limit", "2G")
    config: list[tuple[str, Any]] = field(default_factory=list)
    #: pip requirements installed into the hub's virtualenv
    packages: list[str] = field(default_factory=list)
    #: environment variables of every user's server (c.Spawner.environment)
    server_env: dict[str, str] = field(default_factory=dict)
    #: filled by ``hub_contributions``: the role it came from
    role: str = ""

    def problems(self) -> list[str]:
        out = [f"config key {key!r} is not Class.trait" for key, _ in self.config
               if not _TRAIT_RE.fullmatch(key)]
        out += [f"service name {s.name!r}" for s in self.services if not _NAME_RE.fullmatch(s.name)]
        out += [f"server_env {k!r}" for k in self.server_env
                if not re.fullmatch(r"[A-Z][A-Z0-9_]*", k)]
        out += [f"service {s.name}: token_env {s.token_env!r}" for s in self.services
                if s.token_env and not re.fullmatch(r"[A-Z][A-Z0-9_]*", s.token_env)]
        return out


# ------------------------------------------------------------------------------ registry
def _discover(package: str) -> list[ModuleType]:
    pkg = importlib.import_module(package)
    for where in pkg.__path__:
        # pkgutil skips a folder without __init__.py: the role would silently never run.
        for d in sorted(Path(where).iterdir()):
            if d.is_dir() and d.name.isidentifier() and not d.name.startswith("_") \
                    and any(d.glob("*.py")) and not (d / "__init__.py").exists():
                raise RoleError(f"{package}.{d.name}: a folder of modules without "
                                "__init__.py: a role that is a package holds its contract "
                                f"there (a folder of helpers is named _{d.name})")
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                   if not m.name.startswith("_"))
    return [importlib.import_module(f"{package}.{n}") for n in names]


def _check_module(m: ModuleType) -> None:
    where = m.__name__
    if not isinstance(getattr(m, "NAME", None), str) or not _NAME_RE.fullmatch(m.NAME):
        raise RoleError(f"{where}: a role needs NAME, a short lower-case name")
    if not isinstance(getattr(m, "VARIABLES", None), list):
        raise RoleError(f"role {m.NAME}: VARIABLES must be a list of Var (may be empty)")
    if hasattr(m, "plan") != hasattr(m, "facts"):
        raise RoleError(f"role {m.NAME}: plan() and facts() go together (a role without "
                        "steps has neither)")
    if not any(hasattr(m, f) for f in ("plan", "hub")):
        raise RoleError(f"role {m.NAME}: has neither plan() nor hub(): it would do nothing")


def _order(modules: list[ModuleType]) -> list[ModuleType]:
    """Roles in dependency order (ties: by name, so the order never depends on chance)."""
    by_name: dict[str, ModuleType] = {}
    for m in modules:
        _check_module(m)
        if m.NAME in by_name:
            raise RoleError(f"modules {by_name[m.NAME].__name__} and {m.__name__} are both "
                            f"role {m.NAME}")
        by_name[m.NAME] = m
    deps: dict[str, set[str]] = {}
    for m in modules:
        wanted = set(getattr(m, "AFTER", ())) | set(getattr(m, "REQUIRES", ()))
        unknown = sorted(wanted - set(by_name))
        if unknown:
            raise RoleError(f"role {m.NAME}: AFTER/REQUIRES names no role {', '.join(unknown)}"
                            f" (roles: {', '.join(sorted(by_name))})")
        deps[m.NAME] = wanted
    out: list[str] = []
    while len(out) < len(deps):
        ready = sorted(n for n, d in deps.items() if n not in out and d <= set(out))
        if not ready:
            stuck = sorted(n for n in deps if n not in out)
            raise RoleError(f"roles {', '.join(stuck)}: their AFTER/REQUIRES form a cycle")
        out.append(ready[0])
    return [by_name[n] for n in out]


def _check_handlers(modules: list[ModuleType]) -> None:
    handlers: dict[str, str] = {}
    for m in modules:
        for h in getattr(m, "HANDLERS", []):
            if h.name in handlers:
                raise RoleError(f"handler {h.name!r} is declared by roles {handlers[h.name]} "
                                f"and {m.NAME}")
            handlers[h.name] = m.NAME
    for m in modules:
        for name in getattr(m, "NOTIFIES", ()):
            if name not in handlers:
                raise RoleError(f"role {m.NAME}: NOTIFIES {name!r}, which no role handles "
                                f"(handlers: {', '.join(handlers)})")


class Registry:
    """The roles of a package, validated and in order."""

    def __init__(self, package: str = ROLES_PACKAGE) -> None:
        self.roles = _order(_discover(package))
        _check_handlers(self.roles)
        self.handlers: dict[str, tuple[str, Handler]] = {
            h.name: (m.NAME, h) for m in self.roles for h in getattr(m, "HANDLERS", [])}

    @property
    def user_fields(self) -> dict[str, Callable[[Any], str | None]]:
        """Fields roles add to a user entry (beside the users role's own), with checks."""
        return {k: check for m in self.roles for k, check in getattr(m, "USER_FIELDS", {}).items()}

    @property
    def names(self) -> list[str]:
        return [m.NAME for m in self.roles]

    def may_notify(self, role: ModuleType) -> set[str]:
        return {h.name for h in getattr(role, "HANDLERS", [])} | set(getattr(role, "NOTIFIES", ()))


_REGISTRY: dict[str, Registry] = {}


def registry(package: str = ROLES_PACKAGE) -> Registry:
    if package not in _REGISTRY:
        _REGISTRY[package] = Registry(package)
    return _REGISTRY[package]


def load_roles(names: tuple[str, ...] | None = None) -> list[ModuleType]:
    """Every role, in dependency order (or only ``names``, in that same order)."""
    roles = registry().roles
    return roles if names is None else [r for r in roles if r.NAME in names]


def role_enabled(role: ModuleType, v: dict) -> bool:
    fn = getattr(role, "enabled", None)
    return bool(fn(v)) if fn else True


def describe(role: ModuleType) -> str:
    text = getattr(role, "DESCRIPTION", None) or (role.__doc__ or "").strip().splitlines()[0]
    return text.split(": ", 1)[1] if text.startswith(f"{role.NAME}: ") else text


def hub_contributions(v: dict[str, Any], *, exclude: str = "") -> list[HubContribution]:
    """What every enabled role but ``exclude`` adds to the hub, in role order."""
    out = []
    for role in registry().roles:
        fn = getattr(role, "hub", None)
        if role.NAME == exclude or fn is None or not role_enabled(role, v):
            continue
        contribution = fn(v)
        contribution.role = role.NAME
        bad = contribution.problems()
        if bad:
            raise RoleError(f"role {role.NAME}: hub contribution: {'; '.join(bad)}")
        out.append(contribution)
    return out
