"""Benchmark: a class logging in at once, N users on one hub, until each has a working kernel.

For each N of --counts, every class user's server is stopped first, then N threads start
together (a barrier) and each one logs in, starts its server (waiting up to 300 s), loads
JupyterLab, starts a kernel and runs ``1+1``. Prints per N how many got ``2`` back, the
p50/p95/max seconds from the barrier to that answer (nearest rank), the first failures
(step, exception class, first line), and the hub's spawn settings it ran with (lines of
/etc/jupyterhub/jupyterhub_config.py on the host). A login whose connection is reset
before the hub answers (the lab's port forward has a short listen queue) is tried once
more, as a student would reload the page; the `reloads` column counts those.

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
            "start_timeout", "http_timeout")


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
                row = summary(n, one_round(url, names[:n], password))
                result["rounds"].append(row)
                cells = [f"{row[k]:8.1f}" if row[k] is not None else f"{'-':>8}"
                         for k in ("p50_s", "p95_s", "max_s")]
                print(f"{n:>4} {row['ok']:>4} {row['failed']:>6} {' '.join(cells)} "
                      f"{row['reloads']:>8}", flush=True)
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
