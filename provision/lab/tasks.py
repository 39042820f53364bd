"""Invoke tasks of the local lab: `lab.up`, `lab.down`, `lab.status`, `lab.ssh`.

Thin: parse options, call `provision.lab`, print, and turn a `LabError` into
`invoke.Exit` (a message, exit code 1, no traceback). The root tasks.py adds this
collection with `ns.add_collection(lab_ns)`.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from provision import lab
from provision.lab import config, render


def _log_to_stderr() -> None:
    logger = logging.getLogger("provision.lab")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("lab: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _table(hosts: list[lab.LabHost], systemd: dict[str, str] | None = None) -> str:
    header = ["HOST", "SUITE", "NET", "SSH", "STATE", "SYSTEMD", "PID", "HUB URL"]
    rows = [
        [h.name, h.suite, "offline" if h.offline else "online", str(h.ssh_port), h.state,
         (systemd or {}).get(h.name, "-"), str(h.pid or "-"), h.hub_url]
        for h in hosts
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


@task(help={"count": "number of hosts: lab1..labN (default 1)",
            "suite": "Debian suite of the hosts booted now: bookworm (12, default) or trixie "
                     "(13)",
            "offline": "the hosts booted now get no way out (no route to any registry, "
                       "like an air-gapped lab); lab.status shows NET offline",
            "shared_home": "the hosts booted now share one /home (.lab/shared-home of this "
                           "machine: the lab's stand-in for a site's NFS-mounted /home)"})
def up(c: Context, count: str | None = None, suite: str = config.SUITE,
       offline: bool = False, shared_home: bool = False) -> None:
    """Boot lab hosts lab1..labN (Debian 12 or 13, systemd, sshd) and wait until they run.

    Hosts already running are left alone (and keep their suite and network). The first
    run on a machine builds the suite's base image with debootstrap (about 1-2 minutes;
    cached in /var/cache/jhprovision-lab). Writes inventory/lab.yml and .lab/known_hosts.
    Needs root.

    Example: invoke lab.up --count 2; invoke lab.up --count 4 --suite trixie;
    invoke lab.up --count 3 --offline (lab3 offline beside running lab1 and lab2);
    invoke lab.up --count 3 --shared-home (one /home for a Slurm cluster's hosts)
    """
    try:
        n = int(count or 1)
    except ValueError:
        raise Exit(f"error: --count: {count!r} is not a whole number", code=2) from None
    if suite not in config.SUITES:
        raise Exit(f"error: --suite: {suite!r} is not one of {', '.join(config.SUITES)}",
                   code=2)
    _log_to_stderr()
    started = time.monotonic()
    try:
        hosts = lab.up(n, suite=suite, offline=offline, shared_home=shared_home)
    except lab.LabError as err:
        raise Exit(f"lab.up failed: {err}", code=1) from err
    print(_table(hosts, {h.name: "running" for h in hosts}))
    print(
        f"lab.up: {len(hosts)} host(s) running in {time.monotonic() - started:.1f}s; "
        f"inventory: {config.INVENTORY_FILE}"
    )


def host_names(value: str | None, known: list[str]) -> list[str] | None:
    """`--hosts lab1,lab3` as names (None: every host); refuses a name that is not a lab
    host's, or one the lab does not have (nothing is taken down then)."""
    if value is None:
        return None
    names = list(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    if not names:
        raise Exit("error: --hosts is empty: name lab hosts (lab1,lab2)", code=2)
    try:
        names = [render.host_name(render.host_index(n)) for n in names]
    except lab.LabError as err:
        raise Exit(f"error: --hosts: {err}", code=2) from None
    unknown = [n for n in names if n not in known]
    if unknown:
        raise Exit(f"error: --hosts: the lab has no {', '.join(unknown)} (it has: "
                   f"{', '.join(known) or 'none'}); nothing was taken down", code=2)
    return names


@task(help={"hosts": "only these hosts, comma-separated (lab1,lab3); the others keep "
                     "running (default: every host)"})
def down(c: Context, hosts: str | None = None) -> None:
    """Stop and delete lab hosts (every one, or --hosts); no process, mount or namespace
    is left behind.

    Rewrites inventory/lab.yml and .lab/known_hosts for the hosts left (removes them when
    none is); keeps the lab's key and the cached base image. Needs root.

    Example: invoke lab.down; invoke lab.down --hosts lab1 (then lab.up boots a fresh one)
    """
    _log_to_stderr()
    started = time.monotonic()
    known = [h.name for h in lab.status()]
    names = host_names(hosts, known)
    try:
        lab.down(names)
    except lab.LabError as err:
        raise Exit(f"lab.down failed: {err}", code=1) from err
    gone = known if names is None else names
    print(
        f"lab.down: removed {len(gone)} host(s) {' '.join(gone)} "
        f"in {time.monotonic() - started:.1f}s"
    )


@task
def status(c: Context) -> None:
    """List lab hosts: SSH port, state, systemd's state, nspawn PID, hub URL.

    Example: invoke lab.status
    """
    hosts = lab.status()
    if not hosts:
        print("no lab hosts (start some with `invoke lab.up --count N`)")
        return
    from provision.lab.host import system_state

    systemd = {h.name: system_state(h.name) if h.state == "running" else "-" for h in hosts}
    print(_table(hosts, systemd))


@task(help={"name": "host name, e.g. lab1", "command": "run this shell command and exit"})
def ssh(c: Context, name: str, command: str | None = None) -> None:
    """Open a root shell on a lab host, or run one command and exit with its exit code.

    Example: invoke lab.ssh lab1 --command 'systemctl status jupyterhub'
    """
    try:
        argv = lab.ssh_argv(name, command)
    except lab.LabError as err:
        raise Exit(str(err), code=1) from err
    if not any(h.name == name and h.state == "running" for h in lab.status()):
        raise Exit(
            f"{name} is not running (see `invoke lab.status`; start it with "
            "`invoke lab.up --count N`)",
            code=1,
        )
    # Not c.run: the shell needs this terminal as it is, and the exit code passes through.
    rc = subprocess.run(argv).returncode
    if rc != 0:
        raise Exit(code=rc)


ns = Collection("lab", up, down, status, ssh)
