"""userenv: the users' own Python environment, apart from the hub's.

As The Littlest JupyterHub separates them: the hub's virtualenv holds what the hub runs
(jupyterhub, its spawner, its services); ``jupyterhub_user_venv`` holds what users run:
``jupyterhub-singleuser`` (the ``jupyterhub`` package at the hub's version), JupyterLab,
the classic notebook, ipykernel and the course's ``jupyterhub_user_packages``. Users'
servers start from it and find it first on their PATH (terminals included).

Adding packages installs only what is missing, into the environment running servers use:
the hub is not restarted, no server is stopped, and the next kernel sees them.
``jupyterhub_user_apt_packages`` are system libraries (e.g. libgdal-dev) for them.

A changed pin set (a JupyterHub or JupyterLab upgrade) is another matter: the new
environment is built beside the one running servers use (``provision.envs``), then the
handler stops every running server through the hub's API, switches, and starts them
again, so no server mixes old and new packages. Users see their server restart: open
notebooks reconnect, kernels start afresh (variables are lost, files are not).
"""

from __future__ import annotations

import json
from typing import Any

from provision import envs, installer, pins
from provision.errors import ProvisionError
from provision.facts import FactRequest, Facts
from provision.hostrun import HostRun
from provision.requirements import req_name_version
from provision.role import Handler, HubContribution
from provision.steps import Action, plan_apt
from provision.variables import Var

from ._common import HUB_API_PRELUDE, hub_api_argv, installer_facts, plan_installer

NAME = "userenv"
SUMMARY = ("the users' virtualenv (`jupyterhub_user_venv`): jupyterhub-singleuser, "
           "JupyterLab, notebook, ipykernel and `jupyterhub_user_packages`; installing a "
           "package restarts nothing; a new pin set is installed beside it, then running "
           "servers are restarted on it")

# After the hub: when both switch environments, the hub is upgraded first, then users'
# servers restart through it.
AFTER = ("users", "wheel", "jupyterhub")
HANDLER = "switch users' environment"

VARIABLES = [
    Var("jupyterhub_user_venv", "/opt/jupyterhub-user", "dir", "Virtualenv users' servers "
        "and kernels run from (first on their PATH), apart from the hub's. A symlink to "
        "PATH.envs/HASH, the environment of the pin set in use (docs/upgrades.md)."),
    Var("jupyterhub_user_packages", [], "list[pip]", "pip packages for users' kernels, "
        "'name' or 'name==version' (e.g. numpy==2.3.4); adding one restarts nothing."),
    Var("jupyterhub_user_apt_packages", [], "list[pkg]", "Debian packages users' work "
        "needs (system libraries, e.g. libgdal-dev, graphviz)."),
    Var("jupyterhub_server_extensions_disabled", ["jupyter_lsp"], "list[module]",
        "Jupyter server extensions users' servers do not load (their command line: "
        "--ServerApp.jpserver_extensions=NAME=False). jupyter_lsp looks for language "
        "servers at every start and none is installed by default: [] if "
        "jupyterhub_user_packages adds one (e.g. python-lsp-server). docs/performance.md."),
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


def user_env(v: dict[str, Any]) -> str:
    return envs.env_path(v["jupyterhub_user_venv"], pins.for_vars(v), requirements(v))


def facts(v: dict[str, Any]) -> FactRequest:
    return FactRequest(dpkg={"python3-venv", *v["jupyterhub_user_apt_packages"]}).merge(
        envs.facts_for(v["jupyterhub_user_venv"], user_env(v))).merge(installer_facts(v))


def plan(v: dict[str, Any], facts: Facts) -> list[Action]:
    actions = [plan_apt(facts, {"python3-venv": None})]
    if v["jupyterhub_user_apt_packages"]:
        act = plan_apt(facts, dict.fromkeys(v["jupyterhub_user_apt_packages"]))
        act.name = "users' apt packages"
        actions.append(act)
    actions += plan_installer(v, facts)
    # In place, no notify: servers import from it as it grows; nothing needs a restart.
    actions += envs.plan_env(
        facts, v["jupyterhub_user_venv"], requirements(v), constraints=pins.for_vars(v),
        name="users' packages", handler=HANDLER,
        switch_note=["+ running users' servers stopped before the switch and started "
                     "again after it (kernels restart; files are kept)"],
        installer=installer.kind(v))
    return actions


# Through the hub's API (HUB_API_PRELUDE): stop every running server, switch the
# environment (envs.SWITCH, an argument), start the same servers again and wait for them.
# Prints one JSON line: restarted, failed ({server: reason}), hub (false if the hub did
# not answer: then only the switch is made), previous (the environment switched from).
SWITCH_SCRIPT = HUB_API_PRELUDE + r"""import os, subprocess, time
link, target, switch, legacy, limit = sys.argv[4:9]
limit = float(limit)
previous = os.readlink(link) if os.path.islink(link) else legacy if os.path.isdir(link) \
    else None
def path(user, server):
    u = urllib.parse.quote(user, safe="")
    if not server:
        return "/users/%s/server" % u
    return "/users/%s/servers/%s" % (u, urllib.parse.quote(server, safe=""))
def servers(user):
    return call("GET", "/users/" + urllib.parse.quote(user, safe="")).get("servers") or {}
out = {"restarted": [], "failed": {}, "hub": True, "previous": previous}
try:
    active = call("GET", "/users?state=active")
except (OSError, ValueError) as exc:
    active, out["hub"] = [], False
running = [(u["name"], s) for u in active for s in (u.get("servers") or {})]
for user, server in running:
    call("DELETE", path(user, server))
deadline = time.time() + limit
for user, server in running:
    while server in servers(user) and time.time() < deadline:
        time.sleep(0.5)
r = subprocess.run(["sh", "-c", switch, "sh", link, target, legacy], capture_output=True,
                   text=True)
if r.returncode:
    out["switch_error"] = r.stderr.strip()
for user, server in running:
    name = user + ("/" + server if server else "")
    try:
        call("POST", path(user, server))
    except urllib.error.HTTPError as exc:
        out["failed"][name] = "HTTP %d from the hub" % exc.code
deadline = time.time() + limit
for user, server in running:
    name = user + ("/" + server if server else "")
    if name in out["failed"]:
        continue
    while True:
        s = servers(user).get(server)
        if s and s.get("ready"):
            out["restarted"].append(name)
            break
        if s is None or time.time() > deadline:
            out["failed"][name] = ("did not start" if s is None
                                   else "not ready within %.0f s" % limit)
            break
        time.sleep(0.5)
print(json.dumps(out))
"""


def switch_users_env(run: HostRun) -> None:
    """Stop running users' servers, switch the users' environment, start them again."""
    v = run.vars
    link, target = v["jupyterhub_user_venv"], user_env(v)
    res = run.run(hub_api_argv(v, SWITCH_SCRIPT, link, target, envs.SWITCH,
                               envs.legacy_path(link), str(v["jupyterhub_start_timeout"])),
                  check=False, step=HANDLER,
                  timeout=3 * v["jupyterhub_start_timeout"] + 120,
                  display=f"stop running users' servers, switch {link} to {target}, "
                          "start them again")
    try:
        info = json.loads(res.out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ProvisionError(f"the switch of the users' environment to {target} failed",
                             host=run.host.name, step=HANDLER, stderr=res.err) from None
    if info.get("switch_error"):
        raise ProvisionError(f"the users' environment could not be switched to {target}: "
                             f"{info['switch_error']}", host=run.host.name, step=HANDLER)
    if info["failed"]:
        raise ProvisionError(
            f"the users' environment is now {target}, but these servers did not start again "
            "on it: " + "; ".join(f"{k}: {r}" for k, r in sorted(info["failed"].items())),
            host=run.host.name, step=HANDLER)
    pruned = envs.prune(run, link, target, info.get("previous"), step=HANDLER)
    if info["restarted"] or not info["hub"] or pruned:
        run.note("users' environment switched to " + target.rsplit("/", 1)[1]
                 + (f"; servers restarted on it: {', '.join(info['restarted'])}"
                    if info["restarted"] else "")
                 + ("" if info["hub"] else "; the hub did not answer, so no running server "
                    "was restarted") + pruned)


HANDLERS = [Handler(HANDLER, switch_users_env, "stop running users' servers, switch the "
                    "users' environment, start them again")]


def server_args(v: dict[str, Any]) -> list[str]:
    """Users' servers' arguments: ["--ServerApp.jpserver_extensions=jupyter_lsp=False"] for
    jupyterhub_server_extensions_disabled: [jupyter_lsp] (traitlets merges repeated ones)."""
    return [f"--ServerApp.jpserver_extensions={name}=False"
            for name in v["jupyterhub_server_extensions_disabled"]]


def hub(v: dict[str, Any]) -> HubContribution:
    """Users' servers start from this venv, which is also first on their PATH: `python`
    and `pip` in a terminal are the kernels' own."""
    venv = v["jupyterhub_user_venv"]
    config: list[tuple[str, Any]] = [("Spawner.cmd", [f"{venv}/bin/jupyterhub-singleuser"])]
    if v["jupyterhub_server_extensions_disabled"]:
        config.append(("Spawner.args", server_args(v)))
    return HubContribution(
        config=config,
        server_env={"PATH": f"{venv}/bin:/usr/local/bin:/usr/bin:/bin"})
