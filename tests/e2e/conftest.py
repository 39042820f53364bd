"""Session fixtures for the end-to-end tests: real lab hosts (systemd-nspawn, see
docs/lab.md).

`lab_hosts` boots lab1 and lab2 through the Python API. Hosts that were already running
are reused and left running; hosts this session booted are taken down at its end,
unless LAB_KEEP=1. If the lab cannot boot, the fixture raises: every test that uses it
errors, loudly. Nothing is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from provision import lab

from e2e_support import OFFLINE_HOST

LAB_COUNT = 2


@pytest.fixture(scope="session")
def lab_hosts() -> Iterator[list[lab.LabHost]]:
    """[lab1, lab2] as LabHost entries, each `running` (systemd says so over SSH)."""
    before = {h.name for h in lab.status() if h.state == "running"}
    hosts = lab.up(LAB_COUNT)
    booted = [h.name for h in hosts if h.name not in before]
    yield hosts
    if booted and os.environ.get("LAB_KEEP") != "1":
        lab.down(booted)
        left = {name: lab.leftovers(name) for name in booted}
        if any(left.values()):
            raise AssertionError(f"lab.down left traces behind: {left}")


def _own_host(name: str) -> Iterator[lab.LabHost]:
    """``name``, booted if it is not running, and taken down at the end of the module only
    if booted here (so the next module that asks gets a fresh one)."""
    before = {h.name for h in lab.status() if h.state == "running"}
    (host,) = lab.up(names=[name])
    yield host
    if name not in before and os.environ.get("LAB_KEEP") != "1":
        lab.down([name])
        left = lab.leftovers(name)
        if left:
            raise AssertionError(f"lab.down left traces behind: {left}")


@pytest.fixture(scope="module")
def lab3() -> Iterator[lab.LabHost]:
    """lab3, for a module that needs a host of its own (marked ``lab3``): scripts/test.sh
    runs those modules beside the lab1/lab2 ones."""
    yield from _own_host("lab3")


@pytest.fixture(scope="module")
def lab4() -> Iterator[lab.LabHost]:
    """lab4, for the modules marked ``lab4`` (upgrades: long, so a session of their own)."""
    yield from _own_host("lab4")


@pytest.fixture(scope="module")
def offline_host() -> Iterator[lab.LabHost]:
    """OFFLINE_HOST, booted fresh with no route out (``lab.up --offline``), taken down at
    the end of the module (marked ``lab4``: it runs in that session, after or before the
    upgrade module, never beside it)."""
    lab.down([OFFLINE_HOST])  # fresh: a host left by another run may be online
    (host,) = lab.up(names=[OFFLINE_HOST], offline=True)
    yield host
    if os.environ.get("LAB_KEEP") != "1":
        lab.down([OFFLINE_HOST])
        left = lab.leftovers(OFFLINE_HOST)
        if left:
            raise AssertionError(f"lab.down left traces behind: {left}")
