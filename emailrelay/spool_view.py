"""Read-only views of a spool for operators: message summaries, pages of them, one message.

One job: turn spool files into the plain dicts that the admin protocol
carries (admin_protocol.py ``list`` and ``show``) for ``emailrelay ctl`` and
the TUI.  It changes nothing; state changes stay in spool.py.

Paging: `page` lists the ids of the wanted states (one directory scan,
names only), sorts them by id, which is arrival order within one writer,
and reads only the envelopes of the page asked for, so a page of 100 from a
spool of 100,000 messages costs one scan and 100 small reads.

Failure behaviour: a message that vanishes or changes state between the
scan and the read is shown with ``state`` ``gone``; an envelope that does
not parse is shown with its ``error`` and what could be read (its size).
"""

from __future__ import annotations

import os
from typing import Any

from emailrelay.envelope import EnvelopeError, parse
from emailrelay.spool import Spool, State

STATE_NAMES = {State.READY: "ready", State.BUSY: "busy", State.BAD: "bad", State.NEW: "new"}
BY_NAME = {name: state for state, name in STATE_NAMES.items()}
#: The states an operator lists; NEW files are messages still arriving.
LISTED = (State.READY, State.BUSY, State.BAD)


def counts(spool: Spool) -> dict[str, int]:
    summary = spool.summary()
    return {STATE_NAMES[state]: summary[state] for state in State}


def summary(spool: Spool, msg_id: str, state: State) -> dict[str, Any]:
    """One message as a listing row: id, state, from, to, size, time, reason, reason_code, failures."""
    row: dict[str, Any] = {"id": msg_id, "state": STATE_NAMES[state]}
    path = spool.envelope_path(msg_id, state)
    try:
        data = path.read_bytes()
        stat = os.stat(path)
    except OSError:
        row["state"] = "gone"
        return row
    row["time"] = stat.st_mtime
    try:
        row["size"] = os.stat(spool.content_path(msg_id)).st_size
    except OSError:
        row["size"] = None
    try:
        envelope = parse(data)
    except EnvelopeError as e:
        row["error"] = str(e)
        return row
    row["from"] = envelope.from_address
    row["to"] = envelope.recipients
    row["client"] = envelope.client
    reasons = envelope.reasons
    row["failures"] = envelope.reason_count
    if reasons:
        row["reason"] = reasons[-1]
        codes = envelope.extra_values("ReasonCode")
        row["reason_code"] = codes[-1] if codes else ""
    return row


def page(spool: Spool, states: tuple[State, ...] = LISTED, offset: int = 0, limit: int = 100) -> dict[str, Any]:
    """``{"total": n, "offset": o, "messages": [rows]}`` for the ids of `states`, in id order."""
    wanted = set(states)
    found: list[tuple[str, State]] = []
    from emailrelay.spool import parse_name

    with os.scandir(spool.directory) as it:
        for entry in it:
            parsed = parse_name(entry.name)
            if parsed is not None and parsed[1] in wanted:
                found.append((parsed[0], parsed[1]))  # type: ignore[arg-type]
    found.sort(key=lambda item: arrival_order(item[0]))
    offset = max(0, offset)
    rows = [summary(spool, msg_id, state) for msg_id, state in found[offset : offset + max(0, limit)]]
    return {"total": len(found), "offset": offset, "messages": rows}


def show(spool: Spool, msg_id: str, max_bytes: int = 1024 * 1024) -> dict[str, Any] | None:
    """Envelope fields and content of one message; None if there is none with this id."""
    if not msg_id or "/" in msg_id or "\0" in msg_id:
        return None
    for state in (State.READY, State.BUSY, State.BAD, State.NEW):
        path = spool.envelope_path(msg_id, state)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as e:
            return {"id": msg_id, "state": STATE_NAMES[state], "error": (e.strerror or str(e)).lower()}
        result = summary(spool, msg_id, state)
        result["envelope"] = data.decode("utf-8", "replace")
        try:
            envelope = parse(data)
            result["fields"] = {
                "content": envelope.content, "from": envelope.from_address, "to_local": envelope.to_local,
                "to_remote": envelope.to_remote, "authentication": envelope.authentication,
                "client": envelope.client, "forward_to": envelope.forward_to,
                "forward_to_address": envelope.forward_to_address, "reasons": envelope.reasons,
            }
        except EnvelopeError:
            pass
        try:
            with open(spool.content_path(msg_id), "rb") as f:
                content = f.read(max_bytes + 1)
        except OSError as e:
            result["content_error"] = (e.strerror or str(e)).lower()
            return result
        result["truncated"] = len(content) > max_bytes
        content = content[:max_bytes]
        result["binary"] = b"\0" in content
        result["content"] = content.decode("utf-8", "replace")
        return result
    return None


def arrival_order(msg_id: str) -> tuple[int, int, int, str]:
    """Arrival order: by time, then pid and sequence; unusual ids last, by name."""
    parts = msg_id.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
        return (int(parts[2]), int(parts[1]), int(parts[3]), msg_id)
    return (1 << 62, 0, 0, msg_id)
