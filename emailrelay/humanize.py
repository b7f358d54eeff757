"""Short human forms of durations and sizes, for emailrelay ctl and the TUI: ``90s``, ``2h``, ``1.5M``."""

from __future__ import annotations


def duration(seconds: float | None) -> str:
    """``-`` for unknown; seconds up to 2 minutes, then minutes, hours up to 2 days, then days."""
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    if whole < 120:
        return f"{whole}s"
    if whole < 7200:
        return f"{whole // 60}m"
    if whole < 172800:
        return f"{whole // 3600}h"
    return f"{whole // 86400}d"


def size(n: int | None) -> str:
    """``-`` for unknown; bytes below 1 KiB, then K, M, G with one decimal."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{int(value)}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(n)
