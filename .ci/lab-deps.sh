#!/usr/bin/env bash
# Install the Debian packages the local lab (`invoke lab.up`) needs on this machine.
#
# Idempotent: packages already installed are left as they are (apt-get only installs what
# is missing). Needs root. Quiet unless something fails.
#   debootstrap        builds the base Debian 12 tree once (cached under /var/cache)
#   systemd-container  systemd-nspawn, which boots each host with systemd as PID 1
#   slirp4netns        user-mode NAT: egress and 127.0.0.1 port forwards without iptables
#   iproute2           `ip netns` for the per-host network namespaces
#   openssh-client     ssh and ssh-keygen (lab key, host keys, lab.ssh)
#   zstd               compresses the cached base image tarball
#   util-linux         unshare, mount, umount (usually already there)
set -euo pipefail

packages=(debootstrap systemd-container slirp4netns iproute2 openssh-client zstd util-linux)

if [[ $(id -u) -ne 0 ]]; then
    echo "lab-deps.sh: must run as root (it uses apt-get install)" >&2
    exit 1
fi

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "lab-deps.sh: installed ${missing[*]}"
