"""A client of the supervisor's admin socket (admin_protocol.py), for ctl and the TUI.

`AdminClient` is blocking and small: connect (check the greeting), send one
request at a time with `call`, read stream messages with `stream`.  Errors
come back as `admin_protocol.AdminError` (the supervisor refused, with its
kind and whether a retry can help) or `Unreachable` (no supervisor there,
permission denied, the connection broke, not our protocol).

Not here: what the commands mean (supervisor.py), output formats (ctl.py).
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from typing import Any

from emailrelay import admin_protocol as proto


class Unreachable(Exception):
    """No usable supervisor at the socket path; str() says why in one line."""


class AdminClient:
    def __init__(self, path: str | None = None, *, timeout: float | None = 30.0) -> None:
        self.path = path or proto.default_socket_path()
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._ids = itertools.count(1)
        self._pending: list[dict[str, Any]] = []  # stream messages read while waiting for a reply
        self.greeting: dict[str, Any] = {}

    def __enter__(self) -> AdminClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            reason = (e.strerror or str(e)).lower() if isinstance(e, OSError) else str(e)
            raise Unreachable(f"cannot connect to the admin socket {self.path}: {reason}") from None
        self._sock = sock
        message = self._read()
        if message.get("ok") is False:
            self.close()
            raise Unreachable(f"{self.path}: {proto.AdminError.from_dict(message.get('error'))}")
        try:
            proto.check_greeting(message)
        except proto.ProtocolError as e:
            self.close()
            raise Unreachable(f"{self.path}: {e}") from None
        self.greeting = message

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def send(self, message: dict[str, Any]) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(proto.encode(message))
        except OSError as e:
            raise Unreachable(f"admin connection lost: {(e.strerror or str(e)).lower()}") from None

    def call(self, op: str, **args: Any) -> Any:
        """Send one request and return its result; raises AdminError or Unreachable."""
        request_id = next(self._ids)
        self.send(proto.request(request_id, op, **args))
        while True:
            message = self._read()
            if "stream" in message:
                self._pending.append(message)
                continue
            if message.get("id") != request_id:
                continue
            if message.get("ok"):
                return message.get("result")
            raise proto.AdminError.from_dict(message.get("error"))

    def stream(self) -> Iterator[dict[str, Any]]:
        """Stream messages (after ``subscribe``), for ever; ends with Unreachable when the supervisor goes."""
        while True:
            while self._pending:
                yield self._pending.pop(0)
            message = self._read(timeout=None)
            if "stream" in message:
                yield message

    def _read(self, timeout: float | None | bool = False) -> dict[str, Any]:
        assert self._sock is not None
        if timeout is not False:
            self._sock.settimeout(timeout)
        try:
            while b"\n" not in self._buffer:
                if len(self._buffer) > proto.MAX_LINE:
                    raise Unreachable("admin connection: line too long")
                try:
                    data = self._sock.recv(65536)
                except TimeoutError:
                    raise Unreachable("admin connection: no reply from the supervisor") from None
                except OSError as e:
                    raise Unreachable(f"admin connection lost: {(e.strerror or str(e)).lower()}") from None
                if not data:
                    raise Unreachable("admin connection closed by the supervisor")
                self._buffer += data
        finally:
            if timeout is not False:
                self._sock.settimeout(self.timeout)
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            return proto.decode(line)
        except proto.ProtocolError as e:
            raise Unreachable(f"admin connection: {e}") from None
