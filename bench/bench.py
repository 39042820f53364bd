"""Benchmark: wall time and SSH round trips per host for no-op runs, on lab hosts.

Prints, for 1, 2 and 10 lab hosts: a no-op of users + wheel (group, sudoers), and for 1
and 2 hosts a no-op of the full stack; plus `add-user` on 2 converged hosts. Times are
the whole command (`invoke ...` as a sysadmin types it, Python start included), best and
median of --repeat runs. Needs root (it boots lab hosts with `invoke lab.up`).

    .venv/bin/python bench/bench.py [--repeat 5] [--max-hosts 10] [--fresh] [--many-users]

With --many-users (or --only-many-users) it boots 2 more hosts, converges users+wheel with
300 new users on one (the whole `invoke provision`) and runs the bare loop of the same
`useradd`, `groupadd`, `gpasswd` and `chpasswd` commands, taken from that run's report, on
the other (issue 31: within 1.15x of the loop, in 6 round trips or fewer); then again on 2
new hosts with a password hash for every user.

With --push (or --only-push) it boots 1 and then 10 fresh hosts with no way out (`lab.up
--offline`) and installs the full stack on them with `provision_artifacts: push`, each
time from an empty workstation cache: wall time, and the bytes the cache took in (what was
fetched from the registries) for 10 hosts vs 1 (issue 15: <= 1.3x, and equal bytes), and
the CPU seconds the install took on the hosts (their cgroups' cpu.stat) and on the
workstation: with the lab hosts on this machine, the wall time cannot go below their sum
divided by its cores.

With --fresh it also boots 4 more hosts and compares a fresh install of the full stack on
2 of them with the bare install commands typed by hand on the other 2 (both in parallel),
both with the same Python installer (--installer uv, the default, or pip), and prints our
run's slowest steps.

Each no-op is paired with the floor (bench/floor.py: this Python, Fabric, one connection and
one command per host, nothing else), run in turn; the ratio printed is the median of the
pairs' ratios. Measures; asserts nothing (tests never time things).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from provision import lab  # noqa: E402

USERS = [{"name": f"bench{i}", "uid": 2900 + i, "admin": i == 0} for i in range(8)]


def inventory(tmp: Path) -> Path:
    import yaml

    inv = tmp / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    if (REPO / "inventory" / "lab.yml").exists():  # else written once the lab is up
        (inv / "lab.yml").write_text((REPO / "inventory" / "lab.yml").read_text())
    (inv / "group_vars" / "all" / "users.yml").write_text(yaml.safe_dump({"users": USERS}))
    return inv


# Both sides run as on a sysadmin's workstation: Python keeps compiled bytecode (tasks.py
# keeps it on although invoke turns it off). (With
# PYTHONDONTWRITEBYTECODE set, as in some CI shells, every run would compile this
# project's ~40 modules again, ~0.1 s, while Fabric's were compiled by pip: an unfair pair.)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(args: list[str], report: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "invoke", *args, "--json", str(report)],
                          cwd=REPO, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bench: invoke {' '.join(args)} failed:\n{proc.stdout[-3000:]}{proc.stderr}")
    return wall, json.loads(report.read_text())


def floor(inv: str, hosts: str) -> float:
    """bench/floor.py once: Python + Fabric, one connection and one command per host."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "floor.py"),
                           str(Path(inv) / "lab.yml"), hosts], capture_output=True, text=True,
                          env=ENV)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bench: the Fabric floor failed:\n{proc.stderr[-2000:]}")
    return wall


def measure(label: str, args: list[str], repeat: int, tmp: Path,
            inv: str | None = None) -> dict:
    """No-op runs of ``args``; with ``inv``, each paired with a run of the Fabric floor on
    the same hosts (tool, floor, tool, floor...), and the median of the pairs' ratios."""
    report = tmp / "report.json"
    run(args, report)  # converge first: what follows is the no-op
    walls, floors, trips, changed = [], [], [], 0
    hosts = args[args.index("--hosts") + 1]
    for _ in range(repeat):
        wall, data = run(args, report)
        walls.append(wall)
        if inv:
            floors.append(floor(inv, hosts))
        per_host = data["hosts"].values()
        trips.append(max(h["round_trips"] for h in per_host))
        changed += sum(h["changed"] for h in per_host)
    row = {"scenario": label, "best_s": round(min(walls), 3),
           "median_s": round(statistics.median(walls), 3), "round_trips_per_host": max(trips),
           "changed": changed}
    extra = ""
    if floors:
        row["floor_median_s"] = round(statistics.median(floors), 3)
        ratios = [w / f for w, f in zip(walls, floors, strict=True)]
        row["ratio_to_floor"] = round(statistics.median(ratios), 2)
        extra = f"  floor {row['floor_median_s']:.3f}s  ratio {row['ratio_to_floor']:.2f}x"
    print(f"{label:<42} best {row['best_s']:6.3f}s  median {row['median_s']:6.3f}s  "
          f"round trips/host {row['round_trips_per_host']}  changed {changed}{extra}",
          flush=True)
    return row


# The bare install commands a sysadmin would type, with the installer our run uses
# (provision_python_installer), each with its own defaults: pip into a venv of its own;
# or uv as its docs say to get it from PyPI (pip install uv), then uv venv and uv pip.
_APT = ("set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/dev/null; "
        "apt-get install -y -q nodejs npm python3-venv >/dev/null; ")
_NPM = "; npm install -g --no-fund --no-audit configurable-http-proxy >/dev/null 2>&1"
BARE = {
    "pip": _APT + "python3 -m venv /opt/bare; "
                  "/opt/bare/bin/pip install -q jupyterhub jupyterlab notebook" + _NPM,
    "uv": _APT + "python3 -m venv /opt/uv; /opt/uv/bin/pip install -q uv; "
                 "/opt/uv/bin/uv venv -q --python /usr/bin/python3 /opt/bare; "
                 "/opt/uv/bin/uv pip install -q --system-certs --python /opt/bare/bin/python "
                 "jupyterhub jupyterlab notebook" + _NPM,
}


def fresh(first: int, tmp: Path, inv: str, installer: str = "uv") -> list[dict]:
    """A fresh install by us vs the bare commands by hand, 2 new hosts each, in parallel,
    both with ``installer``."""
    from concurrent.futures import ThreadPoolExecutor

    ours = [f"lab{first}", f"lab{first + 1}"]
    bare = [f"lab{first + 2}", f"lab{first + 3}"]
    lab.up(first + 3)
    (Path(inv) / "lab.yml").write_text((REPO / "inventory" / "lab.yml").read_text())
    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda h: lab.run_ssh(h, BARE[installer], timeout=1800),
                                    bare))
        by_hand = time.perf_counter() - start
        if any(r.returncode for r in results):
            sys.exit(f"bench: the bare install failed: {results[0].stderr[-2000:]}")
        wall, data = run(["provision", "--hosts", ",".join(ours), "--inventory", inv,
                          "--var", f"provision_python_installer={installer}"],
                         tmp / "fresh.json")
    finally:
        lab.down(ours + bare)
    rows = [{"scenario": f"fresh install, 2 hosts, bare commands by hand ({installer})",
             "best_s": round(by_hand, 1)},
            {"scenario": f"fresh install, 2 hosts, invoke provision ({installer})",
             "best_s": round(wall, 1), "ratio_to_bare": round(wall / by_hand, 2),
             "slowest_steps": _slowest(data)}]
    for row in rows:
        extra = f"  ({row['ratio_to_bare']}x the bare commands)" if "ratio_to_bare" in row else ""
        print(f"{row['scenario']:<56} {row['best_s']:6.1f}s{extra}", flush=True)
    for step, seconds in rows[1]["slowest_steps"].items():
        print(f"    {step:<52} {seconds:6.1f}s (slowest host)", flush=True)
    return rows


def _slowest(report: dict, n: int = 6) -> dict[str, float]:
    """The run's longest steps: 'role: step' -> seconds, on the host where it took longest."""
    out: dict[str, float] = {}
    for host in report["hosts"].values():
        for s in host["steps"]:
            key = f"{s['role']}: {s['name']}"
            out[key] = max(out.get(key, 0.0), round(s.get("duration") or 0.0, 1))
    return dict(sorted(out.items(), key=lambda kv: -kv[1])[:n])


# A crypt hash for the bench's users (of a password nobody uses: the bench never logs in).
BENCH_HASH = ("$6$benchsalt$4sR5Jx4yTq0l1oWnBvk3bHd6sE8eYfQ0uLm7c2aK9pZ1rT6gV3xN5hJ8dM2wQ"
              "7yU4iO0pA9sD6fG3hJ1kL5zX8cV")


ACCOUNT_TOOLS = ("useradd", "usermod", "groupadd", "gpasswd", "chpasswd")


def bare_loop(report: dict, host: str, hashes: dict[str, str]) -> str:
    """The shadow commands a run ran on ``host`` (from its JSON report, in order), as a
    shell script: what a sysadmin's own loop of the same commands would be. The report
    hides password hashes; ``hashes`` puts them back on chpasswd's stdin."""
    lines = ["set -e"]
    for step in report["hosts"][host]["steps"]:
        for command in step["commands"]:
            word = command.split(" ", 1)[0]
            if word not in ACCOUNT_TOOLS:
                continue
            if word == "chpasswd":
                names = [n for n in hashes if f"user {n}:" in step["diff"]]
                pairs = shlex.join(f"{n}:{hashes[n]}" for n in names)
                lines.append(f"printf '%s\\n' {pairs} | chpasswd --encrypted")
            else:
                lines.append(command)
    return "\n".join(lines) + "\n"


def many_users(first: int, tmp: Path, inv: str, count: int = 300, *,
               passwords: bool = False) -> dict:
    """A fresh users+wheel converge of ``count`` users on one new host (the whole
    ``invoke provision``, as typed), against the bare loop of the same ``useradd``,
    ``groupadd``, ``gpasswd`` and ``chpasswd`` commands on another new host (one SSH
    command, timed from here too). ``passwords``: every user has a password hash, as a
    class logging in to the hub does."""
    import yaml

    ours, bare = f"lab{first}", f"lab{first + 1}"
    lab.up(first + 1)
    (Path(inv) / "lab.yml").write_text((REPO / "inventory" / "lab.yml").read_text())
    host_vars = Path(inv) / "host_vars"
    host_vars.mkdir(exist_ok=True)
    users = [{"name": f"many{i:03d}", "uid": 4000 + i, "admin": i == 0} for i in range(count)]
    for u in users if passwords else ():
        u["password_hash"] = BENCH_HASH
    (host_vars / f"{ours}.yml").write_text(yaml.safe_dump({"users": users}))
    try:
        wall, data = run(["provision", "--hosts", ours, "--inventory", inv,
                          "--roles", "users,wheel"], tmp / "many.json")
        script = bare_loop(data, ours, {u["name"]: BENCH_HASH for u in users if passwords})
        start = time.perf_counter()
        proc = lab.run_ssh(bare, ["sh", "-c", script], timeout=1800)
        by_hand = time.perf_counter() - start
        if proc.returncode:
            sys.exit(f"bench: the bare loop failed: {proc.stderr[-2000:]}")
    finally:
        lab.down([ours, bare])
        (host_vars / f"{ours}.yml").unlink()
    rep = data["hosts"][ours]
    row = {"scenario": f"fresh users+wheel, {count} users"
                       + (" with password hashes" if passwords else ""),
           "bare_loop_s": round(by_hand, 2), "invoke_s": round(wall, 2),
           "on_host_s": round(rep["duration"], 2),
           "ratio_to_bare": round(wall / by_hand, 2), "round_trips": rep["round_trips"],
           "bare_commands": script.count("\n") - 1}
    print(f"{row['scenario']:<48} bare loop {by_hand:5.2f}s  invoke provision {wall:5.2f}s"
          f"  ratio {row['ratio_to_bare']:.2f}x  round trips {row['round_trips']}",
          flush=True)
    return row


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def hosts_cpu_s(names: list[str]) -> float:
    """CPU seconds the lab hosts `names` have used (cgroup2's cpu.stat of each host's
    cgroup: every process of the container, its systemd included)."""
    from provision.lab import system

    total = 0
    for name in names:
        for directory in system.cgroup_dirs(name):
            stat = directory / "cpu.stat"
            if stat.is_file():
                fields = dict(line.split() for line in stat.read_text().splitlines())
                total += int(fields.get("usage_usec", 0))
    return total / 1e6


def push_fresh(first: int, tmp: Path, inv: str, counts: tuple[int, int] = (1, 10)) -> dict:
    """A fresh full install with provision_artifacts: push on 1, then 10, offline hosts,
    each from an empty cache."""
    out: dict = {"scenario": f"fresh full install with push, {counts[1]} vs {counts[0]} "
                             "offline host(s)"}
    for n in counts:
        names = [f"lab{i}" for i in range(first, first + n)]
        lab.up(names=names, offline=True)
        (Path(inv) / "lab.yml").write_text((REPO / "inventory" / "lab.yml").read_text())
        cache = tmp / f"cache-{n}"
        try:
            cpu_before = hosts_cpu_s(names)
            ours_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall, data = run(["provision", "--hosts", ",".join(names), "--inventory", inv,
                              "--var", "provision_artifacts=push", "--var",
                              f"provision_artifacts_cache={cache}"], tmp / f"push-{n}.json")
            ours = resource.getrusage(resource.RUSAGE_CHILDREN)
            # the CPU the install took: the hosts' and the workstation's (invoke, its
            # apt-get, pip and npm); with the hosts on this machine, the wall time of n
            # hosts cannot go below all of it divided by the machine's cores
            out[f"hosts_cpu_s_{n}"] = round(hosts_cpu_s(names) - cpu_before, 1)
            out[f"workstation_cpu_s_{n}"] = round(
                ours.ru_utime + ours.ru_stime - ours_before.ru_utime - ours_before.ru_stime, 1)
            cores = os.cpu_count() or 1
            floor_s = (out[f"hosts_cpu_s_{n}"] + out[f"workstation_cpu_s_{n}"]) / cores
            out[f"cpu_floor_s_{n}"] = round(floor_s, 1)
            failed = data.get("failed_hosts") or []
            if failed:
                sys.exit(f"bench: the push install failed on {failed}")
            out[f"wall_s_{n}"] = round(wall, 1)
            # what came from the registries (Node.js unpacked for the workstation's own
            # npm, in tools/, is counted as its wheel's size: the one file it fetched)
            fetched = _tree_bytes(cache) - _tree_bytes(cache / "tools")
            out[f"fetched_mb_{n}"] = round(fetched / 1e6, 1)
            out[f"pushed_mb_{n}"] = round(sum(h["pushed_bytes"] for h in
                                              data["hosts"].values()) / 1e6, 1)
            print(f"fresh full install with push, {n:2d} offline host(s): {wall:6.1f}s, "
                  f"{out[f'fetched_mb_{n}']:.1f} MB fetched into the cache (+ Node.js for "
                  f"the workstation), {out[f'pushed_mb_{n}']:.1f} MB pushed; CPU "
                  f"{out[f'hosts_cpu_s_{n}']:.0f} s on the hosts + "
                  f"{out[f'workstation_cpu_s_{n}']:.0f} s on the workstation, / "
                  f"{cores} cores = {floor_s:.0f} s", flush=True)
        finally:
            lab.down(names)
    small, big = counts
    out["ratio"] = round(out[f"wall_s_{big}"] / out[f"wall_s_{small}"], 2)
    print(f"{out['scenario']}: ratio {out['ratio']:.2f}x, fetched "
          f"{out[f'fetched_mb_{big}']:.1f} MB vs {out[f'fetched_mb_{small}']:.1f} MB",
          flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--max-hosts", type=int, default=10)
    ap.add_argument("--fresh", action="store_true", help="also time a fresh install")
    ap.add_argument("--installer", choices=("uv", "pip"), default="uv", help="with --fresh: "
                    "provision_python_installer of our run and the installer of the bare "
                    "commands")
    ap.add_argument("--many-users", action="store_true",
                    help="also time a fresh users+wheel converge of 300 users against "
                    "the bare loop of the same commands")
    ap.add_argument("--only-many-users", action="store_true",
                    help="time only that (boots its own 2 hosts)")
    ap.add_argument("--push", action="store_true", help="also time a fresh install with "
                    "provision_artifacts: push on 1 and 10 offline hosts")
    ap.add_argument("--only-push", action="store_true", help="time only that")
    opts = ap.parse_args()
    if opts.only_push:
        with tempfile.TemporaryDirectory(prefix="jhprov-bench-") as d:
            row = push_fresh(opts.max_hosts + 1, Path(d), str(inventory(Path(d))))
        print(json.dumps(row))
        return
    if opts.only_many_users:
        with tempfile.TemporaryDirectory(prefix="jhprov-bench-") as d:
            inv = str(inventory(Path(d)))
            rows = [many_users(opts.max_hosts + 1, Path(d), inv, passwords=p)
                    for p in (False, True)]
        print(json.dumps(rows))
        return
    started = time.perf_counter()
    lab.up(opts.max_hosts)
    print(f"lab: {opts.max_hosts} hosts up in {time.perf_counter() - started:.1f}s")
    rows = []
    with tempfile.TemporaryDirectory(prefix="jhprov-bench-") as d:
        tmp = Path(d)
        inv = str(inventory(tmp))
        for n in sorted({1, 2, opts.max_hosts}):
            hosts = ",".join(f"lab{i}" for i in range(1, n + 1))
            rows.append(measure(f"no-op users+wheel, {n} host(s)",
                                ["provision", "--hosts", hosts, "--inventory", inv, "--roles",
                                 "users,wheel"], opts.repeat, tmp, inv))
        for n in (1, 2):
            hosts = ",".join(f"lab{i}" for i in range(1, n + 1))
            rows.append(measure(f"no-op full stack, {n} host(s)",
                                ["provision", "--hosts", hosts, "--inventory", inv],
                                opts.repeat, tmp, inv))
        report = tmp / "add.json"
        walls = []
        for i in range(opts.repeat):
            wall, _ = run(["add-user", f"benchadd{i}", "--uid", str(2950 + i), "--hosts",
                           "lab1,lab2", "--inventory", inv], report)
            walls.append(wall)
        row = {"scenario": "add-user on 2 converged hosts", "best_s": round(min(walls), 3),
               "median_s": round(statistics.median(walls), 3)}
        print(f"{row['scenario']:<42} best {row['best_s']:6.3f}s  median "
              f"{row['median_s']:6.3f}s", flush=True)
        rows.append(row)
        if opts.fresh:
            rows += fresh(opts.max_hosts + 1, tmp, inv, opts.installer)
        if opts.many_users:
            rows += [many_users(opts.max_hosts + 1, tmp, inv, passwords=p)
                     for p in (False, True)]
        if opts.push:
            rows.append(push_fresh(opts.max_hosts + 1, tmp, inv))
        # Leave the hosts as they were: the bench users go away again.
        import yaml

        users_file = Path(inv) / "group_vars" / "all" / "users.yml"
        listed = yaml.safe_load(users_file.read_text())["users"]
        gone = [{"name": u["name"], "state": "absent"} for u in listed]
        users_file.write_text(yaml.safe_dump({"users": gone}))
        everyone = ",".join(f"lab{i}" for i in range(1, opts.max_hosts + 1))
        subprocess.run([sys.executable, "-m", "invoke", "provision", "--hosts", everyone,
                        "--inventory", inv, "--roles", "users"], cwd=REPO, capture_output=True)
    out = REPO / ".provision" / "bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
