"""New accounts in one step: a run's ``useradd`` commands handed to the host's batch
writer (``remote/useradd_batch.py``), which makes them in one locked update of the
account files instead of one ``useradd`` process per account (~20 ms each).

The writer leaves what the same ``useradd`` commands would: the same lines, subordinate
ids and homes, under the same locks. Where it could differ (a name or id taken, a home that
exists, useradd hooks, SELinux, auditd...) it runs ``useradd`` itself, so the planned
commands stay the contract: the step's argv lists are the ``useradd`` commands.
"""

from __future__ import annotations

import json
from importlib import resources

from .steps import Action, Command

USERADD_BATCH = resources.files("provision.remote").joinpath("useradd_batch.py").read_text()
BULK_MIN = 2  # one account gains nothing: its useradd runs as it is
FILES = "passwd, shadow, group, gshadow, subuid, subgid"


def useradd_batch(argvs: list[list[str]]) -> Command:
    """The one command that makes every account ``argvs`` (useradd commands) names."""
    names = [argv[-1] for argv in argvs]
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return Command(["python3", "-c", USERADD_BATCH, "/"], stdin=json.dumps(argvs).encode(),
                   display=f"useradd {len(argvs)} accounts in one locked write of {FILES}"
                           f": {shown}")


def merge_useradds(actions: list[Action]) -> list[Action]:
    """Take the ``useradd`` that starts each new account's step into one step before
    the first of them (each account's own step keeps its later commands: lock, keys).

    A step whose first command is ``useradd`` is a new account's; fewer than
    ``BULK_MIN`` of them are left as they are."""
    new = [a for a in actions if a.ops and isinstance(a.ops[0], Command)
           and a.ops[0].argv[:1] == ["useradd"]]
    if len(new) < BULK_MIN:
        return actions
    first = actions.index(new[0])
    argvs, diff = [], []
    for act in new:
        argvs.append(act.ops.pop(0).argv)  # type: ignore[union-attr]
        lines = act.diff.split("\n")
        diff += [line for line in lines if line.startswith("+ user ")]
        act.diff = "\n".join(line for line in lines if not line.startswith("+ user "))
    merged = Action(f"accounts of {len(new)} users", ops=[useradd_batch(argvs)],
                    diff="\n".join(diff))
    return [*actions[:first], merged, *actions[first:]]
