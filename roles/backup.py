"""backup: restic backups of the host's semester (homes, the hub's state, OTP secrets,
/etc/jupyterhub, mod_md's store) on a systemd timer, to a local path or over sftp.

With ``backup_repository`` set, the host gets Debian's ``restic``, its own SSH key (made
on it; the public half goes to the repository host, which authorizes it for sftp only:
role backup_server), the repository password (made once on the workstation, kept in
``backup_password_file`` there and root-only here, so a rebuilt host reads its own
backups), the backup program (``provision/remote/backup.py``) and
``jhprovision-backup.service`` + ``.timer``. The repository is made by the first backup;
``invoke backup``, ``invoke backups`` and ``invoke restore`` use it (docs/backup.md).
Without ``backup_repository`` the role changes nothing and says the host has no backups.
"""

from __future__ import annotations

import json
import os
from typing import Any

from provision import backupspec as bs
from provision import remote
from provision.facts import FactRequest, Facts
from provision.render import render
from provision.role import Handler
from provision.runner import PENDING_DIR, HostRun
from provision.stack import HUB_UNIT, PROXY_UNIT, PROXY_HANDLER, HUB_HANDLER
from provision.steps import (
    Action,
    Command,
    Refuse,
    Upload,
    plan_apt,
    plan_attrs,
    plan_directory,
    plan_file,
    plan_service,
    plan_unit,
)
from provision.variables import Var

NAME = "backup"
SUMMARY = ("with `backup_repository`: restic backups on a systemd timer (homes, the hub's "
           "state with a consistent copy of its database, OTP secrets, /etc/jupyterhub, "
           "mod_md's store) to a local path or over sftp (to a host of the inventory: "
           "role backup_server); the password root-only on the host and kept on the "
           "workstation; `invoke backup`, `backups`, `restore`")
AFTER = ("jupyterhub", "otp", "apache")
PREFIXES = ("backup_",)

VARIABLES = [
    Var("backup_repository", None, "line", "Where the backups go (a restic repository): a "
        "local path on the host (a mounted disk), `sftp:user@host:/path` (an account you "
        "set up), or `sftp:HOST:/path` with HOST a host of the inventory (no user: its "
        "account, chrooted to /path, is made there by role backup_server). `{host}` is "
        "this host's inventory name. Null: no backups.", nullable=True),
    Var("backup_password_file", None, "line", "The workstation's copy of the repository "
        "password (0600; made at the first run, read back to a rebuilt host; keep a copy "
        "somewhere safe). `{host}` as above. Null: "
        "`~/.config/jhprovision/backup/HOST.password`.", nullable=True),
    Var("backup_schedule", "daily", "line", "When backups run (systemd OnCalendar=, e.g. "
        "`daily`, `*-*-* 02:30:00`); checked by the host's `systemd-analyze calendar`."),
    Var("backup_keep_daily", 7, "int", "Daily snapshots kept (restic forget --keep-daily)."),
    Var("backup_keep_weekly", 4, "int", "Weekly snapshots kept (restic forget "
        "--keep-weekly)."),
    Var("backup_paths", None, "list[str]", "What is backed up (absolute paths; missing ones "
        "are skipped). Null: /home, jupyterhub_state_dir, jupyterhub_otp_dir, "
        "jupyterhub_config_dir and /etc/apache2/md; a consistent copy of the hub's database "
        "is always added.", nullable=True),
    Var("backup_exclude", ["/home/*/.cache", "/home/*/.local/share/Trash", "/home/*/.npm",
                           "__pycache__", ".venv", ".ipynb_checkpoints"], "list[str]",
        "restic --exclude patterns (caches, virtualenvs); directories with a CACHEDIR.TAG "
        "are skipped too."),
]

HANDLER = "restart backup timer"
SERVICE_PATH = f"/etc/systemd/system/{bs.SERVICE}"
TIMER_PATH = f"/etc/systemd/system/{bs.TIMER}"
NO_BACKUPS = "no backups: backup_repository is not set (docs/backup.md)"


def check(v: dict[str, Any]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    value = v.get("backup_repository")
    me = v.get("inventory_hostname", "")
    if value is not None:
        repo, why = bs.parse_repository(bs.expand(value, me))
        if why:
            problems.append(("backup_repository", why))
        elif repo and repo.kind == "sftp" and repo.host == me:
            problems.append(("backup_repository", f"{value!r}: a host cannot keep its "
                             "backups on itself over sftp (a local path is that)"))
    why = bs.check_calendar(v.get("backup_schedule"))
    if why:
        problems.append(("backup_schedule", why))
    for key in ("backup_keep_daily", "backup_keep_weekly"):
        n = v.get(key)
        if isinstance(n, int) and not 0 <= n <= 10000:
            problems.append((key, f"{n}: between 0 and 10000"))
    if v.get("backup_keep_daily") == 0 and v.get("backup_keep_weekly") == 0:
        problems.append(("backup_keep_daily", "with backup_keep_weekly 0 too, every snapshot "
                         "would be forgotten"))
    problems += bs.check_paths("backup_paths", v.get("backup_paths"))
    problems += bs.check_excludes("backup_exclude", v.get("backup_exclude"))
    given = v.get("backup_password_file")
    if isinstance(given, str) and not given.startswith(("/", "~")):
        problems.append(("backup_password_file", f"{given!r}: an absolute path (or ~/...) on "
                         "the workstation"))
    return problems


# ------------------------------------------------------------------ phase one (peers)
PROGRAM_SOURCE = remote.source("backup.py")


def share(v: dict[str, Any], check: bool) -> Command | None:
    """Before the run: the host's key (made now if missing; not in check mode) and its
    password's sha256; the password itself only when the workstation has no copy."""
    if bs.repository(v) is None:
        return None
    argv = ["python3", "-I", "-c", PROGRAM_SOURCE, "share-client", bs.KEY, bs.PASSWORD]
    if check:
        argv.append("--check")
    if not os.path.exists(bs.password_file(v)):
        argv.append("--send-password")
    return Command(argv, display="python3 - (backup: this host's public key and password "
                   "hash)", timeout=60)


def _write_private(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def new_password() -> str:
    import secrets

    return secrets.token_urlsafe(32) + "\n"


def shared(v: dict[str, Any], data: dict[str, Any], check: bool) -> dict[str, Any]:
    """On the workstation: keep or make its copy of the password, and say what the plan
    is to do with the host's (``password_state``). The password goes no further."""
    import hashlib

    path = bs.password_file(v)
    host_password = data.pop("password", None)
    changed = ["+ an SSH key for backups, made on the host"] if data.get("made_key") else []
    if not os.path.exists(path) and not check:
        if host_password:
            _write_private(path, host_password)
            changed.append(f"+ {path}: the host's repository password (0600, not shown)")
        elif data.get("password_sha256") is None:
            _write_private(path, new_password())
            changed.append(f"+ {path}: a new repository password (0600, not shown)")
    if os.path.exists(path):
        with open(path, "rb") as fh:
            mine = hashlib.sha256(fh.read()).hexdigest()
        theirs = data.get("password_sha256")
        data["password_state"] = ("upload" if theirs is None else
                                  "same" if theirs == mine else "differs")
    else:
        data["password_state"] = "kept" if data.get("password_sha256") else "new"
    if changed:
        data["changed"] = "\n".join(changed)
    return data


# ------------------------------------------------------------------------- planning
def facts(v: dict[str, Any]) -> FactRequest:
    if bs.repository(v) is None:
        return FactRequest()
    return FactRequest(
        dpkg={"restic"},
        files={bs.ETC, bs.STATE, bs.CACHE, bs.PROGRAM_DIR, *_local_dirs(v)},
        secret={bs.PASSWORD, bs.KEY},
        content={bs.CONFIG, bs.SSH_CONFIG, bs.KNOWN_HOSTS, bs.PROGRAM, SERVICE_PATH,
                 TIMER_PATH},
        units={bs.SERVICE, bs.TIMER},
    )


def _local_dirs(v: dict[str, Any]) -> list[str]:
    repo = bs.repository(v)
    return [repo.path] if repo and repo.kind == "local" else []


def restic_repository(repo: bs.Repository) -> str:
    """What restic is given: the path, or sftp through the ssh_config's alias (inside the
    chroot of a managed account, the repository is /restic)."""
    if repo.kind == "local":
        return repo.path
    return f"sftp:{bs.SSH_ALIAS}:{'/' + bs.REPO_DIR if repo.managed else repo.path}"


def program_config(v: dict[str, Any]) -> dict[str, Any]:
    """backup.json: everything the host's program needs (no secret: the password's path)."""
    repo = bs.repository(v)
    if repo is None:
        raise ValueError("program_config: backup_repository is not set")
    db = bs.hub_db(v)
    pending = [PROXY_HANDLER, HUB_HANDLER]
    if v.get("apache_enabled"):
        pending.append("reload apache")
    return {
        "repository": restic_repository(repo),
        "password_file": bs.PASSWORD,
        "cache_dir": bs.CACHE,
        "sftp_command": (f"ssh -F {bs.SSH_CONFIG} {bs.SSH_ALIAS} -s sftp"
                         if repo.kind == "sftp" else None),
        "paths": bs.paths(v),
        "exclude": bs.excludes(v),
        "keep_daily": v["backup_keep_daily"],
        "keep_weekly": v["backup_keep_weekly"],
        "schedule": v["backup_schedule"],
        "hub_db": db,
        "hub_db_copy": f"{bs.DB_COPY_DIR}/jupyterhub.sqlite",
        "hub_state_dir": v["jupyterhub_state_dir"],
        "hub_config_dir": v["jupyterhub_config_dir"],
        "hub_units": [HUB_UNIT, PROXY_UNIT],
        "homes": ["/home"],
        "pending_dir": PENDING_DIR,  # the runner runs what is marked there
        "pending": pending,
    }


def _password(v: dict[str, Any], facts: Facts, state: str | None) -> Action:
    path = bs.password_file(v)
    name = "repository password"
    if state == "upload":
        with open(path, "rb") as fh:
            data = fh.read()
        return Action(name, ops=[Upload(bs.PASSWORD, data, "0600")],
                      diff=f"+ {bs.PASSWORD}: the repository password from {path} (not shown)")
    if state == "same":
        return plan_attrs(facts, bs.PASSWORD, mode="0600", name=name)
    if state == "new":  # check mode: nothing made yet
        return Action(name, ops=[Command(["true"], display=f"make a repository password in "
                                         f"{path} and {bs.PASSWORD}")],
                      diff=f"+ {bs.PASSWORD}: a new repository password (not shown)")
    if state == "differs":
        return Action(name, ops=[Refuse(
            f"the host's repository password ({bs.PASSWORD}) is not the one in {path}: the "
            "repository is encrypted with one of them. Put the right one in "
            f"{path} (or remove {bs.PASSWORD} on the host if it has never made a backup)")])
    return Action(name, ops=[Refuse("the host's password could not be read before the run "
                                    "(see the step 'share with peers')")])


def _ssh(v: dict[str, Any], facts: Facts, repo: bs.Repository) -> list[Action]:
    me = v.get("inventory_hostname", "")
    if repo.managed:
        if repo.host not in bs.peers(v):
            return [Action("repository host", ops=[Refuse(
                f"backup_repository names {repo.host!r}, which is no host of the inventory: "
                f"for a host outside it, give the account too (sftp:user@{repo.host}:...)")])]
        server = bs.shared(v, repo.host, "backup_server") or {}
        host_key = server.get("host_key")
        user = bs.account(me)
    else:
        host_key, user = None, repo.user
    actions = []
    text = render("backup/ssh_config.j2", dict(
        alias=bs.SSH_ALIAS, host=repo.host, user=user, key=bs.KEY,
        known_hosts=bs.KNOWN_HOSTS, known=repo.managed, ssh_config=bs.SSH_CONFIG))
    actions.append(plan_file(facts, bs.SSH_CONFIG, text, mode="0644"))
    if repo.managed and host_key:
        actions.append(plan_file(facts, bs.KNOWN_HOSTS, f"{repo.host} {host_key}\n"))
    elif repo.managed:
        act = Action(f"file {bs.KNOWN_HOSTS}")
        if not facts.file(bs.KNOWN_HOSTS).exists:
            act.note = (f"{repo.host}'s host key is not known yet: provision {repo.host} in "
                        "the same run (backups cannot reach it until then)")
        actions.append(act)
    return actions


def plan(v: dict[str, Any], facts: Facts) -> list[Action]:
    repo = bs.repository(v)
    if repo is None:
        return [Action("backups", note=NO_BACKUPS)]
    me = v.get("inventory_hostname", "")
    own = bs.shared(v, me, NAME) or {}
    actions = [
        plan_apt(facts, {"restic": None}),
        plan_directory(facts, bs.ETC, mode="0700"),
        plan_directory(facts, bs.STATE, mode="0700"),
        plan_directory(facts, bs.CACHE, mode="0700"),
        plan_directory(facts, bs.PROGRAM_DIR, mode="0755"),
    ]
    if repo.kind == "local":
        actions.append(plan_directory(facts, repo.path, mode="0700"))
    actions.append(_password(v, facts, own.get("password_state")))
    if facts.file(bs.KEY).exists or own.get("key"):
        actions.append(plan_attrs(facts, bs.KEY, mode="0600", name="SSH key for backups"))
    else:  # check mode on a new host: the key is made by the run
        actions.append(Action("SSH key for backups", ops=[Command(
            ["true"], display=f"ssh-keygen -t ed25519 -f {bs.KEY} (before the run)")],
            diff=f"+ {bs.KEY}: a new SSH key, made on the host"))
    if repo.kind == "sftp":
        actions += _ssh(v, facts, repo)
    actions.append(plan_file(facts, bs.PROGRAM, PROGRAM_SOURCE, mode="0644"))
    actions.append(plan_file(facts, bs.CONFIG, json.dumps(program_config(v), indent=2) + "\n",
                             mode="0600"))
    ctx = dict(v, program=bs.PROGRAM, config=bs.CONFIG, state=bs.STATE, cache=bs.CACHE,
               etc=bs.ETC, local_repository=repo.path if repo.kind == "local" else "")
    actions.append(plan_unit(facts, SERVICE_PATH, render("backup/jhprovision-backup.service.j2",
                                                         ctx)))
    timer = plan_unit(facts, TIMER_PATH, render("backup/jhprovision-backup.timer.j2", ctx),
                      notify=(HANDLER,))
    if any(isinstance(op, Upload) for op in timer.ops):
        # systemd's own reading of the schedule, before the timer is written
        timer.ops.insert(0, Command(["systemd-analyze", "calendar", "--",
                                     v["backup_schedule"]]))
    actions.append(timer)
    actions.append(plan_service(facts, bs.TIMER))
    return actions


def restart_timer(run: HostRun) -> None:
    """A changed schedule applies now, not after the next elapse of the old one."""
    run.run(["systemctl", "restart", "--", bs.TIMER], timeout=60, step=HANDLER)


HANDLERS = [Handler(HANDLER, restart_timer, "restart jhprovision-backup.timer (a changed "
                    "schedule)")]
