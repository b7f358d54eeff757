"""The logs tab: the live log of every worker and the supervisor; filter by worker and level, search, pause.

Records arrive in batches (app.py); up to `KEEP` are kept, so changing
the filter redraws from memory.  Paused, records are still kept but the
view does not move.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, RichLog, Select, Static

from emailrelay.tui.format import LEVEL_STYLES

KEEP = 5000
LEVELS = ("debug", "info", "warning", "error")


class LogsView(Vertical):
    BINDINGS = [
        Binding("space", "pause", "Pause"),
        Binding("slash", "search", "Search"),
        Binding("w", "worker", "Worker"),
        Binding("l", "level", "Level"),
    ]
    PALETTE = [("Logs: pause or resume", "stop or restart the live log view (space)", "view('logs', 'pause')")]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.records: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self.paused = False
        self.worker_names: list[str] = []

    def compose(self) -> ComposeResult:
        with Horizontal(classes="toolbar"):
            yield Select([("all workers", "")], value="", allow_blank=False, id="log-worker")
            yield Select([(f"{level} and above", level) for level in LEVELS], value="info", allow_blank=False,
                         id="log-level")
            yield Input(placeholder="search (/)", id="log-search")
            yield Static("", id="log-state")
        yield RichLog(id="log", max_lines=KEEP, wrap=True, markup=False)

    def _wanted(self, record: dict[str, Any]) -> bool:
        worker = self.query_one("#log-worker", Select).value
        level = self.query_one("#log-level", Select).value
        text = self.query_one("#log-search", Input).value.lower()
        if worker and record.get("worker") != worker:
            return False
        level_of = record.get("level", "info")
        if level_of in LEVELS and str(level) in LEVELS and LEVELS.index(level_of) < LEVELS.index(str(level)):
            return False
        return not text or text in record.get("text", "").lower()

    def _line(self, record: dict[str, Any]) -> Text:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.get("time", 0)))
        line = Text(f"{stamp} {record.get('worker', '?')}: {record.get('level', 'info')}: {record.get('text', '')}")
        style = LEVEL_STYLES.get(record.get("level", ""), "")
        if style:
            line.stylize(style)
        return line

    def on_logs(self, records: list[dict[str, Any]]) -> None:
        self.records.extend(records)
        new = sorted({r.get("worker", "") for r in records} - set(self.worker_names))
        if new:
            self.worker_names = sorted(set(self.worker_names) | set(new))
            select = self.query_one("#log-worker", Select)
            value = select.value
            select.set_options([("all workers", ""), *((w, w) for w in self.worker_names)])
            select.value = value
        if not self.paused:
            log = self.query_one(RichLog)
            for record in records:
                if self._wanted(record):
                    log.write(self._line(record))

    def redraw(self) -> None:
        log = self.query_one(RichLog)
        log.clear()
        for record in self.records:
            if self._wanted(record):
                log.write(self._line(record))

    def on_select_changed(self, event: Select.Changed) -> None:
        self.redraw()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.redraw()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.query_one("#log-state", Static).update("PAUSED" if self.paused else "")
        if not self.paused:
            self.redraw()

    def action_search(self) -> None:
        self.query_one("#log-search", Input).focus()

    def action_worker(self) -> None:
        self.query_one("#log-worker", Select).focus()

    def action_level(self) -> None:
        self.query_one("#log-level", Select).focus()
