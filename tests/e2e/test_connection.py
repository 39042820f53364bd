"""How hosts are reached: ~/.ssh/config aliases, a non-root login user through sudo, and
host keys that are checked (a wrong key makes the host unreachable, not trusted)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from e2e_support import REPO, invoke, make_inventory, sh

pytestmark = pytest.mark.e2e


def lab_entry(name: str) -> dict:
    data = yaml.safe_load((REPO / "inventory" / "lab.yml").read_text())
    return data["all"]["children"]["lab"]["hosts"][name]


def test_ssh_config_alias_is_honoured(lab_hosts, tmp_path):
    entry = lab_entry("lab1")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host classroom-a\n  HostName 127.0.0.1\n  Port {entry['ansible_port']}\n"
        f"  User root\n  IdentityFile {entry['ansible_ssh_private_key_file']}\n")
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"classroom-a": {}}, "vars": {
        "provision_known_hosts_file": str(REPO / ".lab" / "known_hosts")}}}))
    # The lab's known_hosts names [127.0.0.1]:port, which is what the alias resolves to.
    proc = subprocess.run([sys.executable, "-m", "invoke", "provision", "--hosts",
                           "classroom-a", "--inventory", str(inv), "--roles", "wheel",
                           "--check"], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, HOME=str(home), NO_COLOR="1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "classroom-a  ok=" in proc.stdout and "unreachable=0" in proc.stdout


def test_non_root_user_works_through_sudo(lab_hosts, tmp_path):
    pub = (REPO / ".lab" / "id_ed25519.pub").read_text().strip()
    sh("lab1", "id deploy >/dev/null 2>&1 || useradd --create-home --shell /bin/bash deploy; "
               "install -d -m 0700 -o deploy -g deploy ~deploy/.ssh; "
               f"echo '{pub}' > ~deploy/.ssh/authorized_keys; "
               "chown deploy:deploy ~deploy/.ssh/authorized_keys; "
               "echo 'deploy ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/deploy; "
               "chmod 0440 /etc/sudoers.d/deploy")
    inv = make_inventory(tmp_path / "inv", host_vars={"lab1": {"ansible_user": "deploy"}})
    proc = invoke("provision", "--hosts", "lab1", "--inventory", str(inv), "--roles",
                  "users,wheel", "--var", "users=[{name: gina, uid: 2450}]")
    assert proc.returncode == 0, proc.stdout
    assert "user gina" in proc.stdout
    # The account was made by root through sudo, not by deploy.
    assert sh("lab1", "stat -c %U /home/gina").strip() == "gina"
    proc = invoke("provision", "--hosts", "lab1", "--inventory", str(inv), "--roles",
                  "users,wheel", "--var", "users=[{name: gina, uid: 2450, state: absent}]")
    assert proc.returncode == 0, proc.stdout
    # deploy's session may linger a moment (systemd --user): force the removal.
    sh("lab1", "rm -f /etc/sudoers.d/deploy; userdel --force --remove deploy 2>/dev/null; true")


def test_wrong_host_key_makes_the_host_unreachable(lab_hosts, tmp_path):
    entry = lab_entry("lab1")
    other = lab_entry("lab2")
    lines = (REPO / ".lab" / "known_hosts").read_text().splitlines()
    prefix = f"[127.0.0.1]:{other['ansible_port']} "
    lab2_key = next(ln for ln in lines if ln.startswith(prefix)).split(" ", 1)[1]
    fake = tmp_path / "known_hosts"
    fake.write_text(f"[127.0.0.1]:{entry['ansible_port']} {lab2_key}\n")
    inv = make_inventory(tmp_path / "inv", host_vars={
        "lab1": {"provision_known_hosts_file": str(fake)}})
    proc = invoke("provision", "--hosts", "lab1", "--inventory", str(inv), "--check")
    assert proc.returncode == 1
    assert "unreachable=1" in proc.stdout
    assert "host key" in proc.stdout.lower()
