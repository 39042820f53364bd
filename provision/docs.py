"""docs/variables.md, generated from the roles' ``VARIABLES`` so it cannot drift."""

from __future__ import annotations

from pathlib import Path

from .config import ENGINE_VARIABLES, REPO
from .role import load_roles
from .variables import Var

HEADER = """# Variables

Generated from the code by `invoke docs` (a unit test fails when this file is stale).
Set them in `inventory/group_vars/`, `inventory/host_vars/`, on a host or group in the
inventory, or for one run with `--var name=value`. Precedence, lowest first: role
defaults, group variables (`all` first, then parents before children), host variables,
`--var`. An unknown name is an error that suggests the nearest known one.
"""


def _fmt(value: object) -> str:
    if value is None:
        return "null"
    if value == "":
        return "''"
    return f"`{value!r}`" if not isinstance(value, str) else f"`{value}`"


def _row(var: Var) -> str:
    doc = var.doc.replace("|", "\\|")
    if var.choices:
        doc += " One of: " + ", ".join(f"`{c}`" for c in var.choices) + "."
    return f"| `{var.name}` | {_fmt(var.default)} | {var.type} | {doc} |"


def variables_markdown() -> str:
    parts = [HEADER]
    sections = [("Connection (engine)", ENGINE_VARIABLES)]
    for role in load_roles():
        sections.append((f"Role `{role.NAME}`", role.VARIABLES))
    for title, variables in sections:
        parts.append(f"\n## {title}\n")
        parts.append("| variable | default | type | meaning |")
        parts.append("|---|---|---|---|")
        parts.extend(_row(v) for v in variables)
    return "\n".join(parts) + "\n"


def write_variables_doc(path: Path | None = None) -> Path:
    path = path or REPO / "docs" / "variables.md"
    path.write_text(variables_markdown(), encoding="utf-8")
    return path
