"""Where a no-op run's workstation CPU goes: cProfile of `invoke provision` on lab hosts
that are already converged, and the import time of the command line.

    .venv/bin/python bench/profile_noop.py [--hosts lab1,lab2] [--roles users,wheel]

Needs running lab hosts (`invoke lab.up --count N`) converged once. Prints the 30 most
expensive functions (cumulative) and the 15 slowest imports; writes the profile to
.provision/noop.prof (open it with `python -m pstats` or snakeviz).
"""

from __future__ import annotations

import argparse
import pstats
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="lab1,lab2")
    ap.add_argument("--roles", default=None)
    opts = ap.parse_args()
    out = REPO / ".provision" / "noop.prof"
    out.parent.mkdir(exist_ok=True)
    args = ["provision", "--hosts", opts.hosts] + (["--roles", opts.roles] if opts.roles else [])
    subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, check=True,
                   capture_output=True)  # converge first
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "invoke", *args],
                   cwd=REPO, check=True, capture_output=True)
    pstats.Stats(str(out)).sort_stats("cumulative").print_stats(30)
    imp = subprocess.run([sys.executable, "-X", "importtime", "-c", "import tasks"], cwd=REPO,
                         capture_output=True, text=True).stderr.splitlines()[1:]
    rows = sorted(((int(line.split("|")[1]), line) for line in imp), reverse=True)
    print("slowest imports (cumulative, microseconds):")
    for _, line in rows[:15]:
        print(" ", line.split(":", 1)[1])


if __name__ == "__main__":
    main()
