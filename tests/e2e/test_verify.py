"""`invoke verify` against live hosts: passes on a converged host, names what is wrong on
a host broken on purpose, and passes again once `provision` has repaired it."""

from __future__ import annotations

import pytest
from e2e_support import invoke, make_inventory, provision_json, sh

pytestmark = pytest.mark.e2e
PASSWORD = "verify-smoke-pw-1"


@pytest.fixture(scope="module")
def inv(lab_hosts, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inv-verify")
    pw = tmp / "dave.pw"
    pw.write_text(PASSWORD + "\n")
    inv = make_inventory(tmp / "inventory")
    invoke("add-user", "dave", "--admin", "--uid", "2100", "--password-file", str(pw),
           "--hosts", "lab1",
           "--inventory", str(inv), check=True)
    provision_json(inv, "lab1", tmp)
    return inv, pw


def verify(inv, *extra: str):
    return invoke("verify", "--hosts", "lab1", "--inventory", str(inv), *extra)


def test_verify_passes_on_a_converged_host_with_smoke(inv, tmp_path):
    inventory, pw = inv
    junit = tmp_path / "junit.xml"
    proc = verify(inventory, "--smoke", "dave", "--password-file", str(pw), "--junit",
                  str(junit))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "passed" in proc.stdout and "failed" not in proc.stdout
    xml = junit.read_text()
    assert "test_smoke_login_spawn_lab" in xml and 'failures="0"' in xml
    assert PASSWORD not in proc.stdout + xml


@pytest.mark.parametrize("breakage, message", [
    ("systemctl stop configurable-http-proxy", "configurable-http-proxy.service is not running"),
    ("chmod 0644 /var/lib/jupyterhub/jupyterhub_cookie_secret",
     "jupyterhub_cookie_secret: expected root:root 0600, found root:root 0644"),
    ("gpasswd --delete dave wheel", "dave: expected in wheel"),
])
def test_verify_names_the_breakage_then_provision_repairs(inv, tmp_path, breakage, message):
    inventory, _ = inv
    secret = sh("lab1", "cat /var/lib/jupyterhub/jupyterhub_cookie_secret").strip()
    sh("lab1", breakage)
    proc = verify(inventory)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-4000:]
    assert secret not in proc.stdout + proc.stderr
    _, report = provision_json(inventory, "lab1", tmp_path)
    assert report["hosts"]["lab1"]["changed"] >= 1
    proc = verify(inventory)
    assert proc.returncode == 0, proc.stdout[-3000:]
