"""No import circles: inside ``provision/`` (and inside ``roles/``) no module imports,
directly or through others, a module that imports it back.

Every import statement counts, at module level or inside a function (an import moved into
a function to dodge a circle still is one), ``TYPE_CHECKING`` ones too: ``import a.b``,
``from a import b`` (``a.b`` when that is a module, else ``a``), relative imports resolved
against the importing module. A synthetic package written to ``tmp_path`` shows the finder
does find circles, so the real test cannot pass by reading nothing.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from provision.config import REPO

Graph = dict[str, dict[str, int]]  # module -> {module it imports: first line doing so}


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` (a folder under ``root``) by dotted name."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported(name: str, is_package: bool, source: str, filename: str = "<source>"
             ) -> list[tuple[str, str | None, int]]:
    """Each import in module ``name``'s source: ``(module, name taken or None, line)``;
    ``import a.b`` is ``("a.b", None, line)``, ``from .b import c`` in ``pkg.a`` is
    ``("pkg.b", "c", line)``."""
    here = name.split(".") if is_package else name.split(".")[:-1]
    out: list[tuple[str, str | None, int]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[:max(0, len(here) - node.level + 1)] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            out += [(module, None if a.name == "*" else a.name, node.lineno)
                    for a in node.names]
    return out


def graph(root: Path, package: str) -> Graph:
    """Module -> the modules of ``package`` it imports. ``from a import b`` is an arrow
    to ``a.b`` when that is a module, else to ``a``. Importing ``a.b`` is not counted as
    importing its parent ``a`` as well: every submodule would import its package's
    ``__init__``, a circle Python never trips on."""
    modules = module_names(root, package)
    out: Graph = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for module, taken, line in imported(name, path.name == "__init__.py",
                                             path.read_text(), str(path)):
            target = f"{module}.{taken}" if f"{module}.{taken}" in modules else module
            if target in modules and target != name:
                edges.setdefault(target, line)
        out[name] = dict(sorted(edges.items()))
    return out


def tangles(g: Graph) -> list[set[str]]:
    """Each group of more than one module that import each other, directly or through
    others (Tarjan's strongly connected components), ordered by their smallest name."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(groups, key=min)


def circles(g: Graph) -> list[list[str]]:
    """One circle through each tangle: ``[a, b, ..., a]``, from its smallest name."""
    return [circle_through(g, group) for group in tangles(g)]


def circle_through(g: Graph, group: set[str]) -> list[str]:
    """The shortest way from the group's smallest module back to itself, inside it."""
    start = min(group)
    came: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in g[v]:
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w in group and w not in came:
                    came[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no circle through {start} in {sorted(group)}")  # Tarjan says one


def describe(g: Graph, root: Path, group: set[str]) -> str:
    """A circle through the group, ``a -> b -> a``, then every import between its modules
    (a group may hold more arrows than that one circle), each with its file and line."""
    modules = module_names(root, min(group).split(".")[0])
    where = [f"  {modules[a].relative_to(root)}:{line} imports {b}"
             for a in sorted(group) for b, line in g[a].items() if b in group]
    return " -> ".join(circle_through(g, group)) + "\n" + "\n".join(where)


# ------------------------------------------------------------------ the real tree
@pytest.mark.parametrize("package", ["provision", "roles"])
def test_no_import_circle(package: str):
    g = graph(REPO, package)
    found = tangles(g)
    assert not found, "import circles:\n" + "\n".join(describe(g, REPO, t) for t in found)


def test_the_real_graph_is_read():
    """The walker sees the engine's imports (an empty graph has no circle either)."""
    g = graph(REPO, "provision")
    assert "provision.artifacts" in g["provision.runner"]  # `from . import artifacts`
    assert "provision.hostrun" in g["provision.runner"]
    assert "provision.hostrun" in g["provision.artifacts"]  # under TYPE_CHECKING
    assert "provision.requirements" in g["provision.pins"]
    assert "provision.lab.errors" in g["provision.lab.system"]


# ------------------------------------------------------------------ the finder itself
def write_package(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.mark.parametrize("files, circle", [
    ({"pkg/__init__.py": "", "pkg/a.py": "from .b import x\n",
      "pkg/b.py": "x = 1\ndef f():\n    from pkg import a\n"},
     ["pkg.a", "pkg.b", "pkg.a"]),
    ({"pkg/__init__.py": "", "pkg/a.py": "import pkg.b\n",
      "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                  "    from .c import C\n",
      "pkg/c.py": "from . import a\nC = 1\n"},
     ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]),
    ({"pkg/__init__.py": "from .sub import thing\n", "pkg/sub/__init__.py": "",
      "pkg/sub/thing.py": "from .. import VERSION\n"},
     ["pkg", "pkg.sub.thing", "pkg"]),
])
def test_a_circle_is_found_and_named(tmp_path: Path, files: dict[str, str],
                                     circle: list[str]):
    write_package(tmp_path, files)
    g = graph(tmp_path, "pkg")
    assert circles(g) == [circle]
    text = describe(g, tmp_path, tangles(g)[0])
    assert text.startswith(" -> ".join(circle) + "\n")
    assert text.count(" imports ") == len(circle) - 1  # each arrow, with its file and line


def test_no_circle_where_there_is_none(tmp_path: Path):
    write_package(tmp_path, {
        "pkg/__init__.py": "VERSION = '1'\n",
        "pkg/a.py": "import os\nfrom pkg import VERSION\nfrom . import b\n",
        "pkg/b.py": "def f():\n    from .c import g\n",
        "pkg/c.py": "import pkg.d as d\n",
        "pkg/d.py": "from os import path\n",
    })
    g = graph(tmp_path, "pkg")
    assert g == {"pkg": {}, "pkg.a": {"pkg": 2, "pkg.b": 3}, "pkg.b": {"pkg.c": 2},
                 "pkg.c": {"pkg.d": 1}, "pkg.d": {}}
    assert circles(g) == []


def test_two_circles_are_both_named(tmp_path: Path):
    write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from . import b\n", "pkg/b.py": "from . import a\n",
        "pkg/c.py": "from .d import x\n", "pkg/d.py": "from .c import y\n",
    })
    assert circles(graph(tmp_path, "pkg")) == [["pkg.a", "pkg.b", "pkg.a"],
                                               ["pkg.c", "pkg.d", "pkg.c"]]


def test_every_arrow_of_a_group_is_named(tmp_path: Path):
    """Four modules tied by more than one circle (as runner, artifacts, role and config
    were): the shortest circle is named, and every import that ties the group."""
    write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/runner.py": "from . import artifacts\nfrom .role import R\nfrom .config import c\n",
        "pkg/artifacts.py": "from .runner import HostRun\n",
        "pkg/role.py": "from .runner import HostRun\n",
        "pkg/config.py": "from .role import load\n",
        "pkg/other.py": "from .runner import run\n",
    })
    g = graph(tmp_path, "pkg")
    [circle] = circles(g)
    assert circle == ["pkg.artifacts", "pkg.runner", "pkg.artifacts"]
    assert describe(g, tmp_path, tangles(g)[0]).splitlines() == [
        "pkg.artifacts -> pkg.runner -> pkg.artifacts",
        "  pkg/artifacts.py:1 imports pkg.runner",
        "  pkg/config.py:1 imports pkg.role",
        "  pkg/role.py:1 imports pkg.runner",
        "  pkg/runner.py:1 imports pkg.artifacts",
        "  pkg/runner.py:3 imports pkg.config",
        "  pkg/runner.py:2 imports pkg.role",
    ]
