"""Small text helpers the views share: ages, sizes, worker-state colours."""

from __future__ import annotations

import time

from emailrelay.humanize import duration, size  # noqa: F401 - the views' size and duration

STATE_STYLES = {
    "RUNNING": "green", "STARTING": "yellow", "BACKOFF": "dark_orange", "STOPPING": "yellow",
    "STOPPED": "grey50", "EXITED": "yellow", "FATAL": "bold red",
}
LEVEL_STYLES = {"error": "bold red", "warning": "dark_orange", "info": "", "debug": "grey50"}


def age(then: float | None, now: float | None = None) -> str:
    """How long ago `then` (a time.time() value) was, in humanize's short form."""
    return duration(None if then is None else (now or time.time()) - then)


def state_markup(state: str) -> str:
    style = STATE_STYLES.get(state, "")
    return f"[{style}]{state}[/]" if style else state
