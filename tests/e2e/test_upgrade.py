"""Safe upgrades (issue 14), end to end on a host of its own, lab4: a hub installed at the
previous major version (5.5.4) with a user's file written from a kernel; a Ctrl-C while
the new environment installs; an upgrade whose hub will not start on the new version
(everything put back: environment, database, the old hub serving); the real upgrade to
the default version (backup, upgrade-db, the user's server and file still there); a
second run that changes nothing; and a proxy upgrade that restarts the proxy alone, the
hub putting its routes back.

The tests run in order, each from where the last one left the host.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from provision.api import hash_password
from provision.hubclient import HubClient

from e2e_support import invoke, main_pid, make_inventory, provision_json, sh, start_invoke

pytestmark = [pytest.mark.e2e, pytest.mark.lab4]
HOST = "lab4"
OLD, NEW = "5.5.4", "6.1.1"
PASSWORD = "upgrade-e2e-pw-41"
USER = "uma"
HUB_VENV, USER_VENV = "/opt/jupyterhub", "/opt/jupyterhub-user"
DB = "/var/lib/jupyterhub/jupyterhub.sqlite"
BACKUPS = "/var/lib/jupyterhub/backups"
SERVER_UNIT = f"jupyter-{USER}-singleuser"
# Refuses to start a JupyterHub 6.1.1 hub, and only that (the config loader's check and
# upgrade-db pass): a new environment whose hub cannot start.
REFUSE_NEW = ("import sys, jupyterhub\n"
              "if sys.argv[0].endswith('/jupyterhub') and 'upgrade-db' not in sys.argv \\\n"
              "        and jupyterhub.__version__ == '6.1.1':\n"
              "    raise SystemExit('e2e: this hub refuses to start on 6.1.1')\n")


def write_vars(ctx, **changes) -> None:
    import yaml

    path = ctx["inv"] / "group_vars" / "all" / "main.yml"
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))


def api_version(ctx) -> str:
    return HubClient(ctx["url"]).api_version()


def db_revision() -> str:
    return sh(HOST, f"python3 -c \"import sqlite3; print(sqlite3.connect('{DB}').execute("
                    "'select version_num from alembic_version').fetchone()[0])\"").strip()


def link(path: str) -> str:
    return sh(HOST, f"readlink -- {path}").strip()


def envs(path: str) -> list[str]:
    return sorted(sh(HOST, f"ls -1 {path}.envs").split())


def client(ctx) -> HubClient:
    c = HubClient(ctx["url"], timeout=60)
    c.login(USER, PASSWORD)
    c.start_server(USER, wait=120)
    c.open_lab(USER)
    return c


def in_kernel(c: HubClient, code: str) -> str:
    return c.execute(USER, c.start_kernel(USER), code)


@pytest.fixture(scope="module")
def ctx(lab4, tmp_path_factory):
    users = [{"name": USER, "uid": 2701, "password_hash": hash_password(PASSWORD)}]
    inv = make_inventory(tmp_path_factory.mktemp("inv-upgrade"), group_vars={
        "users": users, "jupyterhub_version": OLD})
    reports = tmp_path_factory.mktemp("reports-upgrade")
    _, first = provision_json(inv, HOST, reports)
    assert first["failed_hosts"] == [], first
    return {"inv": inv, "reports": reports,
            "url": f"http://127.0.0.1:{lab4.ports['hub']}/", "state": {}}


def test_the_previous_major_version_installs_and_serves(ctx):
    assert api_version(ctx) == OLD
    c = client(ctx)
    out = in_kernel(c, "import pathlib; p = pathlib.Path.home() / 'before-upgrade.txt'; "
                       "p.write_text('kept across the upgrade'); str(p)")
    assert out == repr(f"/home/{USER}/before-upgrade.txt")
    ctx["state"].update(revision=db_revision(), hub_env=link(HUB_VENV),
                        user_env=link(USER_VENV))
    assert ctx["state"]["hub_env"].startswith(f"{HUB_VENV}.envs/")


def test_check_shows_the_upgrade_and_changes_nothing(ctx):
    write_vars(ctx, jupyterhub_version=NEW)
    proc, report = provision_json(ctx["inv"], HOST, ctx["reports"], "--check")
    steps = {s["name"]: s for s in report["hosts"][HOST]["steps"]}
    switch = next(s for n, s in steps.items() if n.startswith("jupyterhub packages: switch"))
    build = next(s for n, s in steps.items() if n.startswith("jupyterhub packages: new"))
    assert f"~ jupyterhub {OLD} -> {NEW}" in build["diff"]
    assert f"~ jupyterhub {OLD} -> {NEW}" in switch["diff"]
    assert "back up /var/lib/jupyterhub/jupyterhub.sqlite" in switch["diff"]
    assert "jupyterhub upgrade-db" in switch["diff"]
    assert "upgrade jupyterhub" in proc.stdout
    assert link(HUB_VENV) == ctx["state"]["hub_env"] and api_version(ctx) == OLD
    assert envs(HUB_VENV) == [ctx["state"]["hub_env"].rsplit("/", 1)[1]]


def test_ctrl_c_while_the_new_environment_installs_leaves_the_old_hub_serving(ctx):
    report = ctx["reports"] / "interrupted.json"
    proc = start_invoke("provision", "--hosts", HOST, "--inventory", str(ctx["inv"]),
                        "--json", str(report))
    deadline = time.monotonic() + 300
    # pip run from the new environment, or uv given its python (provision.installer)
    busy = "pgrep -f '[.]envs/.*/bin/pip install|[p]ip install --python [^ ]*[.]envs/' || true"
    while not sh(HOST, busy).strip():
        assert time.monotonic() < deadline, "the new environment's pip install never ran"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    assert link(HUB_VENV) == ctx["state"]["hub_env"]
    assert api_version(ctx) == OLD
    assert sh(HOST, "systemctl is-active jupyterhub").strip() == "active"


def test_a_new_hub_that_will_not_start_is_rolled_back_with_its_database(ctx):
    server_pid = main_pid(HOST, SERVER_UNIT)
    write_vars(ctx, jupyterhub_extra_config=REFUSE_NEW)
    # the guard goes into the old hub's config first: it still starts on 5.5.4
    proc, report = provision_json(ctx["inv"], HOST, ctx["reports"], check=False)
    host = report["hosts"][HOST]
    assert proc.returncode == 1 and host["failed"] == 1, proc.stdout[-3000:]
    failed = next(s for s in host["steps"] if s["status"] == "failed")
    assert failed["name"] == "handler: upgrade jupyterhub"
    message = failed["error"]["message"]
    assert "refuses to start on 6.1.1" in message + failed["error"]["stderr"]
    assert "put back: environment" in message and "database copy" in message
    assert "the hub answers again" in message
    # the old version serves, from the old environment, with the old database
    assert api_version(ctx) == OLD
    assert link(HUB_VENV) == ctx["state"]["hub_env"]
    assert db_revision() == ctx["state"]["revision"]
    (backup,) = sh(HOST, f"ls -1 {BACKUPS}").split()
    assert backup.startswith("jupyterhub-") and backup.endswith(f"-{OLD}.sqlite")
    assert sh(HOST, f"stat -c %a {BACKUPS}/{backup}").strip() == "600"
    # the users' environment was not switched: the run stopped at the hub; the user's
    # server lived through the hub's stops and starts
    assert link(USER_VENV) == ctx["state"]["user_env"]
    assert main_pid(HOST, SERVER_UNIT) == server_pid != 0
    # the new environment, complete, waits for the next run
    assert len(envs(HUB_VENV)) == 2


def test_the_upgrade_keeps_users_their_files_and_the_database(ctx):
    write_vars(ctx, jupyterhub_extra_config="")
    proc, report = provision_json(ctx["inv"], HOST, ctx["reports"])
    host = report["hosts"][HOST]
    assert host["failed"] == 0, proc.stdout[-3000:]
    assert "upgrade jupyterhub" in host["handlers"]
    assert any(n.startswith(f"JupyterHub upgraded {OLD} -> {NEW}") for n in host["notes"])
    # the users' environment switched too, and the running server restarted on it
    assert any(f"servers restarted on it: {USER}" in n for n in host["notes"]), host["notes"]
    # nothing was built twice: the environment the interrupted run made is the one used
    assert not any(s["name"].startswith("jupyterhub packages: new") and s["status"] ==
                   "changed" for s in host["steps"])
    assert api_version(ctx) == NEW
    assert db_revision() != ctx["state"]["revision"]
    assert len(sh(HOST, f"ls -1 {BACKUPS}").split()) == 2
    # the old environments are the previous one only
    hub_now = link(HUB_VENV)
    assert hub_now != ctx["state"]["hub_env"]
    assert envs(HUB_VENV) == sorted(p.rsplit("/", 1)[1] for p in
                                    (hub_now, ctx["state"]["hub_env"]))
    assert link(USER_VENV) != ctx["state"]["user_env"]
    assert len(envs(USER_VENV)) == 2
    # the user is still known to the hub, logs in, spawns, and reads their file
    c = client(ctx)
    assert c.user(USER)["name"] == USER
    assert in_kernel(c, "import jupyterhub; jupyterhub.__version__") == repr(NEW)
    assert in_kernel(c, "(__import__('pathlib').Path.home() / 'before-upgrade.txt')"
                        ".read_text()") == repr("kept across the upgrade")


def test_a_second_run_changes_nothing(ctx):
    _, report = provision_json(ctx["inv"], HOST, ctx["reports"])
    host = report["hosts"][HOST]
    assert host["changed"] == 0 and host["failed"] == 0, [
        s["name"] for s in host["steps"] if s["status"] != "ok"]
    assert host["handlers"] == []
    pinned = json.loads(sh(HOST, f"{HUB_VENV}/bin/python -c \"import importlib.metadata as m, "
                                 "json; print(json.dumps(m.version('jupyterhub')))\""))
    assert pinned == NEW


def test_a_proxy_upgrade_restarts_the_proxy_only_and_the_routes_come_back(ctx):
    hub_pid, server_pid = main_pid(HOST, "jupyterhub"), main_pid(HOST, SERVER_UNIT)
    assert server_pid, "the user's server should still run from the last test"
    write_vars(ctx, proxy_version="5.2.0")
    _, report = provision_json(ctx["inv"], HOST, ctx["reports"])
    host = report["hosts"][HOST]
    assert host["failed"] == 0 and host["handlers"] == ["restart proxy"], host["handlers"]
    assert main_pid(HOST, "jupyterhub") == hub_pid
    assert main_pid(HOST, SERVER_UNIT) == server_pid
    assert json.loads(sh(HOST, "cat /opt/configurable-http-proxy/lib/node_modules/"
                               "configurable-http-proxy/package.json"))["version"] == "5.2.0"
    # the hub put its routes back: the running server answers through the proxy
    c = HubClient(ctx["url"], timeout=60)
    c.login(USER, PASSWORD)
    assert c.open_lab(USER).status == 200
    _, report = provision_json(ctx["inv"], HOST, ctx["reports"])
    assert report["hosts"][HOST]["changed"] == 0


def test_plain_directory_venvs_of_an_older_release_are_adopted_in_place(ctx):
    """As an older jhprovision left a host: each venv a plain directory at its path. Both
    hold the pin set in use, so they are moved and linked: nothing rebuilt or restarted."""
    hub_pid, server_pid = main_pid(HOST, "jupyterhub"), main_pid(HOST, SERVER_UNIT)
    for path in (HUB_VENV, USER_VENV):
        env = link(path)
        sh(HOST, f"rm {path} && mv -T {env} {path} && rm {path}/jhprovision-complete")
    _, report = provision_json(ctx["inv"], HOST, ctx["reports"])
    host = report["hosts"][HOST]
    changed = [s["name"] for s in host["steps"] if s["status"] == "changed"]
    assert [n.split(":")[0] for n in changed] == ["jupyterhub packages", "users' packages"]
    assert all(": keep environment " in n for n in changed), changed
    assert host["handlers"] == []
    assert main_pid(HOST, "jupyterhub") == hub_pid
    assert main_pid(HOST, SERVER_UNIT) == server_pid
    assert link(HUB_VENV).startswith(f"{HUB_VENV}.envs/")
    assert link(USER_VENV).startswith(f"{USER_VENV}.envs/")
    verify = invoke("verify", "--hosts", HOST, "--inventory", str(ctx["inv"]), timeout=600)
    assert verify.returncode == 0, verify.stdout[-3000:]
