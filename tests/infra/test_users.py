"""Every inventory user, the wheel group and its sudo rule are what the inventory says."""

from __future__ import annotations

import pytest

from roles import _common
from roles.wheel import SUDOERS


def _user(hv: dict, username: str) -> dict:
    for u in _common.users(hv):
        if u["name"] == username:
            return u
    pytest.fail(f"{username} is not an inventory user of this host")


def test_user(host, hv, username):
    u = _user(hv, username)
    user = host.user(username)
    if u["state"] == "absent":
        assert not user.exists, f"{username}: expected absent, found the account"
        return
    assert user.exists, f"{username}: expected an account, found none"
    if u["uid_given"]:
        assert user.uid == u["uid"], f"{username}: uid expected {u['uid']}, found {user.uid}"
    assert user.shell == u["shell"], f"{username}: shell expected {u['shell']}, found {user.shell}"
    home = host.file(user.home)
    assert home.is_directory, f"{username}: home {user.home} missing"
    assert home.user == username, f"{username}: home owner expected {username}, found {home.user}"
    want_mode = int(hv["users_home_mode"], 8)
    assert home.mode == want_mode, (f"{username}: home mode expected {want_mode:04o}, found "
                                    f"{home.mode:04o}")
    groups = set(user.groups)
    want = set(u["groups"])
    if u["state"] == "present":
        want.add(hv["users_hub_group"])
    assert want <= groups, (f"{username}: groups expected to include {sorted(want)}, found "
                            f"{sorted(groups)}")
    in_wheel = hv["wheel_group"] in groups
    should = u["admin"] and u["state"] == "present"
    assert in_wheel == should, (f"{username}: {'expected' if should else 'not expected'} in "
                                f"{hv['wheel_group']}, found groups {sorted(groups)}")
    expire = host.run(f"chage -l {username}").stdout
    locked = "Account expires\t\t\t\t\t: Jan 02, 1970" in expire
    assert locked == (u["state"] == "locked"), (
        f"{username}: expected {'locked' if u['state'] == 'locked' else 'unlocked'}, found "
        f"{'locked' if locked else 'unlocked'}")
    if u["authorized_keys"] is not None:
        keys = host.file(f"{user.home}/.ssh/authorized_keys")
        assert keys.mode == 0o600 and keys.user == username
        want_keys = "".join(k.strip() + "\n" for k in u["authorized_keys"])
        assert keys.content_string == want_keys, f"{username}: authorized_keys differ"


def test_wheel_group(host, hv):
    group = host.group(hv["wheel_group"])
    assert group.exists, f"group {hv['wheel_group']} missing (logins would fail with 500)"


def test_sudoers_rule(host, hv):
    f = host.file(SUDOERS)
    if not hv["wheel_sudo"]:
        assert not f.exists, f"{SUDOERS} should not exist (wheel_sudo: false)"
        return
    assert f.exists, f"{SUDOERS} missing"
    assert (f.user, f.group, f.mode) == ("root", "root", 0o440), (
        f"{SUDOERS}: expected root:root 0440, found {f.user}:{f.group} {f.mode:04o}")
    assert f"%{hv['wheel_group']} ALL=(ALL:ALL)" in f.content_string
    assert host.run(f"visudo -cqf {SUDOERS}").rc == 0, f"{SUDOERS} does not validate"
