"""The help screen (every key of the app and of each tab) and the yes/no confirmation dialog."""

from __future__ import annotations

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Label, Static


def key_table(app: object) -> str:
    """Every binding, grouped: the app's, then each tab view's, then the message view's."""
    from emailrelay.tui.app import EmailRelayApp
    from emailrelay.tui.message import MessageScreen

    assert isinstance(app, EmailRelayApp)
    groups = [("Everywhere", EmailRelayApp.BINDINGS)]
    for view in app.views():
        groups.append((type(view).__name__.replace("View", "").replace("Dashboard", "Dashboard"),
                       [*getattr(type(view), "BINDINGS", [])]))
    groups.append(("Message view", MessageScreen.BINDINGS))
    lines = []
    for title, bindings in groups:
        if not bindings:
            continue
        lines.append(f"[b]{escape(title)}[/b]")
        for b in bindings:
            assert isinstance(b, Binding)
            lines.append(f"  {escape(b.key):<18} {escape(b.description)}")
        lines.append("")
    lines.append("[b]ctrl+p[/b] opens the command palette: every action is there by name.")
    return "\n".join(lines)


class HelpScreen(Screen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(key_table(self.app), id="help")
        yield Footer()


class Confirm(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Grid(id="confirm"):
            yield Label(self.question, id="question")
            yield Button("Yes (y)", variant="error", id="yes")
            yield Button("No (n)", variant="primary", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
