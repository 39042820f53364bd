"""Unit tests of the command lines and API requests the lab builds (nothing is run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.lab import config, host, slirp, ssh


def test_hostfwd_request_listens_on_loopback_only() -> None:
    assert slirp.hostfwd_request(22201, 22) == {
        "execute": "add_hostfwd",
        "arguments": {
            "proto": "tcp",
            "host_addr": "127.0.0.1",
            "host_port": 22201,
            "guest_port": 22,
        },
    }


def test_slirp_argv_isolates_the_host() -> None:
    argv = slirp.argv("lab1", Path("/r/.lab/hosts/lab1/slirp.sock"))
    assert argv[:3] == ["unshare", "--mount", "--propagation=slave"]
    assert "--disable-host-loopback" in argv
    assert argv[-3:] == ["--netns-type=path", "/run/netns/lab1", "tap0"]


def test_shared_home_binds_one_directory_over_home(tmp_path: Path, monkeypatch) -> None:
    shared = tmp_path / "shared-home"
    monkeypatch.setattr(host.config, "SHARED_HOME_DIR", shared)
    plain = host._nspawn_argv("lab2", Path("/r/.lab/hosts/lab2"))
    assert not any(a.startswith("--bind") for a in plain)
    argv = host._nspawn_argv("lab2", Path("/r/.lab/hosts/lab2"), shared_home=True)
    assert f"--bind={shared}:/home" in argv


def test_hosts_get_a_freezer_subtree_of_their_own() -> None:
    # slurmd puts each job in a freezer cgroup (proctrack/cgroup): a host must get its own
    # subtree there, like memory and cpu, and it is made writable after boot.
    from provision.lab import ssh, system

    assert "freezer" in system.RESOURCE_CONTROLLERS
    assert " freezer; do" in ssh._DELEGATE


def test_nspawn_argv_boots_without_host_systemd() -> None:
    argv = host._nspawn_argv("lab2", Path("/r/.lab/hosts/lab2"))
    assert argv[0] == "systemd-nspawn"
    for flag in (
        "--boot",
        "--register=no",
        "--keep-unit",
        "--network-namespace-path=/run/netns/lab2",
        "--resolv-conf=off",
        "--directory=/r/.lab/hosts/lab2/merged",
        "--machine=lab2",
    ):
        assert flag in argv


def test_ssh_argv_checks_host_keys_strictly() -> None:
    argv = ssh.ssh_argv(22201)
    assert "StrictHostKeyChecking=yes" in argv
    assert f"UserKnownHostsFile={config.KNOWN_HOSTS_FILE}" in argv
    assert "GlobalKnownHostsFile=/dev/null" in argv
    assert argv[-1] == "root@127.0.0.1"
    assert not any("StrictHostKeyChecking=no" in arg for arg in argv)


def test_remote_command_quotes_lists() -> None:
    assert ssh.remote_command("echo $HOME") == "echo $HOME"
    assert ssh.remote_command(["echo", "a b", "$HOME"]) == "echo 'a b' '$HOME'"


def test_down_hosts_names_the_hosts_to_take_down() -> None:
    from provision.lab.tasks import host_names

    assert host_names(None, ["lab1", "lab2"]) is None  # every host
    assert host_names("lab1", ["lab1", "lab2"]) == ["lab1"]
    assert host_names(" lab2 , lab1,lab2", ["lab1", "lab2"]) == ["lab2", "lab1"]


@pytest.mark.parametrize(("value", "why"), [
    ("", "empty"), (",", "empty"), ("web1", "not a lab host name"),
    ("lab0", "not a lab host name"), ("lab100", "from 1 to"), ("lab3", "the lab has no lab3"),
])
def test_down_hosts_refuses_before_taking_anything_down(value: str, why: str) -> None:
    from invoke.exceptions import Exit

    from provision.lab.tasks import host_names

    with pytest.raises(Exit) as exc:
        host_names(value, ["lab1", "lab2"])
    assert exc.value.code == 2 and why in str(exc.value.message)
