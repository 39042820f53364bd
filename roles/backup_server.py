"""backup_server: on a host of the inventory that other hosts back up to (their
``backup_repository: sftp:THIS-HOST:/path``), one sftp-only account per backed-up host.

Each client gets a system account of its own (``bk-NAME``, group ``jhprovision-backup``,
no password, no shell), whose home is its ``/path``: root's directory, the account's
chroot, holding its repository (``/path/restic``, the account's alone, 0700). sshd lets
the group do nothing but sftp inside its chroot (``internal-sftp``, a ``Match Group``
block in an ``sshd_config.d`` drop-in checked by ``sshd -t``), with the one key the client
host made on itself (``restrict``, in a root-owned file under /etc/ssh). So one lab host
can neither read nor delete another's backups, nor log in here.

The clients' public keys come from the run itself: each client shares its key before the
run (provision.peers), and this role plans from what they shared; a client that is not
in the run keeps the key it has here.
"""

from __future__ import annotations

from typing import Any

from provision import backupspec as bs
from provision import remote
from provision.errors import ProvisionError
from provision.facts import FactRequest, Facts
from provision.render import render
from provision.role import Handler
from provision.runner import HostRun
from provision.steps import Action, Command, Refuse, plan_directory, plan_file, plan_group
from provision.variables import Var

NAME = "backup_server"
SUMMARY = ("on a host other hosts back up to (`backup_repository: sftp:HOST:/path`): per "
           "backed-up host, a system account of its own, sftp only (`internal-sftp`, "
           "chrooted to its directory), authorized for the key that host made on itself; "
           "the sshd drop-in checked by `sshd -t`")
AFTER = ("users",)
VARIABLES: list[Var] = []

HANDLER = "reload sshd"
SSH_UNIT = "ssh.service"


def enabled(v: dict[str, Any]) -> bool:
    return bool(bs.clients(v))


def share(v: dict[str, Any], check: bool) -> Command:
    """Before the run: this host's SSH host key, for its clients' known_hosts."""
    return Command(["python3", "-I", "-c", remote.source("backup.py"), "share-server",
                    bs.HOST_KEY], display="python3 - (backup_server: this host's SSH host "
                   "key)", timeout=60)


def key_file(account: str) -> str:
    return f"{bs.SERVER_KEYS_DIR}/{account}"


def facts(v: dict[str, Any]) -> FactRequest:
    req = FactRequest(files={bs.SERVER_KEYS_DIR}, content={bs.SSHD_DROPIN}, units={SSH_UNIT})
    for c in bs.clients(v):
        req.files |= {c.chroot, f"{c.chroot}/{bs.REPO_DIR}"}
        req.content.add(key_file(c.account))
    return req


def _account(facts: Facts, c: bs.Client) -> list[Action]:
    cur = facts.users.get(c.account)
    name = f"account {c.account} (backups of {c.name})"
    if cur is None:
        return [Action(name, ops=[Command(
            ["useradd", "--system", "--gid", bs.SERVER_GROUP, "--home-dir", c.chroot,
             "--no-create-home", "--shell", "/usr/sbin/nologin", "--password", "*",
             "--comment", f"backups of {c.name} (jhprovision)", "--", c.account])],
            diff=f"+ system user {c.account} (home {c.chroot}, sftp only)")]
    if cur.uid >= 1000:
        return [Action(name, ops=[Refuse(
            f"{c.account} is a regular account on this host (uid {cur.uid}): the backups "
            f"of {c.name} need an account of their own; remove or rename it")])]
    act = Action(name)
    if cur.home != c.chroot:
        act.ops.append(Command(["usermod", "--home", c.chroot, "--", c.account]))
        act.diff = f"~ {c.account}: home {cur.home} -> {c.chroot}"
    return [act]


def _key(facts: Facts, c: bs.Client) -> Action:
    path = key_file(c.account)
    if c.key:
        # restrict: no forwarding, no pty, no rc file, whatever sshd's defaults say
        return plan_file(facts, path, f"restrict {c.key}\n", notify=())
    act = Action(f"file {path}")
    if not facts.file(path).exists:
        act.note = (f"{c.name}'s key is not known yet: provision {c.name} and this host in "
                    "one run (its backups cannot reach this host until then)")
    return act


def plan(v: dict[str, Any], facts: Facts) -> list[Action]:
    found = bs.clients(v)
    chroots: dict[str, str] = {}
    for c in found:
        if c.chroot in chroots:
            return [Action("backup accounts", ops=[Refuse(
                f"{chroots[c.chroot]} and {c.name} both keep their backups in {c.chroot}: "
                "give each host a directory of its own (e.g. /srv/backup/{host})")])]
        chroots[c.chroot] = c.name
    actions = [plan_group(facts, bs.SERVER_GROUP, system=True)]
    for c in found:
        actions += _account(facts, c)
        # sshd's ChrootDirectory: every component root's, writable by no one else
        actions.append(plan_directory(facts, c.chroot, mode="0755"))
        actions.append(plan_directory(facts, f"{c.chroot}/{bs.REPO_DIR}", mode="0700",
                                      owner=c.account, group=bs.SERVER_GROUP))
    actions.append(plan_directory(facts, bs.SERVER_KEYS_DIR, mode="0755"))
    actions += [_key(facts, c) for c in found]
    text = render("backup_server/sshd.conf.j2", dict(group=bs.SERVER_GROUP,
                                                       keys_dir=bs.SERVER_KEYS_DIR))
    # alone first (syntax and directives); the whole configuration by the handler
    actions.append(plan_file(facts, bs.SSHD_DROPIN, text, validate=["sshd", "-t", "-f", "{}"],
                             notify=(HANDLER,)))
    return actions


# sshd reads its whole configuration again: checked with the drop-in in place first; a
# configuration sshd refuses loses the drop-in (sshd keeps running on the old one).
RELOAD_SCRIPT = r"""set -eu
dropin=$1
if ! out=$(sshd -t 2>&1); then
  rm -f -- "$dropin"
  printf 'sshd -t refused the configuration with %s (removed again): %s\n' "$dropin" "$out" >&2
  exit 1
fi
systemctl try-reload-or-restart ssh.service
"""


def reload_sshd(run: HostRun) -> None:
    res = run.run(["sh", "-c", RELOAD_SCRIPT, "sh", bs.SSHD_DROPIN], check=False,
                  timeout=60, step=HANDLER)
    if res.rc != 0:
        raise ProvisionError("sshd refused the backup accounts' configuration",
                             host=run.host.name, step=HANDLER, command="sshd -t",
                             rc=res.rc, stderr=res.err)


HANDLERS = [Handler(HANDLER, reload_sshd, "sshd -t with the drop-in, then reload ssh.service "
                    "(running sessions are kept)")]
