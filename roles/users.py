"""users: Linux accounts from the inventory, created with ``useradd``, kept with ``usermod``.

Every account is shadow's own work (``useradd``, ``usermod``, ``userdel``, ``chpasswd``,
``gpasswd``): what sysadmins and auditors trust, with its locks, hooks, caches and audit
records. What is batched is the talking, not the writing: a role's steps go to the host in
one round trip, a run's password hashes are set by one ``chpasswd --encrypted`` and each
group's members by one ``gpasswd --members``.

Every user with ``state: present`` is a member of ``users_hub_group``, which is what lets
them log in to JupyterHub (``allowed_groups``): adding or locking a user therefore changes
group membership only, never the hub's config, and never restarts the hub.
"""

from __future__ import annotations

import re
from typing import Any

from provision.facts import FactRequest, Facts
from provision.role import registry
from provision.role import HubContribution, HubRole, HubService
from provision.stack import API_ENV_FILE, API_SERVICE, API_TOKEN_ENV, user_unit
from provision.steps import (Action, Command, Refuse, plan_directory, plan_file, plan_group,
                             plan_user)
from provision.variables import Var, check_username, suggest

from ._common import (
    USER_KEYS,
    USER_STATES,
    home_of,
    hub_api_url,
    managed_names,
    user_spec,
    users,
)

NAME = "users"
SUMMARY = (
    "Linux users from the inventory (`useradd`, `usermod`, one `chpasswd` for a run's "
    "password hashes), same uid on every host, optional password hash and SSH keys; "
    "every present user is in `jupyterhub-users`, which may log in"
)

VARIABLES = [
    Var("users", [], "list[dict]",
        "Lab users. Each: `name` (required), `uid`, `shell`, `groups` (extra groups), "
        "`authorized_keys` (list of SSH public keys; when given, the file is managed), "
        "`password_hash` (crypt hash, e.g. from `openssl passwd -6`), `admin` (member of "
        "the wheel group: sudo and JupyterHub admin), `state` (present, locked, absent: "
        "absent archives the home to /var/backups/jhprovision, then deletes the account), "
        "`comment`; roles add more (role otp: `otp_secret`)."),
    Var("users_default_shell", "/bin/bash", "path", "Login shell of users that name none."),
    Var("users_home_mode", "0750", "mode", "Mode of each user's home directory."),
    Var("users_uid_min", 2000, "int",
        "First uid given to users listed without one (same inventory, same uid everywhere)."),
    Var("users_hub_group", "jupyterhub-users", "group",
        "Group of every present user; JupyterHub lets its members log in."),
    Var("users_bulk_create", None, "bool",
        "Removed: every account is made by `useradd` (the batch writer of the account "
        "files is gone). Ignored, with a notice.", nullable=True,
        deprecated="users_bulk_create is removed and ignored: every account is made by "
                   "useradd; delete the variable"),
]

# System groups that hand out root's files or devices: never a lab user's extra group.
PRIVILEGED_GROUPS = {"root", "sudo", "shadow", "disk", "kmem", "adm", "sys", "bin", "daemon",
                     "tty", "utmp", "proxy", "operator", "staff", "src", "backup", "lp"}
KEY_RE = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-\S+|sk-\S+)\s+[A-Za-z0-9+/=]+(\s.*)?$")


def check(v: dict[str, Any]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    uids: dict[int, str] = {}
    for i, u in enumerate(v.get("users") or []):
        key = f"users[{i}]"
        if not isinstance(u, dict) or "name" not in u:
            problems.append((key, "each user needs at least a name"))
            continue
        extra = registry().user_fields  # fields other roles add (e.g. otp_secret)
        known = USER_KEYS | set(extra)
        for k in sorted(map(str, set(u) - known)):
            problems.append((f"{key}.{k}", f"unknown user field {k!r}"
                             f"{suggest(k, sorted(known))}"))
        for k, check_field in extra.items():
            why = check_field(u[k]) if u.get(k) is not None else None
            if why:
                problems.append((f"{key}.{k}", why))
        why = check_username(u["name"])
        if why:
            problems.append((f"{key}.name", why))
            continue
        service = {v.get("proxy_user"): "proxy_user"}
        if u["name"] in service:
            problems.append((f"{key}.name", f"{u['name']!r} is the proxy's service account "
                             f"({service[u['name']]}): a lab user cannot be a service user"))
            continue
        if u["name"] in seen:
            problems.append((f"{key}.name", f"user {u['name']!r} is listed twice "
                             f"(also users[{seen[u['name']]}])"))
        seen[u["name"]] = i
        uid = u.get("uid")
        if uid is not None:
            if isinstance(uid, bool) or not isinstance(uid, int) or not 1000 <= uid <= 59999:
                problems.append((f"{key}.uid", f"{uid!r} is not a regular user uid "
                                 "(1000-59999)"))
            elif uid in uids:
                problems.append((f"{key}.uid", f"uid {uid} is also given to {uids[uid]!r}"))
            else:
                uids[uid] = u["name"]
        shell = u.get("shell")
        if shell is not None and (not isinstance(shell, str) or not shell.startswith("/")
                                  or any(c in shell for c in " \n:")):
            problems.append((f"{key}.shell", f"{shell!r} is not an absolute path"))
        groups = u.get("groups", [])
        if not isinstance(groups, list) or not all(
                isinstance(g, str) and re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", g)
                for g in groups):
            problems.append((f"{key}.groups", "must be a list of group names"))
        else:
            managed = {v.get("wheel_group", "wheel"): "admin: true",
                       v.get("users_hub_group", "jupyterhub-users"): "state: present"}
            for g in groups:
                if g in managed:
                    problems.append((f"{key}.groups", f"{g!r} is managed by its role; use "
                                     f"{managed[g]} on the user instead"))
                elif g in PRIVILEGED_GROUPS or g.startswith("systemd-"):
                    problems.append((f"{key}.groups", f"{g!r} is a system group that gives "
                                     "root's powers or secrets (admins: admin: true)"))
        keys = u.get("authorized_keys")
        if keys is not None:
            if not isinstance(keys, list) or not all(isinstance(k, str) and KEY_RE.match(k)
                                                     and "\n" not in k for k in keys):
                problems.append((f"{key}.authorized_keys", "must be a list of SSH public keys "
                                 "('ssh-ed25519 AAAA... comment')"))
        ph = u.get("password_hash")
        if ph is not None and (not isinstance(ph, str)
                               or not re.fullmatch(r"\$[0-9a-z]+\$[./0-9A-Za-z$=,]+", ph)):
            problems.append((f"{key}.password_hash", "must be a crypt(3) hash such as "
                             "'$6$...' or '$y$...' (see `openssl passwd -6`), never a "
                             "plain password"))
        if not isinstance(u.get("admin", False), bool):
            problems.append((f"{key}.admin", "must be true or false"))
        if u.get("state", "present") not in USER_STATES:
            problems.append((f"{key}.state", f"{u.get('state')!r} is not one of "
                             f"{', '.join(USER_STATES)}"))
        comment = u.get("comment", "")
        if not isinstance(comment, str) or any(c in comment for c in ":\n"):
            problems.append((f"{key}.comment", "must be a string without ':' or newlines"))
    return problems


# Ends a user's access on the host: through the hub's API (server stopped, hub user
# forgotten, so their cookies stop working; the token never leaves the host), then every
# process of theirs (terminals, kernels, sudo sessions). A hub that is not there or does
# not answer is no reason to keep a locked user's processes: the warning says so.
END_SESSION = r"""set -u
user=$1 api=$2 envfile=$3 unit=$4
if [ -r "$envfile" ]; then
  python3 -I -S - "$user" "$api" "$envfile" <<'PY' \
    || echo "warning: the hub did not end $user's session" >&2
import sys, urllib.error, urllib.request
user, api, envfile = sys.argv[1:4]
token = [line.split("=", 1)[1].strip() for line in open(envfile)
         if line.startswith("JHPROVISION_API_TOKEN=")][0]
req = urllib.request.Request("%s/users/%s" % (api, user), method="DELETE",
                             headers={"Authorization": "token " + token})
try:
    urllib.request.urlopen(req, timeout=60)
except urllib.error.HTTPError as exc:
    if exc.code != 404:
        raise
PY
fi
# A server SystemdSpawner started lives in its own unit: stop it (a no-op if the hub did,
# or if there is none), and forget a failed one.
systemctl stop -- "$unit" 2>/dev/null
systemctl reset-failed -- "$unit" 2>/dev/null
pkill -TERM -u "$user" 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do
  pgrep -u "$user" >/dev/null || exit 0
  sleep 0.5
done
pkill -KILL -u "$user" 2>/dev/null
sleep 0.5
exit 0
"""


def end_session(v: dict[str, Any], name: str) -> Action:
    """Stop ``name``'s notebook server, end their hub session and their processes."""
    return Action(f"end {name}'s session", ops=[Command(
        ["sh", "-c", END_SESSION, "sh", name, hub_api_url(v), API_ENV_FILE, user_unit(name)],
        display=f"end {name}'s session: hub server and login, then processes",
        timeout=120)], diff=f"- {name}: running server, hub session and processes ended")


CHPASSWD = ["chpasswd", "--encrypted"]


def merge_passwords(actions: list[Action]) -> list[Action]:
    """Set the hashes of several accounts with one ``chpasswd`` (each run locks and
    rewrites the shadow file and syncs it to disk: 16 ms, so 300 of them cost seconds).

    Only a hash set last in its account's step moves: a lock or unlock planned after it
    must still come after it. The merged step follows every account's own step."""
    movable = [a for a in actions if a.name.startswith("user ") and a.ops
               and isinstance(a.ops[-1], Command) and a.ops[-1].argv == CHPASSWD]
    if len(movable) < 2:
        return actions
    stdin, diff = b"", []
    for act in movable:
        stdin += act.ops.pop().stdin or b""
        lines = act.diff.split("\n")
        diff += [line for line in lines if line.endswith(": password set (hash not shown)")]
        act.diff = "\n".join(line for line in lines if line not in diff)
    merged = Action(f"passwords of {len(movable)} users", ops=[Command(
        CHPASSWD, stdin=stdin,
        display=f"chpasswd --encrypted  # {len(movable)} users:(hashes not shown)")],
        diff="\n".join(diff))
    last = max(i for i, a in enumerate(actions) if a.name.startswith("user "))
    return [*actions[:last + 1], merged, *actions[last + 1:]]


def hub(v: dict[str, Any]) -> HubContribution:
    """The hub service through which a locked or removed user's session is ended."""
    return HubContribution(
        services=[HubService(API_SERVICE, "ends a locked or removed user's server and hub "
                             "session (invoke remove-user)",
                             token_env=API_TOKEN_ENV)],
        roles=[HubRole(API_SERVICE, ["admin:users", "admin:servers"],
                       services=[API_SERVICE])])


def facts(v: dict[str, Any]) -> FactRequest:
    req = FactRequest()
    for u in users(v):
        home = f"~{u['name']}"  # the account's real home, wherever it is
        req.shadow.add(u["name"])
        # /home/NAME too: a home left behind by an earlier account, which useradd keeps
        # as it is (neither its mode nor its owner)
        req.files.update({home, f"{home}/.ssh", f"/home/{u['name']}"})
        req.content.add(f"{home}/.ssh/authorized_keys")
        if u["password_hash"]:
            req.password[u["name"]] = u["password_hash"]
    return req


def plan(v: dict[str, Any], facts: Facts) -> list[Action]:
    actions: list[Action] = []
    everyone = managed_names(v)
    for u in users(v):
        spec = user_spec(u)
        cur = facts.users.get(u["name"])
        taken_by = next((e.name for e in facts.users.values()
                         if e.uid == u["uid"] and e.name != u["name"]), None)
        if u["state"] != "absent" and taken_by and (cur is None or u["uid_given"]):
            actions.append(Action(f"user {u['name']}", ops=[Refuse(
                f"uid {u['uid']} for {u['name']} is already used by {taken_by!r} on this "
                "host: give the user another uid in the inventory")]))
            continue
        if cur is not None and cur.uid < 1000:  # never usermod or userdel a system account
            actions.append(Action(f"user {u['name']}", ops=[Refuse(
                f"{u['name']!r} is a system account on this host (uid {cur.uid}): it cannot "
                "be managed as a lab user; pick another name")]))
            continue
        if not u["uid_given"]:
            spec.uid = cur.uid if cur else u["uid"]  # keep an existing account's uid
        spec.home_mode = v["users_home_mode"]
        locked = facts.shadow.get(u["name"], {}).get("expire") == "1"
        if cur is not None and u["state"] == "absent":
            actions.append(end_session(v, u["name"]))  # userdel needs the processes gone
        actions.append(plan_user(facts, spec, purge=True))
        if cur is not None and u["state"] == "locked" and not locked:
            actions.append(end_session(v, u["name"]))  # locked first: no new login meanwhile
        if u["state"] == "absent":
            continue
        home = home_of(facts, u["name"])
        # a new account's home is made with its mode (HOME_MODE), unless it was there
        if cur is not None or facts.file(home).exists:
            actions.append(plan_directory(facts, home, mode=v["users_home_mode"],
                                          owner=u["name"], group=u["name"]))
        if u["authorized_keys"] is not None:
            actions.append(plan_directory(facts, f"{home}/.ssh", mode="0700", owner=u["name"],
                                          group=u["name"], run_as=u["name"]))
            text = "".join(k.strip() + "\n" for k in u["authorized_keys"])
            actions.append(plan_file(facts, f"{home}/.ssh/authorized_keys", text, mode="0600",
                                     owner=u["name"], group=u["name"], run_as=u["name"]))
    actions = merge_passwords(actions)
    # Memberships after the accounts exist (gpasswd needs the user).
    extra_groups = sorted({g for u in users(v) for g in u["groups"]})
    for group in extra_groups:
        members = [u["name"] for u in users(v) if group in u["groups"]
                   and u["state"] != "absent"]
        actions.append(plan_group(facts, group, members=members, managed_users=everyone))
    hub_members = [u["name"] for u in users(v) if u["state"] == "present"]
    actions.append(plan_group(facts, v["users_hub_group"], system=True, members=hub_members,
                              managed_users=everyone))
    return actions
