"""A timeout for connections that wait many times: one timer per connection, not one per wait.

A session waits for the peer a few times per message (each command, each
reply).  ``async with asyncio.timeout(s)`` around each wait schedules and
cancels a timer every time; `WaitTimer` keeps one timer armed while the
connection keeps waiting and only looks at the clock when it fires:

    timer = WaitTimer(60)
    try:
        data = await timer.wait(reader.read(n))   # TimeoutError after 60 s of this wait
    finally:
        timer.close()

When the timer fires during a wait that began less than `seconds` ago it
re-arms itself for that wait's deadline; when it fires between waits it is
dropped, and the next wait arms it again.  A wait that times out cancels
the waiting task and turns that cancellation (only that one) into
TimeoutError, as asyncio.timeout does.  One task waits at a time.

This module knows no protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class WaitTimer:
    """Times out each `wait` that lasts `seconds` (None or 0: never)."""

    __slots__ = ("seconds", "_loop", "_handle", "_since", "_waiting", "_task", "_fired")

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds or None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._since = 0.0
        self._waiting = False
        self._task: asyncio.Task[object] | None = None
        self._fired = False

    async def wait(self, awaitable: Awaitable[T]) -> T:
        if self.seconds is None:
            return await awaitable
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._since = loop.time()
        self._fired = False
        self._waiting = True
        if self._handle is None:
            self._handle = loop.call_at(self._since + self.seconds, self._check)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._fired and self._task is not None and self._task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            self._waiting = False

    def _check(self) -> None:
        self._handle = None
        if not self._waiting or self._loop is None or self.seconds is None:
            return  # between waits: the next wait arms the timer again
        due = self._since + self.seconds
        if self._loop.time() >= due:
            self._fired = True
            if self._task is not None:
                self._task.cancel()
        else:
            self._handle = self._loop.call_at(due, self._check)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
