"""Side-by-side virtualenvs: a changed pin set is installed beside the one in use.

A managed virtualenv's path (``jupyterhub_venv``, ``jupyterhub_user_venv``) is a symlink
to ``PATH.envs/KEY``, where KEY is the hash of the pin set it was built with (the
release's constraints, as the role's own pins adjust them). What runs from it (the hub's
unit, users' servers) names the stable path, never KEY.

- Same pin set: packages are added or repaired in place (``plan_pip`` on the link).
- Changed pin set: the new environment is built in ``PATH.envs/NEWKEY`` while everything
  keeps running from the old one; a marker file written last says it is complete, so an
  install cut short (Ctrl-C, a lost connection) is thrown away and redone by the next run.
  The switch is one ``rename()`` of a new symlink over the old one, done by the role's
  handler when it is ready to restart what runs from it; on a host with nothing there yet
  it is done at once.
- A path that is still a plain directory (installed before environments were kept side
  by side) and holds this very pin set is adopted: moved to ``PATH.envs/KEY`` and linked,
  nothing rebuilt or restarted. One with another pin set is moved into ``PATH.envs/`` at
  the switch. Its scripts name the stable path, so either way it keeps working (and is
  the environment to go back to).

The handlers call ``switch_argv`` and ``prune_argv``; the planner is ``plan_env``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .facts import FactRequest, Facts, VenvFact
from .requirements import req_name_version, same_version
from .steps import Action, Command, Upload, plan_pip

if TYPE_CHECKING:
    from .hostrun import HostRun

COMPLETE = "jhprovision-complete"
LEGACY = "pre-envs"  # the name a plain-directory virtualenv gets in PATH.envs/


def envs_dir(link: str) -> str:
    return link.rstrip("/") + ".envs"


def env_key(constraints: str | None, requirements: Sequence[str]) -> str:
    """12 hex digits naming an environment: the hash of its effective pin set (or of its
    requirements, when it has none)."""
    return _env_key(constraints, tuple(sorted(requirements)))


@functools.lru_cache(maxsize=64)  # asked by facts, plan and handlers of every host
def _env_key(constraints: str | None, requirements: tuple[str, ...]) -> str:
    from .pins import effective

    basis = effective(constraints, requirements) if constraints else "\n".join(requirements)
    return hashlib.sha256(basis.encode()).hexdigest()[:12]


def env_path(link: str, constraints: str | None, requirements: Sequence[str]) -> str:
    return f"{envs_dir(link)}/{env_key(constraints, requirements)}"


def facts_for(link: str, target: str) -> FactRequest:
    return FactRequest(files={link, f"{target}/{COMPLETE}"}, venvs={link, target})


@dataclass(frozen=True)
class EnvState:
    """Where ``link`` stands against the environment ``target`` the pin set wants."""

    link: str
    target: str
    current: str | None  # what the link points to; the link itself if a plain directory
    legacy: bool  # a plain directory, not yet a symlink
    ready: bool  # target is complete (its marker exists)
    partial: bool  # target exists but is not complete: an install was cut short

    @property
    def fresh(self) -> bool:
        """Nothing at the path yet: nothing runs from it, the switch can be done at once."""
        return self.current is None

    @property
    def switching(self) -> bool:
        return self.current != self.target


def state(facts: Facts, link: str, target: str) -> EnvState:
    f = facts.file(link)
    if not f.exists:
        current, legacy = None, False
    elif f.type == "link":
        current, legacy = f.target, False
    else:
        current, legacy = link, True
    ready = facts.file(f"{target}/{COMPLETE}").exists
    partial = not ready and facts.venv(target).exists
    return EnvState(link, target, current, legacy, ready, partial)


def legacy_path(link: str) -> str:
    return f"{envs_dir(link)}/{LEGACY}"


# Replace the symlink at $1 by one to $2 in one rename(); a plain directory at $1 is moved
# to $3 first (it becomes the environment to go back to).
SWITCH = """set -eu
link=$1 target=$2 legacy=$3
test -x "$target/bin/python" || { echo "no environment at $target" >&2; exit 1; }
if [ -d "$link" ] && [ ! -L "$link" ]; then
    mkdir -p -- "${legacy%/*}"
    rm -rf -- "$legacy"
    mv -T -- "$link" "$legacy"
fi
ln -sfn -- "$target" "$link.jhprovision-new"
mv -T -- "$link.jhprovision-new" "$link"
"""


# Adopt the plain-directory environment at $1 as $2: moved, linked, marked complete ($3).
ADOPT = """set -eu
link=$1 target=$2 mark=$3
mkdir -p -- "${target%/*}"
mv -T -- "$link" "$target"
ln -sfn -- "$target" "$link.jhprovision-new"
mv -T -- "$link.jhprovision-new" "$link"
printf '%s\\n' "${target##*/}" > "$target/$mark"
"""


# A new environment's scripts name its own python (pip writes the interpreter it runs
# with, uv the one --python names): point them at the stable path instead ($2/bin/...),
# so what runs from them, a user's kernel included, knows the environment as $2 and never
# as a KEY that a later switch removes. In-place installs (through $2/bin) write the
# stable path already.
RELINK = r"""import os, sys
target, link = sys.argv[1:3]
old, new = ("#!%s/bin/" % target).encode(), ("#!%s/bin/" % link).encode()
bindir = os.path.join(target, "bin")
for name in os.listdir(bindir):
    path = os.path.join(bindir, name)
    if os.path.islink(path) or not os.path.isfile(path):
        continue
    with open(path, "rb") as fh:
        data = fh.read()
    if not data.startswith(old):
        continue
    tmp = path + ".jhprovision-new"
    with open(tmp, "wb") as fh:
        fh.write(new + data[len(old):])
    os.chmod(tmp, os.stat(path).st_mode & 0o7777)
    os.replace(tmp, path)
"""


def switch_argv(link: str, target: str) -> list[str]:
    """Point ``link`` at ``target`` atomically (see SWITCH)."""
    return ["sh", "-c", SWITCH, "sh", link, target, legacy_path(link)]


# Remove every environment in $1 but those named after it (by full path).
PRUNE = """set -eu
dir=$1; shift
for env in "$dir"/*; do
    [ -d "$env" ] && [ ! -L "$env" ] || continue
    keep=no
    for k in "$@"; do [ "$env" = "$k" ] && keep=yes; done
    if [ "$keep" = no ]; then echo "$env"; rm -rf -- "$env"; fi
done
"""


def prune_argv(link: str, keep: Sequence[str]) -> list[str]:
    """Remove the environments of ``link`` other than ``keep`` (prints what it removed)."""
    return ["sh", "-c", PRUNE, "sh", envs_dir(link), *keep]


def prune(run: HostRun, link: str, target: str, previous: str | None, *, step: str) -> str:
    """After a switch to ``target``: remove ``link``'s other environments but ``previous``
    (the way back). Returns what to add to the handler's note ('' if nothing went); a
    failure is told there, never fails a switch that worked."""
    res = run.run(prune_argv(link, [target, *filter(None, [previous])]), step=step,
                  check=False)
    if res.rc:
        return f"; old environments not removed: {res.err.strip()}"
    removed = res.out.split()
    return f"; removed old environments {', '.join(removed)}" if removed else ""


def changes(old: VenvFact, pins: dict[str, str], requirements: Sequence[str]) -> list[str]:
    """Diff lines from the environment in use to the new pin set: every installed package
    whose version changes, and the requirements not installed yet."""
    lines = []
    for dist, have in sorted(old.dists.items() if old.exists else ()):
        pin = pins.get(dist)
        if pin and not same_version(have, pin):
            lines.append(f"~ {dist} {have} -> {pin}")
    for req in requirements:
        dist, version = req_name_version(req)
        if old.exists and dist in old.dists:
            continue
        version = version or pins.get(dist)
        lines.append(f"+ {dist} {version or '(latest)'}")
    return lines


def plan_env(facts: Facts, link: str, requirements: Sequence[str], *, constraints: str | None,
             name: str, handler: str, notify: Sequence[str] = (),
             switch_note: Sequence[str] = (), installer: str = "pip") -> list[Action]:
    """The actions that give ``link`` the environment ``requirements`` + ``constraints``
    want. In place when its pin set is the one in use, and on a host with nothing there
    yet: those notify ``notify``. Else a new environment beside the one in use, and a
    switch the handler ``handler`` makes (``switch_note``: what else it does then, for
    the diff); those notify ``handler``. ``installer``: what makes and fills the
    environments (``provision.installer``)."""
    from .pins import effective, parse

    target = env_path(link, constraints, requirements)
    st = state(facts, link, target)
    if not st.switching:
        return [plan_pip(facts, link, requirements, notify=notify, name=name,
                         constraints=constraints, installer=installer)]
    key = target.rsplit("/", 1)[1]
    if st.legacy and constraints and not facts.venv(target).exists and \
            facts.venv(link).constraints == effective(constraints, requirements):
        adopt = Action(f"{name}: keep environment {key}", ops=[
            Command(["sh", "-c", ADOPT, "sh", link, target, COMPLETE])],
            diff=f"~ {link} -> {target} (the directory in use, moved there: it holds this "
                 "pin set)")
        return [adopt, plan_pip(facts, link, requirements, notify=notify, name=name,
                                constraints=constraints, installer=installer)]
    wake = tuple(notify) if st.fresh else (handler,)
    actions = []
    if not st.ready:
        build = plan_pip(facts, target, requirements, notify=wake, constraints=constraints,
                         name=name if st.fresh else f"{name}: new environment {key}",
                         have=VenvFact(False, {}, None), installer=installer)
        if st.partial:
            build.ops.insert(0, Command(["rm", "-rf", "--", target]))
        build.ops.append(Command(["python3", "-c", RELINK, target, link],
                                 display=f"point the scripts in {target}/bin at {link}/bin"))
        build.ops.append(Upload(f"{target}/{COMPLETE}", f"{key}\n".encode(), "0644"))
        pins = parse(effective(constraints, requirements)) if constraints else {}
        where = "a plain directory" if st.legacy else st.current
        build.diff = "\n".join([
            f"+ {target}" + (f" (beside {where}, which keeps serving until the switch)"
                             if not st.fresh else "")
            + ("; an unfinished install there is removed first" if st.partial else ""),
            *changes(facts.venv(link), pins, requirements)])
        actions.append(build)
    if st.fresh:
        actions.append(Action(f"{name}: use environment {key}", ops=[
            Command(switch_argv(link, target))], diff=f"+ {link} -> {target}"))
        return actions
    was = f"{st.current} (moved to {legacy_path(link)})" if st.legacy else st.current
    actions.append(Action(
        f"{name}: switch to environment {key}",
        # Nothing to do now but prove it is there: the handler switches when it is ready.
        ops=[Command(["test", "-f", f"{target}/{COMPLETE}"],
                     display=f"environment {key} is complete; {handler} switches to it")],
        notify=(handler,),
        diff="\n".join([f"~ {link} -> {target} (was {was}), by handler {handler!r}",
                        *switch_note])))
    return actions
