"""provision_python_installer (issue 33): uv by default, pip as the fallback. The argv of
each (provision.installer), uv itself pinned in its own venv, and what every install must
still honour with uv: the pin set, the interrupted-install marker, drift repair, push."""

from __future__ import annotations

import pytest

from hostmodel import converged, fresh, inventory_vars
from provision import envs, installer
from roles._common import installer_facts, plan_installer
from provision.artifacts import HOST_DIR, localize
from provision.config import validate_host
from provision.facts import Facts, VenvFact
from provision.inventory import Host
from provision.installer import UV, UV_CACHE, UV_HOME, UV_VERSION
from provision.steps import Command, Push, Upload, pip_constraints_path, plan_pip
from roles import jupyterhub, userenv
from test_roles import argvs, by_name, changes, names, plan_role

USER_VENV = "/opt/jupyterhub-user"


def _facts(**kw) -> Facts:
    empty = dict(users={}, groups={}, files={}, packages={}, venvs={}, units={}, shadow={},
                 reads={}, os={}, python="3.11", euid=0)
    return Facts(**{**empty, **kw})


def test_uv_is_the_default_and_another_installer_is_refused():
    assert inventory_vars()["provision_python_installer"] == "uv"
    from hostmodel import ROLES, VARIABLES

    v = inventory_vars() | {"provision_python_installer": "conda"}
    (problem,) = validate_host(Host("lab1", vars=v), VARIABLES, ROLES)
    assert "provision_python_installer" in problem and "uv" in problem and "pip" in problem


def test_uv_reads_no_config_downloads_no_python_and_caches_in_roots_dir():
    argv = installer.install_argv("uv", "/opt/hub", "/opt/hub/c.txt")
    env = argv[:argv.index(UV)]
    assert env[0] == "env"
    assert {"UV_NO_CONFIG=1", "UV_PYTHON_DOWNLOADS=never", f"UV_CACHE_DIR={UV_CACHE}"} <= set(env)
    assert argv[argv.index("--python") + 1] == "/opt/hub/bin/python"
    assert "--compile-bytecode" in argv  # the venv is root's: users never write its .pyc
    assert argv[-2:] == ["-c", "/opt/hub/c.txt"]
    # a venv of the host's python3, named by path
    create = installer.create_argv("uv", "/usr/bin/python3", "/opt/hub")
    assert create[create.index("--python") + 1] == "/usr/bin/python3"
    assert create[:len(env)] == env


def test_pip_keeps_its_own_argv():
    assert installer.create_argv("pip", "/usr/bin/python3", "/opt/hub") == [
        "/usr/bin/python3", "-m", "venv", "--", "/opt/hub"]
    assert installer.install_argv("pip", "/opt/hub", None) == [
        "/opt/hub/bin/pip", "install", "--no-input", "--quiet", "--disable-pip-version-check"]


def test_uv_is_installed_pinned_by_pip_into_its_own_venv_with_a_root_only_cache():
    v = inventory_vars()
    tool, cache = plan_installer(v, fresh().facts(installer_facts(v)))
    assert argvs(tool) == [
        ["/usr/bin/python3", "-m", "venv", "--", UV_HOME],
        [f"{UV_HOME}/bin/pip", "install", "--no-input", "--quiet",
         "--disable-pip-version-check", "--", f"uv=={UV_VERSION}"]]
    assert cache.ops[0].argv == ["install", "-d", "-m", "0700", "-o", "root", "-g", "root",
                                 "--", UV_CACHE]


def test_uv_of_another_version_is_put_back():
    v = inventory_vars()
    host = converged(v)
    assert not changes(plan_installer(v, host.facts(installer_facts(v))))
    host.venvs[UV_HOME] = ["pip-23.0.1.dist-info", "uv-0.1.0.dist-info"]
    (tool,) = [a for a in plan_installer(v, host.facts(installer_facts(v))) if a.changed]
    assert tool.diff == f"~ uv 0.1.0 -> {UV_VERSION}"
    assert argvs(tool)[-1][-1] == f"uv=={UV_VERSION}"


def test_with_pip_there_is_no_uv_at_all():
    v = inventory_vars(provision_python_installer="pip")
    assert plan_installer(v, fresh().facts(installer_facts(v))) == []
    actions = plan_role("jupyterhub", v, fresh())
    assert not [n for n in names(actions) if n.startswith("uv ")]
    pip = by_name(actions, "jupyterhub packages")
    env = jupyterhub.hub_env(v)
    assert argvs(pip)[0] == ["/usr/bin/python3", "-m", "venv", "--", env]
    assert argvs(pip)[1][:5] == [f"{env}/bin/pip", "install", "--no-input", "--quiet",
                                 "--disable-pip-version-check"]
    assert "pip" not in argvs(pip)[1][argvs(pip)[1].index("--"):]  # ensurepip's own


@pytest.mark.parametrize("which", ["pip", "uv"])
def test_either_installer_converges_to_the_same_pin_set_and_then_changes_nothing(which):
    v = inventory_vars(provision_python_installer=which)
    host = converged(v)
    for name in ("nodejs", "jupyterhub", "userenv"):
        assert not changes(plan_role(name, v, host)), name
    env = host.real(USER_VENV)
    assert env == userenv.user_env(v)
    held = host.files[pip_constraints_path(env)]["content"].decode()
    assert "\njupyterlab==4.6.6\n" in held
    assert any(d.startswith("pip-") for d in host.venvs[env])  # users' own pip


def test_a_venv_uv_made_without_pip_gets_pip_not_ensurepip():
    have = VenvFact(True, {"six": "1.17.0"}, "3.11")
    act = plan_pip(_facts(venvs={"/opt/x": have}), "/opt/x", ["six==1.17.0"], installer="uv")
    assert argvs(act) == [[*installer.install_argv("uv", "/opt/x", None), "--", "pip"]]
    with_pip = VenvFact(True, {"six": "1.17.0", "pip": "25.3"}, "3.11")
    assert not plan_pip(_facts(venvs={"/opt/x": with_pip}), "/opt/x", ["six==1.17.0"],
                        installer="uv").changed
    # pip's own venvs still get ensurepip back (python3 -m venv cut short)
    act = plan_pip(_facts(venvs={"/opt/x": have}), "/opt/x", ["six==1.17.0"], installer="pip")
    assert argvs(act) == [["/opt/x/bin/python", "-m", "ensurepip", "--default-pip"]]


def test_a_drifted_dependency_is_put_back_by_uv():
    v = inventory_vars()
    host = converged(v)
    host.venvs[host.real(USER_VENV)].append("tornado-1.0.dist-info")
    pip = by_name(plan_role("userenv", v, host), "users' packages")
    (install,) = argvs(pip)
    assert install[:install.index("--")] == installer.install_argv(
        "uv", USER_VENV, pip_constraints_path(USER_VENV))
    assert install[-1].startswith("tornado==") and install[-1] != "tornado==1.0"


def test_an_interrupted_uv_install_is_thrown_away_and_redone():
    # the users' environment of 5.5.4's pin set in use, 6.1.1's cut short: uv venv ran,
    # its install did not finish (no marker)
    host = converged(inventory_vars(jupyterhub_version="5.5.4"))
    bumped = inventory_vars()
    target = userenv.user_env(bumped)
    host.venvs[target] = []
    build = next(a for a in plan_role("userenv", bumped, host) if "new environment" in a.name)
    assert "an unfinished install there is removed first" in build.diff
    cmds = argvs(build)
    assert cmds[0] == ["rm", "-rf", "--", target]
    assert cmds[1] == installer.create_argv("uv", "/usr/bin/python3", target)
    assert cmds[2][:cmds[2].index("--")] == installer.install_argv(
        "uv", target, pip_constraints_path(target))
    assert cmds[3][:3] == ["python3", "-c", envs.RELINK]  # scripts name the stable path
    marker = build.ops[-1]
    assert isinstance(marker, Upload) and marker.path == f"{target}/{envs.COMPLETE}"


def test_push_installs_uv_and_then_everything_from_the_pushed_wheels_only():
    v = inventory_vars()
    tool, _ = plan_installer(v, fresh().facts(installer_facts(v)))
    tool = localize(tool)
    push = next(op for op in tool.ops if isinstance(op, Push))
    assert push.fetch.items == (f"uv=={UV_VERSION}",)
    pip = tool.ops[-1]
    assert pip.argv[:5] == [f"{UV_HOME}/bin/pip", "install", "--no-index", "--find-links",
                            f"{HOST_DIR}/wheels"]
    hub = localize(by_name(plan_role("jupyterhub", v, fresh()), "jupyterhub packages"))
    push = next(op for op in hub.ops if isinstance(op, Push))
    assert "pip" in push.fetch.items and "jupyterhub==6.1.1" in push.fetch.items
    (install,) = [op.argv for op in hub.ops if isinstance(op, Command) and UV in op.argv
                  and "install" in op.argv]
    i = install.index("install")
    assert install[i - 1:i + 4] == ["pip", "install", "--no-index", "--find-links",
                                    f"{HOST_DIR}/wheels"]
    assert "-c" in install and not any(isinstance(op, Command) and op.fetch for op in hub.ops)
