"""Where a no-op run's workstation CPU goes: cProfile of `invoke provision` on lab hosts
that are already converged (every thread: the work is in one per host), and the import
time of the command line.

    .venv/bin/python bench/profile_noop.py [--hosts lab1,lab2] [--roles users,wheel]

Needs running lab hosts (`invoke lab.up --count N`); converges them once first. Prints the
25 functions with the most own time, the project's 25 most expensive (cumulative) and the
15 slowest imports; writes the profile to .provision/noop.prof (`python -m pstats`).
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


# Bytecode cached, as on a workstation (see bench.py).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

_PROFILE_ALL_THREADS = """
import cProfile, pstats, sys, threading
out, argv = sys.argv[1], sys.argv[2:]
profiles = []
run = threading.Thread.run
def profiled(self):
    p = cProfile.Profile()
    profiles.append(p)
    p.runcall(run, self)
threading.Thread.run = profiled
main = cProfile.Profile()
sys.argv = ["invoke", *argv]
from invoke.main import program
try:
    main.runcall(program.run)
except SystemExit:
    pass
stats = pstats.Stats(main)
for p in profiles:
    try:
        stats.add(p)
    except TypeError:  # a thread that never ran
        pass
stats.dump_stats(out)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="lab1,lab2")
    ap.add_argument("--roles", default=None)
    opts = ap.parse_args()
    out = REPO / ".provision" / "noop.prof"
    out.parent.mkdir(exist_ok=True)
    args = ["provision", "--hosts", opts.hosts] + (["--roles", opts.roles] if opts.roles else [])
    subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, check=True,
                   capture_output=True, env=ENV)  # converge first
    # cProfile sees one thread; a run's work is in its worker threads (one per host):
    # profile every thread and add them up.
    subprocess.run([sys.executable, "-c", _PROFILE_ALL_THREADS, str(out), *args], cwd=REPO,
                   check=True, capture_output=True, env=ENV)
    stats = pstats.Stats(str(out))
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(r"provision|roles", 25)
    imp = subprocess.run([sys.executable, "-X", "importtime", "-c", "import tasks"], cwd=REPO,
                         capture_output=True, text=True, env=ENV).stderr.splitlines()[1:]
    rows = sorted(((int(line.split("|")[1]), line) for line in imp), reverse=True)
    print("slowest imports (cumulative, microseconds):")
    for _, line in rows[:15]:
        print(" ", line.split(":", 1)[1])


if __name__ == "__main__":
    main()
