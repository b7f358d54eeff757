"""Listening sockets and their sessions: what the SMTP and POP servers share.

A `Listener` serves already-bound sockets (the process or, later, the
supervisor binds them) with asyncio, keeps a task per connection, and on
`close()` stops listening, lets sessions run on for a grace period if
asked (a supervised worker's shutdown), then cancels every session and
waits for them.  A
cancelled session ends quietly: asyncio's stream callback must not see the
cancellation.  Subclasses implement `_serve(reader, writer)`; this module
knows no protocol.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any


class Listener:
    def __init__(self) -> None:
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(self, sock: socket.socket, **kwargs: Any) -> None:
        """Serve one bound socket (kwargs go to asyncio.start_server: limit, ssl, ...)."""
        self._servers.append(await asyncio.start_server(self._accept, sock=sock, **kwargs))

    async def close(self, drain: float = 0.0) -> None:
        """Stop listening, give sessions `drain` seconds to end by themselves, end the rest and wait."""
        for server in self._servers:
            server.close()
        if drain > 0 and self._tasks:
            await asyncio.wait(list(self._tasks), timeout=drain)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass  # close() ended the session
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError
