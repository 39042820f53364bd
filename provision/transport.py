"""Transports: the only code that talks to a host.

``run(argv)`` executes an argv list (quoted with ``shlex.join``, never a formatted shell
string) and returns a ``Result``; ``put(content, path, ...)`` replaces a file atomically:
the bytes go to a temp file in the same directory, owner and mode are set, an optional
validation command checks the temp file, and only then is it renamed over the old one. A
broken render therefore never replaces a working file, and an interrupted run leaves either
the old file or the new one.

Three implementations: ``SSHTransport`` (Fabric; one connection per host, opened once and
reused), ``LocalTransport`` (this machine) and ``FakeTransport`` (unit tests).
"""

from __future__ import annotations

import base64
import json
import logging
import select
import shlex
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ProvisionError, UnreachableError

# Runs as `sh -c PUT_SCRIPT sh DEST MODE OWNER GROUP [VALIDATE ARGV...]`, content on stdin.
# In the validate argv, the word {} stands for the temp file.
PUT_SCRIPT = r"""set -eu
dest=$1 mode=$2 owner=$3 group=$4
shift 4
dir=$(dirname -- "$dest")
base=$(basename -- "$dest")
tmp=$(mktemp --suffix="-$base" "$dir/.jhprov.XXXXXXXX")
trap 'rm -f -- "$tmp"' EXIT INT TERM HUP
cat > "$tmp"
chown -- "$owner:$group" "$tmp"
chmod -- "$mode" "$tmp"
if [ $# -gt 0 ]; then
  n=$#
  for a in "$@"; do
    [ "$a" = "{}" ] && a=$tmp
    set -- "$@" "$a"
  done
  shift "$n"
  "$@"
fi
sync -- "$tmp" 2>/dev/null || true
mv -f -- "$tmp" "$dest"
trap - EXIT INT TERM HUP
"""


# Runs as `python3 -c BATCH_PROGRAM`, the batch as JSON on stdin: a list of {"argv": [...],
# "stdin": base64 or null, "timeout": seconds or null}. Runs them in order, each with its
# own stdin (or none), and prints one JSON line per command as it ends: its index, exit
# code, stdout, stderr (each cut to its last 64 KiB) and seconds. Stops after the first one
# that fails. What a command gets on stdin never appears in any command line.
BATCH_PROGRAM = r"""import base64, json, subprocess, sys, time
ops = json.loads(sys.stdin.buffer.read())
for i, op in enumerate(ops):
    start = time.monotonic()
    data = op.get("stdin")
    try:
        p = subprocess.run(op["argv"], input=None if data is None else base64.b64decode(data),
                           stdin=subprocess.DEVNULL if data is None else None,
                           capture_output=True, timeout=op.get("timeout"))
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out = 124, exc.stdout or b""
        err = (exc.stderr or b"") + b"timed out after %ds" % op["timeout"]
    except OSError as exc:
        rc, out, err = 127, b"", str(exc).encode()
    print(json.dumps({"i": i, "rc": rc, "out": out[-65536:].decode("utf-8", "replace"),
                      "err": err[-65536:].decode("utf-8", "replace"),
                      "t": round(time.monotonic() - start, 4)}), flush=True)
    if rc != 0:
        break
"""


@dataclass
class BatchOp:
    """One command of a batch: argv, its stdin, the text shown for it, a timeout."""

    argv: Sequence[str]
    stdin: bytes | None = None
    display: str | None = None
    timeout: float | None = None


@dataclass
class Result:
    """What a remote command did."""

    command: str
    rc: int
    out: str
    err: str
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.rc == 0


class Transport(ABC):
    """Run argv lists and upload files on one host."""

    name: str
    #: commands that crossed the wire (round trips), for the benchmark and tests
    round_trips: int

    @abstractmethod
    def _exec(self, command: str, stdin: bytes | None, timeout: float | None) -> Result:
        """Run one shell command line on the host."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection."""

    def _ensure_connected(self) -> None:  # noqa: B027 - optional hook
        """Open the connection if the transport has one (before sudo is decided)."""

    @property
    def needs_sudo(self) -> bool:
        return False

    def command_line(self, argv: Sequence[str]) -> str:
        """The exact command line sent for ``argv`` (sudo-wrapped when not root)."""
        argv = [str(a) for a in argv]
        if self.needs_sudo:
            argv = ["sudo", "-n", "-H", "--", *argv]
        return shlex.join(argv)

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
        step: str | None = None,
        display: str | None = None,
    ) -> Result:
        """Run ``argv``; with ``check``, a non-zero exit raises ``ProvisionError``.

        ``display`` replaces the command in error messages (for commands whose argv is
        long or carries content that must not be echoed).
        """
        self._ensure_connected()
        command = self.command_line(argv)
        self.round_trips += 1
        try:
            result = self._exec(command, stdin, timeout)
        except ProvisionError as exc:
            exc.command = display or command
            exc.step = exc.step or step
            raise
        if check and result.rc != 0:
            raise self.failed(result, step=step, command=display or command)
        return result

    def failed(self, result: Result, *, step: str | None, command: str | None = None
               ) -> ProvisionError:
        """The error for a command that exited non-zero (``run``'s, and a batch's)."""
        return ProvisionError(f"command failed on {self.name}", host=self.name, step=step,
                              command=command or result.command, rc=result.rc,
                              stderr=result.err or result.out)

    def run_batch(self, ops: Sequence[BatchOp], *, step: str | None = None) -> list[Result]:
        """Run ``ops`` in order on the host in one round trip (``BATCH_PROGRAM``),
        stopping after the first that fails; one ``Result`` per command that ran, each as
        precise as ``run``'s (its own exit code, stdout and stderr)."""
        payload = json.dumps([
            {"argv": [str(a) for a in op.argv], "timeout": op.timeout,
             "stdin": None if op.stdin is None else base64.b64encode(op.stdin).decode()}
            for op in ops]).encode()
        timeouts = [op.timeout for op in ops]
        total = sum(timeouts) + 60 if all(timeouts) else None  # type: ignore[arg-type]
        batch = self.run(["python3", "-c", BATCH_PROGRAM], stdin=payload, timeout=total,
                         check=False, step=step, display=f"a batch of {len(ops)} commands")
        results = []
        for line in batch.out.splitlines():
            try:
                r = json.loads(line)
                op = ops[int(r["i"])]
                results.append(Result(op.display or shlex.join([str(a) for a in op.argv]),
                                      int(r["rc"]), str(r["out"]), str(r["err"]),
                                      float(r["t"])))
            except (ValueError, KeyError, IndexError, TypeError):
                continue
        if len(results) < len(ops) and (not results or results[-1].ok):
            raise ProvisionError(
                f"the batch of {len(ops)} commands stopped after {len(results)} on "
                f"{self.name} (python3 on the host: exit code {batch.rc})", host=self.name,
                step=step, command="python3 -c BATCH_PROGRAM", rc=batch.rc,
                stderr=batch.err or batch.out)
        return results

    @staticmethod
    def put_argv(path: str, *, mode: str, owner: str, group: str,
                 validate: Sequence[str] | None, run_as: str | None) -> tuple[list[str], str]:
        """The command ``put`` runs (its content goes on stdin), and how it is shown."""
        argv = ["sh", "-c", PUT_SCRIPT, "sh", path, mode, owner, group, *(validate or ())]
        if run_as:
            argv = ["runuser", "-u", run_as, "--", *argv]
        shown = f"put {path} (mode {mode}, {owner}:{group}"
        shown += f", validated by {shlex.join(validate)})" if validate else ")"
        return argv, shown

    def put(
        self,
        content: bytes,
        path: str,
        *,
        mode: str = "0644",
        owner: str = "root",
        group: str = "root",
        validate: Sequence[str] | None = None,
        step: str | None = None,
        run_as: str | None = None,
    ) -> Result:
        """Replace ``path`` atomically with ``content`` (see module docstring).

        ``run_as``: write as that user (a file in a user's home: a symlink the user planted
        then cannot make root write elsewhere)."""
        argv, shown = self.put_argv(path, mode=mode, owner=owner, group=group,
                                    validate=validate, run_as=run_as)
        return self.run(argv, stdin=content, step=step, display=shown)


STDIN_BLOCK = 1 << 18  # bytes of stdin handed to the channel at a time
EOF_WAIT = 5.0  # seconds a finished command's output may still take to arrive


class SSHTransport(Transport):
    """One Fabric connection per host, opened once and reused for every command.

    Host keys are checked: against ``~/.ssh/known_hosts`` and, when the inventory names one,
    ``provision_known_hosts_file``. An unknown or changed key refuses the connection unless
    the inventory explicitly sets ``ansible_host_key_checking: false`` for that host.
    """

    def __init__(
        self,
        name: str,
        *,
        address: str | None = None,
        port: int | None = None,
        user: str | None = None,
        key_file: str | None = None,
        known_hosts_file: str | None = None,
        host_key_checking: bool = True,
        connect_timeout: float = 10.0,
        proxy_jump: str | None = None,
    ) -> None:
        self.name = name
        self._proxy_jump = proxy_jump
        self.round_trips = 0
        self._address = address or name
        self._port = port
        self._user = user
        self._key_file = key_file
        self._known_hosts_file = known_hosts_file
        self._host_key_checking = host_key_checking
        self._connect_timeout = connect_timeout
        self._conn = None
        self._user_effective: str | None = None

    def _check_host_keys(self, conn, policy) -> None:
        """Fabric defaults to AutoAddPolicy (trust on first use, silently); we do not."""
        conn.client.set_missing_host_key_policy(policy)
        if self._known_hosts_file:
            path = Path(self._known_hosts_file).expanduser()
            if not path.is_file():
                raise UnreachableError(
                    f"{self.name}: known_hosts file {path} does not exist", host=self.name
                )
            conn.client.load_host_keys(str(path))

    def connect(self) -> None:
        from fabric import Connection
        from paramiko import AuthenticationException, RejectPolicy, SSHException, WarningPolicy

        # paramiko logs a failed handshake (a port that accepts TCP but never speaks SSH)
        # with a traceback from its transport thread; the exception it raises here says the
        # same in one line, which the recap shows.
        quiet = logging.getLogger("paramiko")
        if not quiet.handlers:
            quiet.addHandler(logging.NullHandler())
            quiet.propagate = False

        kwargs: dict = {}
        if self._key_file:
            kwargs["key_filename"] = [self._key_file]
        conn = Connection(
            host=self._address,
            user=self._user,
            port=self._port,
            connect_timeout=self._connect_timeout,
            connect_kwargs={**kwargs, "banner_timeout": self._connect_timeout,
                            "auth_timeout": self._connect_timeout * 3},
        )
        # ansible_ssh_common_args: -o ProxyJump=... becomes a Fabric gateway, whose host key
        # is checked exactly like the target's (~/.ssh/config and known_hosts apply to both).
        if self._proxy_jump:
            conn.gateway = Connection(self._proxy_jump, connect_timeout=self._connect_timeout)
        for c in (conn, conn.gateway) if conn.gateway else (conn,):
            self._check_host_keys(c, RejectPolicy() if self._host_key_checking
                                  else WarningPolicy())
        where = f"{conn.user}@{conn.host}:{conn.port}"
        try:
            if not conn.gateway:
                # Our own socket, with Nagle off: each command is a few small packets, and
                # Nagle plus delayed ACKs would add ~40 ms to every round trip.
                sock = socket.create_connection((conn.host, conn.port),
                                                timeout=self._connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.connect_kwargs["sock"] = sock
            conn.open()
        except AuthenticationException as exc:
            raise UnreachableError(
                f"{self.name}: SSH authentication failed for {where}: {exc}", host=self.name
            ) from exc
        except SSHException as exc:
            msg = str(exc)
            if "known_hosts" in msg or "host key" in msg.lower():
                msg = (f"host key of {where} is not known ({msg}); verify it and add it to "
                       "known_hosts (or, for throwaway hosts only, set "
                       "ansible_host_key_checking: false in the inventory)")
            raise UnreachableError(f"{self.name}: {msg}", host=self.name) from exc
        except (TimeoutError, OSError, EOFError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise UnreachableError(
                f"{self.name}: cannot connect to {where}: {reason}", host=self.name
            ) from exc
        transport = conn.client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        self._conn = conn
        self._user_effective = conn.user

    @property
    def needs_sudo(self) -> bool:
        return (self._user_effective or "root") != "root"

    def _ensure_connected(self) -> None:
        if self._conn is None:
            self.connect()

    def _exec(self, command: str, stdin: bytes | None, timeout: float | None) -> Result:
        start = time.monotonic()
        try:
            transport = self._conn.client.get_transport()
            if transport is None or not transport.is_active():
                raise EOFError("connection closed")
            chan = transport.open_session(timeout=self._connect_timeout)
            chan.exec_command(command)
            if stdin:
                # In blocks: sendall() of one large buffer copies what is left of it on
                # every packet (measured: a 60 MB push cost 26 s of CPU).
                view = memoryview(stdin)
                for at in range(0, len(view), STDIN_BLOCK):
                    chan.sendall(bytes(view[at:at + STDIN_BLOCK]))
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = start + timeout if timeout else None
            exited = None
            while True:
                if chan.recv_ready():
                    out += chan.recv(65536)
                    continue
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    continue
                # sshd may send the exit status before the last of the output (it reaps
                # the command, then drains its pipes): done at EOF, not at the status (seen
                # on a loaded lab: a collector's JSON cut short). A command that leaves a
                # process holding its output open gets EOF_WAIT seconds more.
                if chan.exit_status_ready():
                    exited = exited or time.monotonic()
                    if chan.eof_received or chan.closed or \
                            time.monotonic() - exited > EOF_WAIT:
                        break
                if deadline and time.monotonic() > deadline:
                    chan.close()
                    raise ProvisionError(
                        f"command timed out after {timeout:.0f}s on {self.name}",
                        host=self.name, command=command,
                    )
                if not transport.is_active():
                    raise EOFError("connection lost")
                # The channel's wake-up pipe can stay readable with nothing left to read
                # (paramiko ORs stdout's and stderr's events): measured, ten hosts waiting
                # at once spun ~700 times each. Nothing new after a wake-up: nap 5 ms.
                if select.select([chan], [], [], 1.0)[0] and not (
                        chan.recv_ready() or chan.recv_stderr_ready()
                        or chan.exit_status_ready()):
                    time.sleep(0.005)
            # Drain what arrived together with the exit status.
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            rc = chan.recv_exit_status()
            chan.close()
            if rc == -1:  # the channel closed without an exit status: the host went away
                raise EOFError("the session ended without an exit status")
        except ProvisionError:
            raise
        except Exception as exc:  # paramiko raises many kinds: all mean the host is gone
            raise UnreachableError(
                f"{self.name}: connection lost while running a command: "
                f"{exc or type(exc).__name__}",
                host=self.name, command=command,
            ) from exc
        return Result(command, rc, out.decode("utf-8", "replace"),
                      err.decode("utf-8", "replace"), time.monotonic() - start)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class LocalTransport(Transport):
    """This machine, through subprocess (as the current user)."""

    def __init__(self, name: str = "localhost") -> None:
        self.name = name
        self.round_trips = 0

    def _exec(self, command: str, stdin: bytes | None, timeout: float | None) -> Result:
        start = time.monotonic()
        try:
            proc = subprocess.run(  # noqa: S602 - command is shlex.join of an argv list
                command, shell=True, input=stdin or b"", capture_output=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise ProvisionError(f"command timed out after {timeout}s", host=self.name,
                                 command=command) from exc
        return Result(command, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                      proc.stderr.decode("utf-8", "replace"), time.monotonic() - start)
