"""Backups (roles backup and backup_server, provision.peers, the host's program): values
checked for the syntax they land in, the two sides of an sftp repository on a host of the
inventory, the password's copies, what the phase before the run shares. No SSH."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from faketransport import FakeTransport
from hostmodel import fresh, inventory_vars, request_for
from provision import backupspec as bs
from provision import peers
from provision.config import RunConfig
from provision.inventory import Host
from provision.steps import Refuse, Upload
from roles import backup, backup_server

KEY1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxhYjFsYWIxbGFiMWxhYjFsYWIxbGFiMWxhYjFs root@lab1"
HOSTKEY2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGhvc3Rob3N0aG9zdGhvc3Rob3N0aG9zdGhvc3Ro"


# ------------------------------------------------------------------------ the values
@pytest.mark.parametrize(("value", "want"), [
    ("/mnt/backup/lab1", bs.Repository("local", "/mnt/backup/lab1")),
    ("sftp:lab2:/srv/backup/lab1", bs.Repository("sftp", "/srv/backup/lab1", "lab2")),
    ("sftp:bk@backup.example.org:/srv/b/", bs.Repository("sftp", "/srv/b", "backup.example.org",
                                                          "bk")),
    ("sftp:10.0.0.9:/srv/b", bs.Repository("sftp", "/srv/b", "10.0.0.9")),
])
def test_repositories_taken(value, want):
    assert bs.parse_repository(value) == (want, None)


@pytest.mark.parametrize("value", [
    "backup/lab1", "s3:s3.amazonaws.com/bucket", "sftp://lab2//srv", "sftp:lab2",
    "sftp:lab2:srv/b", "sftp:lab2:/srv/../etc", "sftp:lab2:/", "/srv/b\nExecStart=/bin/sh",
    "sftp:Bad User@lab2:/srv", "sftp:lab_2!:/srv", "/srv/b c", "rest:http://x/", 42,
])
def test_repositories_refused(value):
    repo, why = bs.parse_repository(value)
    assert repo is None and why


def problems(**overrides):
    v = inventory_vars()
    v.update(overrides)
    return backup.check(v)


@pytest.mark.parametrize("schedule", ["daily", "hourly", "*-*-* 02:30:00", "Mon..Fri 22:00",
                                      "*:0/15"])
def test_schedules_taken(schedule):
    assert problems(backup_schedule=schedule) == []


@pytest.mark.parametrize("schedule", ["daily\nExecStartPre=/bin/sh", "%n", "daily ", "",
                                      "$(reboot)", "'daily'", "x" * 200, 5])
def test_schedules_refused(schedule):
    assert [k for k, _ in problems(backup_schedule=schedule)] == ["backup_schedule"]


def test_other_values_checked():
    found = dict(problems(backup_paths=["home"], backup_keep_daily=0, backup_keep_weekly=0,
                          backup_exclude=["ok", "two\nlines"],
                          backup_password_file="pw.txt"))
    assert set(found) == {"backup_paths", "backup_keep_daily", "backup_exclude",
                          "backup_password_file"}
    assert problems(backup_paths=["/srv/../etc"])
    assert problems(backup_repository="sftp:lab1:/srv/b")  # lab1 itself
    assert problems(backup_repository="sftp:lab2:/srv/{host}") == []


def test_accounts_are_user_names_of_their_own():
    assert bs.account("lab1") == "bk-lab1"
    long = bs.account("a-very-long-host-name.lab.example.org")
    assert len(long) <= 32 and long.startswith("bk-a-very-long")
    assert bs.account("Lab1") != bs.account("lab1")


def test_password_file_default_and_host_placeholder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    v = inventory_vars(backup_repository="/srv/b")
    assert bs.password_file(v) == f"{tmp_path}/jhprovision/backup/lab1.password"
    v["backup_password_file"] = "~/pw/{host}.pw"
    assert bs.password_file(v) == os.path.expanduser("~/pw/lab1.pw")


# --------------------------------------------------------------- the client's plan
def client_vars(tmp_path, state="upload", repository="sftp:lab2:/srv/backup/{host}", **more):
    pw = tmp_path / "lab1.password"
    if state in ("upload", "same", "differs"):
        pw.write_text("s3cret-password\n")
    v = inventory_vars(backup_repository=repository, backup_password_file=str(pw), **more)
    v[bs.PEERS] = {
        "lab1": {"vars": dict(v), "shared": {"backup": {"key": KEY1, "password_state": state}}},
        "lab2": {"vars": {"inventory_hostname": "lab2"},
                 "shared": {"backup_server": {"host_key": HOSTKEY2}}},
    }
    return v


def plan_client(v, host=None):
    host = host or fresh()
    return backup.plan(v, host.facts(request_for(v)).restrict(backup.facts(v)))


def by_name(actions, name):
    return next(a for a in actions if a.name == name)


def test_without_a_repository_nothing_is_planned_and_the_recap_says_so():
    (act,) = plan_client(inventory_vars())
    assert not act.changed and act.note == backup.NO_BACKUPS


def test_fresh_client_to_a_host_of_the_inventory(tmp_path):
    actions = plan_client(client_vars(tmp_path))
    names = [a.name for a in actions]
    assert names[:2] == ["apt restic", f"directory {bs.ETC}"]
    assert names[-3:] == [f"unit {bs.SERVICE}", f"unit {bs.TIMER}", f"service {bs.TIMER}"]
    password = by_name(actions, "repository password").ops[0]
    assert isinstance(password, Upload) and password.mode == "0600"
    assert password.content == b"s3cret-password\n"
    shown = "\n".join(a.diff + "".join(op.shown() for op in a.ops) for a in actions)
    assert "s3cret" not in shown
    ssh = by_name(actions, f"file {bs.SSH_CONFIG}").ops[0].content.decode()
    assert "User bk-lab1" in ssh and "HostName lab2" in ssh
    assert "StrictHostKeyChecking yes" in ssh and f"IdentityFile {bs.KEY}" in ssh
    known = by_name(actions, f"file {bs.KNOWN_HOSTS}").ops[0].content.decode()
    assert known == f"lab2 {HOSTKEY2}\n"
    cfg = json.loads(by_name(actions, f"file {bs.CONFIG}").ops[0].content)
    assert cfg["repository"] == f"sftp:{bs.SSH_ALIAS}:/restic"  # inside its chroot
    assert cfg["password_file"] == bs.PASSWORD and "s3cret" not in json.dumps(cfg)
    assert cfg["sftp_command"] == f"ssh -F {bs.SSH_CONFIG} {bs.SSH_ALIAS} -s sftp"
    assert cfg["paths"] == ["/home", "/var/lib/jupyterhub", "/var/lib/jupyterhub-otp",
                            "/etc/jupyterhub", "/etc/apache2/md", bs.DB_COPY_DIR]
    assert "/var/lib/jupyterhub/jupyterhub.sqlite" in cfg["exclude"]  # its copy instead
    timer = by_name(actions, f"unit {bs.TIMER}")
    assert timer.ops[0].argv == ["systemd-analyze", "calendar", "--", "daily"]
    assert b"OnCalendar=daily\n" in timer.ops[1].content
    unit = by_name(actions, f"unit {bs.SERVICE}").ops[0].content.decode()
    assert "EnvironmentFile" not in unit and "RESTIC_PASSWORD" not in unit
    assert "KillSignal=SIGINT" in unit and "ProtectSystem=strict" in unit


def test_local_repository_and_external_sftp(tmp_path):
    actions = plan_client(client_vars(tmp_path, repository="/mnt/backup/{host}"))
    assert "directory /mnt/backup/lab1" in [a.name for a in actions]
    unit = by_name(actions, f"unit {bs.SERVICE}").ops[0].content.decode()
    assert "ReadWritePaths=" in unit and "-/mnt/backup/lab1" in unit
    assert not any(a.name == f"file {bs.SSH_CONFIG}" for a in actions)
    actions = plan_client(client_vars(tmp_path, repository="sftp:bk@far.example.org:/b/l1"))
    ssh = by_name(actions, f"file {bs.SSH_CONFIG}").ops[0].content.decode()
    assert "User bk" in ssh and "StrictHostKeyChecking accept-new" in ssh
    cfg = json.loads(by_name(actions, f"file {bs.CONFIG}").ops[0].content)
    assert cfg["repository"] == f"sftp:{bs.SSH_ALIAS}:/b/l1"


def test_a_password_that_differs_is_refused_and_none_is_made_in_check_mode(tmp_path):
    act = by_name(plan_client(client_vars(tmp_path, state="differs")), "repository password")
    assert isinstance(act.ops[0], Refuse) and "encrypted with one of them" in act.ops[0].message
    act = by_name(plan_client(client_vars(tmp_path, state="new")), "repository password")
    assert [op.argv for op in act.ops] == [["true"]]  # check mode: shown, not made


def test_a_repository_host_outside_the_inventory_needs_its_account(tmp_path):
    v = client_vars(tmp_path, repository="sftp:lab9:/srv/b")
    act = by_name(plan_client(v), "repository host")
    assert "no host of the inventory" in act.ops[0].message


# ---------------------------------------------------------- the password's copies
@pytest.mark.parametrize(("have_file", "host_sha", "host_pw", "check", "state", "made"), [
    (False, None, None, False, "upload", True),   # first run: made here, then uploaded
    (False, "H", "their-pw\n", False, "same", True),  # lost here: the host's kept
    (False, None, None, True, "new", False),      # check mode makes nothing
    (True, "MINE", None, False, "same", False),
    (True, "other", None, False, "differs", False),
    (True, None, None, False, "upload", False),   # a rebuilt host gets it back
])
def test_the_workstation_keeps_a_copy(tmp_path, have_file, host_sha, host_pw, check, state,
                                      made):
    pw = tmp_path / "d" / "lab1.password"
    if have_file:
        pw.parent.mkdir()
        pw.write_text("mine\n")
    mine = hashlib.sha256(b"mine\n").hexdigest()
    if host_pw:
        host_sha = hashlib.sha256(host_pw.encode()).hexdigest()
    data = {"key": KEY1, "made_key": False,
            "password_sha256": mine if host_sha == "MINE" else host_sha}
    if host_pw:
        data["password"] = host_pw
    v = inventory_vars(backup_repository="/srv/b", backup_password_file=str(pw))
    out = backup.shared(v, data, check)
    assert out["password_state"] == state
    assert "password" not in out  # never further than the workstation's file
    assert pw.exists() == (have_file or made)
    if made:
        assert oct(pw.stat().st_mode & 0o777) == "0o600" and "not shown" in out["changed"]
        if host_pw:
            assert pw.read_text() == host_pw


def test_share_asks_for_the_password_only_when_the_workstation_has_none(tmp_path):
    pw = tmp_path / "lab1.password"
    v = inventory_vars(backup_repository="/srv/b", backup_password_file=str(pw))
    cmd = backup.share(v, check=True)
    assert cmd.argv[-2:] == ["--check", "--send-password"]
    pw.write_text("x\n")
    assert "--send-password" not in backup.share(v, check=False).argv
    assert backup.share(inventory_vars(), check=False) is None


# ----------------------------------------------------------- the repository host
def server_vars(*clients, key=KEY1):
    v = inventory_vars()
    v["inventory_hostname"] = "lab2"
    v[bs.PEERS] = {name: {"vars": {"inventory_hostname": name, "backup_repository": repo},
                          "shared": {"backup": {"key": key}} if key else {}}
                   for name, repo in clients}
    v[bs.PEERS]["lab2"] = {"vars": dict(v), "shared": {}}
    return v


def plan_server(v):
    return backup_server.plan(v, fresh().facts(request_for(v)).restrict(backup_server.facts(v)))


def test_server_only_where_a_client_names_it():
    assert not backup_server.enabled(inventory_vars())
    assert not backup_server.enabled(server_vars(("lab1", "/srv/local")))
    assert not backup_server.enabled(server_vars(("lab1", "sftp:lab3:/srv/b")))
    assert backup_server.enabled(server_vars(("lab1", "sftp:lab2:/srv/backup/lab1")))


def test_server_account_chroot_key_and_sshd():
    actions = plan_server(server_vars(("lab1", "sftp:lab2:/srv/backup/lab1")))
    names = [a.name for a in actions]
    assert names == ["group jhprovision-backup", "account bk-lab1 (backups of lab1)",
                     "directory /srv/backup/lab1", "directory /srv/backup/lab1/restic",
                     f"directory {bs.SERVER_KEYS_DIR}", f"file {bs.SERVER_KEYS_DIR}/bk-lab1",
                     f"file {bs.SSHD_DROPIN}"]
    useradd = by_name(actions, "account bk-lab1 (backups of lab1)").ops[0].argv
    assert useradd[:2] == ["useradd", "--system"] and useradd[-1] == "bk-lab1"
    assert "/usr/sbin/nologin" in useradd and "/srv/backup/lab1" in useradd
    chroot = by_name(actions, "directory /srv/backup/lab1").ops[0].argv
    assert chroot[:5] == ["install", "-d", "-m", "0755", "-o"] and "root" in chroot
    repo = by_name(actions, "directory /srv/backup/lab1/restic").ops[0].argv
    assert repo[3] == "0700" and repo[5] == "bk-lab1"
    key = by_name(actions, f"file {bs.SERVER_KEYS_DIR}/bk-lab1").ops[0]
    assert key.content == f"restrict {KEY1}\n".encode() and key.owner == "root"
    dropin = by_name(actions, f"file {bs.SSHD_DROPIN}")
    assert dropin.ops[0].validate == ["sshd", "-t", "-f", "{}"]
    assert dropin.notify == (backup_server.HANDLER,)
    text = dropin.ops[0].content.decode()
    for line in ("Match Group jhprovision-backup", "ChrootDirectory %h",
                 "ForceCommand internal-sftp", f"AuthorizedKeysFile {bs.SERVER_KEYS_DIR}/%u",
                 "AllowTcpForwarding no", "PermitTTY no"):
        assert f"\n{line}" in "\n" + "\n".join(ln.strip() for ln in text.splitlines())


def test_server_keeps_what_it_has_for_a_client_not_in_the_run():
    actions = plan_server(server_vars(("lab1", "sftp:lab2:/srv/backup/lab1"), key=None))
    act = by_name(actions, f"file {bs.SERVER_KEYS_DIR}/bk-lab1")
    assert not act.changed and "not known yet" in act.note


def test_two_clients_in_one_directory_are_refused():
    actions = plan_server(server_vars(("lab1", "sftp:lab2:/srv/b"), ("lab3", "sftp:lab2:/srv/b")))
    assert isinstance(actions[0].ops[0], Refuse)


# ----------------------------------------------------- the exchange before the run
class _Inventory:
    def __init__(self, hosts):
        self.hosts = [h.name for h in hosts]


def test_exchange_gives_each_host_its_peers_and_reports_a_new_key(tmp_path):
    pw = tmp_path / "lab1.password"
    lab1 = Host("lab1", vars=inventory_vars(backup_repository="sftp:lab2:/srv/backup/lab1",
                                            backup_password_file=str(pw)))
    lab2 = Host("lab2", vars=dict(inventory_vars(), inventory_hostname="lab2"))
    from provision.role import load_roles

    cfg = RunConfig(_Inventory([lab1, lab2]), [lab1, lab2], load_roles(), {})
    seen = {}

    def factory(host):
        def respond(argv, stdin):
            seen.setdefault(host.name, []).append(argv)
            if "share-client" in argv:
                return 0, json.dumps({"key": KEY1, "made_key": True,
                                      "password_sha256": None}), ""
            if "share-server" in argv:
                return 0, json.dumps({"host_key": HOSTKEY2}), ""
            return 1, "", "unexpected"
        return FakeTransport(host.name, responder=respond)

    steps = peers.exchange(cfg, check=False, transport_factory=factory)
    assert [s.status for s in steps["lab1"]] == ["changed"]
    assert "SSH key" in steps["lab1"][0].diff and pw.exists()
    (client,) = bs.clients(lab2.vars)
    assert client == bs.Client("lab1", "bk-lab1", "/srv/backup/lab1", KEY1)
    assert bs.shared(lab1.vars, "lab2", "backup_server") == {"host_key": HOSTKEY2}
    assert bs.shared(lab1.vars, "lab1", "backup")["password_state"] == "upload"
    assert len(seen["lab1"]) == len(seen["lab2"]) == 1  # one round trip each
    assert all("s3cret" not in " ".join(a) for argvs in seen.values() for a in argvs)
    # a host whose roles share nothing is not contacted
    lab3 = Host("lab3", vars=dict(inventory_vars(), inventory_hostname="lab3"))
    cfg = RunConfig(_Inventory([lab3]), [lab3], load_roles(), {})
    assert peers.exchange(cfg, check=False, transport_factory=factory) == {}
    assert "lab3" not in seen and lab3.vars[bs.PEERS]["lab3"]["shared"] == {}


# -------------------------------------------------------------- the host's program
@pytest.fixture
def program():
    ns = {"__name__": "backup_program"}
    exec(compile(open(bs.__file__.replace("backupspec.py", "remote/backup.py")).read(),
                 "backup.py", "exec"), ns)
    return ns


def test_the_database_copy_is_consistent(tmp_path, program):
    db = tmp_path / "jupyterhub.sqlite"
    con = sqlite3.connect(db)
    con.execute("create table users (name text)")
    con.executemany("insert into users values (?)", [("alice",), ("bob",)])
    con.commit()
    con.execute("begin")  # a write in progress is not in the copy, and does not block it
    con.execute("insert into users values ('carol')")
    os.chmod(db, 0o600)
    copy = tmp_path / "copy" / "jupyterhub.sqlite"
    program["copy_database"](str(db), str(copy))
    con.rollback()
    rows = sqlite3.connect(copy).execute("select name from users order by name").fetchall()
    assert rows == [("alice",), ("bob",)] and oct(copy.stat().st_mode & 0o777) == "0o600"


def test_restic_summary_and_what_a_restore_touches(program):
    out = "\n".join([json.dumps({"message_type": "status", "percent_done": 0.5}),
                     json.dumps({"message_type": "summary", "files_new": 3,
                                 "snapshot_id": "abc"})])
    assert program["summary_of"](out)["snapshot_id"] == "abc"
    under = program["_under"]
    assert under("/home", ["/home/alice"]) and under("/home/alice/x", ["/home"])
    assert not under("/homework", ["/home"])


def test_share_client_in_check_mode_makes_nothing(tmp_path, program):
    key, pw = tmp_path / "k" / "id", tmp_path / "pw"
    out = program["share_client"](str(key), str(pw), True, True)
    assert out == {"key": None, "made_key": False, "password_sha256": None}
    assert not key.parent.exists()
    pw.write_text("p\n")
    out = program["share_client"](str(key), str(pw), True, False)
    assert out["password_sha256"] == hashlib.sha256(b"p\n").hexdigest() and "password" not in out


def test_the_password_is_given_to_restic_as_a_file(program):
    cfg = {"repository": "/srv/b", "password_file": "/etc/x/password", "cache_dir": "/c",
           "sftp_command": "ssh -F /etc/x/ssh_config alias -s sftp"}
    env = program["env_of"](cfg)
    assert env["RESTIC_PASSWORD_FILE"] == "/etc/x/password" and "RESTIC_PASSWORD" not in env
    argv = program["restic_argv"](cfg, "--no-lock", "snapshots")
    assert argv == ["restic", "--no-lock", "-o", "sftp.command=ssh -F /etc/x/ssh_config alias "
                    "-s sftp", "snapshots"]


def test_paths_inside_a_home_are_refused_and_homes_are_staged(program):
    parts = program["_home_parts"]
    assert parts(["/home", "/var/lib/jupyterhub"], ["/home"]) == (
        ["/var/lib/jupyterhub"], {"/home": None}, [])
    assert parts(["/home/alice", "/home/bob/"], ["/home"]) == ([], {"/home": ["alice", "bob"]},
                                                               [])
    assert parts(["/home/alice/nb/x.ipynb"], ["/home"])[2] == ["/home/alice/nb/x.ipynb"]
    assert parts(["/"], ["/home"]) == ([], {}, ["/"])
    out = program["restore"]({"paths": ["/home"], "homes": ["/home"]}, "latest",
                             ["/home/alice/.bashrc"])
    assert not out["ok"] and "/home/alice/.bashrc" in out["error"] and out["stopped"] == []


def test_a_home_is_restored_beside_a_planted_link_never_through_it(tmp_path, program):
    """restic writes into root's staging directory; the home is then renamed into place,
    so a link the user planted in the home they have now takes no write elsewhere."""
    root, outside = tmp_path / "home", tmp_path / "etc"
    root.mkdir()
    outside.mkdir()
    (root / "alice").mkdir()
    (root / "alice" / "notes.txt").symlink_to(outside / "owned")  # planted after the backup
    (root / "alice" / "newer.txt").write_text("written after the backup\n")
    calls = []

    def fake_restic(cfg, *args, timeout=None):
        calls.append(args)
        target = args[args.index("--target") + 1]
        home = os.path.join(target, str(root).lstrip("/"), "alice")
        os.makedirs(home)
        with open(os.path.join(home, "notes.txt"), "w") as fh:
            fh.write("from the snapshot\n")
        return 0, "restored\n", ""

    program["restic"] = fake_restic
    done, why = program["_restore_homes"]({}, "latest", str(root), ["alice"])
    assert why is None and done["homes"] == [str(root / "alice")]
    assert not (outside / "owned").exists()
    assert (root / "alice" / "notes.txt").read_text() == "from the snapshot\n"
    assert not (root / "alice" / "notes.txt").is_symlink()
    (kept,) = done["aside"]  # what was there is put aside, not lost
    assert (Path(kept) / "newer.txt").read_text() == "written after the backup\n"
    assert not (root / ".jhprovision-restore").exists()
    assert calls[0][:4] == ("restore", "latest", "--target", str(root / ".jhprovision-restore"))
