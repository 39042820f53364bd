"""A lab host lost mid-semester, rebuilt from its backup (issue 34), on lab hosts: lab9's
hub with OTP on backs up to an sftp repository on lab10 (over the lab's network); alice
logs in (password + code) and writes a notebook from a kernel; `invoke backup`; a backup
cut by Ctrl-C and one whose repository host is unreachable fail and leave the repository
valid; lab9 is destroyed (`invoke lab.down --hosts lab9`) and booted fresh; `invoke
provision`, `invoke restore`, `invoke provision`: alice logs in with the same password and
authenticator, her notebook is there, the admin page lists the same users, a second
provision changes nothing. The repository password never shows in output, reports or the
process list.

The tests run in order and share one module's state (the lab is rebuilt half-way)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest
from e2e_support import invoke, make_inventory, provision_json, sh, start_invoke

from provision import lab
from provision.otp import code

# Hosts of its own, fresh, in lab4's session: the module destroys its hub host half-way,
# which must not take a host from under the modules of another session.
pytestmark = [pytest.mark.e2e, pytest.mark.lab4]
HOSTS = "lab9,lab10"
PW = "alice-backup-pw-34"
NOTEBOOK = "semester.ipynb"
CONTENT = "week 7: the answer is 42"
SERVICE = "jhprovision-backup.service"


@pytest.fixture(scope="module")
def backup_hosts() -> Iterator[list[lab.LabHost]]:
    """lab9 (the hub, backed up) and lab10 (the repository), fresh, taken down after."""
    names = HOSTS.split(",")
    lab.down(names)
    hosts = lab.up(names=names)
    yield hosts
    if os.environ.get("LAB_KEEP") != "1":
        lab.down(names)
        left = {name: lab.leftovers(name) for name in names}
        assert not any(left.values()), f"lab.down left traces behind: {left}"


def client(name: str = "lab9"):
    from test_behind_apache import Client

    port = next(h.ports["hub"] for h in lab.status() if h.name == name)
    return Client(f"http://127.0.0.1:{port}/")


def next_window() -> None:
    """A code not used yet (DISALLOW_REUSE) and a fresh RATE_LIMIT budget."""
    time.sleep(31)


@pytest.fixture(scope="module")
def semester(backup_hosts, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backup")
    inv = make_inventory(tmp / "inv", {"jupyterhub_request_otp": True}, host_vars={
        "lab9": {"backup_repository": "sftp:lab10:/srv/backup/{host}",
                 "backup_password_file": str(tmp / "keep" / "{host}.password")}})
    (tmp / "pw").write_text(PW + "\n")
    invoke("add-user", "alice", "--admin", "--uid", "2634", "--password-file", str(tmp / "pw"),
           "--otp", "--otp-secret-file", str(tmp / "alice.otp"), "--hosts", HOSTS,
           "--inventory", str(inv), check=True)
    state = {"inv": inv, "tmp": tmp, "secret": (tmp / "alice.otp").read_text().strip(),
             "outputs": []}
    yield state


def run(state, *args: str, check: bool = True):
    proc = invoke(*args, "--inventory", str(state["inv"]), check=check, timeout=1800)
    state["outputs"] += [proc.stdout, proc.stderr]
    return proc


def password(state) -> str:
    return (state["tmp"] / "keep" / "lab9.password").read_text().strip()


def test_both_hosts_converge_and_the_password_is_kept_on_the_workstation(semester):
    proc, report = provision_json(semester["inv"], HOSTS, semester["tmp"])
    semester["outputs"] += [proc.stdout, proc.stderr, json.dumps(report)]
    keep = semester["tmp"] / "keep" / "lab9.password"
    assert oct(keep.stat().st_mode & 0o777) == "0o600" and len(password(semester)) >= 32
    assert sh("lab9", "sha256sum < /etc/jhprovision-backup/password").split()[0] == \
        __import__("hashlib").sha256(keep.read_bytes()).hexdigest()
    assert sh("lab9", "stat -c '%U:%G %a' /etc/jhprovision-backup/password").strip() == \
        "root:root 600"
    # lab10: an sftp-only account for lab9, chrooted, with lab9's own key
    assert sh("lab10", "getent passwd bk-lab9").strip().endswith(":/srv/backup/lab9:"
                                                                "/usr/sbin/nologin")
    key = sh("lab9", "cat /etc/jhprovision-backup/id_ed25519.pub").split()[1]
    assert key in sh("lab10", "cat /etc/ssh/jhprovision-backup/bk-lab9")
    assert "No such file" in sh("lab10", "ls /etc/ssh/jhprovision-backup/bk-lab9; "
                                "ls /srv/backup/lab9/id_ed25519 2>&1", check=False)
    sh("lab10", "sshd -t")
    # no shell: a command over that key is refused (internal-sftp only)
    out = sh("lab9", "ssh -F /etc/jhprovision-backup/ssh_config jhprovision-backup-repository "
             "id 2>&1; echo rc=$?", check=False)
    assert "uid=" not in out
    proc, report = provision_json(semester["inv"], HOSTS, semester["tmp"])
    for name in ("lab9", "lab10"):
        assert report["hosts"][name]["changed"] == 0, [
            s["name"] for s in report["hosts"][name]["steps"] if s["status"] != "ok"]


def test_alice_writes_a_notebook_and_it_is_backed_up(semester):
    c = client()
    c.login("alice", PW, code(semester["secret"]))
    c.start_server("alice")
    c.open_lab("alice")
    kernel = c.start_kernel("alice")
    c.execute("alice", kernel, f"import json; open({NOTEBOOK!r}, 'w').write(json.dumps("
              f"{{'cells': [{{'source': {CONTENT!r}}}]}}))")
    c.stop_server("alice")
    users = json.loads(c.request("hub/api/users").body)
    semester["users"] = sorted(u["name"] for u in users)
    assert "alice" in semester["users"]
    proc = run(semester, "backup", "--hosts", "lab9", "--json", str(semester["tmp"] / "b.json"))
    result = json.loads((semester["tmp"] / "b.json").read_text())["lab9"]
    assert result["ok"] and result["files"] > 0 and result["bytes_added"] > 0, result
    assert "lab9      ok: snapshot" in proc.stdout and "added" in proc.stdout
    listing = run(semester, "backups", "--hosts", "lab9").stdout
    assert result["snapshot"][:8] in listing


def test_an_unreachable_repository_host_fails_and_leaves_the_repository_valid(semester):
    conf = "/etc/jhprovision-backup/ssh_config"
    sh("lab9", f"cp -p {conf} {conf}.keep && sed -i 's/^    HostName .*/    HostName "
       f"192.0.2.1/' {conf}")  # TEST-NET-1: no host answers there
    try:
        proc = run(semester, "backup", "--hosts", "lab9", check=False)
    finally:
        sh("lab9", f"mv -f {conf}.keep {conf}")
    assert proc.returncode == 1 and "lab9      failed:" in proc.stdout, proc.stdout
    assert sh("lab9", "python3 -I /usr/local/lib/jhprovision-backup/backup.py check; "
              "echo rc=$?").strip().endswith("rc=0")


def test_a_backup_cut_by_ctrl_c_fails_and_leaves_the_repository_valid(semester):
    sh("lab9", "head -c 400M /dev/urandom > /home/alice/big.bin && chown alice: "
       "/home/alice/big.bin")
    try:
        proc = start_invoke("backup", "--hosts", "lab9", "--inventory", str(semester["inv"]))
        for _ in range(120):
            if sh("lab9", f"systemctl is-active {SERVICE}", check=False).strip() in (
                    "activating", "active"):
                break
            time.sleep(0.5)
        # meanwhile: the password is in no process's command line or environment
        ps = sh("lab9", "ps -eo args; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'",
                check=False)
        assert password(semester) not in ps
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
        semester["outputs"] += [out, err]
        assert proc.returncode == 130 and "interrupted" in out + err, (out, err)
        assert sh("lab9", f"systemctl is-active {SERVICE}", check=False).strip() != "active"
        last = json.loads(sh("lab9", "cat /var/lib/jhprovision-backup/last.json"))
        assert not last["ok"] and last["error"], last
        assert sh("lab9", "python3 -I /usr/local/lib/jhprovision-backup/backup.py check; "
                  "echo rc=$?").strip().endswith("rc=0")
    finally:
        sh("lab9", "rm -f /home/alice/big.bin")


def test_the_hub_host_is_lost_and_rebuilt_from_its_backup(semester):
    from provision import lab

    try:
        down = invoke("lab.down", "--hosts", "lab9", check=True)
        assert "removed 1 host(s) lab9" in down.stdout
        running = {h.name for h in lab.status() if h.state == "running"}
        assert "lab9" not in running and "lab10" in running  # that host alone
    finally:
        lab.up(names=["lab9"])  # a fresh one, whatever happened above
    assert "alice" not in sh("lab9", "cat /etc/passwd")  # a fresh host
    proc, report = provision_json(semester["inv"], HOSTS, semester["tmp"])
    semester["outputs"] += [proc.stdout, proc.stderr, json.dumps(report)]
    # its new key is authorized on lab10, the old one is gone
    key = sh("lab9", "cat /etc/jhprovision-backup/id_ed25519.pub").split()[1]
    assert key in sh("lab10", "cat /etc/ssh/jhprovision-backup/bk-lab9")
    # before a restore, a backup of the empty host is refused (it would be the latest)
    refused = run(semester, "backup", "--hosts", "lab9", check=False)
    assert refused.returncode == 1 and "restore first" in refused.stdout
    restored = run(semester, "restore", "--hosts", "lab9")
    assert "lab9      ok: snapshot latest restored" in restored.stdout
    proc, report = provision_json(semester["inv"], HOSTS, semester["tmp"])
    semester["outputs"] += [proc.stdout, proc.stderr, json.dumps(report)]
    assert "restart jupyterhub" in report["hosts"]["lab9"]["handlers"]


def test_alice_finds_her_semester_again(semester):
    next_window()
    c = client()
    c.login("alice", PW, code(semester["secret"]))  # the same authenticator: no enrolment
    assert sorted(u["name"] for u in json.loads(c.request("hub/api/users").body)) == \
        semester["users"]
    c.start_server("alice")
    c.open_lab("alice")
    kernel = c.start_kernel("alice")
    assert CONTENT in c.execute("alice", kernel, f"open({NOTEBOOK!r}).read()")
    c.stop_server("alice")
    assert sh("lab9", f"stat -c %U /home/alice/{NOTEBOOK}").strip() == "alice"


def test_a_home_is_restored_whole_and_never_through_a_link_its_user_planted(semester):
    # alice swaps her notebook for a link to a file only root may write
    sh("lab9", f"runuser -u alice -- sh -c 'cd && rm {NOTEBOOK} && "
       f"ln -s /etc/jhprov-planted {NOTEBOOK}'")
    inside = run(semester, "restore", "--hosts", "lab9", "--paths",
                 f"/home/alice/{NOTEBOOK}", check=False)
    assert inside.returncode == 1 and "a file inside a home" in inside.stdout, inside.stdout
    restored = run(semester, "restore", "--hosts", "lab9", "--paths", "/home/alice")
    assert "kept in /home/.alice.before-restore-" in restored.stdout, restored.stdout
    assert sh("lab9", "test -e /etc/jhprov-planted && echo yes || echo no").strip() == "no"
    assert sh("lab9", f"stat -c %F:%U /home/alice/{NOTEBOOK}").strip() == "regular file:alice"
    assert CONTENT in sh("lab9", f"cat /home/alice/{NOTEBOOK}")
    sh("lab9", "rm -rf /home/.alice.before-restore-*")
    provision_json(semester["inv"], HOSTS, semester["tmp"])  # the restarts left due


def test_a_second_provision_changes_nothing_and_verify_passes(semester):
    proc, report = provision_json(semester["inv"], HOSTS, semester["tmp"])
    semester["outputs"] += [proc.stdout, proc.stderr, json.dumps(report)]
    for name in ("lab9", "lab10"):
        assert report["hosts"][name]["changed"] == 0, [
            s["name"] for s in report["hosts"][name]["steps"] if s["status"] != "ok"]
    run(semester, "backup", "--hosts", "lab9")  # the rebuilt host backs up again
    verify = run(semester, "verify", "--hosts", "lab9", check=False)
    assert verify.returncode == 0, verify.stdout[-3000:]


def test_the_password_never_shows(semester):
    semester["outputs"].append(sh("lab9", "journalctl --no-pager -n 5000"))
    semester["outputs"].append(sh("lab10", "journalctl --no-pager -n 5000"))
    semester["outputs"].append(sh("lab9", "systemctl cat jhprovision-backup.service; "
                                  "cat /etc/jhprovision-backup/backup.json"))
    text = "\n".join(semester["outputs"])
    assert password(semester) not in text
