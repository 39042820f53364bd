"""``invoke verify``: run the shipped testinfra suite (tests/infra) against live hosts.

The suite takes its expectations from the same inventory, defaults and role code that
``provision`` converges to. Testinfra reaches hosts through an ssh_config this module
writes from the inventory (address, port, user, key, known_hosts with strict checking),
so the suite also runs as plain pytest with testinfra's own options:

    pytest tests/infra --hosts=ssh://lab1,ssh://lab2 --ssh-config=FILE
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from .config import REPO, load_run, proxy_jump
from .errors import ConfigError
from .inventory import Host

SUITE = REPO / "tests" / "infra"


def _word(host: str, key: str, value: object) -> str:
    """One ssh_config value: a single word, never anything ssh could read as more (the
    variables' types already refuse these; this is the last line of defence)."""
    text = str(value)
    if not text or any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c in "\"'#="
                       for c in text):
        from .variables import bounded_repr

        raise ConfigError(f"host {host}: {key} {bounded_repr(text)} cannot be written to "
                          "an ssh_config line (one word, no quotes, '#' or '=')")
    return text


def ssh_config(hosts: list[Host], control_dir: str = "/run/jhprovision-verify") -> str:
    """An OpenSSH client config naming each inventory host, with host keys checked; its
    shared connections' sockets go in ``control_dir`` (a private directory of the run's:
    ~/.ssh may not exist, and is not ours to fill)."""
    lines = []
    for h in hosts:
        v = h.vars

        def word(key: str, value: object, host: str = h.name) -> str:
            return _word(host, key, value)

        lines.append(f"Host {word('host name', h.name)}")
        lines.append(f"  HostName {word('ansible_host', v.get('ansible_host') or h.name)}")
        if v.get("ansible_port"):
            lines.append(f"  Port {word('ansible_port', v['ansible_port'])}")
        if v.get("ansible_user"):
            lines.append(f"  User {word('ansible_user', v['ansible_user'])}")
        if v.get("ansible_ssh_private_key_file"):
            key = v["ansible_ssh_private_key_file"]
            lines.append(f"  IdentityFile {word('ansible_ssh_private_key_file', key)}")
            lines.append("  IdentitiesOnly yes")
        if v.get("provision_known_hosts_file"):
            known = v["provision_known_hosts_file"]
            lines.append(f"  UserKnownHostsFile {word('provision_known_hosts_file', known)}")
        jump = proxy_jump(v.get("ansible_ssh_common_args"))
        if jump:
            lines.append(f"  ProxyJump {word('ansible_ssh_common_args', jump)}")
        checking = "yes" if v.get("ansible_host_key_checking", True) else "no"
        lines.append(f"  StrictHostKeyChecking {checking}")
        lines.append("  BatchMode yes")
        lines.append("  ControlMaster auto")
        lines.append(f"  ControlPath {control_dir}/%C")
        lines.append("  ControlPersist 60")
        lines.append("")
    return "\n".join(lines)


def verify(hosts: str = "all", *, inventory: str | None = None, smoke: str | None = None,
           password_file: str | None = None, junit: str | None = None,
           otp_secret_file: str | None = None,
           extra: list[str] | None = None, quiet: bool = False) -> int:
    """Run the suite; returns pytest's exit code (0: every host is as the inventory says)."""
    cfg = load_run(inventory, hosts)
    workdir = tempfile.mkdtemp(prefix="jhprov-verify-")  # 0700
    path = os.path.join(workdir, "ssh.conf")
    with open(path, "w") as fh:
        fh.write(ssh_config(cfg.hosts, control_dir=workdir))
    argv = [sys.executable, "-m", "pytest", str(SUITE), "-p", "no:cacheprovider",
            "--rootdir", str(REPO), "-o", "testpaths=tests/infra",
            f"--hosts={','.join('ssh://' + h.name for h in cfg.hosts)}",
            f"--ssh-config={path}", "-rfE", "--tb=line" if quiet else "--tb=short"]
    if inventory:
        argv.append(f"--inventory={inventory}")
    if smoke:
        argv += [f"--smoke={smoke}", f"--password-file={password_file or ''}"]
        if otp_secret_file:
            argv.append(f"--otp-secret-file={otp_secret_file}")
    if junit:
        argv.append(f"--junitxml={junit}")
    argv += extra or []
    try:
        return subprocess.call(argv, cwd=REPO)
    finally:
        for h in cfg.hosts:  # end the shared connections rather than leave them to expire
            subprocess.run(["ssh", "-F", path, "-O", "exit", "--", h.name],
                           capture_output=True, timeout=30, check=False)
        shutil.rmtree(workdir, ignore_errors=True)
