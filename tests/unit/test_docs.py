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


def test_readme_role_table_is_current():
    from provision.docs import readme_with_roles

    committed = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme_with_roles(committed) == committed, \
        "README.md's role table is stale: run `invoke docs`"


def test_readme_role_table_lists_every_role_in_run_order():
    from provision.docs import roles_markdown

    rows = [line.split(" | ")[0].lstrip("| ") for line in roles_markdown().splitlines()[2:]]
    assert rows == [r.NAME for r in load_roles()]
