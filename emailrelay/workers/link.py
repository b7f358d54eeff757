"""A supervised worker's line to its supervisor (admin_protocol.py, worker operations).

One job: when ``emailrelay supervise`` started this process, tell the
supervisor who we are (``hello``), that we are ready (``ready``, sent once
the listeners accept), what happens to messages (``event``, from the
spool's observer) and that forwarding is wanted (``forward-request``, for
--forward-on-disconnect, filter exit codes 103/104 and the ``forward``
command of the TCP admin interface when this worker does not forward).

`WorkerSpec` is what the supervisor hands down in the environment variable
``EMAILRELAY_WORKER`` (JSON): the worker's name and role, the admin socket
path and the inherited listening descriptors by service (``smtp``,
``pop``, ``admin``).

Failure behaviour: writes never block; when the supervisor goes away
(the connection ends) `on_lost` is called and the worker stops, so no
worker outlives its supervisor.  Events that cannot be queued (more than
`MAX_BACKLOG` bytes waiting) are dropped: they are a display aid, the spool
is the truth.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from emailrelay import admin_protocol as proto

ENVIRONMENT = "EMAILRELAY_WORKER"
MAX_BACKLOG = 1024 * 1024
ROLES = ("storage", "proxy", "forward", "pop")


@dataclass(frozen=True)
class WorkerSpec:
    name: str  # "storage", "in/forward" ...
    role: str  # one of ROLES
    socket_path: str
    fds: dict[str, list[int]] = field(default_factory=dict)
    unit: str = ""  # the instance (OPTIONS.md section 5) whose job this is

    def to_env(self) -> str:
        return json.dumps({"name": self.name, "role": self.role, "socket": self.socket_path, "fds": self.fds,
                           "unit": self.unit})

    @classmethod
    def from_env(cls, text: str) -> WorkerSpec:
        data = json.loads(text)
        return cls(str(data["name"]), str(data["role"]), str(data["socket"]),
                   {str(k): [int(fd) for fd in v] for k, v in data.get("fds", {}).items()}, str(data.get("unit", "")))

    def sockets(self, service: str) -> list[socket.socket]:
        """The inherited listening sockets of one service."""
        return [socket.socket(fileno=fd) for fd in self.fds.get(service, [])]


class Link:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self._writer: asyncio.StreamWriter | None = None
        self._watch: asyncio.Task[None] | None = None
        self._pending: list[bytes] = []  # encoded messages of this turn of the event loop (_send)

    async def open(self, on_lost: Callable[[], None]) -> None:
        reader, self._writer = await asyncio.open_unix_connection(self.spec.socket_path, limit=proto.MAX_LINE)
        proto.check_greeting(proto.decode(await reader.readline()))
        self._send({"op": "hello", "worker": self.spec.name, "pid": os.getpid()})

        async def watch() -> None:
            try:
                while await reader.readline():
                    pass  # replies to our messages: nothing to do with them
            except (OSError, ValueError):
                pass
            on_lost()

        self._watch = asyncio.get_running_loop().create_task(watch())

    def _send(self, message: dict[str, object]) -> None:
        """Queue a message; what one turn of the event loop queues goes out in one write."""
        writer = self._writer
        if writer is None or writer.is_closing():
            return
        if writer.transport.get_write_buffer_size() > MAX_BACKLOG:
            return
        self._pending.append(proto.encode(message))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        writer = self._writer
        if pending and writer is not None and not writer.is_closing():
            writer.write(b"".join(pending))

    def ready(self) -> None:
        self._send({"op": "ready"})

    def forward_request(self, reason: str) -> None:
        self._send({"op": "forward-request", "reason": reason})

    def spool_event(self, action: str, msg_id: str, detail: str) -> None:
        """The spool's observer: one ``message`` event."""
        event: dict[str, object] = {"type": "message", "action": action, "msg": msg_id,
                                    "worker": self.spec.name, "time": time.time()}
        if detail:
            event["reason"] = _reason(detail)
        self._send({"op": "event", "event": event})

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self._flush()
        if self._writer is not None:
            try:
                await asyncio.wait_for(self._writer.drain(), 2)
            except (OSError, TimeoutError):
                pass
            self._writer.close()


def _reason(detail: str) -> str:
    """The text of a failure's ``X-MailRelay-Reason:`` line (the whole detail if there is none)."""
    for line in detail.splitlines():
        if line.startswith("X-MailRelay-Reason:"):
            return line.partition(":")[2].strip()
    return detail
