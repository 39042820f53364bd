"""The ssh_config `invoke verify` writes for testinfra: every inventory setting that says
how a host is reached, each value one word."""

from __future__ import annotations

import pytest

from provision.errors import ConfigError
from provision.inventory import Host
from provision.verify import ssh_config


def host(name: str = "lab1", **v) -> Host:
    return Host(name, vars=v)


def test_connection_settings_and_the_jump_host_are_written():
    text = ssh_config([host(ansible_host="10.0.0.5", ansible_port=2222, ansible_user="admin",
                            ansible_ssh_private_key_file="/keys/lab",
                            provision_known_hosts_file="/keys/known_hosts",
                            ansible_ssh_common_args="-o ProxyJump=ops@bastion:2200")])
    assert text.splitlines() == [
        "Host lab1", "  HostName 10.0.0.5", "  Port 2222", "  User admin",
        "  IdentityFile /keys/lab", "  IdentitiesOnly yes",
        "  UserKnownHostsFile /keys/known_hosts", "  ProxyJump ops@bastion:2200",
        "  StrictHostKeyChecking yes", "  BatchMode yes", "  ControlMaster auto",
        "  ControlPath /run/jhprovision-verify/%C", "  ControlPersist 60"]


def test_host_key_checking_off_only_when_the_inventory_says_so():
    assert "StrictHostKeyChecking no" in ssh_config([host(ansible_host_key_checking=False)])


@pytest.mark.parametrize("name, v, key", [
    ("lab1\nProxyCommand x", {}, "host name"),
    ("lab1", {"ansible_host": "10.0.0.5 -oProxyCommand=x"}, "ansible_host"),
    ("lab1", {"ansible_user": "root\n  ProxyCommand x"}, "ansible_user"),
    ("lab1", {"ansible_ssh_private_key_file": '/k"ey'}, "ansible_ssh_private_key_file"),
    ("lab1", {"provision_known_hosts_file": "/a#b"}, "provision_known_hosts_file"),
])
def test_a_value_that_is_not_one_word_is_refused(name, v, key):
    with pytest.raises(ConfigError, match=f"{key} .* cannot be written to an ssh_config"):
        ssh_config([host(name, **v)])
