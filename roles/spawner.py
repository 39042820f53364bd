"""spawner: each user's server in a systemd unit of its own, with memory and CPU limits.

With ``jupyterhub_spawner: systemd`` (the default) the hub starts every user's server with
SystemdSpawner as a transient unit ``jupyter-<name>-singleuser.service``: systemd, not the
hub, holds it, so ``jupyterhub_mem_limit`` (``MemoryMax=``, with ``MemorySwapMax=0`` so
swap is no way around it) and ``jupyterhub_cpu_limit`` (``CPUQuota=``) are the kernel's
limits on everything the user runs from JupyterLab. A kernel that allocates past the limit
is killed by the kernel's OOM killer; ``OOMPolicy=continue`` keeps the user's server (and
the hub, and everyone else) running, and JupyterLab offers to restart the kernel.

The role has no steps: it contributes the package and the settings to the hub (a change
restarts the hub, which keeps running servers: they are not its children). Limits apply to
servers started after the change. ``jupyterhub_spawner: local`` keeps JupyterHub's
LocalProcessSpawner (no limits; they are refused rather than ignored).
"""

from __future__ import annotations

from typing import Any

from provision import pins
from provision.role import HubContribution
from provision.stack import USER_UNIT_TEMPLATE
from provision.variables import Var, byte_count

NAME = "spawner"
SUMMARY = ("SystemdSpawner: each user's server in its own systemd unit, with "
           "`jupyterhub_mem_limit` (MemoryMax, no swap) and `jupyterhub_cpu_limit` (CPUQuota)")

AFTER = ("jupyterhub",)

VARIABLES = [
    Var("jupyterhub_spawner", "systemd", "str", "How users' servers are started: 'systemd' "
        "(SystemdSpawner, a unit per user, limits possible) or 'local' (JupyterHub's "
        "LocalProcessSpawner, children of the hub, no limits).", choices=("systemd", "local")),
    Var("jupyterhub_mem_limit", None, "bytes", "Memory one user's server and kernels may use "
        "together, e.g. '2G' (c.Spawner.mem_limit; MemoryMax= with MemorySwapMax=0). A "
        "kernel going past it is killed, the server lives on. null = no limit.",
        nullable=True),
    Var("jupyterhub_cpu_limit", None, "cpus", "Cores one user's server may use, e.g. 1.5 "
        "(c.Spawner.cpu_limit; CPUQuota=150%). null = no limit.", nullable=True),
    Var("jupyterhub_disable_user_sudo", False, "bool", "NoNewPrivileges= on users' units: "
        "sudo (and every setuid program) stops working in their terminals, wheel members' "
        "included."),
    Var("jupyterhub_systemdspawner_version", "1.0.2", "version", "jupyterhub-systemdspawner "
        "version (pip, into the hub's virtualenv)."),
]

# Below this a server cannot start at all (jupyterhub-singleuser alone takes ~100 MB).
MIN_MEM = 128 << 20


def enabled(v: dict[str, Any]) -> bool:
    return v["jupyterhub_spawner"] == "systemd"


def check(v: dict[str, Any]) -> list[tuple[str, str]]:
    problems = pins.check_versions(
        v, {"jupyterhub_systemdspawner_version": "jupyterhub-systemdspawner"})
    if not enabled(v):
        for key in ("jupyterhub_mem_limit", "jupyterhub_cpu_limit"):
            if v[key] is not None:
                problems.append((key, "needs jupyterhub_spawner: systemd (LocalProcessSpawner "
                                 "cannot enforce limits)"))
        if v["jupyterhub_disable_user_sudo"]:
            problems.append(("jupyterhub_disable_user_sudo", "needs jupyterhub_spawner: "
                             "systemd"))
    mem = v["jupyterhub_mem_limit"]
    if mem is not None and byte_count(mem) < MIN_MEM:
        problems.append(("jupyterhub_mem_limit", "must be at least 128M: a server alone needs "
                         "about 100 MB"))
    return problems


def unit_properties(v: dict[str, Any]) -> dict[str, str]:
    """Properties of each user's unit beyond the ones SystemdSpawner sets from the limits."""
    props = {"OOMPolicy": "continue"}  # SystemdSpawner's default too: said, not assumed
    if v["jupyterhub_mem_limit"] is not None:
        props["MemorySwapMax"] = "0"
    return props


def hub(v: dict[str, Any]) -> HubContribution:
    config: list[tuple[str, Any]] = [
        ("JupyterHub.spawner_class", "systemdspawner.SystemdSpawner"),
        # The name the users role stops when it locks or removes a user (stack.user_unit).
        ("SystemdSpawner.unit_name_template", USER_UNIT_TEMPLATE),
        ("SystemdSpawner.default_shell", "/bin/bash"),
        ("SystemdSpawner.disable_user_sudo", v["jupyterhub_disable_user_sudo"]),
        ("SystemdSpawner.unit_extra_properties", unit_properties(v)),
    ]
    if v["jupyterhub_mem_limit"] is not None:
        config.append(("SystemdSpawner.mem_limit", v["jupyterhub_mem_limit"]))
    if v["jupyterhub_cpu_limit"] is not None:
        config.append(("SystemdSpawner.cpu_limit", float(v["jupyterhub_cpu_limit"])))
    return HubContribution(
        config=config,
        packages=[f"jupyterhub-systemdspawner=={v['jupyterhub_systemdspawner_version']}"])
