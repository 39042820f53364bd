"""culler: idle users' servers are stopped, so a class's servers do not pile up.

``jupyterhub-idle-culler`` runs as a hub-managed service (the hub starts it with a token of
its own) under an RBAC role holding only the scopes it needs. The role has no steps of its
own: it contributes the service, the RBAC role and the package to the hub, which the
jupyterhub role renders and installs (a change restarts the hub, never a user's server).
``jupyterhub_idle_timeout: 0`` turns it off.
"""

from __future__ import annotations

from typing import Any

from provision import pins
from provision.role import HubContribution, HubRole, HubService
from provision.stack import stack
from provision.variables import Var

NAME = "culler"
SUMMARY = ("`jupyterhub-idle-culler` as a hub-managed service with its own RBAC role "
           "(`list:users`, `read:users:activity`, `read:servers`, `delete:servers`): servers "
           "idle for `jupyterhub_idle_timeout` seconds are stopped")

# Its contribution is rendered by the jupyterhub role whatever the order; listed after it.
AFTER = ("jupyterhub",)

VARIABLES = [
    Var("jupyterhub_idle_timeout", 3600, "int", "Stop a user's server after this many "
        "seconds without activity (jupyterhub-idle-culler --timeout); 0 turns the culler "
        "off."),
    Var("jupyterhub_idle_cull_every", 300, "int", "Seconds between two checks for idle "
        "servers (--cull-every)."),
    Var("jupyterhub_idle_max_age", 0, "int", "Stop a server this many seconds after it "
        "started, active or not (--max-age); 0 = no limit."),
    Var("jupyterhub_idle_culler_version", "2.0.0", "version", "jupyterhub-idle-culler "
        "version (pip, into the hub's virtualenv)."),
]

SERVICE = "idle-culler"
SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]


def enabled(v: dict[str, Any]) -> bool:
    return v["jupyterhub_idle_timeout"] != 0  # a negative one is refused by check()


def check(v: dict[str, Any]) -> list[tuple[str, str]]:
    problems = pins.check_versions(
        v, {"jupyterhub_idle_culler_version": "jupyterhub-idle-culler"})
    for key in ("jupyterhub_idle_timeout", "jupyterhub_idle_max_age"):
        if v[key] < 0:
            problems.append((key, "must be 0 (off) or a number of seconds"))
    if v["jupyterhub_idle_cull_every"] < 1:
        problems.append(("jupyterhub_idle_cull_every", "must be at least 1 second"))
    return problems


def command(v: dict[str, Any]) -> list[str]:
    argv = [f"{stack(v).hub_venv}/bin/python3", "-m", "jupyterhub_idle_culler",
            f"--timeout={v['jupyterhub_idle_timeout']}",
            f"--cull-every={v['jupyterhub_idle_cull_every']}"]
    if v["jupyterhub_idle_max_age"]:
        argv.append(f"--max-age={v['jupyterhub_idle_max_age']}")
    return argv


def activity_interval(v: dict[str, Any]) -> int:
    """How often the hub learns of servers' activity, in seconds.

    By default the hub asks the proxy every 300 s and each server reports every 300 s: with
    a shorter timeout, a server busy all along would look idle and be culled. A quarter of
    the timeout (10 s to 300 s) keeps what the culler sees current.
    """
    return max(10, min(300, v["jupyterhub_idle_timeout"] // 4))


def hub(v: dict[str, Any]) -> HubContribution:
    interval = activity_interval(v)
    return HubContribution(
        config=[("JupyterHub.last_activity_interval", interval)],
        server_env={"JUPYTERHUB_ACTIVITY_INTERVAL": str(interval)},
        services=[HubService(SERVICE, "stops servers idle for "
                             f"{v['jupyterhub_idle_timeout']} s", command=command(v))],
        roles=[HubRole(SERVICE, list(SCOPES), services=[SERVICE])],
        packages=[f"jupyterhub-idle-culler=={v['jupyterhub_idle_culler_version']}"],
    )
