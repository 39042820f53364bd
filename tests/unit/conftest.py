"""Unit tests: no SSH, nothing changed on this machine, the whole suite in seconds.

Helpers live beside the tests (``hostmodel``: modelled hosts answering fact requests;
``fakeconfig``: a recording ``get_config()``), importable whatever pytest's import mode.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from provision.facts import COLLECTOR_ARGV
from provision.transport import LocalTransport

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def read_only_local_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one command a unit test may run on this machine is the read-only collector."""
    real = LocalTransport._exec

    def guarded(self: LocalTransport, command: str, stdin: bytes | None,
                timeout: float | None):
        if command != shlex.join(COLLECTOR_ARGV):
            raise AssertionError(f"a unit test tried to run {command!r} on this machine")
        return real(self, command, stdin, timeout)

    monkeypatch.setattr(LocalTransport, "_exec", guarded)
