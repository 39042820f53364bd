"""SSHTransport reading a command's output from its channel: every byte, even when sshd
sends the exit status before the last of the output (as it may: it reaps the command,
then drains its pipes). The channel here is scripted; its wake-up fd is a real pipe, so
the transport's select() works as with paramiko's."""

from __future__ import annotations

import os
import threading
import time

from provision import transport as transport_module
from provision.transport import SSHTransport


class ScriptedChannel:
    """Delivers ``events`` ((delay, kind, payload)) from a thread, like paramiko's
    transport thread filling a Channel's buffers."""

    def __init__(self, events: list[tuple[float, str, bytes | int]]) -> None:
        self.out, self.err = bytearray(), bytearray()
        self.status: int | None = None
        self.eof_received = self.closed = False
        self._r, self._w = os.pipe()
        self._lock = threading.Lock()
        self._events = events

    # what SSHTransport calls
    def exec_command(self, command: str) -> None:
        threading.Thread(target=self._play, daemon=True).start()

    def sendall(self, data: bytes) -> None:
        pass

    def shutdown_write(self) -> None:
        pass

    def fileno(self) -> int:
        return self._r

    def recv_ready(self) -> bool:
        with self._lock:
            return bool(self.out)

    def recv_stderr_ready(self) -> bool:
        with self._lock:
            return bool(self.err)

    def recv(self, n: int) -> bytes:
        with self._lock:
            data, self.out[:] = bytes(self.out[:n]), self.out[n:]
            return data

    def recv_stderr(self, n: int) -> bytes:
        with self._lock:
            data, self.err[:] = bytes(self.err[:n]), self.err[n:]
            return data

    def exit_status_ready(self) -> bool:
        return self.status is not None

    def recv_exit_status(self) -> int:
        return self.status if self.status is not None else -1

    def close(self) -> None:
        self.closed = True

    def _play(self) -> None:
        for delay, kind, payload in self._events:
            time.sleep(delay)
            with self._lock:
                if kind == "out":
                    self.out += payload
                elif kind == "status":
                    self.status = payload
                elif kind == "eof":
                    self.eof_received = True
            os.write(self._w, b"x")


class FakeParamikoTransport:
    def __init__(self, chan: ScriptedChannel) -> None:
        self.chan = chan

    def is_active(self) -> bool:
        return True

    def open_session(self, timeout: float | None = None) -> ScriptedChannel:
        return self.chan


def ssh_with(chan: ScriptedChannel) -> SSHTransport:
    t = SSHTransport("lab1")
    client = type("Client", (), {"get_transport": lambda self: FakeParamikoTransport(chan)})()
    t._conn = type("Conn", (), {"client": client})()
    t._user_effective = "root"
    return t


def test_output_after_the_exit_status_is_read_to_eof():
    chan = ScriptedChannel([(0.0, "out", b'{"part": 1, '), (0.0, "status", 0),
                            (0.2, "out", b'"part": 2}'), (0.0, "eof", b"")])
    res = ssh_with(chan)._exec("python3 -", None, 10)
    assert res.rc == 0 and res.out == '{"part": 1, "part": 2}'


def test_a_command_whose_output_never_ends_returns_after_a_grace(monkeypatch):
    """A process left holding the output open (no EOF): the exit status still ends the
    read, EOF_WAIT seconds later."""
    monkeypatch.setattr(transport_module, "EOF_WAIT", 0.3)
    chan = ScriptedChannel([(0.0, "out", b"done\n"), (0.0, "status", 3)])
    start = time.monotonic()
    res = ssh_with(chan)._exec("true", None, 10)
    assert res.rc == 3 and res.out == "done\n"
    assert 0.3 <= time.monotonic() - start < 5
