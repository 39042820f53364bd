"""What hosts tell each other before a run: the smallest cross-host step.

A role plans from one host's variables and facts; a few concerns need another host's
facts (a repository host must authorize the public key a backed-up host made on itself,
and the backed-up host must know the repository host's host key). Before the run, every
selected host whose enabled roles define ``share(v, check)`` runs that command once (one
round trip, hosts in parallel); its stdout (JSON) becomes ``shared[role]`` of that host.
Then every selected host's variables get ``provision_peers``:
``{host: {"vars": its variables, "shared": {role: data}}}`` for every host of the
inventory (hosts not in the run have ``vars`` only), so a role's ``enabled``/``plan`` can
read its peers' variables and what they shared, and stays a pure planner.

A role may also define ``shared(v, data, check) -> data``, run here on the workstation with
its own host's answer (e.g. to keep the workstation's copy of a secret); what it returns
is what the peers see. A host that cannot be reached here shares nothing; the run then
reports it unreachable as usual, and its peers plan without it (keeping what they have).

A share command must be harmless in check mode (it gets ``check=True`` and must change
nothing then). What it changes otherwise is shown as a changed step of its role.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .errors import ProvisionError
from .report import RunReport, StepResult
from .role import role_enabled

if TYPE_CHECKING:
    from .config import RunConfig
    from .display import Display
    from .inventory import Host
    from .transport import Transport

PEERS = "provision_peers"


def peer_vars(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """Every inventory host's merged variables (the selected hosts' as validated)."""
    from .config import all_variables, defaults

    base = defaults(all_variables(cfg.roles))
    selected = {h.name: h for h in cfg.hosts}
    out = {}
    for name in cfg.inventory.hosts:
        host = selected.get(name) or cfg.inventory.resolve(name, base)
        out[name] = {"vars": {k: v for k, v in host.vars.items() if k != PEERS},
                     "shared": {}}
    return out


def _share_one(host: Host, roles: list, check: bool,
               transport_factory: Callable[[Host], Transport]) -> tuple[dict, list[StepResult]]:
    sharing = [r for r in roles if hasattr(r, "share") and role_enabled(r, host.vars)]
    commands = [(r, r.share(host.vars, check)) for r in sharing]
    commands = [(r, c) for r, c in commands if c is not None]
    if not commands:
        return {}, []
    shared: dict[str, Any] = {}
    steps: list[StepResult] = []
    try:
        transport = transport_factory(host)
        connect = getattr(transport, "connect", None)
        if connect:
            connect()
    except Exception:  # noqa: BLE001 - the run reports it unreachable, with the reason
        return {}, []
    try:
        for role, command in commands:
            step = f"share with peers: {command.shown()}"
            try:
                res = transport.run(command.argv, stdin=command.stdin, timeout=command.timeout,
                                    check=True, step=step, display=command.display)
                data = json.loads(res.out)
                receive = getattr(role, "shared", None)
                data = receive(host.vars, data, check) if receive else data
            except (ProvisionError, ValueError) as exc:
                error = exc.as_dict() if isinstance(exc, ProvisionError) else \
                    ProvisionError(f"{role.NAME}: what the host shared is not JSON").as_dict()
                steps.append(StepResult(role.NAME, "share with peers", "failed", error=error))
                continue
            made = data.pop("changed", None) if isinstance(data, dict) else None
            if made:
                steps.append(StepResult(role.NAME, "share with peers", "changed", diff=made,
                                        commands=[command.shown()]))
            shared[role.NAME] = data
    finally:
        try:
            transport.close()
        except Exception:  # noqa: BLE001 - closing must not mask what was shared
            pass
    return shared, steps


def exchange(cfg: RunConfig, *, check: bool, display: Display | None = None,
             transport_factory: Callable[[Host], Transport] | None = None,
             forks: int = 10) -> dict[str, list[StepResult]]:
    """Fill every selected host's ``provision_peers``; returns the steps to report per
    host (what a share changed or why it failed)."""
    from .runner import make_transport

    factory = transport_factory or make_transport
    peers = peer_vars(cfg)
    for host in cfg.hosts:
        host.vars[PEERS] = peers
    wanted = [h for h in cfg.hosts
              if any(hasattr(r, "share") and role_enabled(r, h.vars) for r in cfg.roles)]
    steps: dict[str, list[StepResult]] = {}
    if not wanted:
        return steps
    if display is not None:
        display.width = max([display.width, *(len(h.name) for h in cfg.hosts)])
    lock = threading.Lock()

    def one(host: Host) -> None:
        data, found = _share_one(host, cfg.roles, check, factory)
        with lock:
            peers[host.name]["shared"] = data
            if found:
                steps[host.name] = found
        for result in found:
            if display is not None:
                display.step(host.name, result, check)

    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(wanted)))) as pool:
        list(pool.map(one, wanted))
    return steps


def record(report: RunReport, steps: dict[str, list[StepResult]]) -> None:
    """Put what the exchange changed or failed at the start of each host's report."""
    for name, found in steps.items():
        if name in report.hosts:
            report.hosts[name].steps[:0] = found
