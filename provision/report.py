"""Results of a run: per-step records, per-host counts, the recap and the JSON report."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class StepResult:
    role: str
    name: str
    status: str  # ok | changed | failed | skipped
    diff: str = ""
    commands: list[str] = field(default_factory=list)
    duration: float = 0.0
    error: dict | None = None


@dataclass
class HostReport:
    name: str
    steps: list[StepResult] = field(default_factory=list)
    unreachable: bool = False
    error: str | None = None
    round_trips: int = 0
    duration: float = 0.0
    handlers: list[str] = field(default_factory=list)
    #: what a step or handler wants the sysadmin to know (the host is not failed by it)
    notes: list[str] = field(default_factory=list)
    #: bytes of artifacts sent to the host (provision_artifacts: push)
    pushed_bytes: int = 0

    def count(self, status: str) -> int:
        return sum(1 for s in self.steps if s.status == status)

    @property
    def failed(self) -> bool:
        return self.unreachable or self.error is not None or self.count("failed") > 0

    @property
    def reason(self) -> str | None:
        """Why the host failed, in one line (the failed step's message, or the host's)."""
        if not self.failed:
            return None
        step = next((s for s in self.steps if s.status == "failed" and s.error), None)
        text = (step.error.get("message") if step else None) or self.error or "failed"
        return str(text).splitlines()[0]

    def as_dict(self) -> dict:
        return {
            "reason": self.reason,
            "ok": self.count("ok"),
            "changed": self.count("changed"),
            "failed": self.count("failed"),
            "unreachable": self.unreachable,
            "error": self.error,
            "round_trips": self.round_trips,
            "pushed_bytes": self.pushed_bytes,
            "duration": round(self.duration, 3),
            "handlers": self.handlers,
            "notes": self.notes,
            "steps": [asdict(s) for s in self.steps],
        }


@dataclass
class RunReport:
    hosts: dict[str, HostReport]
    check: bool = False
    started: float = field(default_factory=time.time)
    duration: float = 0.0
    command: str = "provision"

    @property
    def failed_hosts(self) -> list[str]:
        return [n for n, h in self.hosts.items() if h.failed]

    @property
    def changed(self) -> int:
        return sum(h.count("changed") for h in self.hosts.values())

    def as_dict(self) -> dict:
        return {
            "command": self.command,
            "check": self.check,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "duration": round(self.duration, 3),
            "failed_hosts": self.failed_hosts,
            "hosts": {n: h.as_dict() for n, h in self.hosts.items()},
        }

    def write(self, path: str | Path) -> None:
        """Write the report atomically (0600: it may name users and paths)."""
        from .files import write_private

        write_private(path, json.dumps(self.as_dict(), indent=2) + "\n", what="--json")
