"""The project's own exceptions: every failure names what, where and why."""

from __future__ import annotations


class ProvisionError(Exception):
    """A step failed on a host: carries host, step, command, exit code and stderr."""

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        step: str | None = None,
        command: str | None = None,
        rc: int | None = None,
        stderr: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.host = host
        self.step = step
        self.command = command
        self.rc = rc
        self.stderr = stderr

    def __str__(self) -> str:
        parts = [self.message]
        if self.command:
            parts.append(f"command: {self.command}")
        if self.rc is not None:
            parts.append(f"exit code: {self.rc}")
        if self.stderr:
            parts.append("stderr: " + self.stderr.strip()[-2000:])
        return "\n".join(parts)

    def as_dict(self) -> dict:
        return {
            "message": self.message,
            "command": self.command,
            "rc": self.rc,
            "stderr": (self.stderr or "")[-4000:],
        }


class UnreachableError(ProvisionError):
    """The host could not be reached or authenticated over SSH."""


class ConfigError(Exception):
    """The inventory or the command line is wrong; nothing was touched.

    ``problems`` lists every problem found, each naming its file and key, so that a
    sysadmin fixes them all in one go instead of one per run.
    """

    def __init__(self, problems: list[str] | str) -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.problems = problems
        super().__init__("\n".join(problems))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        return f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
