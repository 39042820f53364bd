"""The lab's own error type.

Every expected failure (not root, a missing tool, a port in use, a host that does not
boot) is raised as `LabError` with a message that says what to do; `tasks.py` turns it
into `invoke.Exit`, so users see the message and no traceback.
"""

from __future__ import annotations


class LabError(Exception):
    """An expected failure of a lab operation; `str(err)` is meant for the user."""
