"""The configuration tab (replaces emailrelay-gui): edit the supervisor's configuration file.

The text comes from ``config-get``; the option list beside it is the one
option table (emailrelay/options.py: groups and help text), and choosing an
option inserts its line.  The form (ctrl+f switches) shows the same table as
fields, one per option, grouped and with each option's help: a checkbox
for a switch, an input for a value.  It is read from the text and written
back into it (`apply_form`): changed options replace their line, cleared
ones lose it, new ones are appended; comments, instance-prefixed and
repeatable options are left as they are (edit those in the text).  Check (ctrl+t) sends the text to
``config-validate`` and shows the option table's own errors; Apply
(ctrl+s) shows the difference from the file and, when confirmed, sends
``config-replace``: the supervisor checks, writes the file atomically and
reloads.  The TUI never writes the file itself.
"""

from __future__ import annotations

import difflib
from typing import Any

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import (
    Button,
    Checkbox,
    Collapsible,
    ContentSwitcher,
    Input,
    Label,
    OptionList,
    Static,
    TextArea,
)
from textual.widgets.option_list import Option

from emailrelay import options
from emailrelay.tui.help import Question


def form_options() -> list[options.Option]:
    """The options the form shows: single-valued and switches, without help/version and hidden ones."""
    return [o for o in options.EMAILRELAY_OPTIONS
            if o.level != options.HIDDEN and o.name not in ("help", "version") and not o.multi]


def read_form_values(text: str) -> dict[str, str | bool]:
    """Option name -> value (True for a switch) of the unprefixed options in a configuration text."""
    known = {o.name: o for o in form_options()}
    values: dict[str, str | bool] = {}
    for raw in text.split("\n"):
        parsed = options.config_line(raw)
        if parsed is None or parsed[0] not in known or parsed[0] in values:
            continue
        key, value, _ = parsed
        values[key] = True if known[key].boolean and value.lower() not in options_false() else (value or True)
        if known[key].boolean and value.lower() in options_false():
            values[key] = False
    return values


def options_false() -> set[str]:
    return {"n", "no", "f", "false", "0", "off"}


def apply_form(text: str, wanted: dict[str, str | bool]) -> str:
    """`text` with each option in `wanted` set (a line replaced, removed or appended); other lines kept."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    done: set[str] = set()
    out: list[str] = []
    for raw in lines:
        parsed = options.config_line(raw)
        key = parsed[0] if parsed else None
        if key in wanted:
            if key in done:
                continue  # a second single-valued line: the form's value replaces both
            done.add(key)
            value = wanted[key]
            if value is False or value == "":
                continue
            out.append(key if value is True else f"{key} {value}")
        else:
            out.append(raw)
    for key, value in wanted.items():
        if key not in done and value not in (False, ""):
            out.append(key if value is True else f"{key} {value}")
    return "\n".join(out) + "\n"


def option_entries() -> list[tuple[str, str]]:
    """(config-file line, help) for every option a configuration file may hold, in table order."""
    entries = []
    for option in options.EMAILRELAY_OPTIONS:
        if option.level == options.HIDDEN or option.name in ("help", "version"):
            continue
        line = option.name if option.boolean else f"{option.name} {option.arg or ''}".strip()
        entries.append((line, f"{option.group}: {option.help}"))
    return entries


class ConfigView(Vertical):
    BINDINGS = [
        Binding("ctrl+t", "check", "Check"),
        Binding("ctrl+s", "apply", "Apply"),
        Binding("ctrl+g", "revert", "Revert"),
        Binding("ctrl+f", "switch", "Form/text"),
    ]
    PALETTE = [
        ("Config: check", "validate the edited configuration (ctrl+t)", "view('config', 'check')"),
        ("Config: apply", "write the edited configuration and reload (ctrl+s)", "view('config', 'apply')"),
        ("Config: revert", "read the configuration file again (ctrl+g)", "view('config', 'revert')"),
        ("Config: form or text", "edit as a form of options or as text (ctrl+f)", "view('config', 'switch')"),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.original: str | None = None
        self.path: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="config-path")
        with ContentSwitcher(initial="config-textual", id="config-switcher"):
            with Horizontal(id="config-textual"):
                yield TextArea("", id="config-text", show_line_numbers=True)
                yield OptionList(*(Option(line, id=str(i)) for i, (line, _) in enumerate(option_entries())),
                                 id="config-options")
            yield VerticalScroll(id="config-form")  # filled when first shown: it is most of the app's widgets
        yield Static("", id="config-help")
        yield Static("", id="config-result")

    async def _build_form(self) -> None:
        form = self.query_one("#config-form", VerticalScroll)
        if form.children:
            return
        groups: dict[str, list[options.Option]] = {}
        for option in form_options():
            groups.setdefault(option.group, []).append(option)
        sections = []
        for group, members in groups.items():
            rows = []
            for option in members:
                if option.boolean:
                    field: list[Any] = [Checkbox(option.name, id=f"form-{option.name}", tooltip=option.help)]
                else:
                    field = [Label(option.name, classes="form-label"),
                             Input(placeholder=f"{option.arg or ''} {option.default or ''}".strip(),
                                   id=f"form-{option.name}", tooltip=option.help)]
                rows.append(Horizontal(*field, Static(escape(option.help), classes="form-help"), classes="form-row"))
            sections.append(Collapsible(*rows, title=group, collapsed=group != options.BASIC))
        await form.mount_all(sections)

    def _form_to_widgets(self) -> None:
        values = read_form_values(self.query_one("#config-text", TextArea).text)
        for option in form_options():
            widget = self.query_one(f"#form-{option.name}")
            value = values.get(option.name, False if option.boolean else "")
            if isinstance(widget, Checkbox):
                widget.value = bool(value)
            elif isinstance(widget, Input):
                widget.value = "" if value is True or value is False else str(value)

    def _form_values(self) -> dict[str, str | bool]:
        if not self.query_one("#config-form", VerticalScroll).children:
            return {}
        wanted: dict[str, str | bool] = {}
        for option in form_options():
            widget = self.query_one(f"#form-{option.name}")
            if isinstance(widget, Checkbox):
                wanted[option.name] = bool(widget.value)
            elif isinstance(widget, Input):
                wanted[option.name] = widget.value.strip()
        return wanted

    def _text_from_form(self) -> None:
        area = self.query_one("#config-text", TextArea)
        current = read_form_values(area.text)
        wanted = {k: v for k, v in self._form_values().items()
                  if v != current.get(k, False if isinstance(v, bool) else "")}
        if wanted:
            area.load_text(apply_form(area.text, wanted))

    async def action_switch(self) -> None:
        switcher = self.query_one("#config-switcher", ContentSwitcher)
        if switcher.current == "config-textual":
            await self._build_form()
            self._form_to_widgets()
            switcher.current = "config-form"
        else:
            self._text_from_form()
            switcher.current = "config-textual"

    def on_connected(self) -> None:
        self.run_worker(self.action_revert(), exclusive=True, group="config")

    async def action_revert(self) -> None:
        result = await self.app.call("config-get")  # type: ignore[attr-defined]
        if result is None:
            return
        self.path = result["path"]
        self.original = result["text"]
        area = self.query_one("#config-text", TextArea)
        if self.original is None:
            area.load_text("")
            area.read_only = True
            self.query_one("#config-path", Static).update(
                "no configuration file: the supervisor runs with options only: " + escape(" ".join(result["arguments"])))
        else:
            area.read_only = False
            area.load_text(self.original)
            self.query_one("#config-path", Static).update(f"[b]{escape(self.path or '')}[/b]")
        self._result("")

    def _result(self, text: str, error: bool = False) -> None:
        widget = self.query_one("#config-result", Static)
        widget.update(text)
        widget.set_class(error, "error")

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        line, help_text = option_entries()[int(event.option_id or 0)]
        self.query_one("#config-help", Static).update(escape(help_text))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        line, _ = option_entries()[int(event.option_id or 0)]
        area = self.query_one("#config-text", TextArea)
        if not area.read_only:
            area.insert(line + "\n", (area.document.line_count, 0) if area.text.endswith("\n") else area.cursor_location)
            area.focus()

    async def check(self) -> bool:
        if self.query_one("#config-switcher", ContentSwitcher).current == "config-form":
            self._text_from_form()
        text = self.query_one("#config-text", TextArea).text
        result = await self.app.call("config-validate", text=text)  # type: ignore[attr-defined]
        if result is None:
            return False
        if result["valid"]:
            self._result("[green]valid[/]")
        else:
            self._result("\n".join(f"error: {escape(e)}" for e in result["errors"]), error=True)
        return bool(result["valid"])

    async def action_check(self) -> None:
        await self.check()

    async def action_apply(self) -> None:
        if self.original is None or not await self.check():
            return
        text = self.query_one("#config-text", TextArea).text
        diff = "".join(difflib.unified_diff(self.original.splitlines(True), text.splitlines(True),
                                            self.path or "old", "new"))
        if not diff:
            self._result("no change")
            return

        async def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            if await self.app.call("config-replace", text=text) is not None:  # type: ignore[attr-defined]
                self.original = text
                self._result("[green]written and reloaded[/]")
                await self.app.refresh_status()  # type: ignore[attr-defined]

        self.app.push_screen(DiffScreen(diff), confirmed)


class DiffScreen(Question):
    BINDINGS = [Binding("y", "answer(True)", "Apply"), Binding("n,escape", "answer(False)", "Cancel")]

    def __init__(self, diff: str) -> None:
        super().__init__()
        self.diff = diff

    def compose(self) -> ComposeResult:
        with Vertical(id="diff"):
            yield Static("[b]Apply this change and reload?[/b]")
            with VerticalScroll():
                yield Static(self.diff, markup=False, id="diff-text")
            with Horizontal():
                yield Button("Apply (y)", variant="error", id="yes")
                yield Button("Cancel (n)", variant="primary", id="no")
