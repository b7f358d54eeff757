"""The man page of emailrelay-tui documents every key, tab, palette entry and option the TUI has.

The page is generated (emailrelay.manpage.tui_page) from the BINDINGS of the
app, of each tab's view and of each screen, from app.TABS and from the
palette entries, so these tests check the rendered text against the classes
themselves, and that man/emailrelay-tui.1 is the generated text.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import io
import os
import pkgutil
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from textual.binding import Binding
from textual.dom import DOMNode

import emailrelay.tui
from emailrelay import admin_protocol, manpage
from emailrelay.tui import app as tui_app
from emailrelay.tui import keys

#: How the page spells Textual's key names that stand for a character.
KEY_DISPLAY = {"question_mark": "?", "slash": "/"}


def _detroff(source: str) -> str:
    """A rough plain-text rendering of troff source, for when groff is not installed.

    A .TP item comes out as one line, its tag, two spaces and its body, as groff sets the short tags.
    """
    lines = []
    source_lines = source.splitlines()
    i = 0
    while i < len(source_lines):
        line = source_lines[i]
        if line.startswith(".TP") and i + 2 < len(source_lines):
            lines.append(f"       {source_lines[i + 1]}  {source_lines[i + 2]}")
            i += 3
            continue
        if line.startswith((".SH ", ".SS ")):
            lines.append(line[4:] if line.startswith(".SH ") else "   " + line[4:])
        elif not line.startswith("."):
            lines.append("       " + line)
        i += 1
    text = "\n".join(lines)
    text = re.sub(r"\\f[BIRP]", "", text)
    return text.replace("\\-", "-").replace("\\&", "").replace("\\(bu", "*").replace("\\e", "\\")


def _groff(source: str) -> str:
    result = subprocess.run(["groff", "-man", "-Tascii", "-P-c", "-rLL=200n"],
                            input=source, capture_output=True, text=True, check=True)
    return re.sub(r".\x08", "", result.stdout)


@pytest.fixture(scope="module", params=["groff", "plain"])
def page(request: pytest.FixtureRequest) -> str:
    """man/emailrelay-tui.1 as text: rendered by groff (when installed), and by a rough troff stripper."""
    source = manpage.tui_page()
    if request.param == "plain":
        return _detroff(source)
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    return _groff(source)


def _section(text: str, title: str) -> str:
    match = re.search(rf"^{re.escape(title)}\n(.*?)(?=^[A-Z][A-Z ]+\n|\Z)", text, re.M | re.S)
    assert match, f"no {title} section"
    return match.group(1)


def _subsection(section: str, title: str) -> str:
    match = re.search(rf"^ {{3}}{re.escape(title)}\n(.*?)(?=^ {{3}}\S|\Z)", section, re.M | re.S)
    assert match, f"no {title} subsection"
    return match.group(1)


def _shown(key: str) -> str:
    return ", ".join(KEY_DISPLAY.get(k, k) for k in key.split(","))


def _own_bindings(cls: type) -> list[Binding]:
    return [b for b in cls.__dict__.get("BINDINGS", []) if isinstance(b, Binding)]


def _working_keys(cls: type) -> dict[str, str]:
    """Each key that works in a class of ours, with its description, as Textual itself merges them.

    Keys from Textual's own base classes (App, Screen) are left out: the page lists them under Everywhere.
    """
    ours = {(b.action, b.description) for base in cls.__mro__ if base.__module__.startswith("emailrelay.")
            for b in _own_bindings(base)}
    merged = cls._merge_bindings().key_to_bindings  # type: ignore[attr-defined]
    return {key: bindings[-1].description for key, bindings in merged.items()
            if (bindings[-1].action, bindings[-1].description) in ours}


def _items(text: str) -> list[tuple[list[str], str]]:
    """The tagged items of a rendered list: (the keys of the tag, the body)."""
    lines = text.splitlines()
    items = []
    for i, line in enumerate(lines):
        match = re.match(r"^ {7}(\S.*?)(?: {2,}(\S.*))?$", line)
        if not match:
            continue
        body = match.group(2)
        if body is None and i + 1 < len(lines) and re.match(r"^ {8,}\S", lines[i + 1]):
            body = lines[i + 1].strip()  # a long tag: groff sets the body on the next line
        if body is not None:
            items.append((match.group(1).split(", "), body))
    return items


def _class(module: str, name: str) -> type:
    return getattr(importlib.import_module(module), name)


def _documented_classes() -> dict[type, str]:
    """Each class whose keys the page lists, with the title of its subsection of KEYS."""
    titles = {tab: title for tab, title, _ in tui_app.TABS}
    classes: dict[type, str] = {tui_app.EmailRelayApp: "Everywhere"}
    classes.update({_class(*where): f"{titles[tab]} tab" for tab, where in keys.VIEWS.items()})
    classes.update({_class(module, name): title for title, module, name in keys.SCREENS})
    return classes


def test_the_page_is_fresh() -> None:
    path = manpage.MAN_DIR / "emailrelay-tui.1"
    assert path.read_text(encoding="utf-8") == manpage.tui_page(), "run python -m emailrelay.manpage"
    assert manpage.PAGES["emailrelay-tui.1"] is manpage.tui_page


def test_groff_has_no_warnings() -> None:
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    result = subprocess.run(["groff", "-man", "-ww", "-z"], input=manpage.tui_page(),
                            capture_output=True, text=True, check=True)
    assert result.stderr == ""


def test_man_renders_the_installed_page() -> None:
    if shutil.which("man") is None or shutil.which("groff") is None:
        pytest.skip("man is not installed")
    result = subprocess.run(["man", "-l", str(manpage.MAN_DIR / "emailrelay-tui.1")], capture_output=True,
                            text=True, env={"MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "100",
                                            "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    text = re.sub(r".\x08", "", result.stdout)
    assert "emailrelay-tui [--admin-socket path]" in text
    assert "COMMAND PALETTE" in text


def test_sections_present(page: str) -> None:
    for title in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "TABS", "KEYS", "COMMAND PALETTE", "FILES",
                  "SEE ALSO"):
        assert re.search(rf"^{title}$", page, re.M), title


def test_synopsis_and_see_also(page: str) -> None:
    assert "emailrelay-tui [--admin-socket path]" in _section(page, "SYNOPSIS")
    assert "emailrelay(1)" in _section(page, "SEE ALSO")


def test_description_says_admin_socket_only_and_reconnects(page: str) -> None:
    description = " ".join(_section(page, "DESCRIPTION").split())
    assert "only to the supervisor's admin socket" in description
    assert "never reads or writes the spool" in description
    assert f"connects again every {tui_app.RETRY_PERIOD:g} second" in description


def test_every_documented_class_has_its_bindings_in_keys(page: str) -> None:
    keys = _section(page, "KEYS")
    for cls, title in _documented_classes().items():
        items = _items(_subsection(keys, title))
        for binding in _own_bindings(cls):
            assert binding.description, f"{cls.__name__}: {binding.key} has no description"
            shown = _shown(binding.key).split(", ")
            assert any(tag == shown and binding.description in body for tag, body in items), \
                f"{title}: {binding.key} {binding.description}"


def test_each_tab_and_screen_lists_exactly_the_keys_that_work_there(page: str) -> None:
    """Inherited keys included (the spool and failures tabs share a base class), overridden ones not."""
    keys = _section(page, "KEYS")
    for cls, title in _documented_classes().items():
        if cls is tui_app.EmailRelayApp:
            continue
        listed = {key: body for tag, body in _items(_subsection(keys, title)) for key in tag}
        working = {_shown(key): description for key, description in _working_keys(cls).items()}
        assert listed == working, title


def test_everywhere_has_the_app_keys_and_the_palette(page: str) -> None:
    items = _items(_subsection(_section(page, "KEYS"), "Everywhere"))
    listed = {key: body for tag, body in items for key in tag}
    for key, description in _working_keys(tui_app.EmailRelayApp).items():
        assert description in listed[_shown(key)], key
    assert "Command palette" in listed["ctrl+p"]
    assert listed["ctrl+q"] == "Quit"


def test_every_class_with_bindings_in_the_tui_is_documented() -> None:
    documented = set(_documented_classes())
    for info in pkgutil.iter_modules(emailrelay.tui.__path__, "emailrelay.tui."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, DOMNode) and _own_bindings(cls):
                # a base class's keys are listed with each documented class that inherits them
                assert any(issubclass(d, cls) for d in documented), \
                    f"{cls.__qualname__} has keys the man page does not list"


def test_views_are_the_ones_the_app_composes() -> None:
    """TUI_VIEWS names the class of each tab: the running app (not connected) has exactly these."""

    async def run() -> tuple[list[type], list[tuple[str, str, str]]]:
        app = tui_app.EmailRelayApp("/nonexistent/emailrelay-tui-test.sock")
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            return [type(v) for v in app.views()], app.palette_entries()

    views, entries = asyncio.run(run())
    assert views == [_class(*keys.VIEWS[tab]) for tab, _, _ in tui_app.TABS]
    assert [(t, h[:1].upper() + h[1:] + ".") for t, h, _ in entries] == manpage.tui_palette_entries()


def test_every_palette_entry_is_listed(page: str) -> None:
    palette = " ".join(_section(page, "COMMAND PALETTE").split())
    assert "ctrl+p" in palette
    for title, help_text in manpage.tui_palette_entries():
        assert f"{title} {help_text}" in palette
    for view_tab, where in keys.VIEWS.items():
        for title, _, action in getattr(_class(*where), "PALETTE", []):
            assert title in palette, (view_tab, action)


def test_every_tab_is_described(page: str) -> None:
    tabs = _section(page, "TABS")
    assert set(keys.VIEWS) == {tab for tab, _, _ in tui_app.TABS}
    assert set(manpage._tui_tab_text()) == {tab for tab, _, _ in tui_app.TABS}
    for _, title, key in tui_app.TABS:
        assert re.search(rf"^\s*{re.escape(key)} {re.escape(title)}\s", tabs, re.M), title


def test_options_match_the_parser(page: str) -> None:
    """The OPTIONS section lists exactly the options of emailrelay-tui's argparse parser."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        tui_app.main(["--help"])
    assert exit_.value.code == 0
    help_text = out.getvalue()
    listed = help_text.split("options:", 1)[1]
    from_parser = {tuple(re.split(r"\s{2,}", line.strip())[0].split(", "))
                   for line in listed.splitlines() if line.strip().startswith("-")}
    from_table = {tuple(names[:-1]) + ((names[-1] + (f" {metavar}" if metavar else "")),)
                  for names, metavar, _ in manpage.TUI_OPTIONS}
    assert from_parser == from_table
    options = _section(page, "OPTIONS")
    for names, metavar, _ in manpage.TUI_OPTIONS:
        tag = ", ".join(names) + (f" {metavar.lower()}" if metavar else "")
        assert re.search(rf"^\s*{re.escape(tag)}(  |$)", options, re.M), tag


def test_files_name_the_default_admin_sockets(page: str) -> None:
    files = _section(page, "FILES")
    assert "/run/emailrelay/admin.sock" in files
    assert "$XDG_RUNTIME_DIR/emailrelay/admin.sock" in files
    if os.geteuid() == 0:
        assert admin_protocol.default_socket_path() in files
    else:
        assert Path(admin_protocol.default_socket_path()).parts[-2:] == ("emailrelay", "admin.sock")
