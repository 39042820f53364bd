"""The JupyterHub settings of the seed note, set from the inventory and seen working on a
live hub: a base URL, notebook_dir, default_url, OTP prompt, explicit admins."""

from __future__ import annotations

import json

import pytest
from e2e_support import invoke, main_pid, make_inventory, provision_json, sh

from provision.hubclient import HubClient
from provision.otp import code

pytestmark = pytest.mark.e2e
PW = "settings-pw-3"
SETTINGS = {
    "jupyterhub_base_url": "/jhub/",
    "jupyterhub_notebook_dir": "~/notebooks",
    "jupyterhub_default_url": "/tree",
    "jupyterhub_request_otp": True,
    "jupyterhub_otp_prompt": "Google Authenticator:",
    "jupyterhub_admin_users": ["frank"],
    "jupyterhub_hub_port": 8091,
}


@pytest.fixture(scope="module")
def hub(lab_hosts, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("settings")
    inv = make_inventory(tmp / "inventory", host_vars={"lab2": SETTINGS})
    pw = tmp / "frank.pw"
    pw.write_text(PW + "\n")
    # request_otp is really checked (the otp role): frank is enrolled, as a sysadmin would
    invoke("add-user", "frank", "--uid", "2400", "--password-file", str(pw), "--otp",
           "--otp-secret-file", str(tmp / "frank.otp"), "--hosts", "lab2", "--inventory",
           str(inv), check=True)
    port = next(h.ports["hub"] for h in lab_hosts if h.name == "lab2")
    yield inv, tmp, HubClient(f"http://127.0.0.1:{port}/jhub/", timeout=30)
    # Put lab2 back to the defaults for the other modules (one more restart).
    (inv / "host_vars" / "lab2.yml").write_text("{}\n")
    provision_json(inv, "lab2", tmp)


def test_base_url_and_hub_port(hub):
    inv, tmp, client = hub
    assert client.api_version() == "6.1.1"
    assert '--api-port "8001"' in sh("lab2", "systemctl cat configurable-http-proxy")
    assert json.loads(sh("lab2", "curl -fsS http://127.0.0.1:8091/jhub/hub/api"))["version"]
    # The old path is not the hub's any more.
    assert sh("lab2", "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/hub/api",
              check=False) != "200"


def test_login_page_asks_for_the_otp_with_the_configured_prompt(hub):
    _, _, client = hub
    page = client.request("hub/login")
    assert page.status == 200 and "Google Authenticator:" in page.body


def test_admin_users_default_url_and_notebook_dir(hub):
    _, tmp, client = hub
    client.login("frank", PW, otp=code((tmp / "frank.otp").read_text().strip()))
    assert json.loads(client.request("hub/api/user").body)["admin"] is True
    info = client.start_server("frank")
    assert info["servers"][""]["url"] == "/jhub/user/frank/"
    landing = client.request("user/frank/")
    assert landing.url.endswith("/jhub/user/frank/tree") or "/tree" in landing.url
    assert sh("lab2", "stat -c '%U %a' ~frank/notebooks").strip() == "frank 750"
    sh("lab2", "su frank -c 'echo hi > ~/notebooks/seen-by-jupyter.txt'")
    listing = json.loads(client.request("user/frank/api/contents").body)
    assert "seen-by-jupyter.txt" in [item["name"] for item in listing["content"]]
    client.stop_server("frank")


def test_second_run_is_quiet_and_keeps_the_hub(hub):
    inv, tmp, _ = hub
    pid = main_pid("lab2", "jupyterhub.service")
    _, report = provision_json(inv, "lab2", tmp)
    assert report["hosts"]["lab2"]["changed"] == 0
    assert main_pid("lab2", "jupyterhub.service") == pid
