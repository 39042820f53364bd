"""The role contract: order from declarations, handlers and notifies checked when the roles
load, per-role fact views, and the import rules (no role imports another; the engine never
imports a role)."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import textwrap
from pathlib import Path

import pytest

from fakeconfig import exec_config
from hostmodel import converged, inventory_vars
from provision.config import REPO
from provision.facts import FactRequest, UnrequestedFact
from provision.role import Registry, RoleError, registry
from provision.runner import pending_marker
from roles import jupyterhub, proxy
from roles._common import HEALTH_SCRIPT
from test_runner import GATHER, Lab


# ---------------------------------------------------------------- the registry, real roles
def test_order_is_computed_from_the_declarations():
    assert registry().names == ["users", "backup_server", "otp", "wheel", "nodejs", "proxy",
                                "jupyterhub", "apache", "backup", "culler", "shared",
                                "spawner", "userenv"]
    order = registry().names
    for role in registry().roles:
        for dep in (*getattr(role, "AFTER", ()), *getattr(role, "REQUIRES", ())):
            assert order.index(dep) < order.index(role.NAME), (role.NAME, dep)


def test_every_notify_a_role_plans_is_a_declared_handler():
    v = inventory_vars(jupyterhub_notebook_dir="~/nb", jupyterhub_shared_dir="/srv/data")
    reg = registry()
    for state in (converged(v), __import__("hostmodel").fresh()):
        facts = state.facts(state.everything().merge(_request(v)))
        for role in reg.roles:
            if role.NAME == "apache" or not hasattr(role, "plan"):
                continue
            for action in role.plan(v, facts.restrict(role.facts(v))):
                assert set(action.notify) <= reg.may_notify(role), (role.NAME, action.name)


def _request(v):
    req = FactRequest()
    for role in registry().roles:
        if hasattr(role, "facts"):
            req.merge(role.facts(v))
    return req


# ------------------------------------------------------------- the registry, bad packages
def make_package(tmp_path: Path, name: str, modules: dict[str, str]) -> str:
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for mod, body in modules.items():  # "b/site": module site of the package b
        (pkg / f"{mod}.py").parent.mkdir(exist_ok=True)
        (pkg / f"{mod}.py").write_text(textwrap.dedent(body))
    sys.path.insert(0, str(tmp_path))
    return name


ROLE = """
from provision.role import Handler
NAME = {name!r}
VARIABLES = []
{extra}
def facts(v):
    from provision.facts import FactRequest
    return FactRequest()
def plan(v, facts):
    return []
"""


def role_src(name: str, extra: str = "") -> str:
    return ROLE.format(name=name, extra=extra)


@pytest.fixture
def pkg(tmp_path, monkeypatch):
    made = []

    def make(modules: dict[str, str]) -> str:
        name = f"fakeroles{len(made)}_{tmp_path.name.replace('-', '_')}"
        made.append(make_package(tmp_path, name, modules))
        return name

    yield make
    for name in made:
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[mod]
    sys.path.remove(str(tmp_path)) if str(tmp_path) in sys.path else None


def test_helpers_are_not_roles_and_ties_break_by_name(pkg):
    name = pkg({"b": role_src("b"), "a": role_src("a"), "c": role_src("c", "AFTER = ('b',)"),
                "_helper": "X = 1\n"})
    assert Registry(name).names == ["a", "b", "c"]


def test_a_cycle_is_refused_when_the_roles_load(pkg):
    name = pkg({"a": role_src("a", "AFTER = ('b',)"), "b": role_src("b", "REQUIRES = ('a',)")})
    with pytest.raises(RoleError, match="roles a, b: their AFTER/REQUIRES form a cycle"):
        Registry(name)


def test_an_unknown_role_name_is_refused(pkg):
    name = pkg({"a": role_src("a", "AFTER = ('userz',)")})
    with pytest.raises(RoleError, match="role a: AFTER/REQUIRES names no role userz"):
        Registry(name)


def test_an_unknown_notify_is_refused(pkg):
    name = pkg({"a": role_src("a", "HANDLERS = [Handler('restart a', print)]\n"
                                   "NOTIFIES = ('restart b',)")})
    with pytest.raises(RoleError, match="NOTIFIES 'restart b', which no role handles"):
        Registry(name)


def test_one_handler_name_belongs_to_one_role(pkg):
    name = pkg({"a": role_src("a", "HANDLERS = [Handler('h', print)]"),
                "b": role_src("b", "HANDLERS = [Handler('h', print)]")})
    with pytest.raises(RoleError, match="declared by roles a and b"):
        Registry(name)


def test_a_role_may_be_a_package_whose_init_holds_the_contract(pkg):
    name = pkg({"a": role_src("a"),
                "b/__init__": role_src("b", "AFTER = ('a',)\nfrom .site import SITE"),
                "b/site": "SITE = 'x'\n",
                "b/c": role_src("c"),  # a submodule is the package's own, never a role
                "_helpers/__init__": "", "_helpers/d": role_src("d")})
    reg = Registry(name)
    assert reg.names == ["a", "b"]
    assert reg.roles[1].__name__ == f"{name}.b" and reg.roles[1].SITE == "x"


def test_a_packages_contract_is_its_init(pkg):
    with pytest.raises(RoleError, match=r"\.b: a role needs NAME"):
        Registry(pkg({"b/__init__": "", "b/site": role_src("b")}))


def test_a_folder_of_modules_without_init_is_refused_not_skipped(pkg):
    with pytest.raises(RoleError, match=r"\.b: a folder of modules without __init__.py"):
        Registry(pkg({"a": role_src("a"), "b/site": role_src("b")}))
    assert Registry(pkg({"a": role_src("a"), "_b/site": "X = 1\n"})).names == ["a"]


@pytest.mark.parametrize("modules, message", [
    ({"a": role_src("a"), "b/__init__": role_src("a")}, "are both role a"),
    ({"a": role_src("a", "AFTER = ('b',)"), "b/__init__": role_src("b", "AFTER = ('a',)")},
     "roles a, b: their AFTER/REQUIRES form a cycle"),
    ({"b/__init__": role_src("b", "NOTIFIES = ('restart x',)")}, "NOTIFIES 'restart x'"),
    ({"b/__init__": "NAME = 'b'\nVARIABLES = []\n"}, "has neither plan"),
])
def test_a_package_role_is_refused_like_a_module(pkg, modules, message):
    with pytest.raises(RoleError, match=re.escape(message)):
        Registry(pkg(modules))


# ----------------------------------------------------------------- handlers: proxy and hub
def restarts(lab: Lab) -> list[str]:
    return [a[3] for a in lab.argvs("lab1") if a[:2] == ["systemctl", "restart"]]


def test_proxy_restart_puts_the_running_hubs_routes_back_without_restarting_it(monkeypatch):
    monkeypatch.setenv("JHPROVISION_API_TOKEN", "t0ken")  # as the hub's unit gives it
    v = inventory_vars()
    host = converged(v)
    host.add_file(pending_marker(proxy.HANDLER), "")
    lab = Lab({"lab1": host}, v)
    rep = lab.run().hosts["lab1"]
    assert not rep.failed, rep.error
    assert rep.handlers == [proxy.HANDLER]
    assert restarts(lab) == [proxy.UNIT]
    argvs = lab.argvs("lab1")
    sync = next(i for i, a in enumerate(argvs) if a[:3] == ["python3", "-c", proxy.SYNC_ROUTES])
    assert argvs[sync][3:] == ["http://127.0.0.1:8081/hub/api", jupyterhub.API_ENV_FILE,
                               "JHPROVISION_API_TOKEN"]
    assert sync > argvs.index(["systemctl", "restart", "--", proxy.UNIT])
    # proven through the proxy's public side, the hub's unit watched meanwhile
    check = argvs[sync + 1]
    assert check[2] == HEALTH_SCRIPT and check[3:5] == [jupyterhub.UNIT,
                                                        "http://127.0.0.1:8000/hub/api"]
    # the service asking may do it: the proxy role grants it the scope
    assert {"name": "jhprovision-proxy", "scopes": ["proxy"], "services": ["jhprovision"]} \
        in exec_config(jupyterhub.render_config(v))["JupyterHub"]["load_roles"]


def test_proxy_restart_leaves_a_stopped_hub_stopped():
    v = inventory_vars()
    host = converged(v)
    host.add_file(pending_marker(proxy.HANDLER), "")
    inactive = ["systemctl", "is-active", "--quiet", "--", jupyterhub.UNIT]
    lab = Lab({"lab1": host}, v, fail={"lab1": lambda a: (3, "", "") if a == inactive else None})
    rep = lab.run().hosts["lab1"]
    assert rep.handlers == [proxy.HANDLER]
    assert restarts(lab) == [proxy.UNIT]
    assert not any(a[2:3] == [proxy.SYNC_ROUTES] for a in lab.argvs("lab1"))


def test_a_hub_restarting_anyway_re_adds_its_routes_itself():
    v = inventory_vars()
    host = converged(v)
    host.add_file(pending_marker(proxy.HANDLER), "")
    host.add_file(pending_marker(jupyterhub.HANDLER), "")
    lab = Lab({"lab1": host}, v)
    rep = lab.run().hosts["lab1"]
    assert rep.handlers == [proxy.HANDLER, jupyterhub.HANDLER]
    assert restarts(lab) == [proxy.UNIT, jupyterhub.UNIT]
    assert not any(a[2:3] == [proxy.SYNC_ROUTES] for a in lab.argvs("lab1"))


def test_routes_that_do_not_come_back_fail_the_host():
    v = inventory_vars()
    host = converged(v)
    host.add_file(pending_marker(proxy.HANDLER), "")
    refused = (1, "", "urllib.error.HTTPError: HTTP Error 403: Forbidden\n")
    lab = Lab({"lab1": host}, v, fail={"lab1": lambda a: refused
                                       if a[2:3] == [proxy.SYNC_ROUTES] else None})
    rep = lab.run().hosts["lab1"]
    (step,) = [s for s in rep.steps if s.status == "failed"]
    assert step.error["message"] == ("the proxy restarted, but the hub's routes did not come "
                                     "back: urllib.error.HTTPError: HTTP Error 403: Forbidden")


def test_an_undeclared_notify_fails_the_host_before_anything_runs(monkeypatch):
    from roles import wheel

    v = inventory_vars(wheel_group="admins")
    host = converged(inventory_vars())
    real = wheel.plan

    def plan(v, facts):
        actions = real(v, facts)
        actions[0].notify = ("restart jupyterhub",)
        return actions

    monkeypatch.setattr(wheel, "plan", plan)
    lab = Lab({"lab1": host}, v)
    rep = lab.run().hosts["lab1"]
    assert rep.failed
    assert "role wheel: step 'group admins' notifies restart jupyterhub, which the role " \
           "does not declare" in rep.error
    assert lab.argvs("lab1") == [GATHER]


# ----------------------------------------------------------------------- per-role facts
def test_a_role_reading_a_fact_it_did_not_request_fails_naming_it():
    v = inventory_vars()
    host = converged(v)
    facts = host.facts(host.everything()).restrict(FactRequest(files={"/etc/jupyterhub"}))
    assert facts.file("/etc/jupyterhub").exists
    with pytest.raises(UnrequestedFact, match="file '/etc/sudoers.d/jhprovision-wheel' was "
                       "read but not requested"):
        facts.file("/etc/sudoers.d/jhprovision-wheel")
    with pytest.raises(UnrequestedFact, match="unit 'jupyterhub.service'"):
        facts.unit(jupyterhub.UNIT)
    with pytest.raises(UnrequestedFact, match="venv '/opt/jupyterhub'"):
        facts.venv("/opt/jupyterhub")


def test_a_home_path_is_requested_by_its_real_path_or_the_future_one():
    v = inventory_vars()
    host = converged(v)
    req = FactRequest(files={"~alice/.ssh", "~zed/.ssh"})
    facts = host.facts(req).restrict(req)
    assert facts.file("/home/alice/.ssh") is not None
    assert not facts.file("/home/zed/.ssh").exists  # no account yet: useradd's default
    with pytest.raises(UnrequestedFact):
        facts.file("/home/bob/.ssh")


# ------------------------------------------------------------------------- import rules
def module_name(path: Path, root: Path) -> str:
    """``roles/apache/site.py`` -> ``roles.apache.site`` (``__init__.py``: the package)."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved (a ``from X import n``
    counts as ``X`` and ``X.n``: ``n`` may be a submodule)."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""),
                                               package) if node.level else node.module
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def role_import_violations(root: Path, names: set[str]) -> list[str]:
    """Imports of another role by any module under ``root`` (the roles package), its
    packages' submodules included; a role package's modules may import each other."""
    out = []
    for path in sorted(root.rglob("*.py")):
        own = module_name(path, root).split(".")[1:2]
        for imported in sorted(imports_of(path, root)):
            parts = imported.split(".")
            if parts[0] == root.name and parts[1:2] and parts[1] in names \
                    and parts[1:2] != own:
                out.append(f"{path.relative_to(root.parent)} imports {imported}")
    return out


def test_no_role_imports_another_role():
    assert role_import_violations(REPO / "roles", set(registry().names)) == []


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, body in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(body)
    return tmp_path / "roles"


@pytest.mark.parametrize("line", [
    "from roles.users import users", "from roles import users", "import roles.users",
    "from .. import users", "from ..users import users", "from ..users.x import y",
    "from roles.users.x import y",
])
def test_a_role_packages_submodule_importing_another_role_is_caught(tmp_path, line):
    root = tree(tmp_path, {"roles/__init__.py": "", "roles/users.py": "",
                           "roles/apache/__init__.py": "from . import site\n",
                           "roles/apache/site.py": line + "\n"})
    found = role_import_violations(root, {"apache", "users"})
    assert found and all(f.startswith("roles/apache/site.py imports roles.users")
                         for f in found), found


@pytest.mark.parametrize("line", [
    "from . import site, users", "from .site import SITE", "from .users import x",
    "from roles.apache import site", "from roles.apache.site import SITE",
    "import roles.apache.site", "from .._common import hub_urls", "from roles import _common",
])
def test_a_role_packages_submodules_may_import_each_other(tmp_path, line):
    root = tree(tmp_path, {"roles/__init__.py": "", "roles/users.py": "",
                           "roles/apache/__init__.py": line + "\n",
                           "roles/apache/site.py": line + "\n",
                           # a submodule may share a name with a role: it is the package's
                           "roles/apache/users.py": "X = 1\n"})
    assert role_import_violations(root, {"apache", "users"}) == []


def test_the_engine_never_imports_a_role():
    root = REPO / "provision"
    for path in sorted(root.rglob("*.py")):
        for imported in imports_of(path, root):
            assert not (imported == "roles" or imported.startswith("roles.")), \
                f"{path.relative_to(REPO)} imports {imported}"


def test_no_template_names_another_role():
    import re

    names = registry().names
    for folder in sorted(p for p in (REPO / "templates").iterdir() if p.is_dir()):
        others = [n for n in names if n != folder.name]
        alt = "|".join(others)
        pattern = re.compile(rf"\b(?:role ({alt})\b|({alt}) role\b)")
        for path in folder.rglob("*.j2"):
            found = pattern.search(path.read_text())
            assert not found, f"{path.relative_to(REPO)} names role {found.group(0)!r}"


@pytest.mark.parametrize("body, message", [
    ("VARIABLES = []\ndef hub(v): pass\n", "a role needs NAME"),
    ("NAME = 'a'\ndef hub(v): pass\n", "role a: VARIABLES must be a list"),
    ("NAME = 'a'\nVARIABLES = []\ndef plan(v, f): return []\n", "plan() and facts() go"),
    ("NAME = 'a'\nVARIABLES = []\n", "has neither plan() nor hub()"),
])
def test_a_module_that_breaks_the_contract_is_refused(pkg, body, message):
    with pytest.raises(RoleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Registry(pkg({"a": body}))


def test_two_modules_with_one_role_name_are_refused(pkg):
    with pytest.raises(RoleError, match="are both role a"):
        Registry(pkg({"a": role_src("a"), "b": role_src("a")}))


# ------------------------------------------------------------------ a contribution-only role
def test_the_culler_contributes_only_to_the_hub_and_costs_no_round_trip():
    from roles import culler

    assert not hasattr(culler, "plan") and not hasattr(culler, "facts")
    v = inventory_vars(jupyterhub_idle_timeout=0)
    assert "idle-culler" not in jupyterhub.render_config(v)
    assert not any(p.startswith("jupyterhub-idle-culler") for p in jupyterhub.requirements(v))
    lab = Lab({"lab1": converged(inventory_vars())})
    assert lab.run().hosts["lab1"].round_trips == 1


@pytest.mark.parametrize("key, value, message", [
    ("jupyterhub_idle_timeout", -1, "must be 0 (off) or a number of seconds"),
    ("jupyterhub_idle_max_age", -5, "must be 0 (off) or a number of seconds"),
    ("jupyterhub_idle_cull_every", 0, "must be at least 1 second"),
])
def test_culler_values_are_checked_before_connecting(key, value, message):
    with pytest.raises(AssertionError, match=f"{key}: {re.escape(message)}"):
        inventory_vars(**{key: value})


def test_a_role_declares_the_user_fields_it_adds():
    from roles import otp

    assert registry().user_fields == {"otp_secret": otp.USER_FIELDS["otp_secret"]}
    with pytest.raises(AssertionError, match=r"users\[0\].otp_secert: unknown user field "
                                             r"'otp_secert' \(did you mean 'otp_secret'\?\)"):
        inventory_vars(users=[{"name": "alice", "otp_secert": "JBSWY3DPEHPK3PXP"}])
