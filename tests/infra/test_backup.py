"""Backups (backup_repository set): the timer runs, the last successful backup is younger
than twice the schedule's interval, and `restic check` finds the repository sound.

Collected only for hosts with a backup_repository (conftest deselects the others)."""

from __future__ import annotations

import json

import pytest

from provision import backupspec as bs

pytestmark = pytest.mark.only_if.with_args(lambda hv: bs.repository(hv) is not None)
# the timer's RandomizedDelaySec, on top of the interval
SLACK = 300


def program(host, *args: str) -> dict:
    res = host.run("python3 -I %s %s", bs.PROGRAM, " ".join(args))
    assert res.stdout.strip(), f"{bs.PROGRAM} {args[0]} printed nothing: {res.stderr[-300:]}"
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_backup_timer_enabled_and_waiting(host):
    timer = host.service(bs.TIMER)
    assert timer.is_enabled, f"{bs.TIMER} is not enabled"
    assert timer.is_running, f"{bs.TIMER} is not active: no backup will run"


def test_repository_password_root_only(host):
    f = host.file(bs.PASSWORD)
    assert f.exists, f"{bs.PASSWORD} missing"
    assert (f.user, f.group, f.mode) == ("root", "root", 0o600), (
        f"{bs.PASSWORD}: expected root:root 0600, found {f.user}:{f.group} {f.mode:04o}")


def test_last_backup_is_recent(host):
    status = program(host, "status")
    ok = status.get("last_ok")
    assert ok, ("no backup has succeeded yet" + (f"; the last one failed: "
                f"{status['last']['error']}" if status.get("last") else ""))
    interval = status.get("interval") or 86400
    age = status["now"] - ok["started"] - ok.get("seconds", 0)
    assert age < 2 * interval + SLACK, (
        f"the last successful backup is {age // 3600} h old (schedule: every "
        f"{interval // 3600} h)" + (f"; the last one failed: {status['last']['error']}"
                                   if status.get("last") and not status["last"]["ok"] else ""))


def test_restic_check_passes(host):
    res = program(host, "check")
    assert res["ok"], f"restic check: {res.get('output', '')[-400:]}"
