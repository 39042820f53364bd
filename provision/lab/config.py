"""Constants of the local lab: ports, paths, the base image's package list.

Everything a sysadmin may want to look up about the lab lives here, so the docs
(`docs/lab.md`) and the code cannot drift apart: ports, where state is kept, what the
image contains. Paths are computed from this file's location, never from the current
directory, so `invoke lab.up` works from any folder of the repository.
"""

from __future__ import annotations

from pathlib import Path

# provision/lab/config.py -> the repository root is two levels above this package.
REPO_ROOT = Path(__file__).resolve().parents[2]

# Per-repository state: key pair, known_hosts, per-host overlay dirs, logs, state files.
# Git-ignored; deleting it by hand is only safe after `invoke lab.down`.
LAB_DIR = REPO_ROOT / ".lab"
HOSTS_DIR = LAB_DIR / "hosts"
KEY_FILE = LAB_DIR / "id_ed25519"
KNOWN_HOSTS_FILE = LAB_DIR / "known_hosts"
LOCK_FILE = LAB_DIR / "lock"
INVENTORY_FILE = REPO_ROOT / "inventory" / "lab.yml"
# /home of every host booted with `lab.up --shared-home` (the lab's stand-in for a site's
# NFS server: the kernel's nfsd is not the hosts' to run). Removed by `lab.down` once
# no host uses it.
SHARED_HOME_DIR = LAB_DIR / "shared-home"

# Machine-wide caches shared by every clone: building the base tree costs about a minute
# and a few hundred MB of downloads, so a fresh clone on the same machine reuses it.
CACHE_DIR = Path("/var/cache/jhprovision-lab")  # the tarballs (the real cache)
BASE_DIR = Path("/var/lib/jhprovision-lab/base")  # unpacked trees, used as overlay lowerdir

# Host labK is given names and ports derived from K alone, so they are predictable and
# two hosts never collide. Base ports are 100 apart, hence at most 99 hosts.
HOST_PREFIX = "lab"
MAX_HOSTS = 99
LISTEN_ADDR = "127.0.0.1"
# role -> (port inside the host, base of the port on 127.0.0.1; host labK gets base + K)
PORTS: dict[str, tuple[int, int]] = {
    "ssh": (22, 22200),
    "hub": (8000, 28000),
    "http": (80, 28100),
    "https": (443, 28200),
}

# Names of the per-host network namespaces (/run/netns/labK) and of the cgroups the lab
# puts its processes in (under each cgroup hierarchy's root).
NETNS_DIR = Path("/run/netns")
# The lab's own network, on which hosts reach each other by name: a bridge in a network
# namespace of its own (never this machine's interfaces), each host's `eth1` on it
# through a veth pair, labK at LAN_PREFIX.K/24.
LAN_NETNS = "jhprovision-lan"
LAN_BRIDGE = "br0"
LAN_PREFIX = "10.231.0"
CGROUP_PARENT = "jhprovision-lab"

# The base image: a plain Debian server. What JupyterHub needs (python3-venv, nodejs, ...)
# is deliberately absent: installing it is the provisioner's job, and the lab must show
# whether the provisioner does it.
SUITE = "bookworm"  # the default suite of new hosts (Debian 12)
# Suites a host can boot (`lab.up --suite`), each from a cached base of its own.
SUITES: tuple[str, ...] = ("bookworm", "trixie")
PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",  # logind sessions for SSH logins, as on any Debian server
    "openssh-server",
    "python3",
    "sudo",
    "ca-certificates",
    "curl",
    "iproute2",
    "procps",  # ps/pgrep: every real server has them, and facts may use them
)
# Bump whenever image.py changes what it does to the tree: the cache key includes it, so
# every machine rebuilds its base instead of booting a stale one.
SETUP_VERSION = 3

# Files of this machine copied into the image so the hosts reach the same package mirror
# (a dated snapshot, hence the Check-Valid-Until setting) through the same TLS proxy.
HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
HOST_APT_CONF: tuple[Path, ...] = (Path("/etc/apt/apt.conf.d/99artifact-registry"),)
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# Inside every host: slirp4netns answers DNS on this address.
GUEST_DNS = "10.0.2.3"

# How long to wait for things, in seconds.
SSH_READY_TIMEOUT = 120.0
SYSTEM_RUNNING_TIMEOUT = 180.0
SHUTDOWN_TIMEOUT = 30.0

# Debian packages providing the commands the lab runs, for the error message that says
# how to install what is missing (`bash .ci/lab-deps.sh` installs them all).
REQUIRED_COMMANDS: dict[str, str] = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "slirp4netns": "slirp4netns",
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "tar": "tar",
    "zstd": "zstd",
    "mount": "mount",
    "umount": "mount",
    "chroot": "coreutils",
}
