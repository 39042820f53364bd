"""Tasks for sysadmins: `invoke --list` shows them, `invoke --help TASK` explains one.

Thin on purpose: parse options, call the library (provision.api), turn a failed run into
exit code 1 and an expected error into a message without a traceback.
"""

from __future__ import annotations

import sys

# invoke turns bytecode off before it imports this file (unless --write-pyc), so every run
# would compile the project's modules again (an editable install ships none): ~0.1 s of
# each no-op. Python's own switches (-B, PYTHONDONTWRITEBYTECODE) still turn it off.
sys.dont_write_bytecode = bool(sys.flags.dont_write_bytecode)

from invoke import Collection, Exit, task  # noqa: E402

from provision import api  # noqa: E402
from provision.errors import ConfigError  # noqa: E402
from provision.role import registry  # noqa: E402

HELP_COMMON = {
    "hosts": "Hosts, groups, globs or 'all', comma-separated ('lab1,lab2', 'lab', '!lab3').",
    "limit": "The same as --hosts (ansible-playbook's name for it).",
    "inventory": "Inventory file or directory (default: ./inventory).",
    "check": "Dry run: show what would change (with diffs), change nothing on any host.",
    "diff": "Show a diff for every change made.",
    "json": "Also write the machine-readable report to this file.",
}


def _finish(report) -> None:
    if report.failed_hosts:
        raise Exit(f"failed on: {', '.join(report.failed_hosts)} "
                   "(re-run only those with: invoke provision --retry-failed)", code=1)


def _hosts(hosts: str, limit: str | None) -> str:
    """--limit is --hosts under Ansible's name; giving both is ambiguous."""
    if limit is None:
        return hosts
    if hosts != "all":
        raise Exit("error: --hosts and --limit are the same option: give one\n"
                   "nothing was changed on any host.", code=2)
    return limit


def _int(option: str, value, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option}: {value!r} is not a whole number") from None
    if number < minimum:
        raise ConfigError(f"{option} {number}: must be at least {minimum}")
    return number


def _help_if_asked(task_name: str, value: str) -> None:
    """`invoke add-user --help` would take --help as the user name: show the help."""
    if value in ("-h", "--help"):
        import os

        args = [a for a in sys.argv[1:] if a not in (task_name, value)]
        os.execv(sys.executable, [sys.executable, "-m", "invoke", *args, "--help", task_name])


def _guard(fn):
    try:
        return fn()
    except ConfigError as exc:
        raise Exit(f"error: {exc}\nnothing was changed on any host.", code=2) from None
    except KeyboardInterrupt:
        raise Exit("interrupted: every file on the hosts is either old or new; run again to "
                   "finish converging.", code=130) from None


@task(
    help={
        **HELP_COMMON,
        "forks": "How many hosts to work on at once (default 10).",
        "var": "Override a variable for this run: --var jupyterhub_port=8080 (repeatable).",
        "retry-failed": "Run again only on the hosts that failed or were unreachable the last "
                        "time this inventory was run.",
        "verbose": "Also list steps that were already ok.",
        "roles": "Only these roles, comma-separated; they run in their own order: "
                 + ",".join(registry().names) + ".",
    },
    iterable=["var"],
)
def provision(c, hosts="all", inventory=None, check=False, diff=False, forks=None, var=None,
              json=None, retry_failed=False, verbose=False, roles=None, limit=None):
    """Converge hosts to the inventory: users, wheel, Node.js, proxy, JupyterHub, Apache
    (when enabled). Idempotent: a second run changes nothing and says so.

    Example: invoke provision --hosts lab1,lab2 --check
    """
    def go():
        pattern = (api.failed_last_time(api.last_run_path(inventory)) if retry_failed
                   else _hosts(hosts, limit))
        return api.provision(pattern, inventory=inventory, check=check, diff=diff,
                             forks=_int("--forks", forks or 10, 1), cli_vars=var,
                             json_path=json, verbose=verbose, roles=roles)

    _finish(_guard(go))


@task(
    help={
        **HELP_COMMON,
        "name": "The Linux user name (lower case, at most 32 characters).",
        "admin": "Make the user an administrator (wheel group: sudo and JupyterHub admin).",
        "password-file": "Read the password from this file ('-' for stdin). Without it, you "
                         "are prompted (on a terminal). Only a hash is stored.",
        "uid": "Fixed uid (default: the next free one from users_uid_min, the same on every "
               "host).",
        "key": "An SSH public key for the user's authorized_keys (repeatable).",
        "otp": "Enrol the user for one-time passwords (jupyterhub_request_otp): make a secret "
               "if they have none and show it once, as an otpauth:// URI and a QR code.",
        "otp-secret-file": "With --otp: write the base32 secret to this new file (0600; "
                           "refused if it exists) instead of showing it.",
        "otp-reset": "Replace the user's one-time password secret (their authenticator "
                     "entry must be scanned again).",
    },
    iterable=["key"],
)
def add_user(c, name, admin=False, hosts="all", password_file=None, uid=None, key=None,
             inventory=None, check=False, diff=False, json=None, limit=None, otp=False,
             otp_secret_file=None, otp_reset=False):
    """Add (or update) a lab user: records it in the inventory, then converges the hosts.

    The user is recorded for every host (group_vars/all/users.yml); --hosts limits which
    hosts are converged now, the others get the user at their next provision.
    Running notebook servers of other users are not touched and the hub is not restarted.
    Example: invoke add-user alice --admin --password-file alice.pw
    Example: invoke add-user alice --otp   (then scan the QR code with an authenticator app)
    """
    _help_if_asked("add-user", name)

    def go():
        fields = {"state": "present"}
        if admin:
            fields["admin"] = True
        if uid is not None:
            fields["uid"] = _int("--uid", uid, 0)
        if key:
            fields["authorized_keys"] = list(key)
        password = api.read_password(password_file)
        if password is not None:
            fields["password_hash"] = api.hash_password(password)
        secret = None
        if otp or otp_reset or otp_secret_file:
            secret = api.otp_enrolment(name, inventory=inventory, reset=otp_reset,
                                       secret_file=otp_secret_file)
            if secret:
                fields["otp_secret"] = secret
        report = api.change_user(name, fields, hosts=_hosts(hosts, limit), inventory=inventory,
                               create=True,
                               command=f"add-user {name}", json_path=json, check=check,
                               diff=diff)
        if secret and not check:
            api.hand_over_otp(name, secret, otp_secret_file)
        elif secret:
            print(f"check mode: a one-time password secret would be made for {name}")
        return report

    _finish(_guard(go))


@task(help={**HELP_COMMON,
            "name": "The user to lock or remove (must be in the inventory).",
            "purge": "Archive the home directory to /var/backups/jhprovision, then delete the "
                     "account (default: lock it)."})
def remove_user(c, name, purge=False, hosts="all", inventory=None, check=False, diff=False,
                json=None, limit=None):
    """Lock a lab user (default), or with --purge archive their home and delete them.

    The inventory keeps the user with state locked/absent so later runs keep it that way.
    Example: invoke remove-user alice --purge
    """
    _help_if_asked("remove-user", name)

    def go():
        return api.change_user(name, {"state": "absent" if purge else "locked"},
                               hosts=_hosts(hosts, limit),
                               inventory=inventory, create=False,
                               command=f"remove-user {name}", json_path=json, check=check,
                               diff=diff)

    _finish(_guard(go))


@task(help={
    "hosts": HELP_COMMON["hosts"],
    "limit": HELP_COMMON["limit"],
    "inventory": HELP_COMMON["inventory"],
    "smoke": "Also log in as this user, start their server and load JupyterLab.",
    "password-file": "The --smoke user's password, in a file.",
    "junit": "Write a JUnit XML report here (for CI systems).",
    "otp-secret-file": "The --smoke user's one-time password secret (base32), when the hub "
                       "asks for codes (jupyterhub_request_otp).",
})
def verify(c, hosts="all", inventory=None, smoke=None, password_file=None, junit=None,
           limit=None, otp_secret_file=None):
    """Check live hosts against the inventory with testinfra (users, versions, files, units,
    ports, /hub/api); exits non-zero on any difference, showing expected vs found.

    Example: invoke verify --hosts lab1,lab2 --smoke alice --password-file alice.pw
    """
    from provision.verify import verify as run_verify

    hosts = _hosts(hosts, limit)
    code = _guard(lambda: run_verify(hosts, inventory=inventory, smoke=smoke,
                                     password_file=password_file, junit=junit,
                                     otp_secret_file=otp_secret_file))
    if code:
        raise Exit(f"verify: hosts differ from the inventory (pytest exit {code})", code=1)


@task(help={"release": "the JupyterHub release (default: jupyterhub_version's default)"})
def constraints(c, release=None):
    """Make the pin set of a release: constraints/stack-RELEASE.txt, every Python package
    of the hub's and the users' virtualenvs, resolved from PyPI (this machine's pip
    configuration ignored) for Python 3.11 and checked unchanged on 3.13.

    Example: invoke constraints; invoke constraints --release 5.5.4
    """
    from provision import pins
    from provision.config import all_variables, defaults
    from provision.role import load_roles
    from roles import jupyterhub, userenv

    roles = load_roles()
    v = defaults(all_variables(roles))
    if release:
        v["jupyterhub_version"] = release
    reqs = list(dict.fromkeys(jupyterhub.requirements(v) + userenv.requirements(v)))
    try:
        text = pins.resolve(v["jupyterhub_version"], reqs)
    except RuntimeError as exc:
        raise Exit(f"constraints: {exc}", code=1) from exc
    path = pins.path_for(v["jupyterhub_version"])
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    print(f"{path}: {sum(1 for ln in text.splitlines() if '==' in ln and not ln.startswith('#'))}"
          " pins")


@task(help={
    "prune": "Remove what no run used for --days days, then the least recently used until "
             "the cache is at most --max; print what went and the space freed.",
    "max": "The bound (default: 5G; K, M, G, T are powers of 1024).",
    "days": "Remove what no run used for this many days (default: 30).",
    "cache": "The cache (default: ~/.cache/jhprovision, or under $XDG_CACHE_HOME).",
})
def artifacts(c, prune=False, max=None, days=None, cache=None):  # noqa: A002 - --max
    """Show or prune the workstation's artifact cache (provision_artifacts: push). A run
    that pushed prunes it too, with provision_artifacts_cache_max and _days.

    Example: invoke artifacts --prune --max 2G --days 14
    """
    from pathlib import Path

    from provision import artifact_cache
    from provision.artifacts import default_cache

    def go():
        root = Path(cache).expanduser() if cache else default_cache()
        max_bytes, n = artifact_cache.limits(max, days)
        if not prune:
            found = artifact_cache.entries(root)
            total = sum(e.size for e in found)
            print(f"{root}: {len(found)} entries, {artifact_cache.human(total)} (bound "
                  f"{artifact_cache.human(max_bytes)}, {n} days; --prune applies it)")
            return
        result = artifact_cache.prune(root, max_bytes=max_bytes, days=n)
        print("\n".join(artifact_cache.summary(root, result)))

    _guard(go)


@task
def docs(c):
    """Regenerate docs/variables.md and the README's role table from the role registry.

    Example: invoke docs
    """
    from provision.docs import write_readme_roles, write_variables_doc

    for path in (write_variables_doc(), write_readme_roles()):
        print(f"wrote {path}")


def _backup_results(results: dict, describe, json_path: str | None) -> None:
    """One line per host (ok or failed), the JSON report, exit 1 if any host failed."""
    from provision.files import write_private

    for name, result in results.items():
        lines = describe(result, name)
        for i, line in enumerate([lines] if isinstance(lines, str) else lines):
            print(f"{name if i == 0 else '':<8}  {line}")
    if json_path:
        import json as _json

        write_private(json_path, _json.dumps(results, indent=2) + "\n", what="--json")
    failed = [n for n, r in results.items() if not r.get("ok")]
    if failed:
        raise Exit(f"failed on: {', '.join(failed)}", code=1)


HELP_BACKUP = {k: HELP_COMMON[k] for k in ("hosts", "limit", "inventory", "json")}


@task(help={**HELP_BACKUP,
            "adopt": "A host new to a repository that has snapshots (a rebuilt host not "
                     "restored): back up its files as they are from now on."})
def backup(c, hosts="all", inventory=None, json=None, limit=None, adopt=False):
    """Run a backup now on the hosts (the one their timer runs): prints what was saved.

    Ctrl-C stops it on the hosts too: no snapshot is made and the repository stays valid.
    Example: invoke backup --hosts lab1
    """
    from provision import backups

    def go():
        try:
            return backups.backup(_hosts(hosts, limit), inventory=inventory, adopt=adopt)
        except KeyboardInterrupt:
            raise Exit("interrupted: the backup was stopped on the hosts (no snapshot made; "
                       "the repository stays valid)", code=130) from None

    _backup_results(_guard(go), lambda r, n: backups.describe_backup(r), json)


@task(help=HELP_BACKUP)
def backups(c, hosts="all", inventory=None, json=None, limit=None):
    """List the snapshots in each host's backup repository.

    Example: invoke backups --hosts lab1
    """
    from provision import backups as lib

    _backup_results(_guard(lambda: lib.snapshots(_hosts(hosts, limit), inventory=inventory)),
                    lambda r, n: lib.describe_snapshots(r), json)


@task(help={**{k: h for k, h in HELP_BACKUP.items() if k != "limit"},
            "hosts": "The host(s) to restore onto (names, groups; no default).",
            "snapshot": "The snapshot to restore (an ID from `invoke backups`; default: the "
                        "latest).",
            "paths": "Only these paths of it, comma-separated (e.g. /home/alice: a whole "
                     "home; a path inside a home is refused)."})
def restore(c, hosts, inventory=None, snapshot="latest", paths=None, json=None):
    """Restore a backup onto a host. The hub, the proxy and the users' servers are stopped
    while their files come back; the next provision starts them with the restored state.

    On a fresh host: invoke provision, then invoke restore, then invoke provision again
    (the accounts exist before their files come back; the hub starts with its database).
    Example: invoke restore --hosts lab1 --paths /home/alice
    """
    from provision import backups as lib

    chosen = [p.strip() for p in (paths or "").split(",") if p.strip()] or None
    _backup_results(_guard(lambda: lib.restore(hosts, inventory=inventory, snapshot=snapshot,
                                               paths=chosen)),
                    lib.describe_restore, json)


ns = Collection(provision, add_user, remove_user, verify, docs, constraints, artifacts, backup,
                backups, restore)

try:
    from provision.lab.tasks import ns as lab_ns
except ImportError as exc:  # pragma: no cover - only while the lab is being built
    print(f"(lab tasks unavailable: {exc})", file=sys.stderr)
else:
    ns.add_collection(lab_ns)
