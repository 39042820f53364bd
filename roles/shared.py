"""shared: course material in one directory every lab user reads, linked into their root.

``jupyterhub_shared_dir`` (e.g. ``/srv/data``) is owned by root and the wheel group, mode
2775: every user can read it, wheel members (teachers, assistants) write to it, and the
setgid bit keeps what they add in the wheel group. Each present user gets a symlink
``shared`` (``jupyterhub_shared_link``) to it in their notebook root (their home, the
``~/...`` of ``jupyterhub_notebook_dir``, or its absolute path when that has
``{username}`` in it and exists), made as that user: root never writes in a home.
A user who puts something else at that name keeps it; the link is not forced on them.
A notebook root every user shares (absolute, no ``{username}``) gets no link: each user's
is in their home.
"""

from __future__ import annotations

import re
from typing import Any

from provision.facts import FactRequest, Facts
from provision.stack import notebook_rel, notebook_root
from provision.steps import Action, Command, as_user, plan_directory
from provision.variables import Var

from ._common import active_users, home_of

NAME = "shared"
SUMMARY = ("`jupyterhub_shared_dir`: course data readable by every user, writable by the "
           "wheel group (2775), linked as `shared` in each user's notebook root")

AFTER = ("users", "wheel", "jupyterhub")

VARIABLES = [
    Var("jupyterhub_shared_dir", None, "dir", "Directory of course data (e.g. /srv/data): "
        "readable by every lab user, writable by wheel_group; null = none.", nullable=True),
    Var("jupyterhub_shared_link", "shared", "str", "Name of the link to it in each user's "
        "notebook root."),
]

LINK_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def enabled(v: dict[str, Any]) -> bool:
    return bool(v["jupyterhub_shared_dir"])


def check(v: dict[str, Any]) -> list[tuple[str, str]]:
    problems = []
    if not LINK_RE.fullmatch(v["jupyterhub_shared_link"]):
        problems.append(("jupyterhub_shared_link", "must be a plain file name (letters, "
                         "digits, '.', '_', '-'), not a path"))
    # (a directory in a home or under /tmp is refused by its type, "dir")
    return problems


def _own_root(v: dict[str, Any], user: str) -> str | None:
    """The user's notebook root when it is absolute and theirs alone ('/srv/nb/{username}'
    -> '/srv/nb/alice'); None when it is in the home (or one root for everyone)."""
    nb = v.get("jupyterhub_notebook_dir")
    if notebook_rel(nb, user) is not None or "{username}" not in nb:
        return None
    return notebook_root(nb, user, "")


def _link_in_home(v: dict[str, Any], user: str) -> str:
    """The link's path below the home, for a root in the home (or shared by everyone)."""
    rel = notebook_rel(v.get("jupyterhub_notebook_dir"), user) or ""
    return f"{rel}/{v['jupyterhub_shared_link']}" if rel else v["jupyterhub_shared_link"]


def link_path(v: dict[str, Any], user: str, home: str) -> str:
    """Where ``user``'s link to the shared directory is: in their own absolute notebook
    root, else below their home ``home`` (``invoke verify`` checks it there)."""
    root = _own_root(v, user)
    if root is not None:
        return f"{root}/{v['jupyterhub_shared_link']}"
    return f"{home}/{_link_in_home(v, user)}"


def facts(v: dict[str, Any]) -> FactRequest:
    if not enabled(v):
        return FactRequest()
    req = FactRequest(files={v["jupyterhub_shared_dir"]})
    for u in active_users(v):
        root = _own_root(v, u["name"])
        if root:
            req.files |= {root, f"{root}/{v['jupyterhub_shared_link']}"}
        else:
            req.files.add(f"~{u['name']}/{_link_in_home(v, u['name'])}")
    return req


def plan_link(facts: Facts, user: str, link: str, target: str) -> Action:
    """``link`` -> ``target``, made as ``user`` (whose home it is in)."""
    act = Action(f"link {link}")
    f = facts.file(link)
    if f.exists and f.type == "link" and f.target == target:
        return act
    if f.exists and f.type != "link":
        act.diff = f"  {link} is a {f.type} of {user}'s: left alone"
        return act
    # -n: an existing link is replaced, not followed; as the user, in their own home.
    act.ops.append(Command(as_user(user, ["ln", "-sfn", "--", target, link])))
    act.diff = (f"+ {link} -> {target}" if not f.exists
                else f"~ {link} -> {f.target} => {target}")
    return act


def plan(v: dict[str, Any], facts: Facts) -> list[Action]:
    path = v["jupyterhub_shared_dir"]
    actions = [plan_directory(facts, path, mode="2775", owner="root", group=v["wheel_group"])]
    # After the jupyterhub role, which makes each notebook root in a home (as the user).
    for u in active_users(v):
        root = _own_root(v, u["name"])
        if root is None:
            link = f"{home_of(facts, u['name'])}/{_link_in_home(v, u['name'])}"
        elif facts.file(root).type != "dir":  # the sysadmin's to make: JupyterHub makes none
            actions.append(Action(f"link {root}/{v['jupyterhub_shared_link']}",
                                  note=f"not made: {root} does not exist yet"))
            continue
        else:
            link = f"{root}/{v['jupyterhub_shared_link']}"
        actions.append(plan_link(facts, u["name"], link, path))
    return actions
