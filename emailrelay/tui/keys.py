"""Every key of emailrelay-tui, as plain text: for the help screen and the man page (manpage.py).

One job: turn the Textual bindings of the app, each tab's view and each
screen into (keys, description) rows, the way Textual applies them: a
class inherits its bases' bindings and a key it binds itself replaces the
inherited one.  Only this package imports Textual; the man page generator
reads keys through this module.
"""

from __future__ import annotations

import importlib
from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

#: The view class of each tab, as (module, class name), in app.TABS order.
VIEWS: dict[str, tuple[str, str]] = {
    "dashboard": ("emailrelay.tui.dashboard", "Dashboard"),
    "workers": ("emailrelay.tui.workers", "WorkersView"),
    "spool": ("emailrelay.tui.spool", "SpoolView"),
    "failures": ("emailrelay.tui.failures", "FailuresView"),
    "logs": ("emailrelay.tui.logs", "LogsView"),
    "config": ("emailrelay.tui.config_editor", "ConfigView"),
}
#: The screens and dialogs over the tabs, as (title, module, class name).
SCREENS: list[tuple[str, str, str]] = [
    ("Message view", "emailrelay.tui.message", "MessageScreen"),
    ("Help screen", "emailrelay.tui.help", "HelpScreen"),
    ("Confirmation dialog", "emailrelay.tui.help", "Confirm"),
    ("Configuration diff", "emailrelay.tui.config_editor", "DiffScreen"),
]
#: Textual's key names shown as the character they stand for.
NAMES = {"question_mark": "?", "slash": "/"}
PALETTE_KEY = App.COMMAND_PALETTE_BINDING


def load(module: str, name: str) -> type:
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def key_text(key: str) -> str:
    """``escape,q,question_mark`` as ``escape, q, ?``."""
    return ", ".join(NAMES.get(k.strip(), k.strip()) for k in key.split(","))


def effective(cls: type) -> list[tuple[str, Binding]]:
    """The keys that work in an emailrelay view or screen: (keys, binding), in Textual's merge order."""
    keys: dict[str, Binding] = {}
    for base in reversed(cls.__mro__):
        if not base.__module__.startswith("emailrelay."):
            continue
        if base.__dict__.get("_inherit_bindings") is False:
            keys.clear()
        for binding in base.__dict__.get("BINDINGS", []):
            if isinstance(binding, Binding):
                for key in binding.key.split(","):
                    keys[key.strip()] = binding
    grouped: dict[int, tuple[Binding, list[str]]] = {}
    for key, binding in keys.items():
        grouped.setdefault(id(binding), (binding, []))[1].append(key)
    return [(",".join(names), binding) for binding, names in grouped.values()]


def describe(binding: Binding) -> str:
    """A binding's description; a tab key's says which tab."""
    if binding.action.startswith("show_tab("):
        return f"Show the {binding.description} tab"
    return str(binding.description)


def rows(cls: type) -> list[tuple[str, str]]:
    return [(key_text(keys), describe(b)) for keys, b in effective(cls)]


def everywhere() -> list[tuple[str, str]]:
    """The app's keys, the command palette and Textual's own keys that have a description."""
    from emailrelay.tui.app import EmailRelayApp

    textual = [b for b in [*App.BINDINGS, *Screen.BINDINGS] if isinstance(b, Binding) and b.description]
    return [*rows(EmailRelayApp), (PALETTE_KEY, "Command palette (see COMMAND PALETTE)"),
            *((key_text(b.key), str(b.description)) for b in textual)]


def groups() -> list[tuple[str, list[tuple[str, str]]]]:
    """(title, rows) for everywhere, each tab and each screen: what the help screen and man page list."""
    from emailrelay.tui.app import TABS

    result = [("Everywhere", everywhere())]
    result += [(f"{title} tab", rows(load(*VIEWS[tab]))) for tab, title, _ in TABS]
    result += [(title, rows(load(module, name))) for title, module, name in SCREENS]
    return result


def view_classes() -> list[Any]:
    return [load(*VIEWS[tab]) for tab in VIEWS]
