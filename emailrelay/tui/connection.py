"""The TUI's line to the supervisor: the admin protocol (admin_protocol.py) on asyncio.

One job: requests and replies, and the event and log streams, over one
connection.  `AdminConnection.call` sends a request and waits for its
reply (replies come in request order, so one future per request id is
enough); stream messages go to the ``on_stream`` callback as they arrive.
When the connection ends every waiting call fails with `ConnectionLost`
and ``on_lost`` is called once; reconnecting is the app's business.

Nothing here knows Textual, the spool, or what the operations mean.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from emailrelay import admin_protocol as proto


class ConnectionLost(Exception):
    """The supervisor went away (or was never there); str() says why in one line."""


class AdminConnection:
    def __init__(self, path: str, on_stream: Callable[[dict[str, Any]], None], on_lost: Callable[[str], None]) -> None:
        self.path = path
        self.on_stream = on_stream
        self.on_lost = on_lost
        self.greeting: dict[str, Any] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._lost = False

    async def open(self, timeout: float = 5.0) -> None:
        """Connect and check the greeting; raises ConnectionLost."""
        try:
            reader, self._writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.path, limit=proto.MAX_LINE), timeout
            )
            first = proto.decode(await asyncio.wait_for(reader.readline(), timeout))
        except (OSError, TimeoutError, ValueError, proto.ProtocolError) as e:
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise ConnectionLost(f"cannot connect to {self.path}: {reason.lower()}") from None
        if first.get("ok") is False:
            raise ConnectionLost(f"{self.path}: {proto.AdminError.from_dict(first.get('error'))}")
        try:
            proto.check_greeting(first)
        except proto.ProtocolError as e:
            raise ConnectionLost(f"{self.path}: {e}") from None
        self.greeting = first
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        why = "the supervisor closed the connection"
        try:
            while line := await reader.readline():
                message = proto.decode(line)
                if "stream" in message:
                    self.on_stream(message)
                    continue
                future = self._waiting.pop(message.get("id"), None)  # type: ignore[arg-type]
                if future is not None and not future.done():
                    if message.get("ok"):
                        future.set_result(message.get("result"))
                    else:
                        future.set_exception(proto.AdminError.from_dict(message.get("error")))
        except (OSError, ValueError, proto.ProtocolError) as e:
            why = f"admin connection lost: {e}"
        except asyncio.CancelledError:
            why = "closed"
        self._end(why)

    def _end(self, why: str) -> None:
        if self._lost:
            return
        self._lost = True
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionLost(why))
        self._waiting.clear()
        if self._writer is not None:
            self._writer.close()
        if why != "closed":
            self.on_lost(why)

    async def call(self, op: str, timeout: float = 60.0, **args: Any) -> Any:
        """One request's result; raises admin_protocol.AdminError or ConnectionLost."""
        if self._writer is None or self._lost:
            raise ConnectionLost("not connected")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            self._writer.write(proto.encode(proto.request(request_id, op, **args)))
        except OSError as e:
            self._end(f"admin connection lost: {e}")
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise ConnectionLost(f"no reply to {op} within {timeout:g}s") from None

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            try:
                await self._reader_task
            except asyncio.CancelledError:
                pass
        self._end("closed")
