"""What the invoke tasks call: provision, add-user, remove-user (no SSH code here)."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import peers, runner
from .config import REPO, RunConfig, find_inventory, load_run
from .display import Display
from .errors import ConfigError
from .inventory import Inventory
from .inventory_edit import restore, update_user, users_file
from .report import RunReport
from .variables import check_username

LAST_RUN = REPO / ".provision" / "last-run.json"


def last_run_path(inventory: str | Path | None) -> Path:
    """Where the last run on ``inventory`` is recorded (for --retry-failed): one file per
    inventory, so a run on another inventory meanwhile (another class's lab, a test beside
    this one) does not take its place."""
    import hashlib

    from .config import find_inventory

    key = hashlib.sha256(str(find_inventory(inventory).resolve()).encode()).hexdigest()[:16]
    return LAST_RUN.with_name(f"last-run-{key}.json")


def failed_last_time(path: Path = LAST_RUN) -> str:
    """The hosts that failed or were unreachable in the last recorded run, as a pattern."""
    from .files import read_text

    try:
        data = json.loads(read_text(path, what="--retry-failed"))
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"--retry-failed: no previous run recorded ({path})") from exc
    hosts = data.get("failed_hosts") if isinstance(data, dict) else None
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise ConfigError(f"--retry-failed: {path} is not a report of a previous run "
                          "(no list of failed_hosts)")
    if not hosts:
        raise ConfigError("--retry-failed: the last run had no failed host; nothing to retry")
    return ",".join(hosts)


def provision(hosts: str = "all", *, inventory: str | None = None, check: bool = False,
              diff: bool = False, forks: int = 10, cli_vars: list[str] | None = None,
              json_path: str | None = None, verbose: bool = False,
              display: Display | None = None, command: str = "provision",
              config: RunConfig | None = None, roles: str | None = None) -> RunReport:
    """Converge the selected hosts; raises ConfigError before any connection if the
    inventory or the options are wrong."""
    if forks < 1:
        raise ConfigError(f"--forks {forks}: must be at least 1")
    if json_path and (Path(json_path).is_dir() or not Path(json_path).parent.is_dir()):
        raise ConfigError(f"--json: {json_path} is a directory, or its directory does not "
                          "exist: name a file")
    cfg = config or load_run(inventory, hosts, cli_vars, only_roles=roles)
    display = display or Display(verbose=verbose, diff=diff)
    if verbose and cfg.ignored:
        display.line(f"ignored (not jhprovision variables): {', '.join(cfg.ignored)}")
    for notice in cfg.notices:
        display.line(f"deprecated: {notice}")
    mode = "check mode: nothing will be changed" if check else "applying"
    display.line(f"{command}: {len(cfg.hosts)} host(s) ({', '.join(h.name for h in cfg.hosts)})"
                 f", {mode}")
    shared = peers.exchange(cfg, check=check, display=display, forks=forks)
    report = runner.run(cfg.hosts, cfg.roles, check=check, forks=forks, display=display,
                        command=command)
    peers.record(report, shared)
    display.recap(report)
    if not check:
        from .artifact_cache import after_run

        for line in after_run(cfg.hosts):  # the push cache, bounded
            display.line(line)
        report.write(last_run_path(cfg.inventory.path))
    if json_path:
        report.write(json_path)
    return report


def read_password(password_file: str | None) -> str | None:
    """From a file, stdin ('-') or an interactive prompt; None when there is none to ask."""
    if password_file == "-":
        text = sys.stdin.readline().rstrip("\n")
    elif password_file:
        from .files import read_text

        lines = read_text(password_file, what="--password-file", limit=4096).splitlines()
        if not lines:
            raise ConfigError(f"--password-file {password_file}: the file is empty")
        text = lines[0]
    elif sys.stdin.isatty():
        text = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != text:
            raise ConfigError("the two passwords differ")
    else:
        return None
    if not text:
        raise ConfigError("the password is empty")
    return text


def otp_enrolment(name: str, *, inventory: str | None, reset: bool,
                  secret_file: str | None) -> str | None:
    """A new one-time password secret for ``name``, or None when they have one already
    (and ``reset`` is not asked). A ``secret_file`` that exists is refused before anything
    is changed."""
    from . import otp

    if secret_file and (os.path.lexists(secret_file)):
        raise ConfigError(f"--otp-secret-file {secret_file}: exists already (it is never "
                          "overwritten)")
    inv = Inventory(find_inventory(inventory))
    listed = inv.resolve(inv.hosts[0], {}).vars.get("users") if inv.hosts else None
    current = next((u for u in listed or [] if isinstance(u, dict) and u.get("name") == name),
                   None)
    if current and current.get("otp_secret") and not reset:
        print(f"{name} has a one-time password secret already (kept; --otp-reset replaces "
              "it)")
        return None
    return otp.new_secret()


def hand_over_otp(name: str, secret: str, secret_file: str | None) -> None:
    """Show the new secret once (URI and QR code), or write it to a new 0600 file."""
    from . import otp

    if secret_file:
        try:
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         0o600)
        except OSError as exc:
            raise ConfigError(f"--otp-secret-file {secret_file}: {exc.strerror}") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(secret + "\n")
        print(f"{name}'s one-time password secret is in {secret_file} (0600)")
        return
    link = otp.uri(name, secret)
    print(f"\n{name}: scan this with an authenticator app (shown once, not stored "
          f"elsewhere than the inventory):\n")
    print(otp.qr_text(link))
    print(f"or enter: {link}\n")


def hash_password(password: str) -> str:
    """SHA-512 crypt hash, made on this machine; the password never leaves it."""
    try:
        proc = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n",
                              capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ConfigError("cannot hash the password: `openssl passwd -6` failed "
                          "(apt-get install openssl)") from exc
    return proc.stdout.strip()


def _next_uid(inv: Inventory) -> int:
    """The first uid from users_uid_min that no inventory user has on any host (counting
    the uids given to users listed without one)."""
    from .stack import users

    from .config import all_variables, defaults
    from .role import load_roles

    base = defaults(all_variables(load_roles()))
    used: set[int] = set()
    minimum = None
    for name in inv.hosts:
        v = inv.resolve(name, base).vars
        minimum = v.get("users_uid_min", 2000) if minimum is None else minimum
        try:
            used |= {u["uid"] for u in users(v)}
        except (TypeError, KeyError, AttributeError):
            continue  # a malformed users list: validation reports it next
    uid = minimum if isinstance(minimum, int) else 2000
    while uid in used:
        uid += 1
    return uid


def change_user(name: str, fields: dict[str, Any], *, hosts: str, inventory: str | None,
                create: bool, command: str, json_path: str | None = None,
                check: bool = False, diff: bool = False) -> RunReport:
    """Record a user change in the inventory, validate, then converge the hosts.

    If the changed inventory does not validate, the file is put back as it was and no
    host is touched.
    """
    why = check_username(name)
    if why:
        raise ConfigError(why)
    inv = Inventory(find_inventory(inventory))
    inv.select(hosts)  # an unknown host is an error before anything is written
    path = users_file(inv)
    old_text = path.read_text(encoding="utf-8") if path.exists() else None
    if create and "uid" not in fields:
        existing = next((u for u in (inv.resolve(inv.hosts[0], {}).vars.get("users") or [])
                         if isinstance(u, dict) and u.get("name") == name), None) \
            if inv.hosts else None
        if not existing or "uid" not in existing:
            fields = {**fields, "uid": _next_uid(inv)}
    update_user(path, name, fields, create=create)
    try:
        cfg = load_run(inventory, hosts)
    except ConfigError:
        restore(path, old_text)
        raise
    if check:
        restore(path, old_text)
    return provision(hosts, inventory=inventory, check=check, diff=diff, config=cfg,
                     command=command, json_path=json_path)
