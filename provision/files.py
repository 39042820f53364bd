"""Writing the workstation's own files (reports, users.yml) safely.

A file is written to a temporary file created exclusively (``O_EXCL``, an unpredictable
name, mode 0600 from the start) beside the target, then renamed over it: a symlink or a
world-readable file planted at a predictable temp name is never followed or reused, and
a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import ConfigError


def write_private(path: str | Path, data: str | bytes, *, what: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically; ``what`` names it in an error."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what}: {path} is a directory, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"{what}: cannot write {path}: {exc.strerror}") from None
