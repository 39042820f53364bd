#!/usr/bin/env bash
# All the tests, from nothing: set up, then unit tests (no SSH) and end-to-end tests on
# booted lab hosts (systemd-nspawn). Run as root. Extra arguments go to pytest.
#
# The end-to-end tests run as two pytest sessions at once: the modules marked `lab3` on a
# host of their own, lab3, and the rest on lab1 and lab2 (and a spare host of test_lab's).
# The lab3 session's output follows the other's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/pytest tests/unit -p no:cacheprovider "$@"
log=$(mktemp /tmp/jhprov-e2e-lab3.XXXXXX)
.venv/bin/pytest tests/e2e -m lab3 -p no:cacheprovider "$@" >"$log" 2>&1 &
lab3=$!
trap 'kill "$lab3" 2>/dev/null || true' INT TERM
rc=0
.venv/bin/pytest tests/e2e -m "not lab3" -p no:cacheprovider "$@" || rc=$?
rc3=0
wait "$lab3" || rc3=$?
echo "=============================== the lab3 session ==============================="
cat "$log"
rm -f "$log"
if [ "$rc" -ne 0 ] || [ "$rc3" -ne 0 ]; then
    echo "FAILED: lab1/lab2 session exit $rc, lab3 session exit $rc3" >&2
    exit 1
fi
