"""The TUI's boundaries: only emailrelay/tui imports Textual, and the TUI never touches the spool."""

from __future__ import annotations

import ast
import gc
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "emailrelay"
TUI = PACKAGE / "tui"
#: Modules that read or change spool files, or do file I/O on the spool's behalf.
SPOOL_MODULES = {"emailrelay.spool", "emailrelay.spool_view", "emailrelay.durable", "emailrelay.envelope",
                 "emailrelay.resubmit", "emailrelay.submit", "emailrelay.workers"}


def parse(path: Path) -> ast.Module:
    """ast.parse with the garbage collector held off: Python 3.11 fails the parse ("AST constructor
    recursion depth mismatch") when a finalizer of some earlier test's object runs inside it."""
    gc.collect()
    gc.disable()
    try:
        return ast.parse(path.read_text(), str(path))
    finally:
        gc.enable()


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_only_the_tui_imports_textual():
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if TUI not in p.parents and any(m == "textual" or m.startswith("textual.") for m in imports(p))]
    assert offenders == []
    assert any(m.startswith("textual") for m in imports(TUI / "app.py"))  # the check can see an import


def test_the_tui_never_touches_the_spool():
    for path in TUI.rglob("*.py"):
        found = imports(path)
        touching = {m for m in found if any(m == s or m.startswith(s + ".") for s in SPOOL_MODULES)}
        assert touching == set(), f"{path.name} imports {touching}"
        file_modules = {"os", "shutil", "pathlib", "glob", "io", "tempfile"} & found
        assert file_modules == set(), f"{path.name} imports {file_modules}"
        calls = [node.func.id for node in ast.walk(parse(path))
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)]
        assert "open" not in calls, f"{path.name} opens files"
