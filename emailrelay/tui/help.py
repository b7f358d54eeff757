"""The help screen (every key of the app and of each tab) and the yes/no confirmation dialog."""

from __future__ import annotations

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Label, Static


def key_table() -> str:
    """Every key, grouped as the man page groups them (keys.py)."""
    from emailrelay.tui import keys

    lines = []
    for title, rows in keys.groups():
        if not rows:
            continue
        lines.append(f"[b]{escape(title)}[/b]")
        lines += [f"  {escape(key):<18} {escape(text)}" for key, text in rows]
        lines.append("")
    lines.append(f"[b]{keys.PALETTE_KEY}[/b] opens the command palette: every action is there by name.")
    return "\n".join(lines)


class HelpScreen(Screen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(key_table(), id="help")
        yield Footer()


class Question(ModalScreen[bool]):
    """A yes/no dialog: y or the first button says yes, n, escape or the other button no."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class Confirm(Question):
    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Grid(id="confirm"):
            yield Label(self.question, id="question")
            yield Button("Yes (y)", variant="error", id="yes")
            yield Button("No (n)", variant="primary", id="no")
