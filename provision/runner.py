"""Run roles on hosts: hosts in parallel (bounded by ``forks``), roles in order per host.

Per host: connect once, gather every fact all roles need in one round trip, then for each
role plan and apply its actions; facts are gathered again only after a role changed
something (so a no-op run costs one round trip). Handlers run once at the end, for what
was notified in this run or left pending by an earlier one that failed before reaching
them (a marker file on the host remembers, so a restart is never lost). One host's
failure stops only that host; every host gets its own ``HostReport``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

from . import artifacts
from .display import Display
from .errors import ProvisionError, UnreachableError
from .facts import FactRequest, Facts, gather
from .hostrun import HostRun
from .inventory import Host
from .report import HostReport, RunReport, StepResult
from .role import Handler, registry, role_enabled
from .steps import Action, Push, Refuse, Upload
from .config import proxy_jump
from .transport import BatchOp, LocalTransport, SSHTransport, Transport

PENDING_DIR = "/var/lib/jhprovision/pending"
PROGRESS_EVERY = 15.0


MARK_PENDING = 'mkdir -p -m 0700 "$1" && : > "$2"'


def pending_marker(handler: str) -> str:
    return f"{PENDING_DIR}/{handler.replace(' ', '-')}"


def mark_pending_argv(handler: str) -> list[str]:
    """Remember on the host that ``handler`` is due (cleared once it ran)."""
    return ["sh", "-c", MARK_PENDING, "sh", PENDING_DIR, pending_marker(handler)]


def make_transport(host: Host) -> Transport:
    v = host.vars
    if v.get("ansible_connection") == "local":
        return LocalTransport(host.name)
    return SSHTransport(
        host.name,
        address=v.get("ansible_host"),
        port=v.get("ansible_port"),
        user=v.get("ansible_user"),
        key_file=v.get("ansible_ssh_private_key_file"),
        known_hosts_file=v.get("provision_known_hosts_file"),
        host_key_checking=v.get("ansible_host_key_checking", True),
        connect_timeout=float(v.get("provision_connect_timeout", 10)),
        proxy_jump=proxy_jump(v.get("ansible_ssh_common_args")),
    )


class HostApply(HostRun):
    """One host's run as the runner drives it: the roles' actions applied (short steps
    batched), the handlers they notify remembered on the host first."""

    def __init__(self, host: Host, transport: Transport, *, check: bool, display: Display,
                 cancel: threading.Event) -> None:
        super().__init__(host, transport, check=check, display=display, cancel=cancel)
        self._marked: set[str] = set()  # pending markers already written in this run

    # ------------------------------------------------------------------ actions
    def _result(self, role: str, action: Action) -> StepResult:
        """A step's result before it runs (its note said): ok, or changed with its
        commands."""
        result = StepResult(role, action.name, "changed" if action.changed else "ok",
                            diff=action.diff)
        if action.note:
            self.note(action.note)
        if action.changed:
            result.commands = [op.shown() for op in action.ops]
        return result

    def apply(self, role: str, action: Action) -> StepResult:
        result = self._result(role, action)
        if not action.changed:
            return result
        refusal = next((op for op in action.ops if isinstance(op, Refuse)), None)
        if refusal:
            result.status = "failed"
            result.error = _error(refusal.message)
            return result
        if self.check:
            return result
        if self.cancel.is_set():
            raise ProvisionError("interrupted", host=self.host.name, step=action.name)
        start = time.monotonic()
        stop = threading.Event()
        if action.long:
            threading.Thread(target=self._heartbeat, args=(f"{role}: {action.name}", stop,
                                                           start), daemon=True).start()
        try:
            for name in set(action.notify) - self._marked:
                # Remember the handler on the host first: if this run dies before handlers
                # run, the next run still restarts what this change needs restarted.
                self.transport.run(mark_pending_argv(name), step=action.name)
                self._marked.add(name)
            for op in action.ops:
                if isinstance(op, Upload):
                    self.transport.put(op.content, op.path, mode=op.mode, owner=op.owner,
                                       group=op.group, validate=op.validate, step=action.name,
                                       run_as=op.run_as)
                elif isinstance(op, Push):
                    artifacts.push(self, op, action.name)
                else:
                    self.transport.run(op.argv, stdin=op.stdin, timeout=op.timeout,
                                       step=action.name, display=op.display)
        except UnreachableError:
            raise
        except ProvisionError as exc:
            result.status = "failed"
            exc.step = exc.step or action.name
            result.error = exc.as_dict()
        finally:
            stop.set()
            result.duration = time.monotonic() - start
        return result

    # ------------------------------------------------------------------ batches
    @staticmethod
    def batchable(action: Action) -> bool:
        """Short steps go to the host together; a long one (pip, npm, apt) runs on its own
        with its progress shown, a refused one fails on its own."""
        return not action.long and not any(isinstance(op, Refuse | Push) for op in action.ops)

    def apply_all(self, role: str, actions: Sequence[Action]) -> Iterator[StepResult]:
        """Apply a role's actions in order, yielding each step's result as it is known:
        each run of consecutive short steps is one round trip (``Transport.run_batch``),
        each long step its own. Stops at the first failed step (the steps after it do not
        run and are not reported, as before)."""
        group: list[Action] = []
        for action in [*actions, None]:
            if action is not None and not self.check and self.batchable(action):
                group.append(action)
                continue
            for result in self._apply_group(role, group):
                yield result
                if result.status == "failed":
                    return
            group = []
            if action is None:
                return
            result = self.apply(role, action)
            yield result
            if result.status == "failed":
                return

    def _apply_group(self, role: str, actions: list[Action]) -> list[StepResult]:
        changed = [a for a in actions if a.changed]
        if len(changed) <= 1:  # nothing to gain: the step runs as it always did
            out = []
            for action in actions:
                out.append(self.apply(role, action))
                if out[-1].status == "failed":
                    break
            return out
        if self.cancel.is_set():
            raise ProvisionError("interrupted", host=self.host.name, step=changed[0].name)
        ops: list[BatchOp] = []
        owner: list[int] = []  # the action each op belongs to
        for index, action in enumerate(actions):
            if not action.changed:
                continue
            for name in sorted(set(action.notify) - self._marked):
                # Remembered on the host first, as in apply(): a run that dies before the
                # handlers still leaves the restart due.
                ops.append(BatchOp(mark_pending_argv(name)))
                owner.append(index)
                self._marked.add(name)
            for op in action.ops:
                if isinstance(op, Upload):
                    argv, shown = self.transport.put_argv(
                        op.path, mode=op.mode, owner=op.owner, group=op.group,
                        validate=op.validate, run_as=op.run_as)
                    ops.append(BatchOp(argv, op.content, shown))
                else:
                    ops.append(BatchOp(op.argv, op.stdin, op.display, op.timeout))
                owner.append(index)
        what = f"{role}: {len(changed)} steps in one batch"
        start = time.monotonic()
        stop = threading.Event()
        threading.Thread(target=self._heartbeat, args=(what, stop, start), daemon=True).start()
        try:
            done = self.transport.run_batch(ops, step=what)
        except UnreachableError:
            raise
        except ProvisionError as exc:  # the batch itself broke: its first step fails
            done = []
            failure = exc
        else:
            failure = None
        finally:
            stop.set()
        out = []
        for index, action in enumerate(actions):
            result = self._result(role, action)
            if action.changed:
                mine = [r for r, o in zip(done, owner, strict=False) if o == index]
                result.duration = sum(r.duration for r in mine)
                bad = next((r for r in mine if not r.ok), None)
                if bad is not None:
                    result.status = "failed"
                    result.error = self.transport.failed(bad, step=action.name).as_dict()
                elif len(mine) < owner.count(index):  # never reached: the batch broke
                    result.status = "failed"
                    err = failure or ProvisionError("not run", host=self.host.name)
                    err.step = action.name
                    result.error = err.as_dict()
            out.append(result)
            if result.status == "failed":
                break
        return out

    def _heartbeat(self, what: str, stop: threading.Event, start: float) -> None:
        while not stop.wait(PROGRESS_EVERY):
            self.display.progress(self.host.name, what, time.monotonic() - start)


def _record(hr: HostRun, result: StepResult) -> None:
    hr.report.steps.append(result)
    hr.display.step(hr.host.name, result, hr.check)


def _error(message: str, stderr: str = "") -> dict[str, Any]:
    """A report's error record, always built by the project's exception."""
    return ProvisionError(message, stderr=stderr).as_dict()


def _connect(host: Host, transport_factory: Callable[[Host], Transport],
             rep: HostReport, display: Display) -> Transport | None:
    """The host's transport, connected; None (and the report says why) when it is not."""
    transport = None
    try:
        transport = transport_factory(host)
        connect = getattr(transport, "connect", None)
        if connect:
            connect()
        return transport
    except Exception as exc:  # noqa: BLE001 - whatever it is, it stops only this host
        rep.unreachable = isinstance(exc, UnreachableError)
        rep.error = exc.message if isinstance(exc, ProvisionError) else \
            f"cannot set up the connection: {type(exc).__name__}: {exc}"
        if rep.unreachable:
            display.unreachable(host.name, rep.error)
        else:
            rep.steps.append(StepResult("engine", "connect", "failed", error=_error(rep.error)))
            display.host_failed(host.name, rep.error)
        if transport is not None:
            rep.round_trips = transport.round_trips
            _close(transport)
        return None


def _close(transport: Transport) -> None:
    try:
        transport.close()
    except Exception:  # noqa: BLE001 - closing a dead connection must not mask results
        pass


def _handlers(active: list[ModuleType]) -> list[tuple[str, Handler]]:
    """The handlers this run may run: the active roles' own, in dependency order."""
    wanted = {h.name for r in active for h in getattr(r, "HANDLERS", [])}
    return [pair for name, pair in registry().handlers.items() if name in wanted]


def _apply_roles(hr: HostApply, active: list[ModuleType], requests: list[FactRequest],
                 request: FactRequest, facts: Facts) -> None:
    """Plan and apply each role in order, each seeing only the facts it asked for; facts
    again only after a role changed something."""
    reg = registry()
    for index, role in enumerate(active):
        changed = False
        allowed = reg.may_notify(role)
        actions = list(role.plan(hr.vars, facts.restrict(requests[index])))
        if hr.vars.get("provision_artifacts") == "push":
            actions = [artifacts.localize(a) for a in actions]
        for action in actions:
            unknown = set(action.notify) - allowed
            if unknown:  # a programming error: refused before anything is written
                raise ProvisionError(f"role {role.NAME}: step {action.name!r} notifies "
                                     f"{', '.join(sorted(unknown))}, which the role does not "
                                     "declare (HANDLERS or NOTIFIES)", host=hr.host.name,
                                     step=action.name)
        for action, result in zip(actions, hr.apply_all(role.NAME, actions), strict=False):
            _record(hr, result)
            if result.status == "failed":
                raise _Stop()
            if action.changed:
                changed = True
                hr.notified.update(action.notify)
        if changed and not hr.check and index < len(active) - 1:
            facts = gather(hr.transport, request)


def _run_handlers(hr: HostRun, handlers: list[tuple[str, Handler]]) -> None:
    """Each due handler once, in order. After Ctrl-C none starts (a handler that runs
    finishes): their markers stay on the host, and the next run runs them."""
    for role_name, handler in handlers:
        if handler.name not in hr.notified:
            continue
        if hr.cancel.is_set() and not hr.check:
            raise ProvisionError("interrupted", host=hr.host.name, step=handler.name)
        result = StepResult(role_name, f"handler: {handler.name}", "changed",
                            diff=handler.description)
        if not hr.check:
            t0 = time.monotonic()
            try:
                handler.run(hr)
                hr.transport.run(["rm", "-f", "--", pending_marker(handler.name)],
                                 step=handler.name)
            except UnreachableError:
                raise
            except ProvisionError as exc:
                result.status = "failed"
                result.error = exc.as_dict()
            result.duration = time.monotonic() - t0
        hr.report.handlers.append(handler.name)
        _record(hr, result)
        if result.status == "failed":
            raise _Stop()


def converge_host(host: Host, roles: list[ModuleType], *, check: bool, display: Display,
                  cancel: threading.Event,
                  transport_factory: Callable[[Host], Transport] = make_transport) -> HostReport:
    """Apply ``roles`` to one host: connect, gather, apply, handlers; never raises (the
    report says what happened)."""
    start = time.monotonic()
    rep = HostReport(host.name)
    transport = _connect(host, transport_factory, rep, display)
    if transport is None:
        rep.duration = time.monotonic() - start
        return rep
    hr = HostApply(host, transport, check=check, display=display, cancel=cancel)
    hr.report = rep
    try:
        enabled = [r for r in roles if role_enabled(r, host.vars)]
        handlers = _handlers(enabled)
        active = [r for r in enabled if hasattr(r, "plan")]  # the others only contribute
        request = FactRequest(files={pending_marker(h.name) for _, h in handlers})
        requests = [role.facts(host.vars) for role in active]
        for one in requests:
            request.merge(one)
        facts: Facts = gather(transport, request)
        hr.notified.update(h.name for _, h in handlers
                           if facts.file(pending_marker(h.name)).exists)
        _apply_roles(hr, active, requests, request, facts)
        _run_handlers(hr, handlers)
    except _Stop:
        pass
    except UnreachableError as exc:
        rep.unreachable = True
        rep.error = exc.message
        display.unreachable(host.name, exc.message)
    except ProvisionError as exc:
        rep.error = str(exc)
        display.host_failed(host.name, str(exc).splitlines()[0])
        rep.steps.append(StepResult(exc.step or "engine", exc.step or "run", "failed",
                                    error=exc.as_dict()))
    except Exception as exc:  # noqa: BLE001 - a bug must fail this host, not the others
        import traceback

        rep.error = f"internal error: {type(exc).__name__}: {exc}"
        display.host_failed(host.name, rep.error)
        rep.steps.append(StepResult("engine", "internal error", "failed",
                                    error=_error(rep.error, traceback.format_exc())))
    finally:
        rep.round_trips = transport.round_trips
        _close(transport)
        rep.duration = time.monotonic() - start
    return rep


class _Stop(Exception):
    """A step failed: stop this host (already recorded)."""


def run(hosts: list[Host], roles: list[ModuleType], *, check: bool = False, forks: int = 10,
        display: Display | None = None, command: str = "provision",
        transport_factory: Callable[[Host], Transport] = make_transport) -> RunReport:
    """Converge ``hosts`` in parallel; returns the run's report (never raises per host)."""
    display = display or Display()
    display.width = max([display.width, *(len(h.name) for h in hosts)])
    report = RunReport({h.name: HostReport(h.name) for h in hosts}, check=check,
                       command=command)
    cancel = threading.Event()
    start = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts))))
    futures = {
        pool.submit(converge_host, h, roles, check=check, display=display, cancel=cancel,
                    transport_factory=transport_factory): h.name
        for h in hosts
    }
    try:
        for future, name in futures.items():
            while True:
                try:
                    report.hosts[name] = future.result(timeout=0.5)
                    break
                except TimeoutError:
                    continue
    except KeyboardInterrupt:
        # Let each host finish the op it is in (every op is atomic), then stop.
        cancel.set()
        display.line("interrupted: finishing the current command on each host, then stopping")
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    report.duration = time.monotonic() - start
    return report
