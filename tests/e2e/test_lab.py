"""End-to-end tests of the lab itself: hosts boot with systemd, SSH is strictly
verified, identities differ, egress reaches the package registries, and `down` leaves
nothing behind.

Run as root: `pytest tests/e2e/test_lab.py` (the first run on a machine builds the base
image, about a minute).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provision import lab
from provision.lab import config, render, system

from e2e_support import OFFLINE_HOST

pytestmark = pytest.mark.e2e

NAMES = ["lab1", "lab2"]


def _invoke(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the `lab` tasks through the invoke CLI, as the root tasks.py will expose them."""
    (tmp_path / "tasks.py").write_text(
        "from invoke import Collection\n"
        "from provision.lab.tasks import ns as lab_ns\n"
        "ns = Collection()\n"
        "ns.add_collection(lab_ns)\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(tmp_path), *args],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_up_gives_the_two_hosts_running(lab_hosts: list[lab.LabHost]) -> None:
    assert [h.name for h in lab_hosts] == NAMES
    for index, h in enumerate(lab_hosts, start=1):
        assert h.state == "running"
        assert h.ports == render.ports_for(index)
        assert h.ssh_port == 22200 + index
        assert h.pid is not None and system.proc_start_time(h.pid) is not None


@pytest.mark.parametrize("name", NAMES)
def test_systemd_is_pid1_and_running(lab_hosts: list[lab.LabHost], name: str) -> None:
    result = lab.run_ssh(name, "cat /proc/1/comm; systemctl is-system-running")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["systemd", "running"]


@pytest.mark.parametrize("name", NAMES)
def test_hostname_is_the_host_name(lab_hosts: list[lab.LabHost], name: str) -> None:
    assert lab.run_ssh(name, ["hostname"]).stdout.strip() == name


@pytest.mark.parametrize("name", NAMES)
def test_ssh_verifies_host_key_strictly(
    lab_hosts: list[lab.LabHost], name: str, tmp_path: Path
) -> None:
    argv = lab.ssh_argv(name, "true")
    assert "StrictHostKeyChecking=yes" in argv
    assert f"UserKnownHostsFile={config.KNOWN_HOSTS_FILE}" in argv
    assert subprocess.run(argv, capture_output=True, timeout=60).returncode == 0
    # Give this host's port the other host's key: ssh must refuse to connect.
    lines = config.KNOWN_HOSTS_FILE.read_text().splitlines()
    port = render.ports_for(render.host_index(name))["ssh"]
    other_key = next(line.split(" ", 1)[1] for line in lines if f"]:{port} " not in line)
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{port} {other_key}\n")
    bad_argv = [a.replace(str(config.KNOWN_HOSTS_FILE), str(wrong)) for a in argv]
    refused = subprocess.run(bad_argv, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 255
    assert "host key" in refused.stderr.lower()


def test_identities_differ(lab_hosts: list[lab.LabHost]) -> None:
    ids = {n: lab.run_ssh(n, "cat /etc/machine-id").stdout.strip() for n in NAMES}
    keys = {n: lab.run_ssh(n, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]
            for n in NAMES}  # fmt: skip
    assert all(len(i) == 32 for i in ids.values())
    assert len(set(ids.values())) == len(NAMES)
    assert len(set(keys.values())) == len(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "command",
    [
        "apt-get update -q",
        "curl -fsSI --max-time 60 https://pypi.org/simple/",
        "curl -fsSI --max-time 60 https://registry.npmjs.org/",
    ],
)
def test_egress_to_package_registries(
    lab_hosts: list[lab.LabHost], name: str, command: str
) -> None:
    result = lab.run_ssh(name, command, timeout=300)
    assert result.returncode == 0, f"{command}: {result.stderr}{result.stdout}"


def test_hosts_reach_each_other_by_name_on_the_labs_own_network(
    lab_hosts: list[lab.LabHost],
) -> None:
    resolved = lab.run_ssh("lab1", "getent hosts lab2").stdout.split()
    assert resolved == ["10.231.0.2", "lab2"]
    connect = ("python3 -c \"import socket; "
               "print(socket.create_connection(('lab2', 22), 5).recv(7).decode())\"")
    result = lab.run_ssh("lab1", connect)
    assert result.stdout.strip() == "SSH-2.0", result.stderr
    assert {"lan1", "lan2"} <= set(system.lan_ports())
    # The bridge lives in the lab's namespace: this machine's interfaces know nothing of it.
    import subprocess

    mine = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    assert "10.231.0." not in mine


def test_inventory_file_lists_the_hosts(lab_hosts: list[lab.LabHost]) -> None:
    data = yaml.safe_load(config.INVENTORY_FILE.read_text())
    group = data["all"]["children"]["lab"]
    for h in lab_hosts:
        entry = group["hosts"][h.name]
        assert entry["ansible_port"] == h.ssh_port
        assert entry["lab_ports"] == h.ports
        assert Path(entry["ansible_ssh_private_key_file"]).is_file()
    assert Path(group["vars"]["provision_known_hosts_file"]) == config.KNOWN_HOSTS_FILE


def test_status_lists_hub_urls(lab_hosts: list[lab.LabHost], tmp_path: Path) -> None:
    by_name = {h.name: h for h in lab.status()}
    for index, name in enumerate(NAMES, start=1):
        assert by_name[name].hub_url == f"http://127.0.0.1:{28000 + index}/"
    result = _invoke(tmp_path, "lab.status")
    assert result.returncode == 0, result.stderr
    for index, name in enumerate(NAMES, start=1):
        line = next(line for line in result.stdout.splitlines() if line.startswith(name))
        assert f"http://127.0.0.1:{28000 + index}/" in line
        assert " running " in line


def test_up_again_leaves_running_hosts_alone(lab_hosts: list[lab.LabHost]) -> None:
    again = lab.up(len(NAMES))
    assert [h.pid for h in again] == [h.pid for h in lab_hosts]
    # another suite asked for: running hosts keep theirs (it is for hosts booted now)
    again = lab.up(len(NAMES), suite="trixie")
    assert [(h.pid, h.suite) for h in again] == [(h.pid, "bookworm") for h in lab_hosts]


def test_ssh_task_passes_the_exit_code(lab_hosts: list[lab.LabHost], tmp_path: Path) -> None:
    result = _invoke(tmp_path, "lab.ssh", "lab1", "--command", "hostname; exit 3")
    assert result.returncode == 3
    assert result.stdout.strip() == "lab1"


def _spare_index() -> int:
    """A host number no one uses yet, so the down test never touches hosts in use."""
    known = {h.name for h in lab.status()}
    # lab3 and lab4 belong to the lab3 and lab4 modules, which run beside this one
    # (scripts/test.sh), and so does the offline host of test_offline (lab4's session)
    return next(i for i in range(len(NAMES) + 3, config.MAX_HOSTS)
                if f"lab{i}" not in known and f"lab{i}" != OFFLINE_HOST)


def test_down_leaves_nothing_behind(lab_hosts: list[lab.LabHost]) -> None:
    index = _spare_index()
    name = render.host_name(index)
    lab.up(names=[name])
    assert lab.run_ssh(name, "systemctl is-system-running").stdout.strip() == "running"
    pids = [h.pid for h in lab.status() if h.name == name]

    lab.down([name])

    assert lab.leftovers(name) == []
    assert not (config.HOSTS_DIR / name).exists()
    assert not Path(f"/run/netns/{name}").exists()
    assert all(system.proc_start_time(pid) is None for pid in pids if pid)
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f"/.lab/hosts/{name}/" not in mounts
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and system.proc_start_time(int(proc.name)) is not None:
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            assert f"/hosts/{name}/".encode() not in cmdline, f"process {proc.name} is left"
            assert f"/run/netns/{name}".encode() not in cmdline, f"process {proc.name} is left"
    for root in system.cgroup_roots():
        assert not (root / config.CGROUP_PARENT / name).exists()
    for port in render.ports_for(index).values():
        assert not system.port_in_use(port)
    assert f"lan{index}" not in system.lan_ports()  # its veth pair went with its namespace
    # The hosts of the other tests are untouched, and the files forget only `name`.
    assert [h.pid for h in lab.status() if h.name in NAMES] == [h.pid for h in lab_hosts]
    inventory = yaml.safe_load(config.INVENTORY_FILE.read_text())
    listed = set(inventory["all"]["children"]["lab"]["hosts"])
    # (lab3 may be listed too: its modules run beside these ones)
    assert name not in listed and set(NAMES) <= listed
    assert f"]:{22200 + index} " not in config.KNOWN_HOSTS_FILE.read_text()


def test_an_offline_host_has_no_way_out_and_the_others_keep_theirs(
    lab_hosts: list[lab.LabHost], tmp_path: Path
) -> None:
    """`lab.up --offline` (issue 15): a host booted now reaches no registry, while SSH
    reaches it and it reaches the other lab hosts; running hosts stay online."""
    index = _spare_index()
    name = render.host_name(index)
    try:
        # (by name: `--count N` would boot lab3 too, which the lab3 modules boot themselves)
        (booted,) = lab.up(names=[name], offline=True)
        assert booted.offline
        result = _invoke(tmp_path, "lab.status")
        assert result.returncode == 0, result.stderr
        line = next(ln for ln in result.stdout.splitlines() if ln.startswith(f"{name} "))
        assert " offline " in line and " running " in line
        status = {h.name: h for h in lab.status()}
        assert status[name].offline and not any(status[n].offline for n in NAMES)
        assert [status[n].pid for n in NAMES] == [h.pid for h in lab_hosts]
        routes = lab.run_ssh(name, "ip route show default")
        assert routes.returncode == 0 and routes.stdout.strip() == ""
        out = lab.run_ssh(name, "curl -sS -o /dev/null --max-time 20 https://pypi.org/simple/")
        assert out.returncode == 7, (out.returncode, out.stderr)  # could not connect
        assert "Failed to connect" in out.stderr or "Couldn't connect" in out.stderr
        reach = ("python3 -c \"import socket; "
                 "print(socket.create_connection(('lab1', 22), 5).recv(7).decode())\"")
        assert lab.run_ssh(name, reach).stdout.strip() == "SSH-2.0"
        assert lab.run_ssh("lab1", "ip route show default").stdout.strip()  # still online
        assert lab.run_ssh("lab1", "curl -fsSI --max-time 60 https://pypi.org/simple/",
                           timeout=120).returncode == 0
    finally:
        lab.down([name])
