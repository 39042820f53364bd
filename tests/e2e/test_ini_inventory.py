"""A site inventory in Ansible's INI format, as a sysadmin already has it: nested groups,
connection variables, other playbooks' variables, group vars and host_vars. One group is
converged, host_vars win, the other host is untouched, the second run changes nothing."""

from __future__ import annotations

import pytest
import yaml
from e2e_support import REPO, provision_json, sh, snapshot

pytestmark = pytest.mark.e2e


def ini_inventory(path, lab: dict) -> None:
    hosts = lab["all"]["children"]["lab"]["hosts"]
    known = lab["all"]["children"]["lab"]["vars"]["provision_known_hosts_file"]

    def line(name: str) -> str:
        h = hosts[name]
        return (f"{name} ansible_host={h['ansible_host']} ansible_port={h['ansible_port']} "
                f"ansible_user={h['ansible_user']} "
                f"ansible_ssh_private_key_file={h['ansible_ssh_private_key_file']}")

    path.mkdir(parents=True)
    (path / "site.ini").write_text(f"""\
# The site's inventory, shared with other playbooks
[classroom]
{line('lab1')}

[staff]
{line('lab2')}   ; the staff server

[site:children]
classroom
staff

[site:vars]
provision_known_hosts_file={known}
ntp_servers=10.0.0.1
course_term="2026 fall"
jupyterhub_start_timeout=66

[classroom:vars]
jupyterhub_default_url=/tree
""")
    (path / "host_vars").mkdir()
    (path / "host_vars" / "lab1.yml").write_text("jupyterhub_start_timeout: 77\n")


def test_ini_site_inventory_converges_one_group(lab_hosts, tmp_path):
    lab = yaml.safe_load((REPO / "inventory" / "lab.yml").read_text())
    inv = tmp_path / "site"
    ini_inventory(inv, lab)
    other = snapshot("lab2")
    proc, report = provision_json(inv, "classroom", tmp_path, "--verbose")
    assert list(report["hosts"]) == ["lab1"], report["hosts"].keys()
    assert report["failed_hosts"] == []
    # other playbooks' variables are ignored, and said so once
    assert "ntp_servers" in proc.stdout + proc.stderr and "course_term" in proc.stdout + \
        proc.stderr
    config = sh("lab1", "cat /etc/jupyterhub/jupyterhub_config.py")
    assert "c.Spawner.start_timeout = 77" in config  # host_vars beat the group's 66
    assert "c.Spawner.default_url = '/tree'" in config  # the group's own vars
    assert snapshot("lab2") == other  # the other group's host is untouched
    _, again = provision_json(inv, "classroom", tmp_path)
    assert again["hosts"]["lab1"]["changed"] == 0, [
        s["name"] for s in again["hosts"]["lab1"]["steps"] if s["status"] != "ok"]
    assert again["hosts"]["lab1"]["round_trips"] == 1
