"""The roles a lab needs to last a semester, planned against modelled hosts: per-user limits
(spawner), the users' own virtualenv (userenv), shared course data (shared)."""

from __future__ import annotations

import pytest

from hostmodel import ROLES, VARIABLES, converged, fresh, inventory_vars
from provision.config import load_run, validate_host
from provision.inventory import Host
from provision import installer, pins
from provision.steps import Command, pip_constraints_path
from roles import jupyterhub, shared, userenv
from test_roles import argvs, by_name, changes, names, plan_role


def problems(**overrides) -> list[str]:
    v = inventory_vars()
    v.update(overrides)
    return validate_host(Host("lab1", vars=v), VARIABLES, ROLES)


# --------------------------------------------------------------------------- spawner
@pytest.mark.parametrize(("overrides", "want"), [
    ({"jupyterhub_mem_limit": "1.5G"}, "jupyterhub_mem_limit: '1.5G' is not a memory size"),
    ({"jupyterhub_mem_limit": "2g"}, "jupyterhub_mem_limit: '2g' is not a memory size"),
    ({"jupyterhub_mem_limit": "64M"}, "jupyterhub_mem_limit: must be at least 128M"),
    ({"jupyterhub_mem_limit": True}, "jupyterhub_mem_limit: True is not a memory size"),
    ({"jupyterhub_cpu_limit": 0}, "jupyterhub_cpu_limit: 0 is not a number of cores"),
    ({"jupyterhub_cpu_limit": "2"}, "jupyterhub_cpu_limit: '2' is not a number of cores"),
    ({"jupyterhub_spawner": "local", "jupyterhub_mem_limit": "2G"},
     "jupyterhub_mem_limit: needs jupyterhub_spawner: systemd"),
    ({"jupyterhub_spawner": "docker"}, "jupyterhub_spawner: 'docker' is not one of"),
])
def test_bad_limits_are_refused_naming_the_key(overrides, want):
    found = problems(**overrides)
    assert any(p.startswith(f"(default): {want}") for p in found), found


def test_good_limits_pass():
    assert problems(jupyterhub_mem_limit="768M", jupyterhub_cpu_limit=1.5) == []
    assert problems(jupyterhub_mem_limit=2 << 30, jupyterhub_cpu_limit=2) == []


def test_the_hub_gets_the_spawner_package_and_a_limit_change_restarts_only_the_hub():
    before = inventory_vars()
    host = converged(before)
    v = inventory_vars(jupyterhub_mem_limit="2G")
    actions = plan_role("jupyterhub", v, host)
    changed = [a for a in actions if a.changed]
    assert names(changed) == ["file /etc/jupyterhub/jupyterhub_config.py"]
    assert "+c.SystemdSpawner.mem_limit = '2G'  # spawner" in changed[0].diff
    assert "'MemorySwapMax': '0'" in changed[0].diff
    assert changed[0].notify == (jupyterhub.HANDLER,)
    assert not changes(plan_role("userenv", v, host))  # users' servers: untouched


# --------------------------------------------------------------------------- userenv
def test_users_venv_holds_the_servers_packages_and_the_hubs_does_not():
    v = inventory_vars(jupyterhub_user_packages=["tabulate"])
    pip = by_name(plan_role("userenv", v, fresh()), "users' packages")
    env = userenv.user_env(v)  # /opt/jupyterhub-user links to it (provision.envs)
    assert env.startswith("/opt/jupyterhub-user.envs/")
    assert argvs(pip)[0] == installer.create_argv("uv", "/usr/bin/python3", env)
    (install,) = [a for a in argvs(pip) if "install" in a]
    ipykernel = pins.load("6.1.1")[1]["ipykernel"]  # unpinned here: the pin set's
    # pip too: users run it in their terminals (uv venv makes a venv without it)
    assert install[-7:] == ["jupyterhub==6.1.1", "jupyterlab==4.6.6", "notebook==7.6.5",
                            f"ipykernel=={ipykernel}", "jsonschema==4.24.1", "tabulate", "pip"]
    assert install[:install.index("--")] == installer.install_argv(
        "uv", env, pip_constraints_path(env))
    assert pip.notify == ()
    hub = jupyterhub.requirements(v)
    assert not [r for r in hub if r.startswith(("jupyterlab", "notebook", "tabulate"))]


def test_adding_a_users_package_installs_only_it_and_restarts_nothing():
    host = converged(inventory_vars(jupyterhub_user_packages=["tabulate"]))
    v = inventory_vars(jupyterhub_user_packages=["tabulate", "numpy==2.3.4"])
    actions = plan_role("userenv", v, host)
    pip = by_name(actions, "users' packages")
    assert argvs(pip) == [[*installer.install_argv("uv", "/opt/jupyterhub-user",
                                                   pip_constraints_path("/opt/jupyterhub-user")),
                           "--", "numpy==2.3.4"]]
    assert pip.diff == "+ numpy 2.3.4"
    assert all(a.notify == () for a in actions)
    assert not changes(plan_role("jupyterhub", v, host))


def test_a_users_own_jsonschema_pin_replaces_the_fast_start_one():
    v = inventory_vars(jupyterhub_user_packages=["jsonschema==4.26.0"])
    reqs = userenv.requirements(v)
    assert [r for r in reqs if r.startswith("jsonschema")] == ["jsonschema==4.26.0"]


def test_users_apt_packages_are_installed():
    v = inventory_vars(jupyterhub_user_apt_packages=["graphviz"])
    apt = by_name(plan_role("userenv", v, fresh()), "users' apt packages")
    assert argvs(apt)[-1][-2:] == ["--", "graphviz"]


def test_extra_packages_is_deprecated_with_a_notice_and_lands_in_the_users_venv(tmp_path):
    (tmp_path / "hosts.yml").write_text(
        "all:\n  hosts:\n    lab1: {}\n  vars:\n"
        "    jupyterhub_extra_packages: [tabulate]\n")
    cfg = load_run(tmp_path, "lab1")
    assert cfg.notices == [
        f"{tmp_path}/hosts.yml: jupyterhub_extra_packages: jupyterhub_extra_packages is "
        "deprecated: its packages now go into the users' virtualenv (jupyterhub_user_venv), "
        "not the hub's; rename it to jupyterhub_user_packages"]
    v = cfg.hosts[0].vars
    assert "tabulate" in userenv.requirements(v)
    assert "tabulate" not in jupyterhub.requirements(v)
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    lab1: {}\n")
    assert load_run(tmp_path, "lab1").notices == []


# ---------------------------------------------------------------------------- shared
SHARED = {"jupyterhub_shared_dir": "/srv/data", "jupyterhub_notebook_dir": "~/notebooks"}


def test_shared_dir_and_links_made_as_each_user():
    v = inventory_vars(**SHARED)
    actions = plan_role("shared", v, converged(inventory_vars(
        jupyterhub_notebook_dir="~/notebooks")))
    assert names(actions) == ["directory /srv/data", "link /home/alice/notebooks/shared",
                              "link /home/bob/notebooks/shared"]
    assert argvs(actions[0]) == [["install", "-d", "-m", "2775", "-o", "root", "-g", "wheel",
                                  "--", "/srv/data"]]
    assert argvs(actions[1]) == [["runuser", "-u", "alice", "--", "ln", "-sfn", "--",
                                  "/srv/data", "/home/alice/notebooks/shared"]]
    assert not changes(plan_role("shared", v, converged(v)))


@pytest.mark.parametrize("nb, links", [
    ("~/{username}", ["/home/alice/alice/shared", "/home/bob/bob/shared"]),
    ("~/work/{username}", ["/home/alice/work/alice/shared", "/home/bob/work/bob/shared"]),
    ("~", ["/home/alice/shared", "/home/bob/shared"]),
    ("/srv/nb", ["/home/alice/shared", "/home/bob/shared"]),  # one root for all: the home
])
def test_the_shared_link_is_in_each_users_own_notebook_root(nb, links):
    v = inventory_vars(jupyterhub_shared_dir="/srv/data", jupyterhub_notebook_dir=nb)
    actions = plan_role("shared", v, converged(inventory_vars(jupyterhub_notebook_dir=nb)))
    assert names(actions)[1:] == [f"link {p}" for p in links]
    assert [argvs(a)[0][-1] for a in actions[1:]] == links
    assert not changes(plan_role("shared", v, converged(v)))


def test_the_shared_link_in_an_absolute_per_user_root_waits_for_that_root():
    v = inventory_vars(jupyterhub_shared_dir="/srv/data",
                       jupyterhub_notebook_dir="/srv/nb/{username}")
    host = converged(inventory_vars())
    host.add_dir("/srv/nb")
    host.add_dir("/srv/nb/alice", mode="0750", owner="alice", group="alice")
    actions = plan_role("shared", v, host)
    alice = by_name(actions, "link /srv/nb/alice/shared")
    assert argvs(alice) == [["runuser", "-u", "alice", "--", "ln", "-sfn", "--", "/srv/data",
                             "/srv/nb/alice/shared"]]
    bob = by_name(actions, "link /srv/nb/bob/shared")  # no /srv/nb/bob yet: nothing run
    assert not bob.ops and "/srv/nb/bob does not exist" in bob.note
    host.add_dir("/srv/nb/bob", mode="0750", owner="bob", group="bob")
    assert not changes(plan_role("shared", v, converged(v, start=host)))


def test_a_users_own_file_at_the_link_name_is_left_alone_and_a_stale_link_is_fixed():
    v = inventory_vars(**SHARED)
    host = converged(v)
    host.add_dir("/home/alice/notebooks/shared", owner="alice", group="alice")
    host.files["/home/bob/notebooks/shared"]["target"] = "/srv/old"
    actions = plan_role("shared", v, host)
    alice = by_name(actions, "link /home/alice/notebooks/shared")
    assert not alice.ops and "left alone" in alice.diff
    bob = by_name(actions, "link /home/bob/notebooks/shared")
    assert argvs(bob) == [["runuser", "-u", "bob", "--", "ln", "-sfn", "--", "/srv/data",
                           "/home/bob/notebooks/shared"]]
    assert all(isinstance(op, Command) for op in bob.ops)


@pytest.mark.parametrize(("overrides", "want"), [
    ({"jupyterhub_shared_dir": "/home/alice/data"}, "jupyterhub_shared_dir: must not be in a "
     "home directory"),
    ({"jupyterhub_shared_dir": "/srv"}, "jupyterhub_shared_dir: "),
    ({"jupyterhub_shared_dir": "/tmp/course"}, "jupyterhub_shared_dir: must not be in a "
     "home directory or a world-writable one"),
    ({"jupyterhub_user_venv": "/var/tmp/venv"}, "jupyterhub_user_venv: must not be in a "
     "home directory or a world-writable one"),
    ({"jupyterhub_state_dir": "/home/alice/hub"}, "jupyterhub_state_dir: must not be in a "
     "home directory"),
    ({"jupyterhub_shared_dir": "/srv/data", "jupyterhub_shared_link": "../x"},
     "jupyterhub_shared_link: must be a plain file name"),
])
def test_bad_shared_settings_are_refused(overrides, want):
    found = problems(**overrides)
    assert any(p.startswith(f"(default): {want}") for p in found), found


def test_shared_is_off_by_default():
    v = inventory_vars()
    assert not shared.enabled(v) and shared.facts(v).files == set()


@pytest.mark.parametrize("key", ["jupyterhub_start_timeout", "jupyterhub_ready_timeout",
                                 "proxy_ready_timeout", "apache_ready_timeout"])
@pytest.mark.parametrize("value", [0, -5])
def test_a_timeout_must_be_positive(key, value):
    assert f"(default): {key}: {value} must be a positive number" in problems(**{key: value})
