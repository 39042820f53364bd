#!/usr/bin/env bash
# All the tests, from nothing: set up, then unit tests (no SSH) and end-to-end tests on
# booted lab hosts (systemd-nspawn). Run as root. Extra arguments go to pytest.
#
# The end-to-end tests run as three pytest sessions at once: the modules marked `lab3` on
# a host of their own, lab3; those marked `lab4` (upgrades) on lab4; and the rest on lab1
# and lab2 (and a spare host of test_lab's). The other sessions' output follows.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/pytest tests/unit -p no:cacheprovider "$@"
log3=$(mktemp /tmp/jhprov-e2e-lab3.XXXXXX)
log4=$(mktemp /tmp/jhprov-e2e-lab4.XXXXXX)
.venv/bin/pytest tests/e2e -m lab3 -p no:cacheprovider "$@" >"$log3" 2>&1 &
lab3=$!
.venv/bin/pytest tests/e2e -m lab4 -p no:cacheprovider "$@" >"$log4" 2>&1 &
lab4=$!
trap 'kill "$lab3" "$lab4" 2>/dev/null || true' INT TERM
rc=0
.venv/bin/pytest tests/e2e -m "not lab3 and not lab4" -p no:cacheprovider "$@" || rc=$?
rc3=0
wait "$lab3" || rc3=$?
rc4=0
wait "$lab4" || rc4=$?
echo "=============================== the lab3 session ==============================="
cat "$log3"
echo "=============================== the lab4 session ==============================="
cat "$log4"
rm -f "$log3" "$log4"
if [ "$rc" -ne 0 ] || [ "$rc3" -ne 0 ] || [ "$rc4" -ne 0 ]; then
    echo "FAILED: lab1/lab2 session exit $rc, lab3 session exit $rc3, lab4 session exit $rc4" >&2
    exit 1
fi
