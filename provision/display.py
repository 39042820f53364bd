"""What the sysadmin sees: one line per changed/failed step, diffs, progress, the recap."""

from __future__ import annotations

import os
import sys
import threading
from typing import TextIO

from .report import HostReport, RunReport, StepResult

COLORS = {"ok": "32", "changed": "33", "failed": "31", "unreachable": "31", "skipped": "36",
          "note": "36",
          "diff+": "32", "diff-": "31", "dim": "2"}


class Display:
    """Thread-safe printer shared by the host workers."""

    def __init__(self, stream: TextIO | None = None, *, verbose: bool = False,
                 diff: bool = False, color: bool | None = None, width: int = 0) -> None:
        self.stream = stream or sys.stdout
        self.verbose = verbose
        self.diff = diff
        if color is None:
            color = self.stream.isatty() and "NO_COLOR" not in os.environ
        self.color = color
        self.width = width
        self._lock = threading.Lock()

    def _c(self, key: str, text: str) -> str:
        return f"\033[{COLORS[key]}m{text}\033[0m" if self.color else text

    def line(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def host_line(self, host: str, status: str, text: str) -> None:
        label = f"{status:<9}"
        self.line(f"{host:<{self.width}}  {self._c(status, label)} {text}")

    def step(self, host: str, result: StepResult, check: bool) -> None:
        if result.status == "ok" and not self.verbose:
            return
        status = result.status
        text = f"{result.role}: {result.name}"
        if check and status == "changed":
            text += "  (would change)"
        if result.duration >= 1:
            text += f"  [{result.duration:.1f}s]"
        self.host_line(host, status, text)
        if result.status == "failed" and result.error:
            for ln in str(result.error.get("message", "")).splitlines():
                self.line(f"    {ln}")
            if result.error.get("command"):
                self.line(f"    command: {result.error['command']}")
            if result.error.get("rc") is not None:
                self.line(f"    exit code: {result.error['rc']}")
            for ln in (result.error.get("stderr") or "").strip().splitlines()[-15:]:
                self.line(f"    | {ln}")
        if result.diff and (status == "failed" or (status == "changed" and
                                                   (self.diff or check))):
            for ln in result.diff.splitlines():
                key = ("diff+" if ln.startswith("+") else "diff-" if ln.startswith("-")
                       else "dim")
                self.line("    " + self._c(key, ln))

    def progress(self, host: str, what: str, seconds: float) -> None:
        self.host_line(host, "running", f"{what}  ({seconds:.0f}s so far)")

    def unreachable(self, host: str, message: str) -> None:
        self.host_line(host, "unreachable", message)

    def host_failed(self, host: str, message: str) -> None:
        self.host_line(host, "failed", message)

    def recap(self, report: RunReport) -> None:
        title = "RECAP (check mode: nothing was changed)" if report.check else "RECAP"
        self.line("")
        self.line(title)
        for name, h in report.hosts.items():
            self.line(self._recap_line(name, h))
        total_changed = report.changed
        verb = "would change" if report.check else "changed"
        failed = report.failed_hosts
        summary = (f"{len(report.hosts)} host(s), {total_changed} step(s) {verb}, "
                   f"{len(failed)} failed, in {report.duration:.1f}s")
        if not failed and total_changed == 0:
            summary += " - nothing to do, every host is as the inventory says"
        self.line(summary)

    def _recap_line(self, name: str, h: HostReport) -> str:
        counts = [
            self._c("ok", f"ok={h.count('ok')}"),
            self._c("changed", f"changed={h.count('changed')}") if h.count("changed")
            else f"changed={h.count('changed')}",
            self._c("failed", f"failed={h.count('failed')}") if h.count("failed")
            else f"failed={h.count('failed')}",
            self._c("unreachable", "unreachable=1") if h.unreachable else "unreachable=0",
        ]
        line = f"  {name:<{self.width}}  " + "  ".join(counts) + f"  ({h.duration:.1f}s)"
        if h.error:
            line += f"\n      {h.error.splitlines()[0]}"
        for note in h.notes:
            line += f"\n      note: {note}"
        return line
