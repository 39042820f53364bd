"""The batch account writer (provision/remote/useradd_batch.py) against the real thing.

Each test lays out one small root tree (account files, login.defs, a skeleton with a
subdirectory and symlinks), copies it, runs the real ``useradd --prefix`` commands on one
copy and the writer on the other, and compares every account file and every home, byte
for byte and mode for mode. Run as root, as the suite is (useradd and chown need it).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from roles.users import USERADD_BATCH



@pytest.fixture(autouse=True)
def _root_with_useradd() -> None:
    """Fails, never skips, where the comparison cannot be made."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.fail("run as root, with shadow's useradd (apt-get install passwd)")

SYSTEM = {
    "passwd": "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:"
              "/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "shadow": "root:*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\n"
              "nobody:*:20000:0:99999:7:::\n",
    "group": "root:x:0:\ndaemon:x:1:\nshadow:x:42:\ntaken:x:2003:\nnogroup:x:65534:\n",
    "gshadow": "root:*::\ndaemon:*::\nshadow:*::\ntaken:!::\nnogroup:*::\n",
    # not sorted, with a hole below the first range: shadow sorts the file as it allocates
    "subuid": "old:165536:65536\nodd:100000:1000\n",
    "subgid": "",
}


def useradd(name: str, uid: int, *extra: str, home: str | None = None) -> list[str]:
    return ["useradd", "--create-home", "--home-dir", home or f"/home/{name}", "--shell",
            "/bin/bash", "--user-group", "--uid", str(uid), *extra, "--", name]


CLASS = [useradd("ann", 2001, "--comment", "김 앤 (Ann Kim)", "--key", "HOME_MODE=0750"),
         useradd("bob", 2002, "--key", "HOME_MODE=0700"),
         useradd("cy", 2004)]


def tree(root: Path) -> Path:
    """A root tree for ``--prefix``: the account files, Debian's login.defs and a
    skeleton with a directory, a file in it, and symlinks into and out of it."""
    (root / "etc/default").mkdir(parents=True)
    (root / "home").mkdir()
    os.chmod(root, 0o755)
    for name, text in SYSTEM.items():
        (root / "etc" / name).write_text(text)
    for name in ("shadow", "gshadow"):
        os.chown(root / "etc" / name, 0, 42)
        os.chmod(root / "etc" / name, 0o640)
    (root / "etc/login.defs").write_text(
        "UMASK 022\nHOME_MODE 0700\nPASS_MAX_DAYS 99999\nPASS_MIN_DAYS 0\nPASS_WARN_AGE 7\n"
        "UID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\nSUB_UID_MIN 100000\n"
        "SUB_UID_MAX 600100000\nSUB_UID_COUNT 65536\nSUB_GID_MIN 100000\n"
        "SUB_GID_MAX 600100000\nSUB_GID_COUNT 65536\nUSERGROUPS_ENAB yes\n")
    (root / "etc/default/useradd").write_text("SHELL=/bin/sh\n")
    skel = root / "etc/skel"
    (skel / ".config/app").mkdir(parents=True)
    (skel / ".bashrc").write_text("# bashrc\n")
    (skel / ".profile").write_text("# profile\n")
    os.chmod(skel / ".profile", 0o600)
    (skel / ".config/app/settings").write_text("theme = dark\n")
    os.chmod(skel / ".config", 0o750)
    (skel / ".rc").symlink_to("/etc/skel/.bashrc")  # absolute, outside this tree
    (skel / ".prof").symlink_to(skel / ".profile")  # into the skeleton: into the home
    for path in (skel / ".bashrc", skel / ".config/app/settings"):
        os.utime(path, ns=(1_700_000_000_000_000_000, 1_600_000_000_000_000_000))
    return root


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    ref = tree(tmp_path / "ref")
    ours = tmp_path / "ours"
    shutil.copytree(ref, ours, symlinks=True)  # modes and times, not owners:
    for name in ("shadow", "gshadow"):
        os.chown(ours / "etc" / name, 0, 42)
    (ours / "etc/skel/.prof").unlink()
    (ours / "etc/skel/.prof").symlink_to(ours / "etc/skel/.profile")
    for root in (ref, ours):
        os.utime(root / "etc/skel/.prof", ns=(1_700_000_000_000_000_000,) * 2,
                 follow_symlinks=False)
    return ref, ours


def run_useradd(root: Path, commands: list[list[str]]) -> None:
    for argv in commands:
        subprocess.run([argv[0], "--prefix", str(root), "--skel", str(root / "etc/skel"),
                        *argv[1:]], check=True, capture_output=True, env=ENV)


ENV = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"}


def run_batch(root: Path, commands: list[list[str]], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", USERADD_BATCH, str(root)],
                          input=json.dumps(commands).encode(), capture_output=True,
                          env=ENV, **kw)


def report(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout.decode().splitlines()[0])


def listing(root: Path) -> list[tuple]:
    """Every path under home/: type, mode, owner, size, content, link target (the tree's
    own path taken out) and, for what was copied from the skeleton, its times."""
    out = []
    for top, dirs, files in os.walk(root / "home"):
        for name in sorted(dirs + files):
            path = Path(top, name)
            st = path.lstat()
            rel = str(path.relative_to(root))
            target = os.readlink(path).replace(str(root), "ROOT").replace("ROOT//", "ROOT/") \
                if path.is_symlink() else None
            content = path.read_bytes() if path.is_file() and not path.is_symlink() else None
            copied = rel.count("/") > 1  # not the home itself, which is made now
            out.append((rel, st.st_mode, st.st_uid, st.st_gid, content, target,
                        st.st_mtime_ns if copied else None))
    return sorted(out)


def assert_same(ref: Path, ours: Path) -> None:
    for name in ("passwd", "shadow", "group", "gshadow", "subuid", "subgid"):
        a, b = ref / "etc" / name, ours / "etc" / name
        assert b.read_text() == a.read_text(), name
        assert (b.stat().st_mode, b.stat().st_uid, b.stat().st_gid) == \
            (a.stat().st_mode, a.stat().st_uid, a.stat().st_gid), name
    assert listing(ours) == listing(ref)


def test_a_class_is_written_as_useradd_writes_it(roots):
    ref, ours = roots
    run_useradd(ref, CLASS)
    assert report(run_batch(ours, CLASS)) == {"written": ["ann", "bob", "cy"],
                                              "useradd": [], "why": ""}
    assert_same(ref, ours)
    # the backups hold the files as they were before the batch, with their modes
    for name in ("passwd", "shadow", "group", "gshadow", "subuid"):
        assert (ours / "etc" / f"{name}-").read_text() == SYSTEM[name]
    assert oct((ours / "etc/shadow-").stat().st_mode & 0o777) == "0o640"
    left = [p.name for p in (ours / "etc").iterdir() if p.name.endswith(("+", ".lock"))]
    assert left == [".pwd.lock"]  # lckpwdf's file stays, as every shadow tool leaves it
    # the subuid file is sorted the way shadow sorts it, the new ranges in the holes
    assert (ours / "etc/subuid").read_text().splitlines()[:2] == ["odd:100000:1000",
                                                                 "old:165536:65536"]


def test_an_account_useradd_must_make_is_made_by_useradd(roots):
    """gid 2003 belongs to a group: useradd picks another gid, so that account is its."""
    ref, ours = roots
    commands = [*CLASS, useradd("dee", 2003)]
    run_useradd(ref, commands)
    out = report(run_batch(ours, commands))
    assert out["written"] == ["ann", "bob", "cy"] and out["useradd"] == ["dee"]
    assert "gid 2003" in out["why"]
    assert_same(ref, ours)


def test_an_existing_home_or_an_option_it_does_not_know_goes_to_useradd(roots):
    ref, ours = roots
    for root in roots:
        (root / "home/cy").mkdir(mode=0o755)
    commands = [useradd("ann", 2001), useradd("cy", 2004),
                useradd("eve", 2005, "--no-log-init")]
    run_useradd(ref, commands)
    out = report(run_batch(ours, commands))
    assert out["written"] == ["ann"] and out["useradd"] == ["cy", "eve"]
    assert "/home/cy exists" in out["why"] and "--no-log-init" in out["why"]
    assert_same(ref, ours)


@pytest.mark.parametrize("setup, why", [
    (lambda r: (r / "etc/shadow-maint/useradd-post.d").mkdir(parents=True), "hooks"),
    (lambda r: (r / "etc/default/useradd").write_text("CREATE_MAIL_SPOOL=yes\n"),
     "CREATE_MAIL_SPOOL"),
    (lambda r: os.mkfifo(r / "etc/skel/pipe"), "not a file, directory or symlink"),
    (lambda r: (r / "etc/subuid").write_text("odd:0100000:1000\n"), "shadow may read"),
])
def test_a_host_it_cannot_mirror_gets_useradd_for_everyone(roots, setup, why):
    ref, ours = roots
    for root in roots:
        setup(root)
    out = report(run_batch(ours, CLASS))
    assert out["written"] == [] and out["useradd"] == ["ann", "bob", "cy"]
    assert why in out["why"]
    if "pipe" not in why:  # useradd --prefix copies the host's own skeleton, not a fifo
        run_useradd(ref, CLASS)
        assert_same(ref, ours)


def test_it_waits_for_a_lock_another_program_holds(roots):
    """useradd's lock (the pid in passwd.lock) and lckpwdf's (.pwd.lock) are both kept."""
    _, ours = roots
    lock = ours / "etc/passwd.lock"
    lock.write_bytes(b"%d\0" % os.getpid())  # a live process: this one
    pwd_lock = os.open(ours / "etc/.pwd.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.lockf(pwd_lock, fcntl.LOCK_EX)
    proc = subprocess.Popen([sys.executable, "-c", USERADD_BATCH, str(ours)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    proc.stdin.write(json.dumps(CLASS).encode())
    proc.stdin.close()
    try:
        time.sleep(0.5)
        assert proc.poll() is None and "ann" not in (ours / "etc/passwd").read_text()
        os.close(pwd_lock)  # lckpwdf's lock goes; shadow's lock file is still there
        time.sleep(0.5)
        assert proc.poll() is None and "ann" not in (ours / "etc/passwd").read_text()
        lock.unlink()
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "ann:x:2001:2001" in (ours / "etc/passwd").read_text()


def test_a_lock_left_by_a_dead_process_is_taken_over(roots):
    _, ours = roots
    gone = subprocess.Popen(["true"])
    gone.wait()
    (ours / "etc/group.lock").write_bytes(b"%d\0" % gone.pid)
    assert report(run_batch(ours, CLASS, timeout=30))["written"] == ["ann", "bob", "cy"]
    assert not (ours / "etc/group.lock").exists()


def test_interrupted_while_waiting_for_a_lock_changes_nothing(roots):
    _, ours = roots
    (ours / "etc/shadow.lock").write_bytes(b"%d\0" % os.getpid())
    before = {p.name: p.read_bytes() for p in (ours / "etc").iterdir() if p.is_file()}
    proc = subprocess.Popen([sys.executable, "-c", USERADD_BATCH, str(ours)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    proc.stdin.write(json.dumps(CLASS).encode())
    proc.stdin.close()
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) != 0
    after = {p.name: p.read_bytes() for p in (ours / "etc").iterdir() if p.is_file()
             and p.name != ".pwd.lock"}  # lckpwdf's lock file, made by every shadow tool
    assert after == before  # the locks it took are gone again, nothing else written
    assert list((ours / "home").iterdir()) == []


def test_concurrent_useradd_and_batch_lose_nothing(roots):
    """Real useradd runs (which lock the same files) while the batch writes: every
    account of both ends up in every file."""
    _, ours = roots
    batch = [useradd(f"s{i:03d}", 3000 + i) for i in range(60)]
    errors: list[str] = []

    def one_by_one() -> None:
        for i in range(15):
            p = subprocess.run(["useradd", "--prefix", str(ours), "--uid", str(5000 + i),
                                "--user-group", f"t{i:03d}"], capture_output=True, env=ENV)
            if p.returncode:
                errors.append(p.stderr.decode())

    thread = threading.Thread(target=one_by_one)
    thread.start()
    out = report(run_batch(ours, batch, timeout=120))
    thread.join()
    assert not errors and len(out["written"]) + len(out["useradd"]) == 60
    for name in ("passwd", "shadow", "group", "gshadow"):
        names = {line.split(":")[0] for line in (ours / "etc" / name).read_text().splitlines()}
        assert {f"s{i:03d}" for i in range(60)} | {f"t{i:03d}" for i in range(15)} <= names
