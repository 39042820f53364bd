"""provision_artifacts: push without a host: the plans it makes, the host's receiver (run
on a temporary directory), and the workstation's parsing of apt's and pip's answers."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from provision import artifacts
from provision.artifacts import HOST_DIR, Artifact, Store, localize
from provision.facts import Facts, VenvFact
from provision.steps import Command, Push, Upload, plan_apt, plan_npm, plan_pip


def _facts(**kw) -> Facts:
    empty = dict(users={}, groups={}, files={}, packages={}, venvs={}, units={}, shadow={},
                 reads={}, os={}, python="3.11", euid=0)
    return Facts(**{**empty, **kw})


def test_apt_becomes_a_push_and_an_install_of_the_pushed_debs():
    act = localize(plan_apt(_facts(packages={}), {"python3-venv": None, "apache2": "2.4"}))
    push, install = act.ops
    assert isinstance(push, Push) and push.fetch.kind == "apt"
    assert push.fetch.items == ("apache2=2.4", "python3-venv")
    debs, auto = artifacts.apt_lists(push.fetch)
    assert install.argv[:2] == ["sh", "-c"] and install.argv[-2:] == [debs, auto]
    assert debs.startswith(f"{HOST_DIR}/sets/apt-")
    # no apt-get update: a host without a route to its mirror resolves nothing itself
    assert not any("update" in op.argv for op in act.ops if isinstance(op, Command))
    assert act.diff == "+ apache2 2.4\n+ python3-venv (latest)"


def test_pip_installs_from_the_pushed_wheels_only():
    act = localize(plan_pip(_facts(venvs={}), "/opt/hub", ["jupyterhub==6.1.1"],
                            constraints="jupyterhub==6.1.1\ntornado==6.5\n"))
    kinds = [type(op).__name__ for op in act.ops]
    assert kinds == ["Command", "Upload", "Push", "Command"]  # venv, pin set, push, pip
    push, pip = act.ops[2], act.ops[3]
    assert push.fetch.items == ("jupyterhub==6.1.1",)
    assert "tornado==6.5" in push.fetch.constraints
    assert pip.argv[:5] == ["/opt/hub/bin/pip", "install", "--no-index", "--find-links",
                            f"{HOST_DIR}/wheels"]
    assert pip.argv[-2:] == ["--", "jupyterhub==6.1.1"] and pip.fetch is None


def test_npm_installs_offline_from_the_pushed_cache():
    act = localize(plan_npm(_facts(files={}), "/opt/chp", "configurable-http-proxy", "5.3.0",
                            npm=["/opt/node/bin/npm"], path_env="/opt/node/bin:/usr/bin"))
    push, npm = act.ops
    assert push.fetch.items == ("configurable-http-proxy@5.3.0",)
    i = npm.argv.index("install")
    assert npm.argv[i + 1:i + 4] == ["--offline", "--cache",
                                     f"{HOST_DIR}/npm/configurable-http-proxy@5.3.0"]


def test_an_action_that_downloads_nothing_is_unchanged():
    up = plan_apt(_facts(packages={"sudo": "1.9"}), {"sudo": None})
    assert localize(up) is up and not up.ops
    have = VenvFact(True, {"pip": "23", "jupyterhub": "6.1.1"}, "3.11")
    ok = plan_pip(_facts(venvs={"/opt/hub": have}), "/opt/hub", ["jupyterhub==6.1.1"])
    assert localize(ok) is ok


def test_a_push_is_shown_as_what_it_sends():
    act = localize(plan_apt(_facts(packages={}), {"python3-venv": None}))
    assert act.ops[0].shown() == ("push apt artifacts from the workstation: python3-venv")


SIMULATION = """\
NOTE: This is only a simulation!
Inst python3.11 [3.11.2-6+deb12u8] (3.11.2-6+deb12u9 Debian-Security:12/oldstable-s [amd64]) []
Inst libqrencode4 (4.1.1-1 Debian:12.15/oldstable [amd64])
Inst libpython3.11-stdlib [3.11.2-6] (3.11.2-6+deb12u9 Debian-Security:12 [amd64])
Inst python3-pip-whl (23.0.1+dfsg-1 Debian:12.15/oldstable [all])
Inst tzdata (1:2025b-0+deb12u1 Debian:12.15/oldstable [all])
Conf libqrencode4 (4.1.1-1 Debian:12.15/oldstable [amd64])
"""


def test_deb_names_are_apts_archive_names():
    assert artifacts.deb_names(SIMULATION) == [
        "python3.11_3.11.2-6+deb12u9_amd64.deb", "libqrencode4_4.1.1-1_amd64.deb",
        "libpython3.11-stdlib_3.11.2-6+deb12u9_amd64.deb",
        "python3-pip-whl_23.0.1+dfsg-1_all.deb", "tzdata_1%3a2025b-0+deb12u1_all.deb"]


def test_installed_packages_from_a_dpkg_status():
    status = ("Package: sudo\nStatus: install ok installed\nVersion: 1\n\n"
              "Package: gone\nStatus: deinstall ok config-files\n\n"
              "Package: python3\nStatus: install ok installed\n")
    assert artifacts._installed(status) == {"sudo", "python3"}


def test_pip_platforms_go_back_to_manylinux1():
    tags = artifacts.pip_platforms("x86_64", "2.36")
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_17_x86_64" in tags
    assert "manylinux_2_16_x86_64" not in tags and tags[-1] == "manylinux1_x86_64"
    assert artifacts.pip_platforms("aarch64", "2.41")[0] == "manylinux_2_41_aarch64"


# ---------------------------------------------------------------- the host's receiver
def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _receive(root: Path, mode: str, manifest: dict, stdin: bytes = b""):
    return subprocess.run([sys.executable, "-c", artifacts.receiver(str(root)), mode,
                           json.dumps(manifest)], input=stdin, capture_output=True)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.fail("the receiver checks that its directory is root's: run as root")
    return tmp_path / "cache"


def test_take_writes_each_file_checked_then_have_hashes_them(root: Path):
    files = {"wheels/a.whl": b"wheel a", "debs/b.deb": b"deb b"}
    manifest = {k: _sha(v) for k, v in files.items()}
    r = _receive(root, "take", manifest, _tar(files))
    assert r.returncode == 0, r.stderr
    assert (root / "wheels" / "a.whl").read_bytes() == b"wheel a"
    assert oct((root / "debs" / "b.deb").stat().st_mode & 0o7777) == "0o644"
    r = _receive(root, "have", {**manifest, "wheels/missing.whl": "0" * 64})
    assert json.loads(r.stdout) == manifest


def test_a_file_whose_hash_is_wrong_leaves_the_old_one(root: Path):
    old = {"wheels/a.whl": b"old"}
    assert _receive(root, "take", {"wheels/a.whl": _sha(b"old")}, _tar(old)).returncode == 0
    r = _receive(root, "take", {"wheels/a.whl": _sha(b"new")}, _tar({"wheels/a.whl": b"bad"}))
    assert r.returncode == 3 and b"SHA-256" in r.stderr
    assert (root / "wheels" / "a.whl").read_bytes() == b"old"
    assert sorted(p.name for p in (root / "wheels").iterdir()) == ["a.whl"]


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "wheels/../../x", "a//b"])
def test_paths_out_of_the_cache_are_refused(root: Path, name: str):
    r = _receive(root, "take", {name: _sha(b"x")}, _tar({name: b"x"}))
    assert r.returncode == 3 and b"not a plain relative path" in r.stderr
    assert not (root.parent / "escape").exists()


def test_a_member_not_in_the_manifest_is_refused(root: Path):
    r = _receive(root, "take", {"a": _sha(b"a")}, _tar({"b": b"b"}))
    assert r.returncode == 3 and b"not in the manifest" in r.stderr
    assert not (root / "b").exists()


def test_a_planted_symlink_is_never_followed(root: Path, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root.mkdir()
    (root / "wheels").symlink_to(elsewhere)
    r = _receive(root, "take", {"wheels/a.whl": _sha(b"a")}, _tar({"wheels/a.whl": b"a"}))
    assert r.returncode == 3 and b"not a directory of root's" in r.stderr
    assert list(elsewhere.iterdir()) == []
    (root / "debs").mkdir()
    secret = tmp_path / "secret"
    secret.write_bytes(b"s")
    (root / "debs" / "x.deb").symlink_to(secret)
    r = _receive(root, "have", {"debs/x.deb": _sha(b"s")})
    assert json.loads(r.stdout) == {}  # a link is not a file the host has


def test_a_cache_others_can_write_is_refused(root: Path):
    root.mkdir(mode=0o777)
    os.chmod(root, 0o777)
    r = _receive(root, "have", {})
    assert r.returncode == 3 and b"only root can write" in r.stderr


# ---------------------------------------------------------------- the workstation's cache
def test_a_saved_set_is_reused_only_while_its_files_are_unchanged(tmp_path: Path):
    s = Store(tmp_path)
    wheel = tmp_path / "wheels" / "a.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"wheel")
    manifest = tmp_path / "sets" / "pip-x.json"
    s._save_set(manifest, [Artifact("wheels/a.whl", _sha(b"wheel"), 5, wheel)])
    assert s._load_set(manifest) == [Artifact("wheels/a.whl", _sha(b"wheel"), 5, wheel)]
    wheel.write_bytes(b"whee!")  # same size, other bytes: fetched again
    assert s._load_set(manifest) is None
    wheel.unlink()
    assert s._load_set(manifest) is None


def test_a_tool_missing_on_the_workstation_is_a_clear_error(tmp_path: Path):
    with pytest.raises(artifacts.FetchError, match="apt-get-nowhere is not on the workstation"):
        Store(tmp_path)._run(["apt-get-nowhere"], "apt-get update")


def test_a_push_needs_cpython_on_glibc(tmp_path: Path):
    from provision.steps import Fetch

    with pytest.raises(artifacts.FetchError, match="CPython on glibc"):
        Store(tmp_path).pip(Fetch("pip", ("x",)), {"impl": "cpython", "libc": "",
                                                   "version": "3.11"})


def test_upload_ops_pass_through(tmp_path: Path):
    act = plan_pip(_facts(venvs={}), "/opt/hub", ["x==1"], constraints="x==1\n")
    assert any(isinstance(op, Upload) for op in localize(act).ops)
