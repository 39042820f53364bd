#!/usr/bin/env bash
# All the tests, from nothing: set up, then unit tests (no SSH) and end-to-end tests on
# booted lab hosts (systemd-nspawn). Run as root. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pytest tests/unit tests/e2e -p no:cacheprovider "$@"
