"""proxy: configurable-http-proxy from npm, pinned, as its own unprivileged systemd unit.

The hub does not start the proxy (``ConfigurableHTTPProxy.should_start = False``), so a hub
restart leaves running notebook servers reachable. The proxy's API listens on loopback
only. Its auth token is generated once on the host into a 0600 environment file that
both units read, so hub and proxy always agree after restarts.

A restarted proxy (a new version, a new Node.js) starts with no routes: the handler asks
the running hub to put them back (``POST /hub/api/proxy``, by the jhprovision service,
which this role grants the ``proxy`` scope) and waits until the hub answers through the
proxy again. The hub itself is not restarted for it.
"""

from __future__ import annotations

import re
from typing import Any

from provision.errors import ProvisionError
from provision.facts import FactRequest, Facts
from provision.hostrun import HostRun
from provision.render import render
from provision.role import Handler, HubContribution, HubRole
from provision.stack import (
    API_SERVICE,
    HUB_HANDLER,
    HUB_UNIT,
    HUB_UPGRADE_HANDLER,
    PROXY_ENV_FILE,
    PROXY_HANDLER,
    PROXY_UNIT,
    hub_urls,
    stack,
)
from provision.steps import (
    Action,
    Command,
    Refuse,
    npm_package_json,
    plan_directory,
    plan_group,
    plan_npm,
    plan_secret,
    plan_service_started_by,
    plan_unit,
)
from provision.variables import Var

from ._common import HUB_API_PRELUDE, check_health, hub_api_argv, service_log

NAME = "proxy"
SUMMARY = (
    "configurable-http-proxy (npm, pinned) as its own unprivileged, hardened unit; API on "
    "loopback; token generated on the host, 0600"
)

REQUIRES = ("nodejs",)

VARIABLES = [
    Var("proxy_version", "5.3.0", "version", "configurable-http-proxy version (npm). 5.2+ "
        "needs Node.js >= 20; 4.6.x runs on Debian 12's Node 18."),
    Var("proxy_prefix", "/opt/configurable-http-proxy", "path", "npm global prefix the "
        "proxy is installed into."),
    Var("proxy_user", "chproxy", "username", "System user the proxy runs as."),
    Var("proxy_api_ip", "127.0.0.1", "ip", "Address of the proxy's REST API (keep it on "
        "loopback: whoever reaches it can reroute the hub)."),
    Var("proxy_api_port", 8001, "port", "Port of the proxy's REST API."),
    Var("proxy_log_level", "info", "str", "Proxy log level.",
        choices=("debug", "info", "warn", "error")),
    Var("proxy_ready_timeout", 30, "timeout", "Seconds the proxy's API may take to answer after "
        "a restart while its unit runs (a unit that fails is a failure at once)."),
]

# Minimum Node.js major each release line declares in engines.node, for the check made
# before anything is installed; the installed package.json is preferred when present.
ENGINES_MIN_MAJOR = {"4.": 10, "5.0.": 18, "5.1.": 18, "5.2.": 20, "5.3.": 20}
UNIT = PROXY_UNIT
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
ENV_FILE = PROXY_ENV_FILE
HANDLER = PROXY_HANDLER


def _path_env(v: dict[str, Any], facts: Facts) -> str:
    return stack(v).proxy_path_env(facts)


def required_major(v: dict[str, Any], facts: Facts) -> tuple[int | None, str]:
    data = facts.json_file(npm_package_json(v["proxy_prefix"], "configurable-http-proxy"))
    if data and data.get("version") == v["proxy_version"]:
        rng = str((data.get("engines") or {}).get("node", ""))
        m = re.match(r"^\s*>=?\s*v?(\d+)", rng)
        if m:
            return int(m.group(1)), rng
    for prefix, major in ENGINES_MIN_MAJOR.items():
        if v["proxy_version"].startswith(prefix):
            return major, f">= {major}"
    return None, ""


def facts(v: dict[str, Any]) -> FactRequest:
    return FactRequest(
        content={npm_package_json(v["proxy_prefix"], "configurable-http-proxy"), UNIT_PATH},
        files={"/etc/jupyterhub"},
        secret={ENV_FILE},
        units={UNIT},
        venvs={v["nodejs_prefix"]} if v["nodejs_source"] == "pypi" else set(),
    )


def unit_context(v: dict[str, Any], facts: Facts) -> dict[str, Any]:
    urls = hub_urls(v)
    hub_ip = v["jupyterhub_hub_connect_ip"] or v["jupyterhub_hub_ip"] or "127.0.0.1"
    if hub_ip in ("0.0.0.0", "::"):
        hub_ip = "127.0.0.1"
    hub = f"http://{'[' + hub_ip + ']' if ':' in hub_ip else hub_ip}:{v['jupyterhub_hub_port']}"
    return dict(
        v,
        proxy_env_file=ENV_FILE,
        proxy_path=_path_env(v, facts),
        proxy_bin=f"{v['proxy_prefix']}/bin/configurable-http-proxy",
        proxy_public_ip=urls.ip,
        proxy_public_port=urls.port,
        proxy_default_target=hub,
        proxy_error_target=f"{hub}{urls.base_url}hub/error",
    )


def plan(v: dict[str, Any], facts: Facts) -> list[Action]:
    actions = []
    node = stack(v).node_expected(facts)
    need, rng = required_major(v, facts)
    if node and need and int(node.split(".")[0]) < need:
        return [Action("node version check", ops=[Refuse(
            f"configurable-http-proxy {v['proxy_version']} needs node {rng}, but "
            f"nodejs_source={v['nodejs_source']} gives node {node}: set nodejs_source: pypi"
            + ("" if v["proxy_version"].startswith("4.") else ", or proxy_version: '4.6.3'"))])]
    user = v["proxy_user"]
    if user in facts.users and facts.users[user].uid >= 1000:
        return [Action(f"system user {user}", ops=[Refuse(
            f"proxy_user {user!r} is a regular account on this host (uid "
            f"{facts.users[user].uid}): the proxy's token would be readable by that user; "
            "use a system account (the default, chproxy, is made for it)")])]
    if user not in facts.users:
        actions.append(plan_group(facts, user, system=True))
        act = Action(f"system user {user}", ops=[Command(
            ["useradd", "--system", "--gid", user, "--no-create-home", "--home-dir",
             "/nonexistent", "--shell", "/usr/sbin/nologin", "--", user])],
            diff=f"+ system user {user}")
        actions.append(act)
    actions.append(plan_directory(facts, "/etc/jupyterhub", mode="0755"))
    actions.append(plan_secret(facts, ENV_FILE, prefix="CONFIGPROXY_AUTH_TOKEN=",
                               notify=(HANDLER,)))
    actions.append(plan_npm(facts, v["proxy_prefix"], "configurable-http-proxy",
                            v["proxy_version"], npm=stack(v).npm_argv(facts),
                            path_env=_path_env(v, facts), notify=(HANDLER,)))
    actions.append(plan_unit(facts, UNIT_PATH, render("proxy/configurable-http-proxy.service.j2",
                                                      unit_context(v, facts)),
                             notify=(HANDLER,)))
    actions.append(plan_service_started_by(facts, UNIT, HANDLER))
    return actions


# Asks the hub to put its routes back into a fresh proxy (POST /hub/api/proxy).
SYNC_ROUTES = HUB_API_PRELUDE + 'call("POST", "/proxy")\n'

# The hub handlers that restart it (and so re-add its routes themselves).
HUB_RESTARTS = (HUB_HANDLER, HUB_UPGRADE_HANDLER)


def restart_proxy(run: HostRun) -> None:
    """(Re)start the proxy and check its API answers (a unit that fails is reported at
    once, with the proxy's own log); then the running hub's routes are put back
    (``sync_routes``), unless the hub restarts in this run anyway."""
    run.run(["systemctl", "restart", "--", UNIT], timeout=120, step=HANDLER)
    # Any HTTP answer proves the API listens (without the token it is a 403).
    url = stack(run.vars).proxy_api_url + "/api/routes"
    health = check_health(run, UNIT, url, run.vars["proxy_ready_timeout"], step=HANDLER,
                          ok_below=500)
    if not health.ok:
        log, first_error = service_log(run, UNIT, health.since)
        raise ProvisionError(f"the proxy did not come back after a restart: {health.reason}"
                             + (f"; its error: {first_error}" if first_error else ""),
                             host=run.host.name, step=HANDLER,
                             command=f"systemctl restart {UNIT}", stderr=log)
    if not run.notified & set(HUB_RESTARTS):
        sync_routes(run)


def sync_routes(run: HostRun) -> None:
    """A running hub puts its routes back into the fresh proxy; proven by the hub
    answering through the proxy's public side."""
    if run.run(["systemctl", "is-active", "--quiet", "--", HUB_UNIT], check=False).rc != 0:
        return  # the hub adds every route when it starts
    st = stack(run.vars)
    res = run.run(hub_api_argv(run.vars, SYNC_ROUTES), check=False, step=HANDLER, timeout=90,
                  display="POST /hub/api/proxy (as the jhprovision service)")
    public = f"{st.urls.local_url}hub/api"
    health = check_health(run, HUB_UNIT, public, run.vars["proxy_ready_timeout"],
                          step=HANDLER) if res.rc == 0 else None
    if health is None or not health.ok:
        why = (res.err.strip().splitlines() or [f"exit {res.rc}"])[-1] if res.rc else \
            health.reason
        raise ProvisionError(f"the proxy restarted, but the hub's routes did not come back: "
                             f"{why}", host=run.host.name, step=HANDLER,
                             command="POST /hub/api/proxy")


def hub(v: dict[str, Any]) -> HubContribution:
    """The jhprovision service may ask the hub to re-sync the proxy's routes."""
    return HubContribution(roles=[HubRole(f"{API_SERVICE}-proxy", ["proxy"],
                                          services=[API_SERVICE])])


HANDLERS = [Handler(HANDLER, restart_proxy, "restart configurable-http-proxy, then have "
                    "the running hub put its routes back (the hub is not restarted)")]
