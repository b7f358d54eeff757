"""Snapshots of every view at 80x24 and 120x40, fed fixed admin-protocol data (canned.py).

The live tests (test_tui_live.py) check behaviour against a real supervisor;
these check layout.  Update with ``pytest tests/tui --snapshot-update`` after a
deliberate change and look at the SVGs before committing them.
"""

from __future__ import annotations

import os

import pytest

from emailrelay.tui.app import EmailRelayApp
from emailrelay.tui.message import MessageScreen

from . import canned

os.environ["TZ"] = "UTC"
SIZES = [(80, 24), (120, 40)]
KEYS = {"dashboard": "1", "workers": "2", "spool": "3", "failures": "4", "logs": "5", "config": "6"}


def feed(app: EmailRelayApp) -> None:
    app._set_connected(True, "connected to /run/emailrelay/admin.sock (supervisor pid 4242)")
    app.connected = True
    for view in app.views():
        if hasattr(view, "on_status"):
            view.on_status(canned.STATUS)
        if hasattr(view, "on_events"):
            view.on_events(canned.EVENTS)
        if hasattr(view, "on_logs"):
            view.on_logs(canned.LOGS)
    spool = app.query_one("#spool-view")
    spool.rows, spool.total = list(canned.ROWS), len(canned.ROWS)
    spool._fill()
    failures = app.query_one("#failures-view")
    failures.rows, failures.total = list(canned.FAILED), len(canned.FAILED)
    failures._fill()
    config = app.query_one("#config-view")
    config.original, config.path = canned.CONFIG, "/etc/emailrelay.conf"
    app.query_one("#config-text").load_text(canned.CONFIG)
    app.query_one("#config-path").update("[b]/etc/emailrelay.conf[/b]")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("view", list(KEYS))
def test_view(snap_compare, view, size):
    app = EmailRelayApp("/nonexistent/admin.sock", connect=False)

    async def run_before(pilot) -> None:  # noqa: ANN001
        feed(app)
        await pilot.press(KEYS[view])
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", ["message", "help"])
def test_screen(snap_compare, screen, size):
    app = EmailRelayApp("/nonexistent/admin.sock", connect=False)

    async def run_before(pilot) -> None:  # noqa: ANN001
        feed(app)
        if screen == "message":
            message = MessageScreen(canned.MESSAGE["id"])
            await app.push_screen(message)
            message.show(canned.MESSAGE)
        else:
            await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)
