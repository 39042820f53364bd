"""What `invoke backup`, `invoke backups` and `invoke restore` do (no SSH code here: the
hosts' transport; the work is the host's backup program, provision/remote/backup.py).

- ``backup``: starts ``jhprovision-backup.service`` on each host (the same run the timer
  makes), waits for it, and reads what it saved from the program's ``last.json``. Ctrl-C
  stops the service (restic gets SIGINT: no snapshot, its lock removed, the repository
  valid) and reports the host failed.
- ``snapshots``: the repository's snapshots, per host.
- ``restore``: the snapshot's files back onto the host (see ``restore`` in the program).

Each returns ``{host: result}``, a result being the program's JSON with ``ok``; hosts run
in parallel, one failing never hides another.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import backupspec as bs
from .config import load_run
from .errors import ConfigError, ProvisionError
from .inventory import Host

SNAPSHOT_RE = re.compile(r"latest|[0-9a-f]{8,64}")


def _hosts(pattern: str, inventory: str | None) -> list[Host]:
    cfg = load_run(inventory, pattern)
    hosts = [h for h in cfg.hosts if bs.repository(h.vars) is not None]
    if not hosts:
        raise ConfigError(f"{pattern}: no selected host has backup_repository set "
                          "(docs/backup.md)")
    return hosts


def _program(transport: Any, args: list[str], timeout: float | None) -> dict[str, Any]:
    res = transport.run(["python3", "-I", bs.PROGRAM, *args], check=False, timeout=timeout,
                        step=f"backup.py {args[0]}")
    try:
        return json.loads(res.out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        why = (res.err.strip().splitlines() or [f"exit {res.rc}"])[-1]
        if "No such file" in res.err and bs.PROGRAM in res.err:
            why = f"{bs.PROGRAM} is missing: run invoke provision on this host first"
        return {"ok": False, "error": why}


def _each(hosts: list[Host], work: Callable[[Any, Host], dict[str, Any]],
          transport_factory: Callable[[Host], Any] | None,
          on_interrupt: Callable[[Host], None] | None = None) -> dict[str, dict[str, Any]]:
    """``work`` on every host in parallel; Ctrl-C runs ``on_interrupt`` for each host
    (on a connection of its own), then lets the workers end and raises."""
    from concurrent.futures import TimeoutError as FutureTimeout

    from .runner import make_transport

    factory = transport_factory or make_transport

    def one(host: Host) -> dict[str, Any]:
        try:
            transport = factory(host)
            connect = getattr(transport, "connect", None)
            if connect:
                connect()
        except ProvisionError as exc:
            return {"ok": False, "error": f"unreachable: {exc.message}"}
        try:
            return work(transport, host)
        except ProvisionError as exc:
            return {"ok": False, "error": exc.message}
        finally:
            transport.close()

    pool = ThreadPoolExecutor(max_workers=min(10, len(hosts)))
    futures = {h.name: pool.submit(one, h) for h in hosts}
    out: dict[str, dict[str, Any]] = {}
    try:
        for name, future in futures.items():
            while name not in out:
                try:
                    out[name] = future.result(timeout=0.5)
                except FutureTimeout:
                    continue
    except KeyboardInterrupt:
        for host in hosts:
            if on_interrupt is not None and not futures[host.name].done():
                on_interrupt(host)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return out


def backup(pattern: str, *, inventory: str | None = None, adopt: bool = False,
           transport_factory: Callable[[Host], Any] | None = None) -> dict[str, dict]:
    """Run one backup now on each selected host; what each saved."""
    hosts = _hosts(pattern, inventory)

    def work(transport: Any, host: Host) -> dict[str, Any]:
        if adopt:
            _program(transport, ["adopt"], 60)
        before = transport.run(["date", "+%s"], check=False).out.strip()
        started = transport.run(["systemctl", "start", "--", bs.SERVICE], check=False,
                                timeout=None, step="backup")
        last = transport.run(["cat", "--", bs.STATE + "/last.json"], check=False).out
        try:
            result = json.loads(last)
        except ValueError:
            result = None
        if not isinstance(result, dict) or (before.isdigit() and
                                            int(result.get("started", 0)) < int(before) - 5):
            log = transport.run(["journalctl", "--unit", bs.SERVICE, "--no-pager", "--lines",
                                 "8", "--output", "cat"], check=False).out.strip()
            return {"ok": False, "error": f"{bs.SERVICE} did not run (exit {started.rc}): "
                    + (log.splitlines() or ["no log"])[-1]}
        return result

    return _each(hosts, work, transport_factory,
                 on_interrupt=lambda host: _stop(host, transport_factory))


def _stop(host: Host, transport_factory: Callable[[Host], Any] | None) -> None:
    """After Ctrl-C: the backup on the host is stopped too (on a connection of its own:
    the first one waits for the start). restic gets SIGINT (KillSignal=): no snapshot,
    its lock removed, the repository valid; the run's last.json says interrupted."""
    from .runner import make_transport

    transport = (transport_factory or make_transport)(host)
    try:
        connect = getattr(transport, "connect", None)
        if connect:
            connect()
        transport.run(["systemctl", "stop", "--", bs.SERVICE], check=False, timeout=180)
    except ProvisionError:
        pass
    finally:
        transport.close()


def snapshots(pattern: str, *, inventory: str | None = None,
              transport_factory: Callable[[Host], Any] | None = None) -> dict[str, dict]:
    hosts = _hosts(pattern, inventory)
    return _each(hosts, lambda t, h: _program(t, ["snapshots"], 600), transport_factory)


def restore(pattern: str, *, inventory: str | None = None, snapshot: str = "latest",
            paths: list[str] | None = None,
            transport_factory: Callable[[Host], Any] | None = None) -> dict[str, dict]:
    """Restore ``snapshot`` (``paths`` of it) onto each selected host."""
    if not SNAPSHOT_RE.fullmatch(snapshot or ""):
        raise ConfigError(f"--snapshot {snapshot!r}: a snapshot ID (hex, as `invoke backups` "
                          "shows it) or 'latest'")
    problems = bs.check_paths("--paths", list(paths)) if paths else []
    if problems:
        raise ConfigError([why for _, why in problems])
    hosts = _hosts(pattern, inventory)
    args = ["restore", "--snapshot", snapshot]
    for p in paths or []:
        args += ["--path", p]
    return _each(hosts, lambda t, h: _program(t, args, None), transport_factory)


# -------------------------------------------------------------------------- output
def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def describe_backup(result: dict[str, Any]) -> str:
    if not result.get("ok"):
        return f"failed: {result.get('error') or 'unknown error'}"
    return (f"ok: snapshot {str(result.get('snapshot'))[:8]}: {result.get('files')} files "
            f"({result.get('files_new')} new, {result.get('files_changed')} changed), "
            f"{_size(result.get('bytes_added'))} added, in {result.get('seconds')} s")


def describe_snapshots(result: dict[str, Any]) -> list[str]:
    if not result.get("ok"):
        return [f"failed: {result.get('error')}"]
    rows = result.get("snapshots") or []
    if not rows:
        return ["no snapshots yet"]
    return [f"{s.get('short_id') or str(s.get('id'))[:8]}  {str(s.get('time'))[:19]}  "
            f"{' '.join(shlex.quote(p) for p in s.get('paths') or [])}" for s in rows]


def describe_restore(result: dict[str, Any], host: str) -> str:
    if not result.get("ok"):
        return f"failed: {result.get('error')}"
    text = f"ok: snapshot {result.get('snapshot')} restored: {' '.join(result['paths'])}"
    if result.get("aside"):
        text += f"; what was there is kept in {', '.join(result['aside'])}"
    if result.get("stopped"):
        text += (f"; stopped {', '.join(result['stopped'])}: run `invoke provision --hosts "
                 f"{host}` to start them with the restored state")
    return text
