"""A transport that records commands and answers from a function (the unit tests' host)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from provision.transport import Result, Transport


@dataclass
class FakeTransport(Transport):
    """Records commands; answers from ``responder(argv, stdin) -> (rc, out, err)``."""

    name: str = "fake"
    responder: Callable[[list[str], bytes | None], tuple[int, str, str]] | None = None
    calls: list[tuple[list[str], bytes | None]] = field(default_factory=list)
    round_trips: int = 0

    def _exec(self, command: str, stdin: bytes | None, timeout: float | None) -> Result:
        argv = shlex.split(command)
        self.calls.append((argv, stdin))
        rc, out, err = (self.responder(argv, stdin) if self.responder else (0, "", ""))
        return Result(command, rc, out, err)
