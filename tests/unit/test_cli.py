"""The command line as a sysadmin types it (no host is contacted: every case here stops at
the inventory or at help)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from provision.config import REPO

TASKS = ["provision", "add-user", "remove-user", "verify", "docs", "lab.up", "lab.down",
         "lab.status", "lab.ssh", "artifacts"]


def invoke(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("task", ["add-user", "remove-user"])
def test_help_after_a_task_that_takes_a_name_is_help(task):
    proc = invoke(task, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"Usage: inv[oke] [--core-opts] {task}"), proc.stdout
    assert "not a valid user name" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("task", TASKS)
def test_every_task_help_has_an_example(task):
    proc = invoke("--help", task)
    assert proc.returncode == 0, proc.stderr
    assert f"Example: invoke {task}" in proc.stdout, proc.stdout


@pytest.mark.parametrize("task", ["provision", "add-user alice", "remove-user alice",
                                  "verify"])
def test_limit_is_hosts_under_ansibles_name(task, tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    lab1:\n")
    proc = invoke(*task.split(), "--inventory", str(inv), "--limit", "nosuch")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--hosts: no host or group named 'nosuch'" in proc.stderr
    both = invoke(*task.split(), "--inventory", str(inv), "--limit", "lab1", "--hosts", "lab1")
    assert both.returncode == 2
    assert "--hosts and --limit are the same option" in both.stderr


@pytest.mark.parametrize("args, message", [
    (["provision", "--forks", "abc"], "--forks"),
    (["add-user", "alice", "--uid", "abc"], "--uid"),
    (["provision", "--var", "jupyterhub_port"], "--var"),
    (["provision", "--roles", "userz"], "--roles: no role named 'userz'"),
])
def test_bad_options_are_an_error_without_traceback(args, message, tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    lab1:\n")
    proc = invoke(*args, "--inventory", str(inv))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and message in proc.stderr, proc.stderr


def test_lab_count_that_is_not_a_number_is_an_error():
    proc = invoke("lab.up", "--count", "abc")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--count: 'abc' is not a whole number" in proc.stderr


def test_json_into_a_directory_is_refused_before_the_run(tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    lab1:\n      ansible_host: 127.0.0.1\n"
                   "      ansible_port: 1\n")
    proc = invoke("provision", "--inventory", str(inv), "--json", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"--json: {tmp_path} is a directory" in proc.stderr
    assert "lab1" not in proc.stdout  # nothing ran


def test_a_malformed_last_run_is_an_error_not_a_traceback(tmp_path):
    from provision import api
    from provision.errors import ConfigError

    bad = tmp_path / "last-run.json"
    for text in ("[1, 2]", '{"failed_hosts": 5}', "{not json"):
        bad.write_text(text)
        with pytest.raises(ConfigError, match="--retry-failed"):
            api.failed_last_time(bad)


def test_private_files_are_made_exclusively_and_never_follow_a_planted_link(tmp_path):
    import os

    from provision.files import write_private

    target = tmp_path / "users.yml"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched")
    os.symlink(elsewhere, tmp_path / ".users.yml.tmp")  # the old, predictable temp name
    (tmp_path / ".users.yml.tmp2").write_text("x")
    write_private(target, "users: []\n", what="users file")
    assert target.read_text() == "users: []\n" and elsewhere.read_text() == "untouched"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") and p.is_file()
                and not p.is_symlink()]


def test_a_port_that_never_speaks_ssh_is_unreachable_in_one_line(tmp_path):
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held = []

    def hold() -> None:  # accept and never speak; ends when the socket is closed
        try:
            for _ in range(4):
                held.append(srv.accept())
        except OSError:
            pass

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    port = srv.getsockname()[1]
    inv = tmp_path / "hosts.yml"
    inv.write_text(f"all:\n  hosts:\n    mute:\n      ansible_host: 127.0.0.1\n"
                   f"      ansible_port: {port}\n      provision_connect_timeout: 2\n"
                   "      ansible_host_key_checking: false\n")
    proc = invoke("provision", "--inventory", str(inv))
    try:
        srv.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
    except OSError:
        pass
    srv.close()
    thread.join(5)
    for conn, _ in held:
        conn.close()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert "unreachable" in proc.stdout.lower(), proc.stdout


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfepassword\n", "is not UTF-8 text"),
    (b"", "the file is empty"),
    (None, "is not a regular file"),
])
def test_a_bad_password_file_is_an_error(tmp_path, content, message):
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    lab1:\n")
    pw = tmp_path / "pw"
    if content is None:
        pw.symlink_to("/dev/zero")
    else:
        pw.write_bytes(content)
    proc = invoke("add-user", "alice", "--password-file", str(pw), "--inventory", str(inv))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in proc.stderr, proc.stderr


def test_duplicate_keys_in_users_yml_are_reported_without_the_values(tmp_path):
    hashed = "$6$rounds=5000$salt$" + "Z" * 86
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    lab1:\n")
    (tmp_path / "group_vars" / "all" / "users.yml").write_text(
        f"users:\n  - {{name: a, password_hash: '{hashed}'}}\n"
        f"users:\n  - {{name: b, password_hash: '{hashed}'}}\n")
    proc = invoke("add-user", "carol", "--inventory", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "key 'users' is given twice" in proc.stderr and "ZZZZ" not in proc.stderr


def test_a_shadow_file_as_group_vars_is_exit_2_without_echoing_it(tmp_path):
    hashed = "$6$rounds=5000$salt$" + "Z" * 86
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    lab1:\n")
    shadow = tmp_path / "shadow"
    shadow.write_text(f"root:{hashed}:20000:0:99999:7:::\n")
    (tmp_path / "group_vars" / "all.yml").symlink_to(shadow)
    proc = invoke("provision", "--check", "--inventory", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "group_vars/all.yml: line 1: a key that looks like a password hash" in proc.stderr
    assert "ZZZZ" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null"])
def test_a_device_as_inventory_is_refused(path):
    proc = invoke("provision", "--inventory", path)
    assert proc.returncode == 2 and f"{path} is not a regular file" in proc.stderr


def test_otp_enrolment_records_the_secret_and_hands_it_over_once(tmp_path):
    import stat

    import yaml as pyyaml

    from provision.otp import SECRET_RE

    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "hosts.yml").write_text(
        "all:\n  hosts:\n    lab1:\n      ansible_host: 127.0.0.1\n      ansible_port: 1\n"
        "  vars:\n    jupyterhub_request_otp: true\n")
    secret_file = tmp_path / "alice.otp"
    proc = invoke("add-user", "alice", "--otp", "--otp-secret-file", str(secret_file),
                  "--inventory", str(tmp_path / "inv"))
    assert proc.returncode == 1, proc.stderr  # the host is unreachable; the user is recorded
    secret = secret_file.read_text().strip()
    assert SECRET_RE.fullmatch(secret)
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    users = pyyaml.safe_load((tmp_path / "inv" / "group_vars" / "all" / "users.yml")
                             .read_text())["users"]
    assert users[0]["otp_secret"] == secret
    assert secret not in proc.stdout + proc.stderr
    again = invoke("add-user", "alice", "--otp", "--inventory", str(tmp_path / "inv"))
    assert "has a one-time password secret already" in again.stdout
    assert secret not in again.stdout + again.stderr
    taken = invoke("add-user", "alice", "--otp-reset", "--otp-secret-file", str(secret_file),
                   "--inventory", str(tmp_path / "inv"))
    assert taken.returncode == 2 and "exists already" in taken.stderr
    shown = invoke("add-user", "alice", "--otp-reset", "--inventory", str(tmp_path / "inv"))
    new = pyyaml.safe_load((tmp_path / "inv" / "group_vars" / "all" / "users.yml")
                           .read_text())["users"][0]["otp_secret"]
    assert new != secret and f"secret={new}" in shown.stdout and "█" in shown.stdout


@pytest.mark.parametrize("flag, written", [((), True), (("-B",), False)])
def test_invoke_keeps_the_projects_bytecode_unless_python_is_told_not_to(tmp_path, flag,
                                                                        written):
    """invoke turns bytecode off before it loads tasks.py; tasks.py turns it back on, so
    a second run does not compile the project again. Python's -B still wins."""
    import shutil

    copy = tmp_path / "repo"
    for name in ("provision", "roles", "templates", "constraints"):
        shutil.copytree(REPO / name, copy / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "tasks.py", copy / "tasks.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run([sys.executable, *flag, "-m", "invoke", "--list"], cwd=copy,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "provision" in proc.stdout
    compiled = sorted(p.name for p in (copy / "provision").glob("__pycache__/*.pyc"))
    assert any(name.startswith("api.") for name in compiled) is written, compiled


def test_each_inventory_has_its_own_last_run(tmp_path):
    """--retry-failed retries the last run of the inventory it is given: a run on another
    inventory meanwhile does not take its place."""
    from provision import api

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert api.last_run_path(str(a)) != api.last_run_path(str(b))
    assert api.last_run_path(str(a)) == api.last_run_path(str(tmp_path / "x" / ".." / "a"))
    assert api.last_run_path(str(a)).parent == api.LAST_RUN.parent
