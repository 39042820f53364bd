"""Unit tests of the lab's pure helpers: names, ports, inventory, known_hosts, cache key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provision.lab import config, render
from provision.lab.errors import LabError

KEY = Path("/work/main/.lab/id_ed25519")
KNOWN = Path("/work/main/.lab/known_hosts")
PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJqVxEpibrRiiyuYFJAG88H23IjGsuDXBXT8YE root@lab1\n"


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (1, {"ssh": 22201, "hub": 28001, "http": 28101, "https": 28201}),
        (2, {"ssh": 22202, "hub": 28002, "http": 28102, "https": 28202}),
        (99, {"ssh": 22299, "hub": 28099, "http": 28199, "https": 28299}),
    ],
)
def test_ports_for(index: int, expected: dict[str, int]) -> None:
    assert render.ports_for(index) == expected


def test_ports_never_collide_across_hosts() -> None:
    ports = [p for i in range(1, config.MAX_HOSTS + 1) for p in render.ports_for(i).values()]
    assert len(ports) == len(set(ports))


@pytest.mark.parametrize(
    ("role", "port"), [("ssh", 22), ("hub", 8000), ("http", 80), ("https", 443)]
)
def test_guest_port(role: str, port: int) -> None:
    assert render.guest_port(role) == port


@pytest.mark.parametrize("index", [0, -1, config.MAX_HOSTS + 1])
def test_ports_for_refuses_out_of_range(index: int) -> None:
    with pytest.raises(LabError, match="from 1 to"):
        render.ports_for(index)


@pytest.mark.parametrize(("name", "index"), [("lab1", 1), ("lab12", 12)])
def test_host_name_round_trip(name: str, index: int) -> None:
    assert render.host_index(name) == index
    assert render.host_name(index) == name


@pytest.mark.parametrize("name", ["lab", "lab0", "lab01", "web1", "lab1; rm -rf /", "LAB1"])
def test_host_index_refuses_other_names(name: str) -> None:
    with pytest.raises(LabError):
        render.host_index(name)


def test_hub_url() -> None:
    assert render.hub_url(render.ports_for(3)) == "http://127.0.0.1:28003/"


def test_inventory_exact_text_for_one_host() -> None:
    text = render.render_inventory([("lab1", render.ports_for(1))], KEY, KNOWN)
    assert text == (
        "# Written by `invoke lab.up`; deleted by `invoke lab.down`. Do not edit.\n"
        "all:\n"
        "  children:\n"
        "    lab:\n"
        "      hosts:\n"
        "        lab1:\n"
        "          ansible_host: 127.0.0.1\n"
        "          ansible_port: 22201\n"
        "          ansible_user: root\n"
        "          ansible_ssh_private_key_file: /work/main/.lab/id_ed25519\n"
        "          lab_ports: {ssh: 22201, hub: 28001, http: 28101, https: 28201}\n"
        "      vars:\n"
        "        provision_known_hosts_file: /work/main/.lab/known_hosts\n"
    )


def test_inventory_parses_as_ansible_yaml() -> None:
    hosts = [(render.host_name(i), render.ports_for(i)) for i in (1, 2)]
    data = yaml.safe_load(render.render_inventory(hosts, KEY, KNOWN))
    lab = data["all"]["children"]["lab"]
    assert list(lab["hosts"]) == ["lab1", "lab2"]
    assert lab["hosts"]["lab2"] == {
        "ansible_host": "127.0.0.1",
        "ansible_port": 22202,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(KEY),
        "lab_ports": {"ssh": 22202, "hub": 28002, "http": 28102, "https": 28202},
    }
    assert lab["vars"] == {"provision_known_hosts_file": str(KNOWN)}


def test_inventory_quotes_odd_paths() -> None:
    odd = Path("/home/me/my repo: #1/.lab/id_ed25519")
    data = yaml.safe_load(render.render_inventory([("lab1", render.ports_for(1))], odd, KNOWN))
    assert data["all"]["children"]["lab"]["hosts"]["lab1"]["ansible_ssh_private_key_file"] == str(
        odd
    )


def test_inventory_without_hosts_still_parses() -> None:
    data = yaml.safe_load(render.render_inventory([], KEY, KNOWN))
    assert data["all"]["children"]["lab"]["hosts"] == {}


def test_known_hosts_lines() -> None:
    other = PUB.replace("IJqV", "IXXX").replace("lab1", "lab2")
    text = render.render_known_hosts([(22201, PUB), (22202, other)])
    assert text.splitlines() == [
        "[127.0.0.1]:22201 " + " ".join(PUB.split()[:2]),
        "[127.0.0.1]:22202 " + " ".join(other.split()[:2]),
    ]


def test_known_hosts_refuses_garbage() -> None:
    with pytest.raises(LabError, match="not an OpenSSH public key"):
        render.render_known_hosts([(22201, "garbage")])


def _key(**changes: object) -> str:
    args: dict[str, object] = {
        "packages": ["systemd", "openssh-server"],
        "suite": "bookworm",
        "mirror": "http://deb.debian.org/debian",
        "setup_version": 1,
        "host_files": {"/etc/apt/sources.list.d/debian.sources": "ab12"},
    }
    args.update(changes)
    return render.cache_key(**args)  # type: ignore[arg-type]


def test_cache_key_is_stable_and_short() -> None:
    assert _key() == _key()
    assert len(_key()) == 16
    assert int(_key(), 16) >= 0


def test_cache_key_ignores_package_order_and_duplicates() -> None:
    assert _key(packages=["openssh-server", "systemd", "systemd"]) == _key()


@pytest.mark.parametrize(
    "change",
    [
        {"packages": ["systemd", "openssh-server", "curl"]},
        {"setup_version": 2},
        {"suite": "trixie"},
        {"mirror": "http://mirror.example/debian"},
        {"host_files": {"/etc/apt/sources.list.d/debian.sources": "cd34"}},
    ],
)
def test_cache_key_changes_with_its_inputs(change: dict[str, object]) -> None:
    assert _key(**change) != _key()


def test_every_host_knows_every_lab_host_on_the_labs_network() -> None:
    text = render.hosts_file("lab2")
    lines = text.splitlines()
    assert lines[:3] == ["127.0.0.1\tlocalhost", "127.0.1.1\tlab2",
                         "::1\tlocalhost ip6-localhost ip6-loopback"]
    assert "10.231.0.1\tlab1" in lines and "10.231.0.99\tlab99" in lines
    assert not any(line.endswith("\tlab2") and line.startswith("10.") for line in lines)
    assert render.lan_address(7) == "10.231.0.7"
