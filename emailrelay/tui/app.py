"""emailrelay-tui: the operator's console, a Textual app attached to ``emailrelay supervise``.

One job: the application shell.  It owns the one connection to the
supervisor (connection.py) and the one task that does admin I/O
(`_admin_loop`: connect, subscribe to events and logs, poll ``status``
every `STATUS_PERIOD` seconds, reconnect after `RETRY_PERIOD` when the
supervisor is not there or goes away).  Stream messages are queued as they
arrive and handed to the views in one batch per `BATCH_PERIOD`, so a relay
that stores hundreds of messages a second costs the screen a few redraws a
second.  Views are tabs (one module each); they act only through
`EmailRelayApp.call` (the admin protocol) and never touch the spool.

Keys: 1-6 switch tabs, f forward now, r reload the configuration, ? help,
ctrl+p the command palette (every action is there), q quit.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.css.query import NoMatches
from textual.widgets import Footer, Header, Static, TabbedContent, TabPane

from emailrelay import admin_protocol as proto
from emailrelay.tui.connection import AdminConnection, ConnectionLost

STATUS_PERIOD = 2.0
RETRY_PERIOD = 1.0
BATCH_PERIOD = 0.1

#: (tab id, title, key) in display order.
TABS = (
    ("dashboard", "Dashboard", "1"),
    ("workers", "Workers", "2"),
    ("spool", "Spool", "3"),
    ("failures", "Failures", "4"),
    ("logs", "Logs", "5"),
    ("config", "Config", "6"),
)


class ActionCommands(Provider):
    """The command palette: one entry per app action and per tab."""

    async def search(self, query: str) -> Hits:
        app = self.app
        assert isinstance(app, EmailRelayApp)
        matcher = self.matcher(query)
        for title, help_text, action in app.palette_entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), lambda a=action: app.run_action(a), help=help_text)


class EmailRelayApp(App[None]):
    CSS_PATH = "emailrelay.tcss"
    TITLE = "emailrelay"
    COMMANDS = App.COMMANDS | {ActionCommands}
    BINDINGS = [
        *(Binding(key, f"show_tab('{tab}')", title, show=False) for tab, title, key in TABS),
        Binding("f", "forward", "Forward now"),
        Binding("r", "reload", "Reload config"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, socket_path: str | None = None, *, connect: bool = True) -> None:
        """`connect` False shows the views without a supervisor (the snapshot tests feed them)."""
        super().__init__()
        self.socket_path = socket_path or proto.default_socket_path()
        self.connect = connect
        self.connection: AdminConnection | None = None
        self.connected = False
        self.status: dict[str, Any] = {}
        self._pending: list[dict[str, Any]] = []
        self._tab_views: list[Any] = []
        self.started_at = time.monotonic()
        self.first_status_at: float | None = None

    # -- layout -------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        from emailrelay.tui.config_editor import ConfigView
        from emailrelay.tui.dashboard import Dashboard
        from emailrelay.tui.failures import FailuresView
        from emailrelay.tui.logs import LogsView
        from emailrelay.tui.spool import SpoolView
        from emailrelay.tui.workers import WorkersView

        yield Header()
        yield Static("connecting ...", id="connection")
        views = {"dashboard": Dashboard, "workers": WorkersView, "spool": SpoolView,
                 "failures": FailuresView, "logs": LogsView, "config": ConfigView}
        with TabbedContent(initial="dashboard"):
            for tab, title, key in TABS:
                with TabPane(f"{key} {title}", id=tab):
                    yield views[tab](id=f"{tab}-view")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(BATCH_PERIOD, self._deliver)
        if self.connect:
            self._admin_loop()

    def views(self) -> list[Any]:
        """The tab views, found once (a query over every widget on each batch would cost)."""
        if not self._tab_views:
            self._tab_views = [pane.children[0] for pane in self.query(TabPane) if pane.children]
        return self._tab_views

    # -- the admin connection --------------------------------------------------------

    @work(exclusive=True, group="admin")
    async def _admin_loop(self) -> None:
        """Connect, subscribe, poll status; on any loss wait and start again. Never returns."""
        while True:
            lost = asyncio.Event()
            connection = AdminConnection(self.socket_path, self._queue, lambda why, lost=lost: lost.set())
            try:
                await connection.open()
                self.connection = connection
                await connection.call("subscribe", streams=["event", "log"])
                self._set_connected(True, f"connected to {self.socket_path} "
                                          f"(supervisor pid {connection.greeting.get('pid')})")
                await self.refresh_status()  # the first screen first; lists and logs after it
                for view in self.views():
                    self._tell(view, "on_connected")
                logs = await connection.call("logs", limit=500)
                self._pending.extend({"stream": "log", "record": r} for r in logs["records"])
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), STATUS_PERIOD)
                    except TimeoutError:
                        pass
                    if lost.is_set():
                        break
                why = "the supervisor went away"
            except ConnectionLost as e:
                why = str(e)
            except proto.AdminError as e:
                why = f"the supervisor refused: {e}"
            self.connection = None
            await connection.close()
            self._set_connected(False, f"not connected: {why}; retrying every {RETRY_PERIOD:g}s")
            await asyncio.sleep(RETRY_PERIOD)

    async def refresh_status(self) -> None:
        if self.connection is None:
            return
        self.status = await self.connection.call("status")
        if self.first_status_at is None:
            self.first_status_at = time.monotonic()
        for view in self.views():
            self._tell(view, "on_status", self.status)

    def _set_connected(self, connected: bool, text: str) -> None:
        self.connected = connected
        banner = self.query_one("#connection", Static)
        banner.update(text)
        banner.set_class(not connected, "down")

    def _queue(self, message: dict[str, Any]) -> None:
        self._pending.append(message)

    def _deliver(self) -> None:
        """Hand the queued stream messages to the views, in one batch."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        events = [m["event"] for m in batch if m.get("stream") == "event"]
        logs = [m["record"] for m in batch if m.get("stream") == "log"]
        for view in self.views():
            if events:
                self._tell(view, "on_events", events)
            if logs:
                self._tell(view, "on_logs", logs)

    def _tell(self, view: Any, method: str, *args: Any) -> None:
        """Give a view news, if it takes it and is still on the screen (not while the app closes)."""
        if not hasattr(view, method) or not view.is_attached:
            return
        try:
            getattr(view, method)(*args)
        except NoMatches:
            pass  # its widgets are being removed: the app is closing

    async def call(self, op: str, quiet: bool = False, **args: Any) -> Any:
        """An admin request for the views; a failure is shown as a notification and returned as None."""
        if self.connection is None:
            self.notify("not connected to the supervisor", severity="error")
            return None
        try:
            return await self.connection.call(op, **args)
        except proto.AdminError as e:
            if not quiet:
                self.notify(f"{op}: {e}" + (" (try again)" if e.retry else ""), severity="error")
        except ConnectionLost as e:
            self.notify(f"{op}: {e}", severity="error")
        return None

    # -- actions -------------------------------------------------------------------

    def palette_entries(self) -> list[tuple[str, str, str]]:
        entries = [(f"Show {title}", f"the {title.lower()} tab (key {key})", f"show_tab('{tab}')")
                   for tab, title, key in TABS]
        entries += [("Forward now", "ask the forward worker for a run (f)", "forward"),
                    ("Reload configuration", "re-read the configuration file (r)", "reload"),
                    ("Help", "every key (?)", "help")]
        for view in self.views():
            entries += getattr(view, "PALETTE", [])
        return entries

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Keys go to the tab just shown: focus its table, log or editor."""
        tab = event.pane.id or ""
        view = self.query_one(f"#{tab}-view")
        focusable = [w for w in view.query("DataTable, RichLog, TextArea") if w.focusable]
        if focusable and (self.focused is None or view not in self.focused.ancestors_with_self):
            focusable[0].focus()

    async def action_view(self, tab: str, action: str) -> None:
        """A tab's own action, from the command palette: show the tab, then run the action there."""
        self.action_show_tab(tab)
        await self.query_one(f"#{tab}-view").run_action(action)

    async def action_forward(self) -> None:
        if await self.call("forward") is not None:
            self.notify("forwarding requested")

    async def action_reload(self) -> None:
        result = await self.call("reload")
        if result is not None:
            self.notify("configuration reloaded")
            await self.refresh_status()

    def action_help(self) -> None:
        from emailrelay.tui.help import HelpScreen

        self.push_screen(HelpScreen())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="emailrelay-tui", description="The emailrelay operator's console.")
    parser.add_argument("--admin-socket", metavar="PATH", help="the supervisor's admin socket")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    EmailRelayApp(args.admin_socket).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
