"""emailrelay-tui against a real supervisor, real workers and a real downstream, driven by Textual's Pilot."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import psutil
import pytest

from emailrelay.tui.app import EmailRelayApp
from emailrelay.tui.config_editor import DiffScreen
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


async def test_delete_from_the_spool_view_removes_both_files(supervise, spool):
    s = supervise()
    app = EmailRelayApp(str(s.socket))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.connected and app.status, what="connected")
        await asyncio.to_thread(send, s.port, "to-delete")
        (content,) = spool.glob("*.content")
        await pilot.press("3")
        view = app.query_one("#spool-view")
        await pilot.press("g")
        await until(pilot, lambda: view.rows, what="a row")
        await pilot.press("d")
        await pilot.press("y")  # the confirmation
        await until(pilot, lambda: not list(spool.glob("*.envelope")), what="the envelope gone")
        assert not content.exists()
        await until(pilot, lambda: view.rows == [], what="an empty table")


async def test_a_killed_worker_shows_backoff_then_running(supervise):
    s = supervise()
    app = EmailRelayApp(str(s.socket))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.connected and app.status, what="connected")
        await pilot.press("2")
        view = app.query_one("#workers-view")
        await until(pilot, lambda: "RUNNING" in view.state_of("storage"), what="RUNNING")
        seen: list[str] = []

        def record() -> bool:
            state = view.state_of("storage")
            if not seen or seen[-1] != state:
                seen.append(state)
            return "BACKOFF" in seen and seen[-1] == "RUNNING"

        # killed after a good run it is restarted at once; its replacement, killed before it has run
        # for a second, has failed to start: BACKOFF, then a restart after the backoff delay
        supervisor = psutil.Process(s.proc.pid)
        first = s.workers()["storage"]["pid"]
        os.kill(first, signal.SIGKILL)
        replacement = await until(pilot, lambda: [c for c in supervisor.children() if c.pid != first],
                                  what="the replacement process")
        replacement[0].kill()
        await until(pilot, record, timeout=20, what=f"BACKOFF then RUNNING, saw {seen}")


async def test_the_log_view_shows_a_new_line_within_a_second(supervise):
    s = supervise()
    app = EmailRelayApp(str(s.socket))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.connected and app.status, what="connected")
        await pilot.press("5")
        view = app.query_one("#logs-view")
        log = app.query_one("#log")
        await asyncio.to_thread(send, s.port, "logged")
        started = time.monotonic()
        await until(pilot, lambda: any("stored message" in str(line.text) for line in log.lines), timeout=5,
                    what=f"the stored line; records {[r['text'] for r in view.records][-5:]}, "
                         f"{len(log.lines)} lines; supervisor: {s.lines[-6:]}")
        assert time.monotonic() - started < 1.0
        await pilot.press("space")  # pause: new lines are kept, not shown
        shown = len(log.lines)
        await asyncio.to_thread(send, s.port, "while-paused")
        await until(pilot, lambda: sum("stored message" in r["text"] for r in view.records) == 2, what="kept")
        assert len(log.lines) == shown


async def config_tab(pilot, app, conf):
    """Connect, show the Config tab and wait for the file in its editor; returns the editor."""
    await until(pilot, lambda: app.connected and app.status, what="connected")
    await pilot.press("6")
    area = app.query_one("#config-text")
    await until(pilot, lambda: area.text == conf.read_text(), what="the file in the editor")
    return area


async def test_the_config_editor_refuses_a_bad_port_and_applies_a_good_change(supervise, tmp_path):
    s = supervise()
    conf = s.config
    app = EmailRelayApp(str(s.socket))
    async with app.run_test(size=(120, 40)) as pilot:
        area = await config_tab(pilot, app, conf)
        original = conf.read_text()
        area.load_text(original.replace("port 0", "port 99999999"))
        await pilot.press("ctrl+s")
        result = app.query_one("#config-result")
        await until(pilot, lambda: "invalid value" in str(result.render()), what="the option's own error")
        assert conf.read_text() == original
        area.load_text(original + "size 123456\n")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, DiffScreen), what="the diff")
        assert "+size 123456" in str(app.screen.query_one("#diff-text").render())
        await pilot.press("y")
        await until(pilot, lambda: conf.read_text().endswith("size 123456\n"), what="the file written")
        s.wait_for(r"reloading the configuration")
        await until(pilot, lambda: "written and reloaded" in str(result.render()), what="reloaded")


async def test_the_config_form_writes_an_option_through_the_supervisor(supervise):
    s = supervise()
    conf = s.config
    app = EmailRelayApp(str(s.socket))
    async with app.run_test(size=(120, 40)) as pilot:
        await config_tab(pilot, app, conf)
        await pilot.press("ctrl+f")
        port = app.query_one("#form-port")
        assert port.value == "0"  # read from the text
        app.query_one("#form-domain").value = "relay.example.com"
        app.query_one("#form-remote-clients").value = True
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, DiffScreen), what="the diff")
        diff = str(app.screen.query_one("#diff-text").render())
        assert "+domain relay.example.com" in diff and "+remote-clients" in diff
        await pilot.press("y")
        await until(pilot, lambda: "domain relay.example.com" in conf.read_text(), what="the file written")
        s.wait_for(r"reloading the configuration")


async def test_it_waits_for_a_supervisor_and_recovers_when_it_restarts(supervise, tmp_path):
    app = EmailRelayApp(str(tmp_path / "admin.sock"))  # where the supervisor will listen
    async with app.run_test(size=(80, 24)) as pilot:
        banner = app.query_one("#connection")
        await until(pilot, lambda: "not connected" in str(banner.render()), what="the not-connected banner")
        assert "retrying" in str(banner.render())
        s = await asyncio.to_thread(supervise)
        await until(pilot, lambda: app.connected and app.status, what="connected")
        first_pid = app.status["supervisor"]["pid"]
        s.stop()
        await until(pilot, lambda: not app.connected, what="the loss noticed")
        s2 = await asyncio.to_thread(supervise)
        await until(pilot, lambda: app.connected and app.status.get("supervisor", {}).get("pid") == s2.proc.pid,
                    timeout=20, what="reconnected to the new supervisor")
        assert s2.proc.pid != first_pid
