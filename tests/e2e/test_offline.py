"""provision_artifacts: push on a host with no route out (issue 15): the workstation
fetches everything once, the host installs the whole stack from what was pushed, a user
is added and logs in to JupyterLab; a second run changes nothing; a push sends only the
files the host lacks or has damaged."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from provision import installer
from provision.hubclient import HubClient

from e2e_support import OFFLINE_HOST, invoke, make_inventory, provision_json, sh

pytestmark = [pytest.mark.e2e, pytest.mark.lab4]
PW = "an offline lab, still a lab"
NPM_SET = "/var/cache/jhprovision/npm/configurable-http-proxy@5.3.0"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifact-cache")


@pytest.fixture(scope="module")
def inv(offline_host, cache, tmp_path_factory):
    return make_inventory(tmp_path_factory.mktemp("inv-offline"), {
        "provision_artifacts": "push", "provision_artifacts_cache": str(cache),
        "jupyterhub_default_url": "/lab"})


@pytest.fixture(scope="module")
def converged(inv, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reports-offline")
    proc, report = provision_json(inv, OFFLINE_HOST, tmp, check=False)
    return proc, report, tmp


def hub(host) -> HubClient:
    return HubClient(f"http://127.0.0.1:{host.ports['hub']}/", timeout=30)


def test_the_host_reaches_no_registry(offline_host):
    assert offline_host.offline
    assert sh(OFFLINE_HOST, "ip route show default").strip() == ""
    # no lists: the host could not even resolve a package by itself
    assert sh(OFFLINE_HOST, "ls /var/lib/apt/lists | grep -c _Packages || true").strip() == "0"


def test_a_fresh_install_from_pushed_artifacts_gives_a_working_hub(converged, offline_host,
                                                                   cache):
    proc, report, _ = converged
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert report["hosts"][OFFLINE_HOST]["failed"] == 0
    assert hub(offline_host).api_version() == "6.1.1"
    commands = [c for s in report["hosts"][OFFLINE_HOST]["steps"] for c in s.get("commands", [])]
    pushes = [c for c in commands if c.startswith("push ")]
    assert any(c.startswith("push apt ") for c in pushes)
    assert any(c.startswith("push pip ") and "jupyterhub==6.1.1" in c for c in pushes)
    assert any(c.startswith("push npm ") for c in pushes)
    assert not any("apt-get update" in c for c in commands)
    # uv too: installed from its pushed wheel by pip, then installing from the wheels
    assert any(c.startswith("push pip ") and f"uv=={installer.UV_VERSION}" in c
               for c in pushes)
    installs = [c for c in commands if "pip install" in c]
    assert any(f"{installer.UV} pip install" in c for c in installs)
    assert all("--no-index" in c for c in installs)
    # what the hub and the users run came from the workstation's cache, hash for hash
    wheel = sh(OFFLINE_HOST, "ls /var/cache/jhprovision/wheels | grep '^jupyterhub-6.1.1-'")
    local = cache / "wheels" / wheel.strip()
    assert local.is_file()
    there = sh(OFFLINE_HOST, f"sha256sum /var/cache/jhprovision/wheels/{wheel.strip()}")
    assert there.split()[0] == hashlib.sha256(local.read_bytes()).hexdigest()
    # apt's dependencies are marked automatic, as apt itself would have marked them
    auto = sh(OFFLINE_HOST, "apt-mark showauto").split()
    manual = sh(OFFLINE_HOST, "apt-mark showmanual").split()
    assert "python3-venv" in manual and "python3-pip-whl" in auto


def test_verify_passes_on_the_offline_host(converged, inv):
    proc = invoke("verify", "--hosts", OFFLINE_HOST, "--inventory", str(inv))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_second_run_changes_nothing_in_one_round_trip(converged, inv):
    _, _, tmp = converged
    proc, report = provision_json(inv, OFFLINE_HOST, tmp)
    h = report["hosts"][OFFLINE_HOST]
    assert [s["name"] for s in h["steps"] if s["status"] != "ok"] == []
    assert h["round_trips"] == 1
    assert "nothing to do" in proc.stdout


def test_add_user_logs_in_and_gets_jupyterlab(converged, inv, offline_host, tmp_path):
    pw = tmp_path / "olga.pw"
    pw.write_text(PW + "\n")
    invoke("add-user", "olga", "--password-file", str(pw), "--hosts", OFFLINE_HOST,
           "--inventory", str(inv), check=True)
    client = hub(offline_host)
    client.login("olga", PW)
    client.start_server("olga")
    assert "JupyterLab" in client.open_lab("olga").body


def test_a_push_sends_only_what_the_host_lacks_or_has_damaged(converged, inv):
    _, _, tmp = converged
    # The proxy's package is gone, and one file of its pushed npm cache is damaged.
    victim = sh(OFFLINE_HOST, f"find {NPM_SET}/_cacache/content-v2 -type f | sort | head -1")
    sh(OFFLINE_HOST, f"echo damaged > {victim.strip()}")
    sh(OFFLINE_HOST, "rm -rf /opt/configurable-http-proxy/lib/node_modules/"
       "configurable-http-proxy")
    proc, report = provision_json(inv, OFFLINE_HOST, tmp)
    assert report["hosts"][OFFLINE_HOST]["failed"] == 0
    line = next(ln for ln in proc.stdout.splitlines() if "npm configurable-http-proxy" in ln
                and "pushing" in ln)
    assert "pushing 1 of " in line, line
    assert sh(OFFLINE_HOST, "systemctl is-active configurable-http-proxy").strip() == "active"
    proc, report = provision_json(inv, OFFLINE_HOST, tmp)
    assert "nothing to do" in proc.stdout


def test_a_package_no_source_has_fails_clearly_and_changes_nothing(converged, inv):
    _, _, tmp = converged
    from e2e_support import snapshot

    before = snapshot(OFFLINE_HOST)
    proc, report = provision_json(inv, OFFLINE_HOST, tmp, "--var",
                                  'jupyterhub_user_apt_packages=["no-such-package-jhp"]',
                                  check=False)
    assert proc.returncode != 0
    step = next(s for s in report["hosts"][OFFLINE_HOST]["steps"] if s["status"] == "failed")
    assert step["name"] == "users' apt packages"
    assert "failed on the workstation" in step["error"]["message"]
    assert "no-such-package-jhp" in step["error"]["stderr"]
    assert snapshot(OFFLINE_HOST) == before
