"""docs/variables.md is generated from the roles' VARIABLES and must not drift from them."""

from __future__ import annotations

import difflib

from provision.config import REPO, all_variables
from provision.docs import variables_markdown
from provision.role import load_roles


def test_variables_doc_is_current():
    committed = (REPO / "docs" / "variables.md").read_text(encoding="utf-8")
    generated = variables_markdown()
    diff = "".join(difflib.unified_diff(committed.splitlines(keepends=True),
                                        generated.splitlines(keepends=True),
                                        "docs/variables.md (committed)", "generated", n=1))
    assert generated == committed, f"docs/variables.md is stale: run `invoke docs`\n{diff}"


def test_variables_doc_lists_every_variable_once():
    text = variables_markdown()
    for name in all_variables(load_roles()):
        assert text.count(f"| `{name}` |") == 1, name
