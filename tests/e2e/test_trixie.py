"""Debian 13 (trixie) hosts: the whole stack converges, a user logs in and runs a kernel,
and a second run changes nothing, with Node.js from PyPI and from Debian 13 itself (its
Node 20 satisfies configurable-http-proxy 5.3). On lab3, booted with `--suite trixie`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
import yaml

from provision import lab
from provision.hubclient import HubClient

from e2e_support import invoke, make_inventory, provision_json, sh

pytestmark = [pytest.mark.e2e, pytest.mark.lab3]
HOST = "lab3"
USER, UID, PASSWORD = "tom", "2701", "trixie-e2e-pw-13"


@pytest.fixture(scope="module")
def trixie() -> Iterator[lab.LabHost]:
    """lab3 on Debian 13, for this module only (the lab3 modules before it take theirs
    down; one left running on another suite is refused rather than reused)."""
    running = {h.name: h for h in lab.status() if h.state == "running"}
    if HOST in running and running[HOST].suite != "trixie":
        raise AssertionError(f"{HOST} runs {running[HOST].suite}: take it down first")
    (host,) = lab.up(names=[HOST], suite="trixie")
    yield host
    if HOST not in running and os.environ.get("LAB_KEEP") != "1":
        lab.down([HOST])
        assert lab.leftovers(HOST) == []


@pytest.fixture(scope="module")
def inv(trixie, tmp_path_factory):
    return make_inventory(tmp_path_factory.mktemp("inv-trixie"), host_vars={HOST: {}})


def changed(report: dict) -> list[str]:
    return [s["name"] for s in report["hosts"][HOST]["steps"] if s["status"] != "ok"]


def test_the_host_is_debian_13_and_says_so(trixie):
    assert trixie.suite == "trixie"
    assert 'VERSION_ID="13"' in sh(HOST, "cat /etc/os-release")
    assert sh(HOST, "python3 --version").startswith("Python 3.13.")
    status = next(h for h in lab.status() if h.name == HOST)
    assert status.suite == "trixie"
    proc = invoke("lab.status", check=True)
    assert any(line.startswith(HOST) and " trixie " in line
               for line in proc.stdout.splitlines()), proc.stdout


def test_stack_converges_a_user_logs_in_and_runs_a_kernel(trixie, inv, tmp_path):
    _, first = provision_json(inv, HOST, tmp_path)
    assert first["failed_hosts"] == []
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    invoke("add-user", USER, "--uid", UID, "--password-file", str(pw), "--hosts", HOST,
           "--inventory", str(inv), check=True)
    client = HubClient(f"http://127.0.0.1:{trixie.ports['hub']}/", timeout=60)
    assert client.api_version() == "6.1.1"
    client.login(USER, PASSWORD)
    client.start_server(USER, wait=120)
    client.open_lab(USER)
    assert client.execute(USER, client.start_kernel(USER), "import sys; sys.version[:4]") \
        == "'3.13'"
    _, again = provision_json(inv, HOST, tmp_path)
    assert changed(again) == []
    assert again["hosts"][HOST]["round_trips"] == 1


def test_node_from_debian_13_runs_the_proxy(trixie, inv, tmp_path):
    (inv / "host_vars" / f"{HOST}.yml").write_text(yaml.safe_dump({"nodejs_source": "apt"}))
    _, report = provision_json(inv, HOST, tmp_path)
    assert "apt nodejs, npm" in changed(report), changed(report)
    assert sh(HOST, "node --version").startswith("v20.")
    assert json.loads(sh(HOST, "curl -fsS http://127.0.0.1:8000/hub/api"))["version"]
    assert sh(HOST, "systemctl is-active jupyterhub configurable-http-proxy").split() == \
        ["active", "active"]
    _, again = provision_json(inv, HOST, tmp_path)
    assert changed(again) == []
