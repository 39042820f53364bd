"""Pin sets (issue 14, part 1): the shipped files, and how plan_pip uses them."""

from __future__ import annotations

import pytest

from hostmodel import converged, fresh, inventory_vars
from provision import pins
from provision.steps import Upload, pip_constraints_path
from roles import jupyterhub, userenv
from test_roles import argvs, by_name, plan_role

HUB_VENV, USER_VENV = "/opt/jupyterhub", "/opt/jupyterhub-user"


@pytest.mark.parametrize("release", pins.releases())
def test_a_shipped_pin_set_holds_every_pinned_requirement_of_its_release(release):
    """The roles' own pins (their variables' defaults) are the set's: a default changed
    without `invoke constraints` fails here, not on a host."""
    _, pinned = pins.load(release)
    v = inventory_vars(jupyterhub_version=release)
    for req in jupyterhub.requirements(v) + userenv.requirements(v):
        name, version = pins.LINE_RE.fullmatch(req).groups() if "==" in req else (req, None)
        key = pins.normalize_dist(name)
        assert key in pinned, f"{release}: {name} is not in the pin set"
        if version:
            assert pinned[key] == version, f"{release}: {name} {version} vs {pinned[key]}"
    assert pins.check_release(v) == []


def test_releases_are_this_one_and_the_previous_major():
    assert {"5.5.4", "6.1.1"} <= set(pins.releases())


def test_a_release_without_a_pin_set_is_refused_naming_the_key():
    (problem,) = pins.check_release(inventory_vars() | {"jupyterhub_version": "6.0.0"})
    assert problem[0] == "jupyterhub_version"
    assert "no pin set ships for JupyterHub 6.0.0" in problem[1] and "6.1.1" in problem[1]


def test_an_own_version_that_is_not_the_sets_is_refused():
    v = inventory_vars() | {"jupyterlab_version": "4.0.0"}
    (problem,) = jupyterhub.check(v)
    assert problem[0] == "jupyterlab_version" and "pin set's jupyterlab" in problem[1]


def test_a_fresh_venv_gets_the_pin_set_and_every_install_is_constrained_by_it():
    v = inventory_vars()
    pip = by_name(plan_role("jupyterhub", v, fresh()), "jupyterhub packages")
    env = jupyterhub.hub_env(v)
    upload = next(op for op in pip.ops if isinstance(op, Upload))
    assert upload.path == pip_constraints_path(env)
    assert upload.content.decode() == pins.load("6.1.1")[0]
    (install,) = [a for a in argvs(pip) if "install" in a]
    i = install.index("-c")
    assert install[i:i + 2] == ["-c", pip_constraints_path(env)] and i < install.index("--")


def test_a_dependency_that_drifted_from_the_set_is_put_back():
    v = inventory_vars()
    host = converged(v)
    _, pinned = pins.load("6.1.1")
    # a dependency installed at another version (a week-later install, or by hand)
    host.venvs[host.real(USER_VENV)].append("tornado-1.0.dist-info")
    pip = by_name(plan_role("userenv", v, host), "users' packages")
    assert f"~ tornado 1.0 -> {pinned['tornado']} (pin set)" in pip.diff
    (install,) = argvs(pip)
    assert install[-1] == f"tornado=={pinned['tornado']}"


def test_a_converged_venv_is_left_alone():
    v = inventory_vars()
    assert not by_name(plan_role("userenv", v, converged(v)), "users' packages").changed


def test_a_courses_own_pin_replaces_the_sets_in_the_uploaded_constraints():
    v = inventory_vars(jupyterhub_user_packages=["jsonschema==4.26.0"])
    pip = by_name(plan_role("userenv", v, fresh()), "users' packages")
    upload = next(op for op in pip.ops if isinstance(op, Upload))
    text = upload.content.decode()
    assert "\njsonschema==" not in text and "\ntornado==" in text
    (install,) = [a for a in argvs(pip) if "install" in a]
    assert "jsonschema==4.26.0" in install


def test_parse_refuses_what_is_not_a_pin():
    with pytest.raises(ValueError, match="not a pin"):
        pins.parse("tornado>=6\n")
    assert pins.parse("# comment\n\nJupyter_Server==2.1.0  # x\n") == {"jupyter-server": "2.1.0"}


def test_the_collector_reads_the_pin_set_where_plan_pip_keeps_it(tmp_path):
    from provision.remote import collect

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    held = pip_constraints_path(str(venv))
    with open(held, "w") as fh:
        fh.write("tornado==6.5\n")
    assert collect.venv_fact(str(venv))["constraints"] == "tornado==6.5\n"
