"""What a role is: its variables, the facts it needs, its planner and its handlers.

A role is a module in ``roles/`` exposing:

- ``NAME``: short name shown in output (``users``, ``jupyterhub``...);
- ``VARIABLES``: list of ``Var`` (defaults and documentation, in one place);
- ``enabled(v) -> bool`` (optional; default True): whether the role applies to a host;
- ``facts(v) -> FactRequest``: what it needs to read from the host;
- ``plan(v, facts) -> list[Action]``: what it ensures, in order;
- ``HANDLERS``: list of ``Handler``, run once at the end when an action notified them;
- ``check(v) -> list[tuple[str, str]]`` (optional): (key, problem) pairs between
  variables, found before connecting.

Roles hold no SSH code: the runner gathers facts, runs the ops and the handlers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runner import HostRun

ROLE_ORDER = ("users", "wheel", "nodejs", "proxy", "jupyterhub", "apache")


@dataclass
class Handler:
    """Runs once per host at the end of a run when notified (e.g. restart a service)."""

    name: str
    run: Callable[[HostRun], None]
    description: str = ""


def load_roles(names: tuple[str, ...] = ROLE_ORDER) -> list[ModuleType]:
    return [importlib.import_module(f"roles.{n}") for n in names]


def role_enabled(role: ModuleType, v: dict) -> bool:
    fn = getattr(role, "enabled", None)
    return bool(fn(v)) if fn else True
