"""emailrelay-tui against a real supervisor, real workers and a real downstream, driven by Textual's Pilot."""

from __future__ import annotations

import asyncio
import time

import pytest

from emailrelay.tui.app import EmailRelayApp
from tests.integration.downstream import Sink
from tests.integration.test_supervise import send

pytestmark = pytest.mark.asyncio


async def until(pilot, predicate, timeout: float = 15.0, what: str = "condition"):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


async def test_mail_shows_in_the_spool_view_and_fails_and_is_retried(supervise, downstream, spool):
    sink = downstream(Sink, rcpt_replies={"someone@example.net": (550, "5.1.1 no such user")})
    s = supervise(f"forward-to {sink.address}")
    app = EmailRelayApp(str(s.socket))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.connected and app.status, what="connected")
        await asyncio.to_thread(send, s.port, "tui-1")
        await pilot.press("3")
        spool_view = app.query_one("#spool-view")
        await until(pilot, lambda: spool_view.counts.get("ready") == 1, what="ready count 1")
        await pilot.press("g")
        await until(pilot, lambda: [r["id"] for r in spool_view.rows], what="a row")
        (msg_id,) = [r["id"] for r in spool_view.rows]
        await pilot.press("f")  # forward now: the sink refuses it
        failures = app.query_one("#failures-view")
        await pilot.press("4")
        await until(pilot, lambda: [r["id"] for r in failures.rows] == [msg_id], what="the failure")
        assert failures.rows[0]["reason_code"] == "550"
        sink.rcpt_replies = {}
        await pilot.press("y")  # retry the one under the cursor
        await asyncio.to_thread(sink.wait_for_messages, 1)
        await until(pilot, lambda: failures.rows == [], what="no failures")
