"""The spool tab: live counts, and a paged table of messages (id, age, from, recipients, size, state).

Counts come from each ``status`` poll and move with the message events in
between, so a busy spool is never re-listed to keep them current.  The
table shows one page (`PAGE` messages, in arrival order or reversed) from
the supervisor's ``list``; a spool of 100,000 messages costs one page of
envelope reads, not 100,000.  Sorting by a column (click its header, or
o) sorts the page; the filter keeps the page's rows whose id, sender or
recipients contain the text; the state switch (a: all, y: ready, b:
failed, i: in flight) asks the supervisor again.
"""

from __future__ import annotations

import time
from typing import Any

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Static

from emailrelay.tui.format import age, size

PAGE = 500
COLUMNS = ("id", "age", "from", "recipients", "size", "state")
COUNT_ACTIONS = {"stored": {"ready": 1}, "forwarded": {"ready": -1}, "failed": {"bad": 1, "ready": -1},
                 "retried": {"bad": -1, "ready": 1}}


class MessageList(Vertical):
    """What the spool and failures tabs share: counts, the paged table, filter, sort, view, delete."""

    BINDINGS = [
        Binding("enter", "open", "View message", show=False),
        Binding("d", "delete", "Delete"),
        Binding("n", "next_page", "Next page"),  # pagedown/pageup move the table's cursor
        Binding("p", "previous_page", "Previous page"),
        Binding("o", "reverse", "Reverse order"),
        Binding("slash", "filter", "Filter"),
        Binding("g", "reload_page", "Refresh"),
    ]
    #: The list state this view asks for.
    STATE = "all"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.list_state = self.STATE
        self.start = 0
        self.total = 0
        self.reverse = False
        self.rows: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self.sort_column = "id"
        self.loaded_at: float | None = None

    def compose(self) -> ComposeResult:
        yield Static("", classes="counts")
        with Horizontal(classes="toolbar"):
            yield Input(placeholder="filter: id, sender or recipient (/)", classes="filter")
            yield Static("", classes="page")
        table: DataTable[Any] = DataTable(cursor_type="row", zebra_stripes=True)
        table.add_columns(*self.columns())
        yield table

    def columns(self) -> tuple[str, ...]:
        return COLUMNS

    def on_connected(self) -> None:
        self.run_worker(self.load(), exclusive=True, group="load")

    def on_show(self) -> None:
        if self.app.connection is not None:  # type: ignore[attr-defined]
            self.run_worker(self.load(), exclusive=True, group="load")

    def on_status(self, status: dict[str, Any]) -> None:
        spools = status.get("spools", [status["spool"]])
        self.counts = {key: sum(sp.get(key, 0) for sp in spools) for key in ("ready", "busy", "bad", "new")}
        self._show_counts()

    def on_events(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            for key, delta in COUNT_ACTIONS.get(event.get("action", ""), {}).items():
                if event.get("type") == "message" and key in self.counts:
                    self.counts[key] = max(0, self.counts[key] + delta)
        self._show_counts()

    def _show_counts(self) -> None:
        c = self.counts
        if c:
            self.query_one(".counts", Static).update(
                f"[b]{c['ready']}[/b] ready   [b]{c['busy']}[/b] in flight   [b red]{c['bad']}[/] failed   "
                f"{c['new']} arriving")

    async def load(self) -> None:
        if self.app.connection is None:  # type: ignore[attr-defined]
            return  # not connected: the banner says so; the next connection reloads
        started = time.monotonic()
        result = await self.app.call("list", state=self.list_state, offset=self._server_offset(), limit=PAGE)  # type: ignore[attr-defined]
        if result is None:
            return
        self.total = result["total"]
        self.rows = list(reversed(result["messages"])) if self.reverse else result["messages"]
        self.loaded_at = time.monotonic() - started
        self._fill()

    def _server_offset(self) -> int:
        if not self.reverse:
            return self.start
        return max(0, self.total - self.start - PAGE) if self.total else 0

    def _fill(self) -> None:
        table = self.query_one(DataTable)
        text = self.query_one(Input).value.strip().lower()
        rows = [r for r in self.rows if not text or text in _haystack(r)]
        if self.sort_column != "id":
            rows.sort(key=lambda r: _sort_key(r, self.sort_column))
        table.clear()
        now = time.time()
        for r in rows:
            table.add_row(*self.cells(r, now), key=r["id"])
        last = min(self.start + len(self.rows), self.total)
        order = "newest first" if self.reverse else "oldest first"
        self.query_one(".page", Static).update(
            f"{self.list_state}: {self.start + 1 if self.rows else 0}-{last} of {self.total}, {order}")

    def cells(self, r: dict[str, Any], now: float) -> tuple[Any, ...]:
        return (r["id"], age(r.get("time"), now), escape(r.get("from", "?") or "<>"),
                escape(", ".join(r.get("to", []))), size(r.get("size")), r["state"])

    def on_input_changed(self, event: Input.Changed) -> None:
        self._fill()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.sort_column = self.columns()[event.column_index]
        self._fill()

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def action_filter(self) -> None:
        self.query_one(Input).focus()

    async def action_reload_page(self) -> None:
        await self.load()

    async def action_reverse(self) -> None:
        self.reverse, self.start = not self.reverse, 0
        await self.load()

    async def action_next_page(self) -> None:
        if self.start + PAGE < self.total:
            self.start += PAGE
            await self.load()

    async def action_previous_page(self) -> None:
        if self.start:
            self.start = max(0, self.start - PAGE)
            await self.load()

    def action_open(self) -> None:
        msg_id = self.selected()
        if msg_id is not None:
            from emailrelay.tui.message import MessageScreen

            self.app.push_screen(MessageScreen(msg_id))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_delete(self) -> None:
        msg_id = self.selected()
        if msg_id is None:
            return
        from emailrelay.tui.help import Confirm

        async def confirmed(yes: bool | None) -> None:
            if yes and await self.app.call("delete", msg=msg_id) is not None:  # type: ignore[attr-defined]
                self.app.notify(f"deleted {msg_id}")
                await self.load()

        self.app.push_screen(Confirm(f"Delete message {msg_id}? Its envelope and content are removed."), confirmed)


class SpoolView(MessageList):
    BINDINGS = [
        Binding("a", "state('all')", "All"),
        Binding("y", "state('ready')", "Ready"),
        Binding("b", "state('bad')", "Failed"),
        Binding("i", "state('busy')", "In flight"),
    ]
    PALETTE = [
        ("Spool: refresh", "list the spool again (g)", "view('spool', 'reload_page')"),
        ("Spool: delete message", "delete the message under the cursor (d)", "view('spool', 'delete')"),
        ("Spool: view message", "open the message under the cursor (enter)", "view('spool', 'open')"),
        ("Spool: show failed only", "list .bad messages (b)", "view('spool', \"state('bad')\")"),
    ]

    async def action_state(self, state: str) -> None:
        self.list_state, self.start = state, 0
        await self.load()


def _haystack(row: dict[str, Any]) -> str:
    return " ".join([row["id"], row.get("from", ""), *row.get("to", []), row.get("reason", "")]).lower()


def _sort_key(row: dict[str, Any], column: str) -> Any:
    key = {"age": "time", "recipients": "to", "size": "size", "state": "state", "from": "from",
           "reason": "reason", "code": "reason_code", "failures": "failures"}.get(column, "id")
    value = row.get(key)
    if key == "time":
        return -(value or 0)
    if isinstance(value, list):
        return ", ".join(value)
    return value if value is not None else ""
