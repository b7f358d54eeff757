"""The workers tab: state (coloured), pid, uptime, restarts, CPU, RSS, last error; restart, stop, start."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable

from emailrelay.tui.format import STATE_STYLES, duration, size

COLUMNS = ("worker", "state", "pid", "uptime", "restarts", "cpu%", "rss", "last error")


class WorkersView(Vertical):
    BINDINGS = [
        Binding("x", "restart", "Restart worker"),
        Binding("s", "stop", "Stop worker"),
        Binding("t", "start", "Start worker"),
    ]
    PALETTE = [
        ("Restart worker", "restart the worker under the cursor in the workers tab (x)", "view('workers', 'restart')"),
        ("Stop worker", "stop the worker under the cursor in the workers tab (s)", "view('workers', 'stop')"),
        ("Start worker", "start the worker under the cursor in the workers tab (t)", "view('workers', 'start')"),
    ]

    def compose(self) -> ComposeResult:
        table: DataTable[Any] = DataTable(id="workers-table", cursor_type="row")
        table.add_columns(*COLUMNS)
        yield table

    def on_status(self, status: dict[str, Any]) -> None:
        table = self.query_one(DataTable)
        names = [w["name"] for w in status["workers"]]
        if [str(k.value) for k in table.rows] != names:
            table.clear()
            for name in names:
                table.add_row(*([""] * len(COLUMNS)), key=name)
        for w in status["workers"]:
            cpu = "-" if w.get("cpu_percent") is None else f"{w['cpu_percent']:.0f}"
            values = (w["name"], Text(w["state"], style=STATE_STYLES.get(w["state"], "")), str(w["pid"] or "-"),
                      duration(w["uptime"]), str(w["restarts"]), cpu, size(w.get("rss")), w.get("last_error") or "")
            for column, value in zip(table.ordered_columns, values, strict=False):
                table.update_cell(w["name"], column.key, value)

    def on_events(self, events: list[dict[str, Any]]) -> None:
        """Worker state changes show at once, between status polls (a BACKOFF may last half a second)."""
        table = self.query_one(DataTable)
        keys = {str(k.value) for k in table.rows}
        for event in events:
            if event.get("type") == "worker" and event.get("name") in keys:
                state = str(event.get("new"))
                table.update_cell(event["name"], table.ordered_columns[1].key, Text(state, style=STATE_STYLES.get(state, "")))
                if state in ("BACKOFF", "FATAL", "EXITED") and event.get("reason"):
                    table.update_cell(event["name"], table.ordered_columns[-1].key, str(event["reason"]))

    def state_of(self, name: str) -> str:
        """The state shown for a worker (for tests and the help text)."""
        table = self.query_one(DataTable)
        return str(table.get_cell(name, table.ordered_columns[1].key))

    def _selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    async def _act(self, op: str, verb: str) -> None:
        name = self._selected()
        if name is None:
            return
        self.app.notify(f"{verb} {name} ...")
        result = await self.app.call(op, name=name)  # type: ignore[attr-defined]
        if result is not None:
            self.app.notify(f"{name}: {result['state']}")
        await self.app.refresh_status()  # type: ignore[attr-defined]

    async def action_restart(self) -> None:
        await self._act("worker-restart", "restarting")

    async def action_stop(self) -> None:
        await self._act("worker-stop", "stopping")

    async def action_start(self) -> None:
        await self._act("worker-start", "starting")
