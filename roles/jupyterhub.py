"""jupyterhub: the hub in its own virtualenv, its config from a template, its unit.

The virtualenv holds the hub's own packages (jupyterhub and what other roles contribute);
users' servers come from the userenv role's virtualenv. A changed pin set is installed
beside the environment in use (``provision.envs``); the handler ``upgrade jupyterhub``
then stops the hub, backs up its database, switches, runs ``jupyterhub upgrade-db``,
starts it and checks ``/hub/api`` reports the new version, or puts everything back
(docs/upgrades.md). The config is rendered
with every inventory value as a Python literal, compiled locally and checked on the host
with the hub's own config loader before it replaces the old one; the old one is kept as
``.prev``. The hub is restarted only when its config, unit, environment or packages
changed; after a (re)start the handler waits for ``/hub/api`` and, if it never answers,
puts the previous config back, restarts, and fails the host with the hub's log tail.
Other roles add to the hub through their ``hub()`` contribution (services with their
tokens, RBAC roles, config lines, packages): this role renders them all, and names none.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from provision import envs, installer, pins
from provision.errors import ConfigError, ProvisionError
from provision.facts import FactRequest, Facts
from provision.hostrun import HostRun
from provision.render import render
from provision.requirements import same_version
from provision.role import Handler, HubContribution, hub_contributions
from provision.stack import (
    API_ENV_FILE,  # noqa: F401 - re-exported: the tests name it as the role's
    HUB_HANDLER,
    HUB_UNIT,
    HUB_UPGRADE_HANDLER,
    PROXY_ENV_FILE,
    PROXY_UNIT,
    notebook_rel,
    service_token_file,
    stack,
)
from provision.steps import (
    Action,
    Command,
    Upload,
    file_diff,
    plan_apt,
    plan_directory,
    plan_file,
    plan_secret,
    plan_service_started_by,
    plan_unit,
)
from provision.variables import Var

from ._common import (Health, active_users, check_health, home_of, hub_urls, installer_facts,
                      plan_installer, service_log)

NAME = "jupyterhub"
# jupyterhub_extra_config's bound: a config, not a program (and compile() of a huge or
# deep text exhausts memory or the C stack before it says why).
MAX_EXTRA_CONFIG = 64 * 1024
SUMMARY = (
    "the hub's virtualenv (jupyterhub, its spawner and services, every package at the "
    "release's pin set; a new pin set installed beside the one in use, then switched to "
    "with a database backup and `upgrade-db`, or everything put back); `jupyterhub_config.py` "
    "from a template (values as Python literals, validated before install); cookie secret "
    "0600; `jupyterhub.service` restarted only when something it uses changed, then "
    "checked at `/hub/api` and rolled back if it does not answer"
)

VARIABLES = [
    Var("jupyterhub_venv", "/opt/jupyterhub", "path", "Virtualenv of the hub (jupyterhub, "
        "its spawner and services); users' servers run from jupyterhub_user_venv. A "
        "symlink to PATH.envs/HASH, the environment of the pin set in use "
        "(docs/upgrades.md)."),
    Var("jupyterhub_version", "6.1.1", "version", "jupyterhub package version; it selects "
        "the release's pin set, constraints/stack-VERSION.txt (every Python package of the "
        "hub's and the users' virtualenvs, dependencies included, given to every pip "
        "install): 6.1.1 or the previous major's 5.5.4 ship; `invoke constraints --release "
        "X` makes another."),
    Var("jupyterlab_version", "4.6.6", "version", "jupyterlab package version (the default "
        "UI), in jupyterhub_user_venv."),
    Var("notebook_version", "7.6.5", "version", "notebook package version (classic UI at "
        "/tree), in jupyterhub_user_venv."),
    Var("jupyterhub_extra_packages", [], "list[pip]", "Deprecated: use "
        "jupyterhub_user_packages. Its packages are installed in jupyterhub_user_venv, "
        "where users' kernels run.",
        deprecated="jupyterhub_extra_packages is deprecated: its packages now go into the "
        "users' virtualenv (jupyterhub_user_venv), not the hub's; rename it to "
        "jupyterhub_user_packages"),
    Var("jupyterhub_config_dir", "/etc/jupyterhub", "path", "Where jupyterhub_config.py "
        "lives."),
    Var("jupyterhub_state_dir", "/var/lib/jupyterhub", "path", "The hub's database and "
        "cookie secret (0700)."),
    Var("jupyterhub_ip", "", "ip", "Public address the proxy listens on ('' = all "
        "interfaces) (c.JupyterHub.ip)."),
    Var("jupyterhub_port", 8000, "port", "Public port (c.JupyterHub.port)."),
    Var("jupyterhub_base_url", "/", "base_url", "Path the hub is served under, e.g. '/jhub/' "
        "behind a reverse proxy; the apache role uses the same value."),
    Var("jupyterhub_bind_url", None, "bind_url", "Full public URL, e.g. "
        "'http://:8000/jhub/' (c.JupyterHub.bind_url). When set, it replaces jupyterhub_ip, "
        "jupyterhub_port and jupyterhub_base_url.", nullable=True),
    Var("jupyterhub_hub_ip", "127.0.0.1", "ip", "Address of the hub's private API "
        "(c.JupyterHub.hub_ip); '0.0.0.0' when proxy or spawners are remote."),
    Var("jupyterhub_hub_port", 8081, "port", "Port of the hub's private API "
        "(c.JupyterHub.hub_port)."),
    Var("jupyterhub_hub_connect_ip", None, "host", "Address others use to reach the hub "
        "(c.JupyterHub.hub_connect_ip), when hub_ip is not reachable as is.", nullable=True),
    Var("jupyterhub_default_url", "/lab", "line", "What users land on "
        "(c.Spawner.default_url): '/lab' for JupyterLab, '/tree' for the classic notebook."),
    Var("jupyterhub_notebook_dir", None, "notebook_dir", "Users' root directory "
        "(c.Spawner.notebook_dir): '~/notebooks', '~/{username}', '/srv/nb/{username}' "
        "('{username}' is filled in by the hub); a '~/' path is created in each user's "
        "home, an absolute one is not. '~name', relative paths, '..' and other "
        "placeholders are refused.", nullable=True),
    Var("jupyterhub_start_timeout", 60, "timeout", "Seconds a user's server may take to "
        "start."),
    Var("jupyterhub_ready_timeout", 90, "timeout", "Seconds the hub may take to answer /hub/api "
        "after a restart while its unit runs; a hub whose unit fails, exits or is restarted "
        "by systemd is a failure at once (and its config is rolled back)."),
    Var("jupyterhub_admin_users", [], "list[username]", "Extra JupyterHub admins by name "
        "(c.Authenticator.admin_users); must be inventory users. Only grants: removing a "
        "name does not demote (use admin: true on the user, i.e. the wheel group)."),
    Var("jupyterhub_allowed_users", [], "list[username]", "Users allowed by name "
        "(c.Authenticator.allowed_users), in addition to every present inventory user."),
    Var("jupyterhub_allowed_groups", [], "list[group]", "More Linux groups whose members may "
        "log in (c.PAMAuthenticator.allowed_groups; users_hub_group is always allowed)."),
    Var("jupyterhub_allow_all", False, "bool", "Let every Linux user with a password log in "
        "(c.Authenticator.allow_all)."),
    Var("jupyterhub_admin_groups", None, "list[group]", "Groups whose members are admins "
        "(c.PAMAuthenticator.admin_groups); default: [wheel_group].", nullable=True),
    Var("jupyterhub_admin_access", True, "bool", "Admins may access users' servers. "
        "JupyterHub 2+ always grants this to its admin role (JupyterHub.admin_access is "
        "deprecated); false is refused rather than silently ignored."),
    Var("jupyterhub_request_otp", False, "bool", "Ask for a one-time password after the "
        "password (c.Authenticator.request_otp; JupyterHub 5+); the otp role makes PAM check "
        "it with pam_google_authenticator (docs/otp.md)."),
    Var("jupyterhub_otp_prompt", "OTP:", "line", "The one-time password prompt "
        "(c.Authenticator.otp_prompt), e.g. 'Google Authenticator:'."),
    Var("jupyterhub_extra_config", "", "str", "Python appended verbatim to "
        "jupyterhub_config.py (checked to compile and load before it is installed; at most "
        f"{MAX_EXTRA_CONFIG // 1024} KiB, UTF-8)."),
]

AFTER = ("users", "wheel")
REQUIRES = ("proxy",)

UNIT = HUB_UNIT
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
HANDLER = HUB_HANDLER
UPGRADE_HANDLER = HUB_UPGRADE_HANDLER


def config_path(v: dict[str, Any]) -> str:
    return stack(v).hub_config


def secret_path(v: dict[str, Any]) -> str:
    return stack(v).hub_cookie_secret


def contributions(v: dict[str, Any]) -> list[HubContribution]:
    return hub_contributions(v)


def token_services(v: dict[str, Any]) -> list[dict[str, str]]:
    """Contributed services whose API token the host keeps in a 0600 file."""
    return [dict(name=s.name, token_env=s.token_env, role=c.role)
            for c in contributions(v) for s in c.services if s.token_env]


def check(v: dict[str, Any]) -> list[tuple[str, str]]:
    problems = pins.check_release(v) + pins.check_versions(
        v, {"jupyterlab_version": "jupyterlab", "notebook_version": "notebook"})
    names = {u.get("name") for u in v.get("users") or [] if isinstance(u, dict)}
    for key in ("jupyterhub_admin_users", "jupyterhub_allowed_users"):
        for name in v.get(key) or []:
            if name not in names:
                problems.append((key, f"{name!r} is not an inventory user (add it to users)"))
    major = int(v["jupyterhub_version"].split(".")[0]) if v["jupyterhub_version"][0].isdigit() \
        else 0
    if v["jupyterhub_request_otp"] and major < 5:
        problems.append(("jupyterhub_request_otp", "needs jupyterhub_version 5 or newer"))
    if not v["jupyterhub_admin_access"] and major >= 2:
        problems.append(("jupyterhub_admin_access", "false is not possible with JupyterHub 2+ "
                         "(its admin role always includes access to servers); restrict "
                         "admins with custom roles in jupyterhub_extra_config instead"))
    if v.get("jupyterhub_bind_url") and v.get("jupyterhub_base_url", "/") != "/" and \
            hub_urls(v).base_url != v["jupyterhub_base_url"]:
        problems.append(("jupyterhub_bind_url", f"its path {hub_urls(v).base_url!r} differs "
                         f"from jupyterhub_base_url {v['jupyterhub_base_url']!r}: set one"))
    try:
        render_config(v)
    except ConfigError as exc:
        problems.append(("jupyterhub_extra_config",
                         str(exc).removeprefix("jupyterhub_extra_config: ")))
    if hub_urls(v).port in (v["jupyterhub_hub_port"], v.get("proxy_api_port")):
        problems.append(("jupyterhub_port", "the public port must differ from the hub's and "
                         "the proxy API's ports"))
    if v["jupyterhub_hub_port"] == v.get("proxy_api_port"):
        problems.append(("jupyterhub_hub_port", f"{v['jupyterhub_hub_port']} is also "
                         "proxy_api_port: the hub and the proxy's API need their own ports"))
    return problems


def requirements(v: dict[str, Any]) -> list[str]:
    contributed = [p for c in contributions(v) for p in c.packages]
    return [f"jupyterhub=={v['jupyterhub_version']}", *contributed]


def hub_env(v: dict[str, Any]) -> str:
    """The environment the pin set wants (jupyterhub_venv links to it, see provision.envs)."""
    return envs.env_path(v["jupyterhub_venv"], pins.for_vars(v), requirements(v))


def proven_file(v: dict[str, Any]) -> str:
    """Names the environment the hub last answered from with this database."""
    return f"{v['jupyterhub_state_dir']}/jhprovision-hub-env"


def backups_dir(v: dict[str, Any]) -> str:
    return f"{v['jupyterhub_state_dir']}/backups"


BACKUPS_KEPT = 3


def _hub_context(v: dict[str, Any]) -> dict[str, Any]:
    services, roles, config, server_env = [], [], [], {}
    for c in contributions(v):
        server_env.update(c.server_env)
        services += [dict(role=c.role, description=s.description, literal=s.literal(),
                          token_env=s.token_env) for s in c.services]
        roles += [dict(role=c.role, literal=r.literal()) for r in c.roles]
        config += [(c.role, key, value) for key, value in c.config]
    return dict(hub_services=services, hub_roles=roles, hub_config=config,
                server_env=server_env)


def render_config(v: dict[str, Any]) -> str:
    st = stack(v)
    admin_groups = v["jupyterhub_admin_groups"]
    if admin_groups is None:
        admin_groups = [v["wheel_group"]]
    ctx = dict(
        v,
        **_hub_context(v),
        hub_bind_url=st.urls.bind_url,
        proxy_api_url=st.proxy_api_url,
        cookie_secret_file=st.hub_cookie_secret,
        db_url=st.hub_db_url,
        allowed_groups={v["users_hub_group"], *v["jupyterhub_allowed_groups"]},
        admin_groups=set(admin_groups),
        jupyterhub_admin_users=set(v["jupyterhub_admin_users"]),
        jupyterhub_allowed_users=set(v["jupyterhub_allowed_users"]),
    )
    size = len(v["jupyterhub_extra_config"].encode("utf-8", "surrogatepass"))
    if size > MAX_EXTRA_CONFIG:
        raise ConfigError(f"jupyterhub_extra_config: {size} bytes, more than "
                          f"{MAX_EXTRA_CONFIG}: put a longer config in a module of its own "
                          "and import it")
    text = render("jupyterhub/jupyterhub_config.py.j2", ctx)
    try:
        compile(text, config_path(v), "exec")
    except SyntaxError as exc:  # NUL bytes too, on Python 3.12+
        raise ConfigError(f"jupyterhub_extra_config: the rendered jupyterhub_config.py does not "
                          f"compile: {exc.msg} ({_extra_line(text, exc.lineno)})") from None
    except ValueError as exc:  # NUL bytes before Python 3.12
        raise ConfigError(f"jupyterhub_extra_config: the rendered jupyterhub_config.py does not "
                          f"compile: {exc}") from None
    except (MemoryError, RecursionError):
        raise ConfigError("jupyterhub_extra_config: the rendered jupyterhub_config.py does not "
                          "compile: an expression nested or chained too deeply for Python's "
                          "compiler") from None
    return text


def _extra_line(text: str, lineno: int | None) -> str:
    """'line N of jupyterhub_extra_config' where the error is in it, else the config's line."""
    mark = text.find(EXTRA_MARK.decode())
    start = text.count("\n", 0, mark) + 1 if mark >= 0 else None
    if lineno and start and lineno > start:
        return f"line {lineno - start} of jupyterhub_extra_config"
    return f"line {lineno} of jupyterhub_config.py"


EXTRA_MARK = b"# --- jupyterhub_extra_config"


def mask_extra(text: bytes) -> bytes:
    """The config with the jupyterhub_extra_config block replaced by a line saying how long
    it is and its hash (so a diff still shows that it changed, never what it says)."""
    head, mark, tail = text.partition(EXTRA_MARK)
    if not mark:
        return text
    body = tail.split(b"\n", 1)[1] if b"\n" in tail else b""
    digest = hashlib.sha256(body).hexdigest()[:12]
    return (head + mark + b" (not shown: " + str(len(body.strip().splitlines())).encode() +
            b" lines, sha256 " + digest.encode() + b"...)\n")


def render_unit(v: dict[str, Any]) -> str:
    return render("jupyterhub/jupyterhub.service.j2", dict(
        v, proxy_unit=PROXY_UNIT, proxy_env_file=PROXY_ENV_FILE,
        token_services=token_services(v), token_file=service_token_file,
        config_file=config_path(v)))


def facts(v: dict[str, Any]) -> FactRequest:
    req = FactRequest(
        dpkg={"python3-venv"},
        venvs={v["jupyterhub_venv"]},
        files={v["jupyterhub_config_dir"], v["jupyterhub_state_dir"]},
        content={config_path(v), UNIT_PATH},
        secret={secret_path(v), *(service_token_file(s["name"]) for s in token_services(v))},
        units={UNIT},
    )
    req.merge(envs.facts_for(v["jupyterhub_venv"], hub_env(v)))
    req.merge(installer_facts(v))
    req.files.add(db_path(v))
    for u in active_users(v):
        req.files.update(f"~{u['name']}/{rel}" for rel in _notebook_parts(v, u["name"]))
    return req


def _notebook_parts(v: dict[str, Any], user: str) -> list[str]:
    """'~/work/{username}' -> ['work', 'work/alice']: each directory below the home,
    made (and checked: a symlink there is refused) one at a time, as the user. An
    absolute notebook_dir is not made: it is the sysadmin's (JupyterHub makes none)."""
    rel = notebook_rel(v["jupyterhub_notebook_dir"], user)
    parts = rel.split("/") if rel else []
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _notebook_dirs(v: dict[str, Any], facts: Facts) -> list[Action]:
    out = []
    for u in active_users(v):
        for rel in _notebook_parts(v, u["name"]):
            path = f"{home_of(facts, u['name'])}/{rel}"
            out.append(plan_directory(facts, path, mode="0750", owner=u["name"],
                                      group=u["name"], run_as=u["name"]))
    return out


def db_path(v: dict[str, Any]) -> str:
    return stack(v).hub_db


def _upgrade_steps(v: dict[str, Any], facts: Facts) -> list[str]:
    """What the handler does at the switch, for the diff of --check and of the run."""
    old = facts.venv(v["jupyterhub_venv"]).dists.get("jupyterhub")
    new = v["jupyterhub_version"]
    lines = [f"~ jupyterhub {old} -> {new}"] if old and old != new else []
    if facts.file(db_path(v)).exists:
        lines += [f"+ stop the hub; back up {db_path(v)} to {backups_dir(v)}/ (the last "
                  f"{BACKUPS_KEPT} kept)",
                  f"+ jupyterhub upgrade-db (JupyterHub {new})"]
    lines += [f"+ start the hub; /hub/api must report version {new}, else the previous "
              "environment, database and config are put back",
              "- environments older than the previous one, once the new one answers"]
    return lines


def plan(v: dict[str, Any], facts: Facts) -> list[Action]:
    config = render_config(v)
    venv = v["jupyterhub_venv"]
    # The config is checked by the loader of the environment the hub will run from.
    loader = (f"{hub_env(v)}/bin/python", "-c",
              "import os,sys\n"
              "from traitlets.config.loader import PyFileConfigLoader\n"
              "p = sys.argv[1]\n"
              "PyFileConfigLoader(os.path.basename(p), os.path.dirname(p)).load_config()\n",
              "{}")
    actions = [
        plan_apt(facts, {"python3-venv": None}),
        *plan_installer(v, facts),
        *envs.plan_env(facts, venv, requirements(v), constraints=pins.for_vars(v),
                       name="jupyterhub packages", handler=UPGRADE_HANDLER,
                       notify=(HANDLER,), switch_note=_upgrade_steps(v, facts),
                       installer=installer.kind(v)),
        plan_directory(facts, v["jupyterhub_config_dir"], mode="0755"),
        plan_directory(facts, v["jupyterhub_state_dir"], mode="0700"),
        plan_secret(facts, secret_path(v), notify=(HANDLER,)),
    ]
    actions += [plan_secret(facts, service_token_file(s["name"]), prefix=f"{s['token_env']}=",
                            notify=(HANDLER,)) for s in token_services(v)]
    # 0640: the hub runs as root, and jupyterhub_extra_config is where OAuth client secrets
    # go; for the same reason that block is masked in every diff, report and last-run.
    cfg = plan_file(facts, config_path(v), config, mode="0640", validate=list(loader),
                    notify=(HANDLER,))
    if any(isinstance(op, Upload) for op in cfg.ops):
        old = facts.file(config_path(v)).content
        cfg.diff = file_diff(config_path(v), mask_extra(old) if old is not None else None,
                             mask_extra(config.encode()))
    if any(isinstance(op, Upload) for op in cfg.ops) and facts.file(config_path(v)).exists:
        # Keep the config in use, so a hub that fails with the new one can be rolled back.
        cfg.ops.insert(0, Command(["cp", "--preserve=mode,ownership", "--",
                                   config_path(v), config_path(v) + ".prev"]))
    actions.append(cfg)
    actions.extend(_notebook_dirs(v, facts))
    actions.append(plan_unit(facts, UNIT_PATH, render_unit(v), notify=(HANDLER,)))
    actions.append(plan_service_started_by(facts, UNIT, HANDLER))
    return actions


def wait_for_api(run: HostRun, limit: float) -> Health:
    return check_health(run, UNIT, stack(run.vars).hub_api_url, limit, step=HANDLER)


# The first half of a switch to a new environment, on the host in one round trip: stop the
# hub, copy its database (the copies beyond the last KEEP removed), point the venv's path
# at the new environment (envs.SWITCH, given as an argument), run `jupyterhub upgrade-db`
# from it. Prints one JSON line: the environment to go back to, the backup, the version
# it upgraded from, upgrade-db's exit code and output tail.
UPGRADE_SCRIPT = r"""import glob, json, os, shutil, subprocess, sys, time
unit, link, target, db, backups, keep, config, proven_file, switch, legacy = sys.argv[1:11]
def version(env):
    for d in glob.glob(env + "/lib/python*/site-packages/jupyterhub-*.dist-info"):
        return d.rsplit("/", 1)[1][len("jupyterhub-"):-len(".dist-info")]
    return None
cur = os.readlink(link) if os.path.islink(link) else (link if os.path.isdir(link) else None)
try:
    proven = open(proven_file).read().strip() or None
except OSError:
    proven = None
if cur == link:
    previous = legacy
elif proven and proven != target and os.path.isdir(proven):
    previous = proven
elif cur and cur != target:
    previous = cur
else:
    previous = None
out = {"previous": previous, "from": version(link) if cur else None, "backup": None}
try:
    subprocess.run(["systemctl", "stop", "--", unit], check=True, capture_output=True)
    if os.path.isfile(db):
        os.makedirs(backups, mode=0o700, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        out["backup"] = "%s/jupyterhub-%s-%s.sqlite" % (backups, stamp, out["from"] or "unknown")
        shutil.copy2(db, out["backup"])
        os.chmod(out["backup"], 0o600)
        for old in sorted(glob.glob(backups + "/jupyterhub-*.sqlite"))[:-int(keep)]:
            os.remove(old)
    r = subprocess.run(["sh", "-c", switch, "sh", link, target, legacy], capture_output=True,
                       text=True)
    if r.returncode:
        raise RuntimeError("the switch to %s failed: %s" % (target, r.stderr.strip()))
    if os.path.isfile(db):
        # upgrade-db runs the environment's own `alembic`: its bin first on PATH
        path = link + "/bin:" + os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        r = subprocess.run([link + "/bin/jupyterhub", "upgrade-db", "--config=" + config],
                           cwd=os.path.dirname(db), capture_output=True, text=True,
                           env=dict(os.environ, PATH=path))
        out["upgrade_rc"] = r.returncode
        out["upgrade_log"] = (r.stdout + r.stderr).strip().splitlines()[-15:]
except Exception as exc:
    out["error"] = str(exc) or type(exc).__name__
print(json.dumps(out))
"""

# Back to where UPGRADE_SCRIPT started from: the hub stopped, the previous environment
# (if any) switched back to, the database copy put back.
ROLLBACK_SCRIPT = """set -eu
unit=$1 link=$2 previous=$3 backup=$4 db=$5 switch=$6 legacy=$7
systemctl stop -- "$unit"
if [ -n "$previous" ]; then sh -c "$switch" sh "$link" "$previous" "$legacy"; fi
if [ -n "$backup" ]; then cp --preserve=mode,ownership,timestamps -- "$backup" "$db"; fi
"""

# The hub answers: its config's .prev goes ($3), its environment ($1) is written to $2.
PROVEN_SCRIPT = 'rm -f -- "$3" && printf "%s\\n" "$1" > "$2.new" && mv -f -- "$2.new" "$2"'

API_VERSION_SCRIPT = """import json, sys, urllib.request
print(json.load(urllib.request.urlopen(sys.argv[1], timeout=10)).get("version", ""))
"""


def _api_version(run: HostRun) -> str:
    res = run.run(["python3", "-c", API_VERSION_SCRIPT, stack(run.vars).hub_api_url],
                  check=False, step=HANDLER)
    return res.out.strip() if res.rc == 0 else ""


def _hub_failed(run: HostRun, health: Health, what: str) -> tuple[str, str]:
    """The failure message's start and the hub's log tail (users' servers, which log
    into the hub's unit while they run in it, left out)."""
    log, first_error = service_log(run, UNIT, health.since, exclude_comm=("jupyterhub-sing",))
    after = f" ({health.seconds:.1f} s)" if health.seconds is not None else ""
    message = f"the hub did not come back {what}{after}: {health.reason}"
    if first_error:
        message += f"; the hub's error: {first_error}"
    return message, log


PUT_BACK_CONFIG = 'test -f "$1" && mv -f -- "$1" "$2"'


def _put_back_config(run: HostRun) -> bool:
    path = config_path(run.vars)
    return run.run(["sh", "-c", PUT_BACK_CONFIG, "sh", path + ".prev", path],
                   check=False).rc == 0


def _proven(run: HostRun) -> None:
    """The hub answers from its environment with its config: the config's .prev (kept
    only while a change is unproven, so a later failure for another reason never "rolls
    back" to a stale one) goes, and the environment is the one to go back to."""
    v = run.vars
    run.run(["sh", "-c", PROVEN_SCRIPT, "sh", hub_env(v), proven_file(v),
             config_path(v) + ".prev"], step=HANDLER)


def restart_hub(run: HostRun) -> None:
    """Restart the hub and prove it answers; roll back the config if it does not."""
    v = run.vars
    if UPGRADE_HANDLER in run.notified:
        return  # the upgrade (re)started the hub, with this run's config, and proved it
    run.run(["systemctl", "restart", "--", UNIT], timeout=120, step=HANDLER)
    health = wait_for_api(run, v["jupyterhub_ready_timeout"])
    if health.ok:
        _proven(run)
        return
    message, log = _hub_failed(run, health, "after a restart")
    if _put_back_config(run):
        run.run(["systemctl", "restart", "--", UNIT], timeout=120, check=False)
        back = wait_for_api(run, v["jupyterhub_ready_timeout"]).ok
        message += ("; the previous jupyterhub_config.py was put back and the hub answers "
                    "again" if back else "; the previous config was put back but the hub "
                    "still does not answer")
    raise ProvisionError(message, host=run.host.name, step=HANDLER,
                         command=f"systemctl restart {UNIT}", stderr=log)


def upgrade_hub(run: HostRun) -> None:
    """Switch the hub to its new environment: stop it, back up the database, switch,
    ``jupyterhub upgrade-db``, start, and prove ``/hub/api`` reports the new version. If
    anything fails: the previous environment, database copy and config back, the hub
    started again, and the host failed with the reason and the hub's log tail."""
    v = run.vars
    venv, target, new = v["jupyterhub_venv"], hub_env(v), v["jupyterhub_version"]
    res = run.run(["python3", "-c", UPGRADE_SCRIPT, UNIT, venv, target, db_path(v),
                   backups_dir(v), str(BACKUPS_KEPT), config_path(v), proven_file(v),
                   envs.SWITCH, envs.legacy_path(venv)], timeout=600, step=HANDLER, check=False,
                  display=f"stop the hub, back up its database, switch {venv} to {target}, "
                          "jupyterhub upgrade-db")
    try:
        info = json.loads(res.out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        info = {"error": (res.err.strip().splitlines() or [f"exit code {res.rc}"])[-1]}
    failure, log = "", ""
    if info.get("error"):
        failure = f"the switch to {target} did not finish: {info['error']}"
    elif info.get("upgrade_rc", 0) != 0:
        tail = info.get("upgrade_log") or []
        failure = f"jupyterhub upgrade-db failed (exit {info['upgrade_rc']})" + (
            f": {tail[-1]}" if tail else "")
        log = "\n".join(tail)
    else:
        run.run(["systemctl", "start", "--", UNIT], timeout=120, step=HANDLER)
        health = wait_for_api(run, v["jupyterhub_ready_timeout"])
        if not health.ok:
            failure, log = _hub_failed(run, health, f"on JupyterHub {new}")
        elif not same_version(reported := _api_version(run), new):
            failure = f"/hub/api reports version {reported or '(none)'}, not {new}"
    if not failure:
        _proven(run)
        pruned = envs.prune(run, venv, target, info.get("previous"), step=HANDLER)
        if info.get("previous"):
            what = (f"JupyterHub upgraded {info['from']} -> {new}"
                    if info.get("from") and not same_version(info["from"], new) else
                    f"the hub now runs from {target} (its pin set changed)")
            run.note(what + (f"; database backed up to {info['backup']}"
                             if info.get("backup") else "") + pruned)
        return
    previous, backup = info.get("previous") or "", info.get("backup") or ""
    run.run(["sh", "-c", ROLLBACK_SCRIPT, "sh", UNIT, venv, previous, backup, db_path(v),
             envs.SWITCH, envs.legacy_path(venv)], check=False, timeout=120, step=HANDLER)
    config_back = _put_back_config(run)
    run.run(["systemctl", "start", "--", UNIT], timeout=120, check=False)
    back = wait_for_api(run, v["jupyterhub_ready_timeout"]).ok
    put = [what for what, done in (("environment " + previous, previous),
                                   ("database copy " + backup, backup),
                                   ("previous jupyterhub_config.py", config_back)) if done]
    failure += ("; put back: " + ", ".join(put) if put else "; nothing to go back to")
    failure += ("; the hub answers again" if back else "; the hub still does not answer")
    raise ProvisionError(failure, host=run.host.name, step=HANDLER,
                         command=f"switch to {target}", stderr=log)


HANDLERS = [Handler(UPGRADE_HANDLER, upgrade_hub, "switch the hub to its new environment: "
                    "stop it, back up the database, switch, jupyterhub upgrade-db, start, "
                    "check /hub/api reports the new version (else put everything back)"),
            Handler(HANDLER, restart_hub, "restart jupyterhub, wait for /hub/api "
                    "(roll back the config if it does not answer)")]
