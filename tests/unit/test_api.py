"""provision.api pieces that need no host: picking a uid for add-user."""

from __future__ import annotations

import yaml

from provision.api import _next_uid
from provision.inventory import Inventory


def inventory(tmp_path, users, **group_vars):
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"h1": {}, "h2": {}}}}))
    (inv / "group_vars" / "all" / "users.yml").write_text(
        yaml.safe_dump({"users": users, **group_vars}))
    return Inventory(inv)


def test_next_uid_skips_uids_given_to_users_listed_without_one(tmp_path):
    # bob has no uid in the inventory: he gets 2000 on every host, so alice must not.
    inv = inventory(tmp_path, [{"name": "bob"}, {"name": "carol", "uid": 2001}])
    assert _next_uid(inv) == 2002


def test_next_uid_starts_at_users_uid_min(tmp_path):
    inv = inventory(tmp_path, [], users_uid_min=5000)
    assert _next_uid(inv) == 5000
