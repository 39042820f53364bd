"""wheel: the administrators' group, its sudo rule, and who is in it.

Members are the users with ``admin: true``. JupyterHub makes them admins through
``PAMAuthenticator.admin_groups``; the group must exist before the hub starts, since a
missing admin group breaks every login with an error 500, so this role runs before the
jupyterhub role. Removing ``admin: true`` removes the user from the group (demotes them),
unlike ``admin_users``, which only ever grants.
"""

from __future__ import annotations

from typing import Any

from provision.facts import FactRequest, Facts
from provision.render import render
from provision.steps import Action, plan_absent, plan_apt, plan_file, plan_group
from provision.variables import Var

from ._common import admins, managed_names

NAME = "wheel"
SUMMARY = (
    "the `wheel` group (members: users with `admin: true`), a `%wheel` sudo rule "
    "validated by `visudo`; JupyterHub admins through `PAMAuthenticator.admin_groups`"
)

AFTER = ("users",)

VARIABLES = [
    Var("wheel_group", "wheel", "group", "Administrators' group: sudo rights and JupyterHub "
        "admin (through admin_groups)."),
    Var("wheel_sudo", True, "bool", "Give the group sudo rights with a rule in "
        "/etc/sudoers.d/ (validated by visudo before it is installed)."),
    Var("wheel_sudo_nopasswd", False, "bool", "Let the group sudo without a password."),
]

SUDOERS = "/etc/sudoers.d/jhprovision-wheel"


def facts(v: dict[str, Any]) -> FactRequest:
    return FactRequest(dpkg={"sudo"}, content={SUDOERS})


def plan(v: dict[str, Any], facts: Facts) -> list[Action]:
    everyone = managed_names(v)
    actions = [plan_group(facts, v["wheel_group"], system=True, members=admins(v),
                          managed_users=everyone)]
    if v["wheel_sudo"]:
        actions.append(plan_apt(facts, {"sudo": None}))
        actions.append(plan_file(facts, SUDOERS, render("wheel/sudoers.j2", v), mode="0440",
                                 validate=["visudo", "-cqf", "{}"]))
    else:
        actions.append(plan_absent(facts, SUDOERS))
    return actions
