"""userenv: the users' own Python environment, apart from the hub's.

As The Littlest JupyterHub separates them: the hub's virtualenv holds what the hub runs
(jupyterhub, its spawner, its services); ``jupyterhub_user_venv`` holds what users run:
``jupyterhub-singleuser`` (the ``jupyterhub`` package at the hub's version), JupyterLab,
the classic notebook, ipykernel and the course's ``jupyterhub_user_packages``. Users'
servers start from it and find it first on their PATH (terminals included).

Adding packages installs only what is missing, into the environment running servers use:
the hub is not restarted, no server is stopped, and the next kernel sees them.
``jupyterhub_user_apt_packages`` are system libraries (e.g. libgdal-dev) for them.
"""

from __future__ import annotations

from typing import Any

from provision.facts import FactRequest, Facts
from provision.role import HubContribution
from provision import pins
from provision.steps import Action, plan_apt, plan_pip, req_name_version
from provision.variables import Var

NAME = "userenv"
SUMMARY = ("the users' virtualenv (`jupyterhub_user_venv`): jupyterhub-singleuser, "
           "JupyterLab, notebook, ipykernel and `jupyterhub_user_packages`; installing a "
           "package restarts nothing")

AFTER = ("users", "wheel")

VARIABLES = [
    Var("jupyterhub_user_venv", "/opt/jupyterhub-user", "dir", "Virtualenv users' servers "
        "and kernels run from (first on their PATH), apart from the hub's."),
    Var("jupyterhub_user_packages", [], "list[pip]", "pip packages for users' kernels, "
        "'name' or 'name==version' (e.g. numpy==2.3.4); adding one restarts nothing."),
    Var("jupyterhub_user_apt_packages", [], "list[pkg]", "Debian packages users' work "
        "needs (system libraries, e.g. libgdal-dev, graphviz)."),
]


# Start-up CPU of every user's server, measured on a lab host: jsonschema 4.25+ imports
# rfc3987-syntax, which compiles ~35 Lark parsers at import (1.6 s of CPU, more than the
# rest of jupyter_server's start; jsonschema issue #1428). No Jupyter schema uses the iri
# formats it checks. 4.24 does not import it: a class logging in at once spawns in half
# the CPU. A user package that needs a newer jsonschema overrides this (its pin wins).
FAST_START_PINS = ["jsonschema==4.24.1"]


def requirements(v: dict[str, Any]) -> list[str]:
    # jupyterhub_extra_packages (deprecated) meant "for users' kernels": it lands here.
    own = [*v["jupyterhub_user_packages"], *v["jupyterhub_extra_packages"]]
    named = {req_name_version(r)[0] for r in own}
    pins = [p for p in FAST_START_PINS if req_name_version(p)[0] not in named]
    return [f"jupyterhub=={v['jupyterhub_version']}", f"jupyterlab=={v['jupyterlab_version']}",
            f"notebook=={v['notebook_version']}", "ipykernel", *pins, *own]


def facts(v: dict[str, Any]) -> FactRequest:
    return FactRequest(dpkg={"python3-venv", *v["jupyterhub_user_apt_packages"]},
                       venvs={v["jupyterhub_user_venv"]})


def plan(v: dict[str, Any], facts: Facts) -> list[Action]:
    actions = [plan_apt(facts, {"python3-venv": None})]
    if v["jupyterhub_user_apt_packages"]:
        act = plan_apt(facts, dict.fromkeys(v["jupyterhub_user_apt_packages"]))
        act.name = "users' apt packages"
        actions.append(act)
    # No notify: servers import from it as it grows; nothing needs a restart.
    actions.append(plan_pip(facts, v["jupyterhub_user_venv"], requirements(v),
                            name="users' packages", constraints=pins.for_vars(v)))
    return actions


def hub(v: dict[str, Any]) -> HubContribution:
    """Users' servers start from this venv, which is also first on their PATH: `python`
    and `pip` in a terminal are the kernels' own."""
    venv = v["jupyterhub_user_venv"]
    return HubContribution(
        config=[("Spawner.cmd", [f"{venv}/bin/jupyterhub-singleuser"])],
        server_env={"PATH": f"{venv}/bin:/usr/local/bin:/usr/bin:/bin"})
