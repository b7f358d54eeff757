"""The first screen: worker states and spool counts at a glance, the newest messages and log lines."""

from __future__ import annotations

from collections import deque
from typing import Any

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from emailrelay.tui.format import LEVEL_STYLES, state_markup

RECENT = 8


class Dashboard(Vertical):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.messages: deque[str] = deque(maxlen=RECENT)
        self.lines: deque[str] = deque(maxlen=RECENT)

    def compose(self) -> ComposeResult:
        yield Static("", id="dash-workers", classes="panel")
        yield Static("", id="dash-spool", classes="panel")
        yield Static("[b]Newest messages[/b]", id="dash-messages", classes="panel")
        yield Static("[b]Newest log lines[/b]", id="dash-logs", classes="panel")

    def on_status(self, status: dict[str, Any]) -> None:
        workers = "  ".join(f"{escape(w['name'])} {state_markup(w['state'])}" for w in status["workers"])
        self.query_one("#dash-workers", Static).update(f"[b]Workers[/b]  {workers}")
        spools = status.get("spools", [status["spool"]])
        text = []
        for sp in spools:
            name = f"spool [{escape(sp['unit'])}]" if sp.get("unit") else "spool"
            if "error" in sp:
                text.append(f"{name}: {escape(sp['error'])}")
            else:
                text.append(f"{name}: [b]{sp['ready']}[/b] ready  [b]{sp['busy']}[/b] in flight  "
                            f"[b red]{sp['bad']}[/] failed  {sp['new']} arriving")
        self.query_one("#dash-spool", Static).update("\n".join(text))

    def on_events(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if event.get("type") == "message":
                reason = f": {event['reason']}" if event.get("reason") else ""
                self.messages.append(f"{escape(event['action'])} {escape(event['msg'])}{escape(reason)}")
            elif event.get("type") == "worker":
                self.messages.append(f"worker {escape(event['name'])} {state_markup(event['new'])}")
        self.query_one("#dash-messages", Static).update("[b]Newest messages[/b]\n" + "\n".join(self.messages))

    def on_logs(self, records: list[dict[str, Any]]) -> None:
        for r in records:
            style = LEVEL_STYLES.get(r.get("level", ""), "")
            text = f"{escape(r.get('worker', ''))}: {escape(r.get('text', ''))}"
            self.lines.append(f"[{style}]{text}[/]" if style else text)
        self.query_one("#dash-logs", Static).update("[b]Newest log lines[/b]\n" + "\n".join(self.lines))
