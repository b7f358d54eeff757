"""The supervisor's admin protocol: JSON lines over an owner-only Unix socket.

One job: the wire format shared by the supervisor (supervisor.py), its
clients (admin_client.py: ``emailrelay ctl``, the TUI) and the workers.
Encoding and decoding only; no sockets, no policy.

Version 1
=========

Framing: each message is one JSON object encoded as UTF-8 on one line
ending in ``\\n``; a line may be at most `MAX_LINE` bytes.  On connect the
server sends a greeting::

    {"protocol": "emailrelay-admin", "version": 1, "server": "emailrelay 0.1.0", "pid": 1234}

A client whose major version differs must disconnect.  Then the client
sends requests and the server answers each with exactly one reply carrying
the request's ``id`` (any JSON value; replies come in request order)::

    {"id": 7, "op": "retry", "msg": "emailrelay.1234.1700000000.1"}
    {"id": 7, "ok": true, "result": {...}}
    {"id": 7, "ok": false, "error": {"kind": "not-found", "message": "...", "retry": false}}

``error.kind`` is one of `ERROR_KINDS`; ``error.retry`` says whether the
same request may succeed later without anything else changing (a worker
still starting, a message claimed by the forwarder) or never will (bad
arguments, unknown message, invalid configuration).

After ``subscribe``, the server also sends stream messages, interleaved
with replies, that carry no ``id``::

    {"stream": "event", "event": {"type": "message", "action": "stored", "msg": "...", "worker": "storage", "time": 1.7e9}}
    {"stream": "log", "record": {"worker": "storage", "level": "info", "text": "...", "time": 1.7e9}}

Event types: ``message`` (actions ``stored``, ``forwarded``, ``failed``
with ``reason``, ``retried``, ``deleted``), ``worker`` (``name``, ``old``,
``new``, ``reason``: a lifecycle state change) and ``config``
(``reloaded``).  A subscriber that does not read is dropped from the stream
once `SUBSCRIBER_BACKLOG` bytes wait for it; it is told so with an event of
type ``overflow`` first if possible.

Operations (`OPERATIONS`; arguments in brackets are optional):

=================  ==========================================  ==========================================
op                 arguments                                   result
=================  ==========================================  ==========================================
status             --                                          supervisor, workers, spool summary
list               [state] [offset] [limit]                    total and one page of messages
show               msg [max_bytes]                             envelope fields and content (text)
forward            --                                          the forward worker is told to run
retry              msg | all: true                             per-message outcomes (emailrelay-resubmit's)
delete             msg                                         the state it was deleted from
worker-restart     name                                        --
worker-stop        name                                        --
worker-start       name                                        --
config-get         --                                          path and text of the configuration file
config-validate    text                                        errors (empty when valid)
config-replace     text                                        written atomically, then reloaded
reload             --                                          workers restarted with the file re-read
logs               [limit]                                     the newest log records
subscribe          [streams: ["event", "log"]]                 the streams now sent on this connection
shutdown           --                                          the supervisor stops (reply first)
=================  ==========================================  ==========================================

With named instances (OPTIONS.md section 5) each has its own spool: ``list``,
``show``, ``retry`` and ``delete`` take an optional ``unit`` ("" is the
unnamed instance); without it ``list`` merges every spool and the others
act on the spool that holds the message.  Rows and events carry ``unit``.

Workers use the same socket with ``hello`` (``worker``: its name), then
``ready``, ``event`` (``event``: an event object) and ``forward-request``
(``reason``); the supervisor checks the peer's pid against the process it
started under that name.

Not here: what the operations do (supervisor.py), connecting and
timeouts (admin_client.py), E-MailRelay's TCP text interface
(admin_server.py).
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL = "emailrelay-admin"
VERSION = 1
MAX_LINE = 8 * 1024 * 1024
SUBSCRIBER_BACKLOG = 4 * 1024 * 1024

OPERATIONS = (
    "status", "list", "show", "forward", "retry", "delete",
    "worker-restart", "worker-stop", "worker-start",
    "config-get", "config-validate", "config-replace", "reload",
    "logs", "subscribe", "shutdown",
)
WORKER_OPERATIONS = ("hello", "ready", "event", "forward-request")

#: Error kinds and whether retrying the same request can help by default.
ERROR_KINDS: dict[str, bool] = {
    "bad-request": False,   # malformed JSON, unknown op, wrong arguments
    "not-found": False,     # no such message or worker
    "refused": False,       # not allowed in this state (invalid configuration, ...)
    "busy": True,           # the message is claimed, the worker is changing state
    "unavailable": True,    # the worker that would do it is not running
    "internal": True,       # an unexpected failure; logged by the supervisor
}
STATES = ("ready", "busy", "bad", "all")


class ProtocolError(Exception):
    """A line that is not a protocol message; str() says why."""


class AdminError(Exception):
    """A request that failed: `kind` from `ERROR_KINDS`, `retry` whether retrying can help."""

    def __init__(self, kind: str, message: str, retry: bool | None = None) -> None:
        super().__init__(message)
        self.kind = kind if kind in ERROR_KINDS else "internal"
        self.retry = ERROR_KINDS[self.kind] if retry is None else retry

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": str(self), "retry": self.retry}

    @classmethod
    def from_dict(cls, error: Any) -> AdminError:
        if not isinstance(error, dict):
            return cls("internal", "malformed error reply")
        return cls(str(error.get("kind", "internal")), str(error.get("message", "")), bool(error.get("retry", False)))


def encode(message: dict[str, Any]) -> bytes:
    """One message as its line, newline included."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One received line (with or without its newline) as a message; raises ProtocolError."""
    if len(line) > MAX_LINE:
        raise ProtocolError("line too long")
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"not JSON: {e}") from None
    if not isinstance(message, dict):
        raise ProtocolError("not a JSON object")
    return message


def greeting(server: str, pid: int) -> dict[str, Any]:
    return {"protocol": PROTOCOL, "version": VERSION, "server": server, "pid": pid}


def check_greeting(message: dict[str, Any]) -> None:
    """Raises ProtocolError unless ``message`` is a greeting this client can talk to."""
    if message.get("protocol") != PROTOCOL:
        raise ProtocolError("not an emailrelay admin socket")
    if message.get("version") != VERSION:
        raise ProtocolError(f"unsupported admin protocol version {message.get('version')!r} (this client speaks {VERSION})")


def request(request_id: Any, op: str, **args: Any) -> dict[str, Any]:
    return {"id": request_id, "op": op, **args}


def ok(request_id: Any, result: Any = None) -> dict[str, Any]:
    return {"id": request_id, "ok": True, "result": result}


def failed(request_id: Any, error: AdminError) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": error.as_dict()}


def stream(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """A stream message: kind ``event`` or ``log``."""
    return {"stream": kind, "event" if kind == "event" else "record": body}


def default_socket_path() -> str:
    """Where the supervisor listens unless --admin-socket says otherwise.

    ``/run/emailrelay/admin.sock`` for root; otherwise under the user's
    runtime directory (platformdirs: ``$XDG_RUNTIME_DIR/emailrelay``).
    """
    import os

    if os.geteuid() == 0:
        return "/run/emailrelay/admin.sock"
    import platformdirs

    return os.path.join(platformdirs.user_runtime_dir("emailrelay"), "admin.sock")
