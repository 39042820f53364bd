"""Ansible INI inventories and host ranges."""

from __future__ import annotations

from provision.inventory import Inventory
from provision.inventory_ini import expand_range

SITE = """\
# site inventory
[classroom]
lab[01:02] ansible_port=2222
gpu[a:b] ntp_servers="a b"   ; foreign variable

[classroom:vars]
jupyterhub_port=8001
course_term=fall

[site:children]
classroom
"""


def test_ranges():
    assert expand_range("lab[1:3]") == ["lab1", "lab2", "lab3"]
    assert expand_range("lab[01:02]") == ["lab01", "lab02"]
    assert expand_range("n[a:c]") == ["na", "nb", "nc"]


def test_ini_site(tmp_path):
    (tmp_path / "hosts").write_text(SITE)
    inv = Inventory(tmp_path)
    assert inv.hosts == ["gpua", "gpub", "lab01", "lab02"]
    host = inv.resolve("lab01", {})
    assert host.vars["ansible_port"] == 2222
    assert host.vars["jupyterhub_port"] == 8001
    assert inv.groups_of("gpua") == ["all", "site", "classroom"]
    assert inv.resolve("gpua", {}).vars["ntp_servers"] == "a b"
