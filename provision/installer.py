"""The hosts' Python installer: the one place that knows how a virtualenv is made and how
packages are installed into it, with ``uv`` (the default) or ``pip``.

``provision_python_installer`` picks it. Both install the same requirements under the
same pin set (``-c`` the file kept in the venv, ``provision.steps.plan_pip``), and both
leave pip in every virtualenv they make (users run it in their terminals; a host can go
back to ``pip`` with nothing to repair). What differs is only the argv built here:

- ``pip``: ``python3 -m venv`` (ensurepip: 3-5 s on a 2-core host), ``VENV/bin/pip
  install``, one package at a time, no parallel downloads.
- ``uv``: uv (pinned, ``UV_VERSION``) in its own root-owned virtualenv ``UV_HOME``,
  installed there by pip (so ``provision_artifacts: push`` pushes its wheel like any
  other, and the host installs it with ``--no-index --find-links``); ``uv venv`` (a few
  ms), then ``uv pip install --python VENV/bin/python``: parallel downloads, one
  resolution, files copied from its cache (``UV_CACHE``, root's only, 0700) and compiled
  to bytecode as pip does, so users' servers never compile the venv at each start.
  Measured on Debian 12 (docs/performance.md): the hub's and the users' sets from a cold
  cache in 27 s against pip's 106 s (medians), in under half pip's CPU.

The venvs are made by root and run by every user, so uv reads nothing a user could
write: no ``uv.toml`` or ``pyproject.toml`` anywhere (``UV_NO_CONFIG``), never a Python
of its own (``UV_PYTHON_DOWNLOADS=never``: the interpreter is always the host's
``python3``, named by path), its cache in root's directory. ``UV_SYSTEM_CERTS`` makes it
trust the host's CA store, as pip does (a site's proxy CA added with
update-ca-certificates), instead of the roots built into uv. uv reads no ``pip.conf``:
a host whose PyPI mirror is set there keeps ``provision_python_installer: pip``.
"""

from __future__ import annotations

from typing import Any

from .variables import Var

UV_VERSION = "0.13.10"  # the latest on PyPI on 2026-12-07
UV_HOME = "/opt/jhprovision-uv"
UV = f"{UV_HOME}/bin/uv"
UV_CACHE = "/var/cache/jhprovision-uv"

INSTALLERS = ("uv", "pip")

VARIABLE = Var(
    "provision_python_installer", "uv", "str", "What installs the hosts' Python packages "
    "(the hub's, the users' and Node.js's virtualenvs), under the same pin set either way: "
    f"`uv` ({UV_VERSION}, pinned, in its own root-owned virtualenv {UV_HOME}, its cache in "
    f"{UV_CACHE}: a fresh host's packages in a quarter of pip's time, docs/performance.md) "
    "or `pip` (each virtualenv's own; for a host whose package index is set in pip.conf, "
    "which uv does not read).", choices=INSTALLERS)

# uv's environment on the host: nothing read from a file a user could write, the host's
# own python3 and CA store, no progress bars in a non-terminal.
UV_ENV = ["env", "UV_NO_CONFIG=1", "UV_PYTHON_DOWNLOADS=never", f"UV_CACHE_DIR={UV_CACHE}",
          "UV_SYSTEM_CERTS=1", "UV_NO_PROGRESS=1"]


def kind(v: dict[str, Any]) -> str:
    """The installer a host's variables select."""
    return v.get(VARIABLE.name) or VARIABLE.default


def create_argv(installer: str, python: str, venv: str) -> list[str]:
    """Make the virtualenv ``venv`` with the interpreter ``python``."""
    if installer == "uv":
        return [*UV_ENV, UV, "venv", "--quiet", "--python", python, "--", venv]
    return [python, "-m", "venv", "--", venv]


def install_argv(installer: str, venv: str, constraints: str | None) -> list[str]:
    """Install into ``venv`` (requirements follow, after ``--``), constrained by the file
    at ``constraints``. Localized for push by inserting options after ``install``."""
    if installer == "uv":
        # copy: the venv shares no inode with the cache (hard links were no faster here);
        # bytecode compiled now, as pip does: the venv is root's, a user's process can
        # never write its __pycache__.
        argv = [*UV_ENV, UV, "pip", "install", "--python", f"{venv}/bin/python", "--quiet",
                "--link-mode", "copy", "--compile-bytecode"]
    else:
        argv = [f"{venv}/bin/pip", "install", "--no-input", "--quiet",
                "--disable-pip-version-check"]
    return [*argv, "-c", constraints] if constraints else argv


def seed(installer: str) -> tuple[str, ...]:
    """What a virtualenv this installer makes lacks and must be given with the first
    install (``python3 -m venv`` brings its own pip; ``uv venv`` brings none)."""
    return ("pip",) if installer == "uv" else ()


def repair_pip_argv(installer: str, venv: str) -> list[str] | None:
    """How a virtualenv missing pip gets it back, when not by ``seed`` at its next
    install (``python3 -m venv`` cut short before ensurepip ran)."""
    return None if installer == "uv" else [f"{venv}/bin/python", "-m", "ensurepip",
                                           "--default-pip"]
