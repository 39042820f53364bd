"""Edit the inventory's ``users:`` list in place, keeping the file's comments and layout.

``invoke add-user``/``remove-user`` record their change here first, so the inventory stays
the single source of truth and a later ``provision`` keeps what they did. ruamel.yaml's
round-trip mode preserves comments and ordering, which PyYAML cannot.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .files import load_yaml, read_text, write_private
from .inventory import Inventory


def users_file(inventory: Inventory) -> Path:
    """The file that defines ``users`` for the group ``all`` (created if needed)."""
    group = inventory.groups["all"]
    origin = group.file_var_origins.get("users")
    if origin:
        path = Path(origin.file)
        return path if path.is_absolute() else Path.cwd() / path
    root = inventory.path if inventory.path.is_dir() else inventory.path.parent
    if group.var_origins.get("users"):
        raise ConfigError(f"{group.var_origins['users']}: users are defined inline in the "
                          "inventory file; move them to group_vars/all/users.yml so "
                          "add-user can edit them")
    return root / "group_vars" / "all" / "users.yml"


def _yaml() -> YAML:  # noqa: F821 - imported here: only add/remove-user edit YAML
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def update_user(path: Path, name: str, fields: dict[str, Any] | None = None, *,
                create: bool = True) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Merge ``fields`` into user ``name`` in ``path``; return (before, after).

    Written atomically with mode 0600: the file may hold password hashes.
    """
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    y = _yaml()
    if path.exists():
        # Checked by the same safe reader as the inventory first (duplicate keys, size,
        # encoding...): ruamel's own errors would quote both values, hashes included.
        text = read_text(path, what="users file")
        load_yaml(text, where=str(path))
        data = y.load(text) or CommentedMap()
    else:
        data = CommentedMap()
        data.yaml_set_start_comment(
            "Lab users (role users). Edited by `invoke add-user` / `invoke remove-user`;\n"
            "hand edits are kept. See docs/variables.md for the fields.")
    if "users" not in data or data["users"] is None:
        data["users"] = CommentedSeq()
    seq = data["users"]
    entry = next((u for u in seq if isinstance(u, dict) and u.get("name") == name), None)
    before = dict(entry) if entry is not None else None
    if entry is None:
        if not create:
            raise ConfigError(f"user {name!r} is not in {path}")
        entry = CommentedMap(name=name)
        seq.append(entry)
    for key, value in (fields or {}).items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    out = io.StringIO()
    y.dump(data, out)
    write_private(path, out.getvalue(), what="users file")
    return before, dict(entry)


def restore(path: Path, text: str | None) -> None:
    """Put a users file back as it was (after a rejected change)."""
    if text is None:
        path.unlink(missing_ok=True)
    else:
        write_private(path, text, what="users file")
