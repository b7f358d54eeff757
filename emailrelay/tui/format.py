"""Small text helpers the views share: ages, sizes, worker-state colours."""

from __future__ import annotations

import time

STATE_STYLES = {
    "RUNNING": "green", "STARTING": "yellow", "BACKOFF": "dark_orange", "STOPPING": "yellow",
    "STOPPED": "grey50", "EXITED": "yellow", "FATAL": "bold red",
}
LEVEL_STYLES = {"error": "bold red", "warning": "dark_orange", "info": "", "debug": "grey50"}


def age(then: float | None, now: float | None = None) -> str:
    if then is None:
        return "-"
    seconds = max(0, int((now or time.time()) - then))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def duration(seconds: float | None) -> str:
    return "-" if seconds is None else age(0, seconds)


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{int(value)}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(n)


def state_markup(state: str) -> str:
    style = STATE_STYLES.get(state, "")
    return f"[{style}]{state}[/]" if style else state
