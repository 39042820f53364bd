"""slirp4netns for one lab host: egress to the package registries, and the port
forwards on 127.0.0.1, without touching this machine's iptables or ip_forward.

slirp4netns plugs a tap device into the host's network namespace (10.0.2.100/24,
gateway 10.0.2.2, DNS 10.0.2.3) and NATs in user space. Forwards are added through its
JSON API socket.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from provision.lab import config, render
from provision.lab.errors import LabError
from provision.lab.system import Proc, cgroup_dirs, launch_detached, netns_path


def argv(name: str, sock: Path) -> list[str]:
    """The command line of host `name`'s slirp4netns."""
    return [
        # slirp4netns' sandbox unmounts what it does not need in a new mount namespace;
        # /run/netns is a shared mount, so without a slave namespace of its own that
        # unmount propagates back and breaks every lab host's /run/netns/labK.
        "unshare",
        "--mount",
        "--propagation=slave",
        "slirp4netns",
        "--configure",
        "--mtu=65520",
        # The guest must not reach this machine's own 127.0.0.1 services via 10.0.2.2.
        "--disable-host-loopback",
        # slirp4netns runs as root and parses the guest's packets: confine it.
        "--enable-sandbox",
        "--enable-seccomp",
        f"--api-socket={sock}",
        "--netns-type=path",
        str(netns_path(name)),
        "tap0",
    ]


def start(name: str, directory: Path) -> Proc:
    """Start slirp4netns for host `name` (its namespace must exist), detached."""
    sock = directory / "slirp.sock"
    if len(str(sock)) > 100:  # sun_path holds 108 bytes
        raise LabError(f"path too long for a unix socket: {sock}; clone the repo higher up")
    sock.unlink(missing_ok=True)
    cgroups = [str(d) for d in cgroup_dirs(name, "slirp")]
    return launch_detached(argv(name, sock), directory / "slirp.log", cgroups)


def call(sock: Path, request: dict[str, object]) -> dict[str, object]:
    """One request to the slirp4netns API socket; returns its JSON reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(sock))
        conn.sendall(json.dumps(request).encode())
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    reply: dict[str, object] = json.loads(b"".join(chunks) or b"{}")
    return reply


def hostfwd_request(port: int, guest_port: int) -> dict[str, object]:
    """The API request forwarding 127.0.0.1:`port` to `guest_port` inside the host."""
    return {
        "execute": "add_hostfwd",
        "arguments": {
            "proto": "tcp",
            "host_addr": config.LISTEN_ADDR,
            "host_port": port,
            "guest_port": guest_port,
        },
    }


def add_forwards(name: str, sock: Path) -> None:
    """Forward 127.0.0.1:base+K to each service port inside host labK."""
    deadline = time.monotonic() + 15
    while True:  # the API socket answers once slirp4netns has configured tap0
        try:
            call(sock, {"execute": "list_hostfwd"})
            break
        except OSError as err:
            if time.monotonic() > deadline:
                raise LabError(
                    f"{name}: slirp4netns API socket {sock} never answered ({err}); "
                    f"see {sock.with_name('slirp.log')}"
                ) from err
            time.sleep(0.1)
    for role, port in render.ports_for(render.host_index(name)).items():
        reply = call(sock, hostfwd_request(port, render.guest_port(role)))
        if "error" in reply:
            raise LabError(
                f"{name}: cannot forward {config.LISTEN_ADDR}:{port} ({role}): "
                f"{reply['error']}; is the port in use?"
            )
