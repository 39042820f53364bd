"""A transport that records commands and answers from a function (the unit tests' host)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from provision.transport import BatchOp, Result, Transport


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

    def run_batch(self, ops: list[BatchOp], *, step: str | None = None) -> list[Result]:
        """One round trip, as on a host; each command recorded and answered on its own
        (BATCH_PROGRAM itself runs for real in test_batch.py)."""
        before = self.round_trips
        results = []
        for op in ops:
            r = self.run(op.argv, stdin=op.stdin, check=False, step=step)
            results.append(Result(op.display or r.command, r.rc, r.out, r.err))
            if not r.ok:
                break
        self.round_trips = before + 1
        return results
