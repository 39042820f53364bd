#!/usr/bin/env bash
# Set up this machine for jhprovision: Debian packages (lab and tooling) and the project's
# virtualenv (.venv). Idempotent and quiet when there is nothing to do. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "setup.sh: run as root (the lab boots systemd-nspawn containers)" >&2
    exit 1
fi

# Tooling: a Python with venv, openssl (hashes passwords for add-user), zstd (lab image).
tools=(python3 python3-venv openssl zstd curl)
missing=()
for pkg in "${tools[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$pkg")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    echo "setup.sh: installed ${missing[*]}"
fi
bash .ci/lab-deps.sh

# The virtualenv, rebuilt when pyproject.toml changed since it was made.
stamp=.venv/.jhprov-installed
if [[ ! -x .venv/bin/python || ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
    touch "$stamp"
    echo "setup.sh: virtualenv ready in .venv"
fi
