"""One host's run as handlers and the engine's helpers see it: the host, its variables,
its transport, the run's mode and the host's report.

The runner makes one per host (its own subclass applies the roles' actions); a role's
handler, ``provision.artifacts`` and ``provision.envs`` act on the host through it. It
lives below the runner so that what the runner imports can name it without importing
the runner back.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from .display import Display
from .inventory import Host
from .report import HostReport
from .transport import Result, Transport


class HostRun:
    """One host's run: what handlers get to act on the host."""

    def __init__(self, host: Host, transport: Transport, *, check: bool, display: Display,
                 cancel: threading.Event) -> None:
        self.host = host
        self.vars: dict[str, Any] = host.vars
        self.transport = transport
        self.check = check
        self.display = display
        self.cancel = cancel
        self.report = HostReport(host.name)
        #: handlers due in this run (a handler may skip work another one will do)
        self.notified: set[str] = set()
        #: what provision.artifacts read from the host (its Python, its apt sources)
        self.artifact_info: dict[tuple[str, str], dict] = {}

    def run(self, argv: Sequence[str], **kw: Any) -> Result:
        return self.transport.run(argv, **kw)

    def log(self, text: str) -> None:
        self.display.host_line(self.host.name, "info", text)

    def note(self, text: str) -> None:
        """Tell the sysadmin something about this host (shown now and in the recap, kept
        in the JSON report); the host is not failed by it."""
        if text not in self.report.notes:
            self.report.notes.append(text)
            self.display.host_line(self.host.name, "note", text)
