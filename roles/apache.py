"""apache: optional reverse proxy in front of the hub (placeholder until built; off)."""

from __future__ import annotations

from typing import Any

from provision.facts import FactRequest, Facts
from provision.steps import Action
from provision.variables import Var

NAME = "apache"

VARIABLES = [
    Var("apache_enabled", False, "bool", "Put Apache in front of the hub (reverse proxy)."),
]


def enabled(v: dict[str, Any]) -> bool:
    return bool(v["apache_enabled"])


def facts(v: dict[str, Any]) -> FactRequest:
    return FactRequest()


def plan(v: dict[str, Any], facts: Facts) -> list[Action]:
    return []
