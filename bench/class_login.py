"""Benchmark: a class logging in at once, N users on one hub, until each has a working kernel.

For each N of --counts, every class user's server is stopped first, then N threads start
together (a barrier) and each one logs in, starts its server (waiting up to 300 s), loads
JupyterLab, starts a kernel and runs ``1+1``. Prints per N how many got ``2`` back, the
p50/p95/max seconds from the barrier to that answer (nearest rank), the first failures
(step, exception class, first line), and the hub's spawn settings it ran with (lines of
/etc/jupyterhub/jupyterhub_config.py on the host).

Times depend on the machine; CPU seconds per spawn much less, so each round also prints
what a spawn cost: the host's CPU (cgroup2 cpu.stat `usage_usec` of the container, read on
the workstation before and after the round, divided by N), and of it the hub's
(jupyterhub.service), the proxy's, the users' servers' (their units, kernels included) and
the rest (systemd, journald, PAM...); the lab's network (slirp4netns, not part of a real
host) and this script's own client threads apart. A unit whose cgroup the workstation
cannot see is read on the host (`systemctl show -p CPUUsageNSec`, one SSH call).

A login whose connection is reset before the hub answers (the lab's port forward has a
short listen queue) is tried once more, as a student would reload the page; the `reloads`
column counts those.

    .venv/bin/python bench/class_login.py [--host lab1] [--counts 1,15,45] [--keep]
        [--inventory DIR] [--password-file F] [--url URL] [--json PATH]

Boots the host with `lab.up` when it is not running (that needs root, as for bench.py).
Provisions it once (`invoke provision`) with users class01..classNN for the largest N
(uids from 3001, one random password, hashed here with `openssl passwd -6`), in a
temporary inventory: bench.py's, or a copy of --inventory (which is never changed).
Without --keep the class users are removed again at the end (state absent, role users).
Measures; asserts nothing: the exit code is 0 even when logins fail (2: bad arguments).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

try:  # python -m, pytest: bench/ is a namespace package
    from bench.bench import inventory, run
except ImportError:  # python bench/class_login.py: bench/ is sys.path[0], so bench is bench.py
    from bench import inventory, run  # type: ignore[no-redef]

from provision import lab  # noqa: E402
from provision.api import hash_password, read_password  # noqa: E402
from provision.errors import ConfigError  # noqa: E402
from provision.hubclient import HubClient, HubError  # noqa: E402
from provision.inventory import Inventory  # noqa: E402
from provision.inventory_edit import update_user, users_file  # noqa: E402

MAX_USERS = 300
FIRST_UID = 3001
SETTINGS = ("concurrent_spawn_limit", "mem_limit", "cpu_limit", "spawner_class",
            "start_timeout", "http_timeout", "Spawner.args", "jpserver_extensions")
HUB_UNIT = "jupyterhub.service"
CPU_PARTS = ("hub", "proxy", "servers", "other")


def parse_counts(text: str) -> list[int]:
    """'1,15,45' -> [1, 15, 45]; anything but positive integers is an argparse error."""
    counts = []
    for item in text.split(","):
        item = item.strip()
        if not re.fullmatch(r"[0-9]+", item) or not 1 <= int(item) <= MAX_USERS:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not a number of users from 1 to {MAX_USERS} (e.g. 1,15,45)")
        counts.append(int(item))
    return counts


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least p% of them at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p * len(ordered) / 100)) - 1]


def parse_cpu_stat(text: str) -> dict[str, int]:
    """cgroup2 cpu.stat ("usage_usec 123\\n...") -> {"usage_usec": 123, ...}; other lines
    (a v1 hierarchy's, or none) are skipped."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key and value.strip().isdigit():
            fields[key] = int(value)
    return fields


def parse_systemctl_cpu(text: str) -> dict[str, int]:
    """`systemctl show -p Id,CPUUsageNSec UNIT...` -> {unit: usec}; a unit without CPU
    accounting ([not set], or a huge "unset" number) is left out."""
    out: dict[str, int] = {}
    for block in re.split(r"\n\s*\n", text.strip()):
        props = dict(line.partition("=")[::2] for line in block.splitlines() if "=" in line)
        value = props.get("CPUUsageNSec", "")
        if props.get("Id") and value.isdigit() and int(value) < 2**63:
            out[props["Id"]] = int(value) // 1000
    return out


def cgroup_usage(directory: Path) -> int | None:
    """usage_usec of cgroup2 directory `directory` (every process below it), or None."""
    try:
        return parse_cpu_stat((directory / "cpu.stat").read_text()).get("usage_usec")
    except OSError:
        return None


def sample_cpu(name: str, users: list[str]) -> dict[str, Any]:
    """CPU microseconds used so far by host `name` and by its units that matter here:
    {"host", "slirp", "hub", "proxy": usec or None, "servers": {unit: usec}}."""
    from provision.lab import system
    from provision.stack import PROXY_UNIT, user_unit

    wanted = {HUB_UNIT: "hub", PROXY_UNIT: "proxy", **{user_unit(u): "servers" for u in users}}
    out: dict[str, Any] = {"host": None, "slirp": None, "hub": None, "proxy": None,
                           "servers": {}}
    for container in system.cgroup_dirs(name, "nspawn"):
        if cgroup_usage(container) is None:
            continue  # not a cgroup2 hierarchy (v1 cpu.stat has no usage_usec)
        out["host"] = cgroup_usage(container)
        out["slirp"] = cgroup_usage(container.parent / "slirp")
        for dirpath, dirs, _files in os.walk(container):
            for d in [d for d in dirs if d in wanted]:
                usage = cgroup_usage(Path(dirpath) / d)
                if usage is not None:
                    if wanted[d] == "servers":
                        out["servers"][d] = usage
                    else:
                        out[wanted[d]] = usage
            dirs[:] = [d for d in dirs if d not in wanted]  # a unit's own subgroups: counted
        break
    if out["hub"] is None:  # the host's units are not in the workstation's view: ask it
        proc = lab.run_ssh(name, ["systemctl", "show", "-p", "Id,CPUUsageNSec", *wanted])
        for unit, usec in parse_systemctl_cpu(proc.stdout).items():
            if wanted.get(unit) == "servers":
                out["servers"][unit] = usec
            elif unit in wanted:
                out[wanted[unit]] = usec
    return out


def _grown(before: int | None, after: int | None) -> int | None:
    """What a counter grew by; one that went down belongs to a new unit (restarted)."""
    if after is None:
        return None
    return after - before if before is not None and after >= before else after


def cpu_per_spawn(before: dict[str, Any], after: dict[str, Any], n: int,
                  client_s: float) -> dict[str, float | None]:
    """Seconds of CPU per spawn between two `sample_cpu`s of a round of `n` users.

    `servers` adds up the round's users' units (a unit started during the round counts
    whole); `other` is what the host used besides the hub, proxy and servers. Example:
    host 10 s -> 19 s, hub 1 s -> 2 s, servers {} -> 6 s, n=3: host 3.0, hub 0.33,
    servers 2.0."""
    host = _grown(before["host"], after["host"])
    parts: dict[str, int | None] = {
        "hub": _grown(before["hub"], after["hub"]),
        "proxy": _grown(before["proxy"], after["proxy"]),
        "servers": sum(_grown(before["servers"].get(u), usec) or 0
                       for u, usec in after["servers"].items()),
    }
    known = [v for v in parts.values() if v is not None]
    parts["other"] = host - sum(known) if host is not None else None
    out: dict[str, float | None] = {"host": host, **parts,
                                    "slirp": _grown(before["slirp"], after["slirp"])}
    out = {k: round(v / 1e6 / n, 3) if v is not None else None for k, v in out.items()}
    out["client"] = round(client_s / n, 3)
    return out


def cpu_line(cpu: dict[str, float | None]) -> str:
    """One line of the CPU seconds per spawn, e.g. 'host 3.10 = hub 0.20 + ...'."""
    def fmt(key: str) -> str:
        value = cpu.get(key)
        return f"{key} {value:.2f}" if value is not None else f"{key} -"
    return (f"CPU s per spawn: {fmt('host')} = " + " + ".join(fmt(k) for k in CPU_PARTS)
            + f"; lab network: {fmt('slirp')}; this client: {fmt('client')}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="lab1", help="the lab host (default lab1)")
    ap.add_argument("--counts", type=parse_counts, default="1,15,45",
                    help="class sizes, one round each (default 1,15,45)")
    ap.add_argument("--password-file", help="the class users' password (default: random)")
    ap.add_argument("--keep", action="store_true", help="leave the class users on the host")
    ap.add_argument("--inventory", help="an inventory dir to start from (copied, not changed)")
    ap.add_argument("--url", help="the hub's URL (default: the lab host's hub port)")
    ap.add_argument("--json", dest="json_path", help="also write the results to this file")
    opts = ap.parse_args(argv)
    if not re.fullmatch(r"lab[1-9][0-9]*", opts.host):
        ap.error(f"--host {opts.host}: not a lab host name (lab1, lab2, ...)")
    if opts.inventory and not Path(opts.inventory).is_dir():
        ap.error(f"--inventory {opts.inventory}: not a directory")
    if opts.json_path and not Path(opts.json_path).resolve().parent.is_dir():
        ap.error(f"--json {opts.json_path}: its directory does not exist")
    opts.password = None
    if opts.password_file:
        try:
            opts.password = read_password(opts.password_file)
        except ConfigError as exc:
            ap.error(str(exc))
    return opts


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"


def ensure_host(name: str) -> lab.LabHost:
    """The lab host, booted (with lab1.. before it, as `lab.up` does) if it is not running."""
    found = next((h for h in lab.status() if h.name == name and h.state == "running"), None)
    if found:
        return found
    started = time.perf_counter()
    found = next(h for h in lab.up(int(name[3:])) if h.name == name)
    print(f"lab: {name} up in {time.perf_counter() - started:.1f}s", flush=True)
    return found


def hub_settings(name: str) -> list[str]:
    proc = lab.run_ssh(name, ["grep", "-E", "|".join(SETTINGS),
                              "/etc/jupyterhub/jupyterhub_config.py"])
    if proc.returncode > 1:
        return [f"(cannot read the hub's config: {proc.stderr.strip()})"]
    return [line.strip() for line in proc.stdout.splitlines()] or ["(none set: defaults)"]


def write_users(inv: Path, names: list[str], fields: dict[str, Any]) -> None:
    path = users_file(Inventory(inv))
    for i, name in enumerate(names):
        update_user(path, name, {"uid": FIRST_UID + i, **fields})


def stop_servers(url: str, names: list[str], password: str) -> list[str]:
    """Each user stops their own server (logged in as them); returns the problems."""
    from concurrent.futures import ThreadPoolExecutor

    def stop(name: str) -> str | None:
        client = HubClient(url, timeout=60)
        try:
            client.login(name, password)
            client.stop_server(name, wait=120)
        except Exception as exc:  # reported; the round still runs
            return f"{name}: {describe(exc)}"
        return None

    with ThreadPoolExecutor(8) as pool:
        return [p for p in pool.map(stop, names) if p]


def one_round(url: str, names: list[str], password: str) -> list[dict[str, Any]]:
    """All of ``names`` at once, from a barrier to a kernel answering 1+1."""
    start: list[float] = []
    barrier = threading.Barrier(len(names), action=lambda: start.append(time.perf_counter()))
    rows: list[dict[str, Any]] = [{} for _ in names]

    def user(i: int, name: str) -> None:
        client = HubClient(url, timeout=60)
        row: dict[str, Any] = {"user": name, "ok": False, "seconds": None, "steps": {},
                               "failed_step": None, "error": None, "reloads": 0}
        rows[i] = row
        steps = [  # each step gets the previous one's result (execute: the kernel's id)
            ("login", lambda _: client.login(name, password)),
            ("spawn", lambda _: client.start_server(name, wait=300)),
            ("lab", lambda _: client.open_lab(name)),
            ("kernel", lambda _: client.start_kernel(name)),
            ("execute", lambda kernel: client.execute(name, kernel, "1+1", wait=120)),
        ]
        barrier.wait()
        last, value = start[0], None
        for step, call in steps:
            try:
                try:
                    value = call(value)
                except HubError as exc:
                    # A connection reset before the hub answered (the lab's port forward,
                    # slirp4netns, has a short listen queue): the student presses reload,
                    # once. Counted and printed, never hidden.
                    if step != "login" or "Connection reset" not in str(exc):
                        raise
                    row["reloads"] += 1
                    time.sleep(1)
                    value = call(value)
            except Exception as exc:  # a failure is a result here
                row.update(failed_step=step, error=describe(exc))
                return
            now = time.perf_counter()
            row["steps"][step], last = round(now - last, 3), now
        if value != "2":
            row.update(failed_step="execute", error=f"1+1 gave {value!r}")
            return
        row.update(ok=True, seconds=round(last - start[0], 3))

    threads = [threading.Thread(target=user, args=(i, n)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return rows


def summary(n: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    times = [r["seconds"] for r in rows if r["ok"]]
    out: dict[str, Any] = {"n": n, "ok": len(times), "failed": n - len(times),
                           "reloads": sum(r.get("reloads", 0) for r in rows)}
    for key, p in (("p50_s", 50), ("p95_s", 95), ("max_s", 100)):
        out[key] = percentile(times, p)
    return {**out, "users": rows}


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    names = [f"class{i:02d}" for i in range(1, max(opts.counts) + 1)]
    password = opts.password or secrets.token_urlsafe(18)
    try:
        host = ensure_host(opts.host)
        fields = {"state": "present", "password_hash": hash_password(password)}
    except (ConfigError, lab.LabError) as exc:
        sys.exit(f"class_login: {exc}")
    url = opts.url or host.hub_url
    result: dict[str, Any] = {"host": opts.host, "url": url, "rounds": []}
    with tempfile.TemporaryDirectory(prefix="jhprov-class-") as d:
        tmp = Path(d)
        if opts.inventory:
            inv = Path(shutil.copytree(opts.inventory, tmp / "inventory", symlinks=True))
        else:
            inv = inventory(tmp)
            users_file(Inventory(inv)).write_text("users: []\n")  # the class users only
        written = False
        try:
            write_users(inv, names, fields)
            written = True
            wall, _ = run(["provision", "--hosts", opts.host, "--inventory", str(inv)],
                          tmp / "provision.json")
            result.update(provision_s=round(wall, 1), hub_settings=hub_settings(opts.host))
            print(f"provisioned {opts.host} with {len(names)} class users in {wall:.1f}s; "
                  f"hub {url}; its spawn settings:")
            for line in result["hub_settings"]:
                print(f"  {line}")
            print(f"{'N':>4} {'ok':>4} {'failed':>6} {'p50 s':>8} {'p95 s':>8} {'max s':>8}"
                  f" {'reloads':>8}")
            for n in opts.counts:
                for problem in stop_servers(url, names, password):
                    print(f"  (stopping servers first) {problem}")
                cpu_before, client_before = sample_cpu(opts.host, names[:n]), os.times()
                rounds = one_round(url, names[:n], password)
                client = os.times()
                cpu_after = sample_cpu(opts.host, names[:n])
                row = summary(n, rounds)
                row["cpu_s_per_spawn"] = cpu_per_spawn(
                    cpu_before, cpu_after, n, client.user + client.system
                    - client_before.user - client_before.system)
                result["rounds"].append(row)
                cells = [f"{row[k]:8.1f}" if row[k] is not None else f"{'-':>8}"
                         for k in ("p50_s", "p95_s", "max_s")]
                print(f"{n:>4} {row['ok']:>4} {row['failed']:>6} {' '.join(cells)} "
                      f"{row['reloads']:>8}", flush=True)
                print(f"       {cpu_line(row['cpu_s_per_spawn'])}", flush=True)
                for r in [r for r in row["users"] if not r["ok"]][:3]:
                    print(f"       {r['user']} at {r['failed_step']}: {r['error']}")
        except ConfigError as exc:
            sys.exit(f"class_login: {exc}")
        finally:
            if written and not opts.keep:
                write_users(inv, names, {"state": "absent", "password_hash": None})
                proc = subprocess.run([sys.executable, "-m", "invoke", "provision", "--hosts",
                                       opts.host, "--inventory", str(inv), "--roles", "users"],
                                      cwd=REPO, capture_output=True, text=True)
                if proc.returncode:
                    print(f"class_login: removing the class users failed:\n"
                          f"{proc.stdout[-2000:]}{proc.stderr[-1000:]}", file=sys.stderr)
            elif written and not opts.password:
                keep_password(password)
    if opts.json_path:
        Path(opts.json_path).write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {opts.json_path}")


def keep_password(password: str) -> None:
    """--keep with a random password: written once to a 0600 file, to log in later."""
    out = REPO / ".provision" / "class-login.pw"
    out.parent.mkdir(exist_ok=True)
    out.unlink(missing_ok=True)
    with os.fdopen(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
        fh.write(password + "\n")
    print(f"class users kept; their password is in {out} (0600)")


if __name__ == "__main__":
    main()
