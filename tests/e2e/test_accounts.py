"""A class of accounts on real hosts, Debian 12 and 13: every one made by ``useradd``
itself (shadow logs each), the entries and homes what the same ``useradd`` command typed
by hand makes, shadow's own checkers find nothing new, the accounts log in over SSH, and
the whole class takes a handful of round trips. On lab7 (bookworm) and lab8 (trixie), in
lab4's session."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Iterator

import pytest

from provision import lab

from e2e_support import REPO, make_inventory, provision_json, sh

pytestmark = [pytest.mark.e2e, pytest.mark.lab4]
SUITES = {"lab7": "bookworm", "lab8": "trixie"}
USERS_ONLY = ("--roles", "users,wheel")
# what the users role runs for one account (provision.steps.plan_user)
REF = ["useradd", "--create-home", "--home-dir", "/home/ref", "--shell", "/bin/bash",
       "--user-group", "--uid", "4900", "--comment", "Ref R", "--key", "HOME_MODE=0750",
       "--", "ref"]
HASH = ("$6$e2esalt$4JqsnZOBy3Xh0q2Wm7yX0kY0QGmJ0c8wK1i7sRm1sQW0Zo1rE6b9yJ0l9JQ2QyS0m1u9O2bqS"
        "0c5b3rF3m1dQ.")

# A listing of a home on the host: each path's type, mode, owner, size, content hash and
# (for what comes from the skeleton) times, as JSON.
LISTING = r"""import hashlib, json, os, pwd, stat, sys
home, out = sys.argv[1], []
for top, dirs, files in os.walk(home):
    for name in sorted(dirs + files):
        path = os.path.join(top, name)
        st = os.lstat(path)
        data = (hashlib.sha256(open(path, "rb").read()).hexdigest()
                if stat.S_ISREG(st.st_mode) else os.readlink(path)
                if stat.S_ISLNK(st.st_mode) else None)
        out.append([os.path.relpath(path, home), oct(st.st_mode),
                    pwd.getpwuid(st.st_uid).pw_name, st.st_gid == pwd.getpwuid(st.st_uid).pw_gid,
                    st.st_size, data, st.st_mtime_ns])
st = os.lstat(home)
print(json.dumps({"home": [oct(st.st_mode), pwd.getpwuid(st.st_uid).pw_name], "tree": sorted(out)}))
"""


@pytest.fixture(scope="module", params=sorted(SUITES))
def host(request) -> Iterator[str]:
    """A fresh host of the suite, for this module only."""
    name = request.param
    lab.down([name])
    lab.up(names=[name], suite=SUITES[name])
    yield name
    if os.environ.get("LAB_KEEP") != "1":
        lab.down([name])
        assert lab.leftovers(name) == []


def people(prefix: str, count: int, first_uid: int, **extra) -> list[dict]:
    return [{"name": f"{prefix}{i:02d}", "uid": first_uid + i, "comment": f"Class {i:02d}",
             **extra} for i in range(1, count + 1)]


def entry(host: str, db: str, name: str) -> list[str]:
    return sh(host, f"getent {db} {name}").strip().split(":")


def home_listing(host: str, home: str) -> dict:
    out = sh(host, shlex.join(["python3", "-c", LISTING, home]))
    return json.loads(out)


def checkers(host: str) -> str:
    """What pwck and grpck say, read-only (the lab's system accounts have homes that do
    not exist: those lines are there before and after)."""
    return sh(host, "pwck -r 2>&1; grpck -r 2>&1; true")


def journal(host: str, ident: str) -> str:
    return sh(host, f"journalctl -q -o cat -t {ident} --no-pager || true")


def changed(report: dict, host: str) -> list[str]:
    return [s["name"] for s in report["hosts"][host]["steps"] if s["status"] != "ok"]


def test_a_class_is_made_as_useradd_makes_it(host, tmp_path):
    sh(host, shlex.join(REF))
    before = checkers(host)
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    users = people("c", 40, 4000)
    users[1].update(authorized_keys=[(tmp_path / "id_ed25519.pub").read_text().strip()],
                    password_hash=HASH)
    inv = make_inventory(tmp_path / "inv", {"users": users})
    _, report = provision_json(inv, host, tmp_path, *USERS_ONLY)
    assert report["failed_hosts"] == []
    assert report["hosts"][host]["round_trips"] <= 6
    assert {f"user c{i:02d}" for i in range(1, 41)} <= set(changed(report, host))
    # every account is useradd's own: shadow logs each one it makes
    logged = journal(host, "useradd")
    assert "new user: name=c01, UID=4001, GID=4001, home=/home/c01" in logged
    assert all(f"new user: name=c{i:02d}," in logged for i in range(1, 41))

    ref, c01 = entry(host, "passwd", "ref"), entry(host, "passwd", "c01")
    assert c01 == ["c01", "x", "4001", "4001", "Class 01", "/home/c01", "/bin/bash"]
    assert ref == ["ref", "x", "4900", "4900", "Ref R", "/home/ref", "/bin/bash"]
    assert entry(host, "shadow", "c01")[1:] == entry(host, "shadow", "ref")[1:]
    assert entry(host, "group", "c01") == ["c01", "x", "4001", ""]
    assert entry(host, "gshadow", "c01")[1:] == entry(host, "gshadow", "ref")[1:]
    assert entry(host, "shadow", "c02")[1] == HASH
    # subordinate ids: one range each, of useradd's size, none shared
    for db in ("subuid", "subgid"):
        rows = [line.split(":") for line in sh(host, f"cat /etc/{db}").split()]
        owners = [r[0] for r in rows]
        assert sorted(owners) == sorted(["ref", *(u["name"] for u in users)])
        spans = sorted((int(r[1]), int(r[1]) + int(r[2])) for r in rows)
        assert {int(r[2]) for r in rows} == {int(rows[owners.index("ref")][2])}
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    # the homes: useradd's skeleton copy, the user's own, with the mode asked for
    ref_home, c01_home = home_listing(host, "/home/ref"), home_listing(host, "/home/c01")
    assert ref_home["home"] == ["0o40750", "ref"] and c01_home["home"] == ["0o40750", "c01"]
    assert [[f[0], f[1], f[3], f[4], f[5], f[6]] for f in c01_home["tree"]] == \
        [[f[0], f[1], f[3], f[4], f[5], f[6]] for f in ref_home["tree"]]
    assert {f[2] for f in c01_home["tree"]} == {"c01"}
    assert checkers(host) == before  # pwck and grpck find nothing new
    # the accounts work: c02 logs in over SSH with its key, c40 writes in its home
    port = next(h.ports["ssh"] for h in lab.status() if h.name == host)
    login = subprocess.run(
        ["ssh", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={REPO / '.lab' / 'known_hosts'}",
         "-o", "StrictHostKeyChecking=yes", "c02@127.0.0.1", "id -un; pwd"],
        capture_output=True, text=True, timeout=60)
    assert login.stdout.split() == ["c02", "/home/c02"], login.stderr
    assert sh(host, "runuser -u c40 -- sh -c 'cd && touch notes && stat -c %U notes'").strip() \
        == "c40"
    _, again = provision_json(inv, host, tmp_path, *USERS_ONLY)
    assert changed(again, host) == [] and again["hosts"][host]["round_trips"] == 1


def test_a_home_left_behind_and_a_taken_gid_are_as_useradd_leaves_them(host, tmp_path):
    """A home left behind and a gid already taken: useradd keeps the home as it is and
    picks another gid; the run converges."""
    sh(host, "mkdir -p /home/e01 && echo old > /home/e01/notes && groupadd -g 4602 other")
    users = people("e", 3, 4600)
    inv = make_inventory(tmp_path / "inv", {"users": users})
    _, report = provision_json(inv, host, tmp_path, *USERS_ONLY)
    assert report["failed_hosts"] == []
    by_useradd = journal(host, "useradd")
    assert all(f"name=e0{i}" in by_useradd for i in (1, 2, 3))
    assert entry(host, "passwd", "e02")[3] != "4602"  # useradd chose another gid
    assert sh(host, "stat -c %U:%a /home/e01; cat /home/e01/notes").split() == \
        ["e01:750", "old"]
    _, again = provision_json(inv, host, tmp_path, *USERS_ONLY)
    assert changed(again, host) == []


def test_the_hosts_suite(host):
    """The module ran on the suite it says (the comparison is made per suite)."""
    version = "12" if SUITES[host] == "bookworm" else "13"
    assert f'VERSION_ID="{version}"' in sh(host, "cat /etc/os-release")
