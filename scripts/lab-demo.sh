#!/usr/bin/env bash
# The main job on local lab hosts, from nothing: set up, boot lab1 and lab2, provision them,
# verify them with testinfra, and print the hub URLs. Run as root; takes a few minutes the
# first time (the Debian image is built once and cached), seconds after.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${LAB_COUNT:-2}
hosts=$(seq -s, -f 'lab%g' 1 "$count")

bash scripts/setup.sh
.venv/bin/invoke lab.up --count "$count"
.venv/bin/invoke provision --hosts "$hosts"
.venv/bin/invoke verify --hosts "$hosts"
.venv/bin/invoke lab.status
echo
echo "Add a user and log in at the URLs above:  .venv/bin/invoke add-user alice --admin"
