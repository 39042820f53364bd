"""nodejs_source: apt on a fresh host: Debian 12's Node 18 is refused for a proxy that
needs Node 20 (before the proxy is installed), and works with one that declares >= 18."""

from __future__ import annotations

import json

import pytest
import yaml
from e2e_support import invoke, make_inventory, provision_json, sh

pytestmark = [pytest.mark.e2e, pytest.mark.lab3]
HOST = "lab3"


@pytest.fixture(scope="module")
def inv(lab3, tmp_path_factory):
    return make_inventory(tmp_path_factory.mktemp("apt-node") / "inventory",
                          host_vars={HOST: {"nodejs_source": "apt"}})


def test_node_18_is_refused_for_proxy_5_3_with_both_versions_named(inv, tmp_path):
    proc, report = provision_json(inv, HOST, tmp_path, check=False)
    assert proc.returncode == 1
    failed = [s for s in report["hosts"][HOST]["steps"] if s["status"] == "failed"]
    assert [s["name"] for s in failed] == ["node version check"]
    message = failed[0]["error"]["message"]
    assert "configurable-http-proxy 5.3.0 needs node >= 20" in message
    assert "gives node 18." in message and "nodejs_source: pypi" in message
    assert sh(HOST, "test -e /opt/configurable-http-proxy && echo yes || echo no").strip() \
        == "no"


def test_proxy_5_1_runs_on_debian_node_and_converges(inv, tmp_path):
    (inv / "host_vars" / f"{HOST}.yml").write_text(yaml.safe_dump(
        {"nodejs_source": "apt", "proxy_version": "5.1.0"}))
    provision_json(inv, HOST, tmp_path)
    assert sh(HOST, "node --version").startswith("v18.")
    assert "configurable-http-proxy" in sh(HOST, "systemctl cat configurable-http-proxy")
    assert json.loads(sh(HOST, "curl -fsS http://127.0.0.1:8000/hub/api"))["version"]
    _, report = provision_json(inv, HOST, tmp_path)
    assert report["hosts"][HOST]["changed"] == 0
    proc = invoke("verify", "--hosts", HOST, "--inventory", str(inv))
    assert proc.returncode == 0, proc.stdout[-3000:]
