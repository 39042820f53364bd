"""Side-by-side environments and the hub's upgrade (issue 14): the host-side scripts run
for real here on temporary directories (a fake ``systemctl`` on PATH records what they
ask of it), and the planners and handlers run on the modelled host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hostmodel import Shell, converged, inventory_vars
from provision import envs, pins
from roles import jupyterhub, userenv
from roles._common import HEALTH_SCRIPT
from test_roles import by_name, plan_role
from test_runner import Lab

OLD, NEW = "5.5.4", "6.1.1"
HUB_VENV, USER_VENV = "/opt/jupyterhub", "/opt/jupyterhub-user"
DB = "/var/lib/jupyterhub/jupyterhub.sqlite"


# ----------------------------------------------------------------------------- keys
def test_an_environment_is_named_by_its_pin_set():
    old, new = inventory_vars(jupyterhub_version=OLD), inventory_vars()
    assert jupyterhub.hub_env(old) != jupyterhub.hub_env(new)
    assert jupyterhub.hub_env(new).startswith(f"{HUB_VENV}.envs/")
    # a package the pin set does not name keeps the environment (it goes in in place)
    more = inventory_vars(jupyterhub_user_packages=["tabulate"])
    assert userenv.user_env(more) == userenv.user_env(new)
    # a course's own pin that differs from the set's changes the set, so the environment
    own = inventory_vars(jupyterhub_user_packages=["jsonschema==4.26.0"])
    assert userenv.user_env(own) != userenv.user_env(new)
    assert envs.env_key(None, ["b", "a"]) == envs.env_key(None, ["a", "b"])


# ------------------------------------------------------------------ the scripts, for real
def make_env(path: Path, jupyterhub_version: str | None = None, upgrade_rc: int = 0) -> Path:
    """A directory that passes for a virtualenv: bin/python, and a jupyterhub whose
    upgrade-db records its arguments and exits with ``upgrade_rc``."""
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").write_text("#!/bin/sh\n")
    (path / "bin" / "python").chmod(0o755)
    if jupyterhub_version:
        site = path / "lib" / "python3.11" / "site-packages"
        (site / f"jupyterhub-{jupyterhub_version}.dist-info").mkdir(parents=True)
        # upgrade-db runs alembic, which it must find in its own environment
        (path / "bin" / "alembic").write_text("#!/bin/sh\n")
        (path / "bin" / "alembic").chmod(0o755)
        hub = path / "bin" / "jupyterhub"
        hub.write_text(f'#!/bin/sh\necho "$PWD $* $(command -v alembic)" >> '
                       f'{path}/upgrade-db.calls\necho "upgrade-db output"\nexit {upgrade_rc}\n')
        hub.chmod(0o755)
    return path


def sh(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script, "sh", *args], capture_output=True, text=True,
                          env=env)


def test_switch_moves_a_plain_directory_aside_then_links_in_one_rename(tmp_path):
    link = tmp_path / "jupyterhub"
    make_env(link)
    (link / "mine").write_text("the old environment's file")
    new = make_env(tmp_path / "jupyterhub.envs" / "aaa")
    res = sh(envs.SWITCH, str(link), str(new), envs.legacy_path(str(link)))
    assert res.returncode == 0, res.stderr
    assert os.readlink(link) == str(new)
    legacy = Path(envs.legacy_path(str(link)))
    assert (legacy / "mine").read_text() == "the old environment's file"
    # and back, to the moved directory (what a rollback does)
    assert sh(envs.SWITCH, str(link), str(legacy), str(legacy)).returncode == 0
    assert os.readlink(link) == str(legacy)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jupyterhub", "jupyterhub.envs"]


def test_relink_points_a_new_environments_scripts_at_the_stable_path(tmp_path):
    target = make_env(tmp_path / "v.envs" / "abc")
    script = target / "bin" / "jupyterhub-singleuser"
    script.write_text(f"#!{target}/bin/python3\nimport sys\n")
    script.chmod(0o755)
    other = target / "bin" / "tool"
    other.write_text("#!/bin/sh\necho\n")
    (target / "bin" / "python3").symlink_to("/usr/bin/python3")
    res = subprocess.run([sys.executable, "-c", envs.RELINK, str(target), str(tmp_path / "v")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert script.read_text() == f"#!{tmp_path}/v/bin/python3\nimport sys\n"
    assert oct(script.stat().st_mode & 0o777) == "0o755"
    assert other.read_text() == "#!/bin/sh\necho\n"
    assert os.readlink(target / "bin" / "python3") == "/usr/bin/python3"
    assert not list((target / "bin").glob("*.jhprovision-new"))


def test_switch_refuses_an_environment_that_is_not_there(tmp_path):
    link = tmp_path / "jupyterhub"
    old = make_env(tmp_path / "jupyterhub.envs" / "old")
    link.symlink_to(old)
    res = sh(envs.SWITCH, str(link), str(tmp_path / "jupyterhub.envs" / "nothing"), "x")
    assert res.returncode == 1 and "no environment at" in res.stderr
    assert os.readlink(link) == str(old)


def test_prune_keeps_only_what_it_is_told(tmp_path):
    for name in ("a", "b", "c", envs.LEGACY):
        make_env(tmp_path / "v.envs" / name)
    keep = [str(tmp_path / "v.envs" / "b"), str(tmp_path / "v.envs" / envs.LEGACY)]
    res = subprocess.run(envs.prune_argv(str(tmp_path / "v"), keep), capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    assert sorted(res.stdout.split()) == [str(tmp_path / "v.envs" / n) for n in ("a", "c")]
    assert sorted(p.name for p in (tmp_path / "v.envs").iterdir()) == ["b", envs.LEGACY]


@pytest.fixture
def hub_host(tmp_path):
    """A hub's files under tmp_path: the venv's path linked to the old environment, the
    database, three old backups, and a systemctl that records its calls."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/systemctl.calls\n')
    (bin_dir / "systemctl").chmod(0o755)
    state = tmp_path / "state"
    (state / "backups").mkdir(parents=True)
    (state / "jupyterhub.sqlite").write_text("database v5")
    for day in ("01", "02", "03"):
        (state / "backups" / f"jupyterhub-202611{day}T000000Z-5.5.3.sqlite").write_text(day)
    old = make_env(tmp_path / "venv.envs" / "old", OLD)
    new = make_env(tmp_path / "venv.envs" / "new", NEW)
    (tmp_path / "venv").symlink_to(old)
    return dict(root=tmp_path, state=state, old=old, new=new, link=tmp_path / "venv",
                env=dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}"))


def upgrade(h, target: Path, proven: str | None = None) -> dict:
    proven_file = h["state"] / "jhprovision-hub-env"
    if proven is not None:
        proven_file.write_text(proven + "\n")
    res = subprocess.run(
        [sys.executable, "-c", jupyterhub.UPGRADE_SCRIPT, "jupyterhub.service", str(h["link"]),
         str(target), str(h["state"] / "jupyterhub.sqlite"), str(h["state"] / "backups"), "3",
         "/etc/jupyterhub/jupyterhub_config.py", str(proven_file), envs.SWITCH,
         envs.legacy_path(str(h["link"]))], capture_output=True, text=True, env=h["env"])
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_upgrade_script_stops_backs_up_switches_and_upgrades_the_database(hub_host):
    h = hub_host
    info = upgrade(h, h["new"])
    assert info["previous"] == str(h["old"]) and info["from"] == OLD
    assert (h["root"] / "systemctl.calls").read_text() == "stop -- jupyterhub.service\n"
    backups = sorted(p.name for p in (h["state"] / "backups").iterdir())
    assert len(backups) == 3 and backups[0].startswith("jupyterhub-20261102")  # oldest gone
    assert info["backup"].endswith(f"-{OLD}.sqlite") and Path(info["backup"]).name in backups
    assert Path(info["backup"]).read_text() == "database v5"
    assert oct(Path(info["backup"]).stat().st_mode & 0o777) == "0o600"
    assert os.readlink(h["link"]) == str(h["new"])
    # upgrade-db ran from the new environment, beside the database, with the hub's config
    calls = (h["new"] / "upgrade-db.calls").read_text()
    assert calls == (f"{h['state']} upgrade-db --config=/etc/jupyterhub/jupyterhub_config.py "
                     f"{h['link']}/bin/alembic\n")
    assert info["upgrade_rc"] == 0 and info["upgrade_log"] == ["upgrade-db output"]


def test_upgrade_script_goes_back_to_the_environment_last_proven(hub_host):
    """An earlier run switched but never saw the new hub answer: the link already names
    the new environment, so the one to go back to is the proven one."""
    h = hub_host
    h["link"].unlink()
    h["link"].symlink_to(h["new"])
    info = upgrade(h, h["new"], proven=str(h["old"]))
    assert info["previous"] == str(h["old"])


def test_a_failing_upgrade_db_is_reported_with_its_output(hub_host):
    h = hub_host
    bad = make_env(h["root"] / "venv.envs" / "bad", NEW, upgrade_rc=3)
    info = upgrade(h, bad)
    assert info["upgrade_rc"] == 3 and info["upgrade_log"] == ["upgrade-db output"]


def test_rollback_script_puts_the_environment_and_the_database_back(hub_host):
    h = hub_host
    info = upgrade(h, h["new"])
    (h["state"] / "jupyterhub.sqlite").write_text("database v6")
    res = sh(jupyterhub.ROLLBACK_SCRIPT, "jupyterhub.service", str(h["link"]), info["previous"],
             info["backup"], str(h["state"] / "jupyterhub.sqlite"), envs.SWITCH,
             envs.legacy_path(str(h["link"])), env=h["env"])
    assert res.returncode == 0, res.stderr
    assert os.readlink(h["link"]) == str(h["old"])
    assert (h["state"] / "jupyterhub.sqlite").read_text() == "database v5"


# ------------------------------------------------------------------ planning and running
def old_host():
    host = converged(inventory_vars(jupyterhub_version=OLD))
    host.add_file(DB, "database", "0644")
    return host


def test_check_on_a_version_bump_shows_every_step_and_changes_nothing():
    host = old_host()
    before = json.dumps(host.files, default=repr, sort_keys=True)
    actions = plan_role("jupyterhub", inventory_vars(), host)
    key = jupyterhub.hub_env(inventory_vars()).rsplit("/", 1)[1]
    build = by_name(actions, f"jupyterhub packages: new environment {key}")
    assert f"~ jupyterhub {OLD} -> {NEW}" in build.diff
    assert "which keeps serving until the switch" in build.diff
    switch = by_name(actions, f"jupyterhub packages: switch to environment {key}")
    assert switch.notify == (jupyterhub.UPGRADE_HANDLER,)
    assert f"back up {DB}" in switch.diff and "jupyterhub upgrade-db" in switch.diff
    assert f"must report version {NEW}" in switch.diff
    report = Lab({"lab1": host}, inventory_vars()).run(check=True).hosts["lab1"]
    assert "upgrade jupyterhub" in report.handlers
    assert json.dumps(host.files, default=repr, sort_keys=True) == before


class Hub(Shell):
    """The modelled host, whose hub does not answer after ``fail_after`` health checks."""

    def __init__(self, st, fail_at: int | None = None) -> None:
        super().__init__(st)
        self.checks, self.fail_at, self.argvs = 0, fail_at, []

    def __call__(self, argv, stdin):
        self.argvs.append(argv)
        if argv[:3] == ["python3", "-c", HEALTH_SCRIPT] and "/hub/api" in argv[4]:
            self.checks += 1
            if self.checks == self.fail_at:
                return 1, json.dumps({"ok": False, "reason": "jupyterhub.service is failed",
                                      "since": 1796000000, "seconds": 1.0}), ""
        return super().__call__(argv, stdin)


def converge(host, shell: Hub, v=None):
    from faketransport import FakeTransport
    from provision.display import Display
    from provision.inventory import Host
    from provision.role import load_roles
    from provision.runner import run
    import io

    v = v or inventory_vars()
    rep = run([Host("lab1", vars=v)], load_roles(), display=Display(io.StringIO(), color=False),
              transport_factory=lambda h: FakeTransport(h.name, responder=shell))
    return rep.hosts["lab1"]


def test_a_version_bump_upgrades_the_hub_then_the_users_environment():
    host = old_host()
    old_hub, old_user = host.files[HUB_VENV]["target"], host.files[USER_VENV]["target"]
    rep = converge(host, Hub(host))
    assert not rep.failed, rep.error
    assert rep.handlers == ["upgrade jupyterhub",
                            "switch users' environment"]
    v = inventory_vars()
    assert host.files[HUB_VENV]["target"] == jupyterhub.hub_env(v)
    assert host.files[USER_VENV]["target"] == userenv.user_env(v)
    assert host.files[jupyterhub.proven_file(v)]["content"] == \
        f"{jupyterhub.hub_env(v)}\n".encode()
    assert any(n.startswith(f"JupyterHub upgraded {OLD} -> {NEW}; database backed up to "
                            "/var/lib/jupyterhub/backups/") for n in rep.notes)
    # the previous environments are kept (the way back), nothing older
    assert {p for p in host.venvs if ".envs/" in p} == {
        old_hub, old_user, jupyterhub.hub_env(v), userenv.user_env(v)}
    again = converge(host, Hub(host))
    assert again.count("changed") == 0 and again.round_trips == 1


def test_a_hub_that_does_not_answer_on_the_new_version_is_put_back():
    host = old_host()
    old_hub = host.files[HUB_VENV]["target"]
    proven = host.files[jupyterhub.proven_file(inventory_vars())]["content"]
    shell = Hub(host, fail_at=1)
    rep = converge(host, shell)
    assert rep.failed
    (step,) = [s for s in rep.steps if s.status == "failed"]
    assert step.name == "handler: upgrade jupyterhub"
    message = step.error["message"]
    assert message.startswith(f"the hub did not come back on JupyterHub {NEW}")
    assert f"put back: environment {old_hub}, database copy /var/lib/jupyterhub/backups/" \
        in message and message.endswith("the hub answers again")
    rollback = next(a for a in shell.argvs if a[2:3] == [jupyterhub.ROLLBACK_SCRIPT])
    assert rollback[4:7] == ["jupyterhub.service", HUB_VENV, old_hub]
    assert host.files[HUB_VENV]["target"] == old_hub
    assert host.files[jupyterhub.proven_file(inventory_vars())]["content"] == proven
    # the run stopped at the hub: the users' environment was not switched
    assert "switch users' environment" not in rep.handlers
    assert host.files[USER_VENV]["target"] != userenv.user_env(inventory_vars())


def test_an_install_cut_short_is_thrown_away_and_redone():
    host = old_host()
    v = inventory_vars()
    host.venvs[jupyterhub.hub_env(v)] = ["pip-23.0.1.dist-info", "jupyterhub-6.1.1.dist-info"]
    key = jupyterhub.hub_env(v).rsplit("/", 1)[1]
    build = by_name(plan_role("jupyterhub", v, host), f"jupyterhub packages: new environment {key}")
    assert build.ops[0].argv == ["rm", "-rf", "--", jupyterhub.hub_env(v)]
    assert "an unfinished install there is removed first" in build.diff
    assert build.ops[-1].path == f"{jupyterhub.hub_env(v)}/{envs.COMPLETE}"


def test_a_complete_new_environment_is_not_built_again():
    host = old_host()
    v = inventory_vars()
    host.venvs[jupyterhub.hub_env(v)] = ["jupyterhub-6.1.1.dist-info"]
    host.add_file(f"{jupyterhub.hub_env(v)}/{envs.COMPLETE}", "x\n")
    names = [a.name for a in plan_role("jupyterhub", v, host) if a.changed]
    assert not any("new environment" in n for n in names)
    assert any("switch to environment" in n for n in names)


def plain_directory_host(version: str):
    """A host as an older jhprovision left it: the hub's environment at the path itself."""
    v = inventory_vars(jupyterhub_version=version)
    host = converged(v)
    real = host.files.pop(HUB_VENV)["target"]
    host.venvs[HUB_VENV] = host.venvs.pop(real)
    for name in [n for n in host.files if n.startswith(f"{real}/")]:
        host.files[HUB_VENV + name[len(real):]] = host.files.pop(name)
    host.files.pop(f"{HUB_VENV}/{envs.COMPLETE}")
    host.add_dir(HUB_VENV)
    host.files.pop(jupyterhub.proven_file(v))
    return host


def test_a_plain_directory_venv_becomes_the_environment_to_go_back_to():
    host = plain_directory_host(OLD)
    v = inventory_vars()
    actions = plan_role("jupyterhub", v, host)
    switch = next(a for a in actions if a.name.startswith("jupyterhub packages: switch"))
    assert f"(was {HUB_VENV} (moved to {HUB_VENV}.envs/{envs.LEGACY}))" in switch.diff
    rep = converge(host, Hub(host))
    assert not rep.failed, rep.error
    assert host.files[HUB_VENV]["target"] == jupyterhub.hub_env(v)
    assert f"{HUB_VENV}.envs/{envs.LEGACY}" in host.venvs


def test_a_plain_directory_venv_with_this_pin_set_is_adopted_as_it_is():
    host = plain_directory_host(NEW)
    v = inventory_vars()
    key = jupyterhub.hub_env(v).rsplit("/", 1)[1]
    adopt = by_name(plan_role("jupyterhub", v, host),
                    f"jupyterhub packages: keep environment {key}")
    assert adopt.notify == () and "it holds this pin set" in adopt.diff
    rep = converge(host, Hub(host))
    assert not rep.failed, rep.error
    assert rep.handlers == []  # nothing rebuilt, nothing restarted
    assert host.files[HUB_VENV]["target"] == jupyterhub.hub_env(v)
    assert f"{jupyterhub.hub_env(v)}/{envs.COMPLETE}" in host.files
    assert converge(host, Hub(host)).count("changed") == 0


def test_adopt_script_moves_links_and_marks_the_environment(tmp_path):
    link = tmp_path / "jupyterhub"
    make_env(link)
    target = tmp_path / "jupyterhub.envs" / "abc"
    res = sh(envs.ADOPT, str(link), str(target), envs.COMPLETE)
    assert res.returncode == 0, res.stderr
    assert os.readlink(link) == str(target)
    assert (link / "bin" / "python").exists()  # through the link, as before
    assert (target / envs.COMPLETE).read_text() == "abc\n"


def test_the_users_switch_reports_servers_that_did_not_start_again():
    host = converged(inventory_vars(jupyterhub_version=OLD))

    class Users(Hub):
        def __call__(self, argv, stdin):
            if argv[:3] == ["python3", "-c", userenv.SWITCH_SCRIPT]:
                super().__call__(argv, stdin)
                return 0, json.dumps({"restarted": ["ann"], "failed": {"bob": "did not start"},
                                      "hub": True, "previous": None}) + "\n", ""
            return super().__call__(argv, stdin)

    rep = converge(host, Users(host))
    (step,) = [s for s in rep.steps if s.status == "failed"]
    assert step.name == "handler: switch users' environment"
    assert "these servers did not start again on it: bob: did not start" in \
        step.error["message"]


def test_a_dependency_bump_in_the_pin_set_switches_with_the_same_hub_version(monkeypatch):
    v = inventory_vars()
    host = converged(v)
    host.add_file(DB, "database", "0644")
    text = pins.for_vars(v)
    tornado = pins.parse(text)["tornado"]
    monkeypatch.setattr(pins, "for_vars", lambda v: text.replace(f"tornado=={tornado}",
                                                                 "tornado==6.5.1"))
    rep = converge(host, Hub(host))
    assert not rep.failed, rep.error
    assert rep.handlers == ["upgrade jupyterhub", "switch users' environment"]
    assert any(n.startswith(f"the hub now runs from {jupyterhub.hub_env(v)} (its pin set "
                            "changed); database backed up") for n in rep.notes), rep.notes
