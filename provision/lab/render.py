"""Pure helpers: names, ports, and the text of the files the lab writes.

Nothing here touches the system, so all of it is unit-tested with plain data
(`tests/unit/test_lab_render.py`): port mapping, inventory and known_hosts rendering,
the cache key of the base image.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from provision.lab import config
from provision.lab.errors import LabError

_NAME_RE = re.compile(rf"^{config.HOST_PREFIX}([1-9][0-9]*)$")
# Characters that never need quoting in a YAML plain scalar; anything else is quoted.
_PLAIN_RE = re.compile(r"^[A-Za-z0-9/._+-]+$")


def lan_address(index: int) -> str:
    """labK's address on the lab's network, e.g. `lan_address(2) == "10.231.0.2"`."""
    check_index(index)
    return f"{config.LAN_PREFIX}.{index}"


def hosts_file(name: str) -> str:
    """/etc/hosts of host `name`: itself as Debian has it, and every lab host on the lab's
    network (all 99: a host booted later is known at once, nothing is rewritten)."""
    lines = ["127.0.0.1\tlocalhost", f"127.0.1.1\t{name}",
             "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{lan_address(i)}\tlab{i}" for i in range(1, config.MAX_HOSTS + 1)
              if f"lab{i}" != name]
    return "\n".join(lines) + "\n"


def host_name(index: int) -> str:
    """Name of lab host number `index`, e.g. `host_name(2) == "lab2"`."""
    check_index(index)
    return f"{config.HOST_PREFIX}{index}"


def check_index(index: int) -> None:
    """Refuse a host number outside 1..MAX_HOSTS (the port ranges are 100 apart)."""
    if not 1 <= index <= config.MAX_HOSTS:
        raise LabError(f"lab host numbers go from 1 to {config.MAX_HOSTS}, not {index}")


def host_index(name: str) -> int:
    """Number of a lab host from its name, e.g. `host_index("lab2") == 2`."""
    match = _NAME_RE.match(name)
    if not match:
        raise LabError(f"{name!r} is not a lab host name (expected lab1, lab2, ...)")
    index = int(match.group(1))
    check_index(index)
    return index


def ports_for(index: int) -> dict[str, int]:
    """Ports on 127.0.0.1 forwarded to host `index`, by role.

    Example: `ports_for(1) == {"ssh": 22201, "hub": 28001, "http": 28101, "https": 28201}`.
    """
    check_index(index)
    return {role: base + index for role, (_guest, base) in config.PORTS.items()}


def guest_port(role: str) -> int:
    """Port inside the host that the `role` forward reaches (ssh -> 22, hub -> 8000...)."""
    return config.PORTS[role][0]


def hub_url(ports: Mapping[str, int]) -> str:
    """URL of a host's JupyterHub as seen from this machine."""
    return f"http://{config.LISTEN_ADDR}:{ports['hub']}/"


def _yaml_str(value: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar, so odd paths stay safe.
    return value if _PLAIN_RE.match(value) else json.dumps(value)


def render_inventory(
    hosts: Sequence[tuple[str, Mapping[str, int]]], key_file: Path, known_hosts_file: Path
) -> str:
    """Ansible YAML inventory for `hosts` (name, ports) in the order given.

    The result always parses back (checked here), so a broken render never reaches disk.
    """
    lines = [
        "# Written by `invoke lab.up`; deleted by `invoke lab.down`. Do not edit.",
        "all:",
        "  children:",
        "    lab:",
        "      hosts:" if hosts else "      hosts: {}",
    ]
    for name, ports in hosts:
        flow = ", ".join(f"{role}: {ports[role]}" for role in config.PORTS)
        lines += [
            f"        {name}:",
            f"          ansible_host: {config.LISTEN_ADDR}",
            f"          ansible_port: {ports['ssh']}",
            "          ansible_user: root",
            f"          ansible_ssh_private_key_file: {_yaml_str(str(key_file))}",
            f"          lab_ports: {{{flow}}}",
        ]
    lines += [
        "      vars:",
        f"        provision_known_hosts_file: {_yaml_str(str(known_hosts_file))}",
    ]
    text = "\n".join(lines) + "\n"
    parsed = yaml.safe_load(text)
    if list(parsed["all"]["children"]["lab"]["hosts"] or {}) != [name for name, _ in hosts]:
        raise LabError(f"internal error: the rendered inventory does not parse back:\n{text}")
    return text


def public_key_fields(pub_text: str) -> str:
    """`type base64` of an OpenSSH public key line, without its comment."""
    fields = pub_text.split()
    if len(fields) < 2 or not fields[0].startswith("ssh-"):
        raise LabError(f"not an OpenSSH public key: {pub_text.strip()!r}")
    return f"{fields[0]} {fields[1]}"


def render_known_hosts(entries: Sequence[tuple[int, str]]) -> str:
    """known_hosts lines for (ssh port, public key line) pairs, one per host.

    Example line: `[127.0.0.1]:22201 ssh-ed25519 AAAA...` (OpenSSH's syntax for a host on
    a non-standard port; paramiko reads it too).
    """
    return "".join(
        f"[{config.LISTEN_ADDR}]:{port} {public_key_fields(key)}\n" for port, key in entries
    )


def cache_key(
    packages: Sequence[str],
    suite: str,
    mirror: str,
    setup_version: int,
    host_files: Mapping[str, str],
) -> str:
    """Key of the cached base image: 16 hex digits of a hash over everything it depends on.

    `host_files` maps each file copied from this machine (apt sources, CA certificates...)
    to its sha256, so a rotated CA certificate also gives a new image. Package order does
    not matter.
    """
    material = json.dumps(
        {
            "packages": sorted(set(packages)),
            "suite": suite,
            "mirror": mirror,
            "setup_version": setup_version,
            "host_files": dict(sorted(host_files.items())),
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]
