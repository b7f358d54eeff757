"""One message: envelope fields, then the content, headers first, long lines wrapped, binary shown safely."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

SHOWN = 1024 * 1024
FIELDS = (("from", "From"), ("to_remote", "To (remote)"), ("to_local", "To (local)"), ("client", "Client"),
          ("authentication", "Authenticated as"), ("forward_to", "Forward to"), ("content", "Body type"))


def printable(text: str) -> str:
    """Content safe for the terminal: control characters (except tab and newline) shown as \\xNN."""
    return "".join(c if c in "\t\n" or (c >= " " and c != "\x7f") else f"\\x{ord(c):02x}" for c in text)


class MessageScreen(Screen[None]):
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back"), Binding("d", "delete", "Delete")]

    def __init__(self, msg_id: str) -> None:
        super().__init__()
        self.msg_id = msg_id

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="message"):
            yield Static(f"[b]{escape(self.msg_id)}[/b]  loading ...", id="message-head")
            yield Static("", id="message-envelope", classes="panel")
            yield Static("", id="message-content", markup=False)
        yield Footer()

    async def on_mount(self) -> None:
        if self.app.connection is None:  # type: ignore[attr-defined]
            return
        result = await self.app.call("show", msg=self.msg_id, max_bytes=SHOWN)  # type: ignore[attr-defined]
        if result is None:
            self.query_one("#message-head", Static).update(f"[b]{escape(self.msg_id)}[/b]: not found")
            return
        self.show(result)

    def show(self, m: dict[str, Any]) -> None:
        head = f"[b]{escape(self.msg_id)}[/b]  {m.get('state')}  {m.get('size')} bytes"
        if m.get("reason"):
            head += f"\n[red]failed ({m.get('failures', 0)}x): {escape(m.get('reason_code') or '')} {escape(m['reason'])}[/]"
        self.query_one("#message-head", Static).update(head)
        fields = m.get("fields", {})
        lines = []
        for key, title in FIELDS:
            value = fields.get(key)
            if value:
                lines.append(f"[b]{title}:[/b] {escape(', '.join(value) if isinstance(value, list) else str(value))}")
        self.query_one("#message-envelope", Static).update("\n".join(lines) or escape(m.get("envelope", "")))
        content = m.get("content", m.get("content_error", ""))
        headers, _, body = content.replace("\r\n", "\n").partition("\n\n")
        text = printable(headers) + "\n\n" + printable(body)
        if m.get("binary"):
            text = "[this message has binary content: control bytes are shown as \\xNN]\n\n" + text
        if m.get("truncated"):
            text += f"\n[... the first {SHOWN} bytes of {m.get('size')} are shown]"
        self.query_one("#message-content", Static).update(Text(text))

    async def action_delete(self) -> None:
        from emailrelay.tui.help import Confirm

        async def confirmed(yes: bool | None) -> None:
            if yes and await self.app.call("delete", msg=self.msg_id) is not None:  # type: ignore[attr-defined]
                self.app.notify(f"deleted {self.msg_id}")
                self.app.pop_screen()

        self.app.push_screen(Confirm(f"Delete message {self.msg_id}?"), confirmed)
