"""The failures tab: failed (.bad) messages with reason, reason code and failure count.

Actions: view (enter), select (space), retry the selected or the current
one (y), retry all (Y: the ``retry`` operation, which is emailrelay-resubmit's
library call), delete with confirmation (d).
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from textual.binding import Binding

from emailrelay.tui.format import age
from emailrelay.tui.spool import MessageList


class FailuresView(MessageList):
    STATE = "bad"
    BINDINGS = [
        Binding("space", "toggle", "Select"),
        Binding("y", "retry", "Retry"),
        Binding("Y", "retry_all", "Retry all"),
    ]
    PALETTE = [
        ("Failures: retry", "retry the selected failed messages, or the one under the cursor (y)",
         "view('failures', 'retry')"),
        ("Failures: retry all", "move every failed message back to the queue (Y)", "view('failures', 'retry_all')"),
        ("Failures: delete", "delete the failed message under the cursor (d)", "view('failures', 'delete')"),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.chosen: set[str] = set()

    def columns(self) -> tuple[str, ...]:
        return ("", "id", "age", "code", "reason", "failures")

    def cells(self, r: dict[str, Any], now: float) -> tuple[Any, ...]:
        return ("*" if r["id"] in self.chosen else " ", r["id"], age(r.get("time"), now),
                r.get("reason_code") or "-", escape(r.get("reason", r.get("error", ""))), str(r.get("failures", 0)))

    def on_events(self, events: list[dict[str, Any]]) -> None:
        super().on_events(events)
        if any(e.get("type") == "message" and e.get("action") in ("failed", "retried", "deleted") for e in events):
            self.run_worker(self.load(), exclusive=True, group="load")

    def action_toggle(self) -> None:
        msg_id = self.selected()
        if msg_id is not None:
            self.chosen.symmetric_difference_update({msg_id})
            self._fill()

    async def action_retry(self) -> None:
        ids = sorted(self.chosen) or [i for i in [self.selected()] if i]
        for msg_id in ids:
            result = await self.app.call("retry", msg=msg_id)  # type: ignore[attr-defined]
            if result is not None:
                self.app.notify(f"{msg_id}: {result['results'][0]['action']}")
        self.chosen.clear()
        await self.load()

    async def action_retry_all(self) -> None:
        result = await self.app.call("retry", all=True)  # type: ignore[attr-defined]
        if result is not None:
            self.app.notify(f"{result['retried']} message(s) back in the queue")
        self.chosen.clear()
        await self.load()

