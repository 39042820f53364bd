"""The local lab: disposable Debian 12 hosts with systemd as PID 1, reachable by SSH.

Each host labK is a systemd-nspawn container booted over an overlayfs on a shared,
cached debootstrap tree, with its own network namespace and slirp4netns for egress and
for port forwards on 127.0.0.1 (SSH 22200+K, hub 28000+K, HTTP 28100+K, HTTPS 28200+K).
See docs/lab.md. Python API (all need root except `status`):

    from provision import lab
    hosts = lab.up(2)                         # boot lab1, lab2; wait until `running`
    lab.run_ssh("lab1", "hostname").stdout    # "lab1\\n", host key checked strictly
    lab.status()                              # [LabHost(name="lab1", ssh_port=22201, ...)]
    lab.down()                                # or lab.down(["lab2"])
"""

from __future__ import annotations

from typing import Any

__all__ = ["LabError", "LabHost", "down", "leftovers", "run_ssh", "ssh_argv", "status", "up"]
_WHERE = {"LabError": "errors", "leftovers": "host", "LabHost": "manage", "down": "manage",
          "run_ssh": "manage", "ssh_argv": "manage", "status": "manage", "up": "manage"}


def __getattr__(name: str) -> Any:
    """Loaded on first use: `invoke --list` or a provision run never pays for the lab."""
    if name not in _WHERE:
        raise AttributeError(f"module 'provision.lab' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"provision.lab.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
