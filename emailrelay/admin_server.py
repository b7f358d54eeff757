"""The admin server: E-MailRelay's ``--admin <port>`` text interface (SPEC.md 9).

Wire format, version 2.6 (what clients such as 2.6's own scripts parse, kept
exactly):

- plain text over TCP; no greeting and no prompt on connect; no idle timeout;
- the line ending is taken from the first line received (``\\r\\n`` or
  ``\\n``) and used for every reply (CRLF until then); later lines are
  split on that ending only;
- a reply is its text plus the line ending (none for an empty text), then
  the prompt ``E-MailRelay> `` with no line ending; lines of a multi-line
  reply are separated by the detected ending;
- the first whitespace-separated token names the command, in any case; a
  blank line gets the prompt alone; anything else unknown gets
  ``error: unrecognised command``, and the 30th of those also closes the
  connection;
- after ``notify``, events arrive whenever they happen, between replies:
  line ending, ``EVENT: ``, the non-empty fields joined with ``: ``
  (printable-escaped, runs of spaces squeezed to one), then two spaces and
  no line ending.  At most 100 events wait for a slow reader; the oldest
  are dropped.

Each command is one function below, ``cmd_<name>(context, session, args)``,
whose docstring gives its reply.  Commands act only through the
`AdminContext` the storage worker builds (the spool, the forwarder, the SMTP
server switches, the network monitor, the way to stop the process), so
`AdminSession` -- line framing, dispatch and rendering, no I/O -- can be
driven without sockets.  `AdminServer` is the asyncio adapter: it applies
the remote-clients rule (non-local peers are dropped without a reply unless
--remote-clients, as for SMTP), moves bytes, runs ``flush`` in a task of
its own and writes queued events.

Failure behaviour: a connection that breaks or sends a line over
`MAX_LINE` bytes is closed and logged; the server goes on.  ``flush``
answers only when its forwarding run ends; ``terminate`` (only with
--admin-terminate) answers nothing: the whole process stops, exit code 0.

Not here: forwarding itself (workers/forward.py), spool file names
(spool.py), what the events mean (events.py).
"""

from __future__ import annotations

import asyncio
import enum
import math
import os
import re
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from emailrelay import COMPATIBLE_VERSION
from emailrelay.envelope import printable
from emailrelay.events import EventBus, NetworkMonitor
from emailrelay.log import Log
from emailrelay.smtp_server import display_address, is_local_address
from emailrelay.spool import Spool, State

PROMPT = "E-MailRelay> "
ERROR_LIMIT = 30  # unrecognised commands before the connection is dropped
EVENT_QUEUE_LIMIT = 100  # events waiting per notify connection; the oldest go first
MAX_LINE = 10000  # bytes in one command line; longer closes the connection
READ_SIZE = 65536

NO_REMOTE = "error: no remote server configured: use --forward-to"
_WHITESPACE = re.compile(r"[ \t\r\n]+")
_SPACES = re.compile(r" {2,}")


def info_texts() -> dict[str, str]:
    """What ``info <topic>`` prints; ``version`` is the compatible version, as clients parse it."""
    from emailrelay.options import _copyright, banner, tls_library

    credit = [f"TLS library: {tls_library()}"]
    if tls_library().startswith("OpenSSL"):
        credit += [
            "This product includes software developed by the OpenSSL Project",
            "for use in the OpenSSL Toolkit (http://www.openssl.org/)",
        ]
    return {
        "copyright": f"{banner()}\n{_copyright()}",
        "credit": "\n".join(credit),
        "version": COMPATIBLE_VERSION,
        "warranty": "This program comes with ABSOLUTELY NO WARRANTY.\n"
        "It is free software, licensed under the GNU General Public License,\n"
        "version 3 or later: you may share and change it under its terms.",
    }


@dataclass
class AdminContext:
    """Everything the commands may touch; the storage worker fills it in.

    Callbacks stand for the parts of the process the admin server does not
    own: the forwarder (`request_forwarding`), a separate forwarding run for
    ``flush`` (`flush` returns "" or the error that cut the run short), the
    SMTP server's switches and the network monitor.
    """

    spool: Spool
    forward_to: str = ""  # "" = no forward address: forward and flush refuse
    request_forwarding: Callable[[str], None] | None = None
    flush: Callable[[], Awaitable[str]] | None = None
    network_report: Callable[[], list[str]] = list
    smtp_enable: Callable[[bool], None] = lambda enabled: None
    dnsbl_suspend: Callable[[float], None] = lambda seconds: None  # 0 resumes; math.inf = for ever
    terminate: Callable[[], None] | None = None  # set only with --admin-terminate
    info: dict[str, str] = field(default_factory=info_texts)
    pid: int = field(default_factory=os.getpid)


class Then(enum.Enum):
    """What the adapter does after sending a reply."""

    CONTINUE = "continue"
    CLOSE = "close"  # end the connection
    FLUSH = "flush"  # run context.flush(); its end sends the reply
    NOTIFY = "notify"  # start writing events to this connection


@dataclass(frozen=True)
class Reply:
    text: str | None  # lines separated by "\n"; "" = the prompt alone; None = nothing at all
    then: Then = Then.CONTINUE


class LineTooLong(Exception):
    """A command line went over MAX_LINE bytes."""


class AdminSession:
    """One admin connection's protocol: bytes in, lines out, replies and events rendered.

    No I/O: `feed` frames, `handle` runs a command, `render`/`event`
    produce the bytes to send.
    """

    def __init__(self, context: AdminContext) -> None:
        self.context = context
        self.eol: str | None = None  # detected from the first line
        self.errors = 0
        self.notifying = False
        self.flushing = False
        self._buffer = b""

    def feed(self, data: bytes) -> list[str]:
        """The complete lines in `data` (without line endings); raises LineTooLong."""
        self._buffer += data
        if self.eol is None:
            end = self._buffer.find(b"\n")
            if end < 0:
                return self._check_length([])
            self.eol = "\r\n" if end > 0 and self._buffer[end - 1 : end] == b"\r" else "\n"
        *lines, self._buffer = self._buffer.split(self.eol.encode())
        return self._check_length([line.decode("utf-8", "surrogateescape") for line in lines])

    def _check_length(self, lines: list[str]) -> list[str]:
        if len(self._buffer) > MAX_LINE:
            raise LineTooLong()
        return lines

    def handle(self, line: str) -> Reply:
        tokens = _WHITESPACE.split(line.strip(" \t\r\n"))
        if tokens == [""]:
            return Reply("")
        name = tokens[0].lower()
        command = COMMANDS.get(name)
        if command is None or (command is cmd_terminate and self.context.terminate is None):
            self.errors += 1
            return Reply("error: unrecognised command", Then.CLOSE if self.errors >= ERROR_LIMIT else Then.CONTINUE)
        return command(self.context, self, tokens[1:])

    def render(self, text: str) -> bytes:
        """A reply's bytes: the text and a line ending (unless empty), then the prompt."""
        eol = self.eol or "\r\n"
        body = (text + "\n").replace("\n", eol) if text else ""
        return (body + PROMPT).encode("utf-8", "surrogateescape")

    def flush_done(self, error: str) -> bytes:
        """The late reply of ``flush``: ``OK`` or ``error: <reason>``."""
        self.flushing = False
        return self.render(f"error: {error}" if error else "OK")

    def event(self, fields: tuple[str, ...]) -> bytes:
        """One ``notify`` event's bytes."""
        text = "EVENT: " + printable(": ".join(f for f in fields if f))
        return ((self.eol or "\r\n") + _SPACES.sub(" ", text) + "  ").encode("utf-8", "surrogateescape")


class EventQueue:
    """Events waiting to be written to one notify connection: the newest `limit`."""

    def __init__(self, limit: int = EVENT_QUEUE_LIMIT) -> None:
        self._items: deque[tuple[str, ...]] = deque(maxlen=limit)
        self.dropped = 0

    def put(self, fields: tuple[str, ...]) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(fields)

    def take(self) -> list[tuple[str, ...]]:
        items = list(self._items)
        self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)


# -- the commands ---------------------------------------------------------------

Command = Callable[[AdminContext, AdminSession, list[str]], Reply]


def cmd_help(context: AdminContext, session: AdminSession, args: list[str]) -> Reply:
    """``help`` -> ``commands: dnsbl, failures, flush, forward, help, info, list, notify, pid, quit, smtp,
    status, terminate, unfail-all`` on one line; ``terminate, `` only with --admin-terminate."""
    names = sorted(n for n in COMMANDS if n != "terminate" or context.terminate is not None)
    return Reply("commands: " + ", ".join(names))


def cmd_status(context: AdminContext, session: AdminSession, args: list[str]) -> Reply:
    """``status`` -> the network report, one item a line: ``LISTEN: <addr>`` per listener,
    ``OUT started: <n>``, ``OUT finished: <n>``, ``OUT: <local> -> <peer or (target)>`` per
    client connection, ``IN started: <n>``, ``IN finished: <n>``, ``IN: <local> <- <peer>``
    per server connection (admin connections included)."""
    return Reply("\n".join(context.network_report()))


def cmd_info(context: AdminContext, session: AdminSession, args: list[str]) -> Reply:
    """``info <topic>`` -> the topic's text (``info version`` -> ``2.6``); no or another topic ->
    ``usage: info {copyright|credit|version|warranty}``."""
    topic = args[0].lower() if args else ""
    if topic not in context.info:
        return Reply("usage: info {" + "|".join(sorted(context.info)) + "}")
    return Reply(context.info[topic])


def cmd_forward(context: AdminContext, session: AdminSession, args: list[str]) -> Reply:
    """``forward`` -> ``OK``, and a forwarding run with reason ``admin`` is requested (queued if
    one is running); without a forward address -> ``error: no remote server configured: use
    --forward-to``."""
    if not context.forward_to or context.request_forwarding is None:
        return Reply(NO_REMOTE)
    context.request_forwarding("admin")
    return Reply("OK")


def cmd_flush(context: AdminContext, session: AdminSession, args: list[str]) -> Reply:
    """``flush`` -> nothing yet: a forwarding run of this connection's own starts, and when it
    ends the reply is ``OK`` or ``error: <reason>``.  At once instead: ``error: still working``
    (this connection's flush has not ended), ``error: no remote server configured: use
    --forward-to``, ``error: no messages to send``."""
    if session.flushing:
        return Reply("error: still working")
    if not context.forward_to or context.flush is None:
        return Reply(NO_REMOTE)
    if not context.spool.ids(State.READY):
        return Reply("error: no messages to send")
    session.flushing = True
    return Reply(None, Then.FLUSH)


def _ids(ids: list[str]) -> Reply:
    return Reply("\n".join(ids) if ids else "<none>")


def cmd_list(context: AdminContext, session: AdminSession, args: list[str]) -> Reply:
    """``list`` -> the ids of the ready (``*.envelope``) messages, sorted, one a line; ``<none>``."""
    return _ids(context.spool.ids(State.READY))


def cmd_failures(context: AdminContext, session: AdminSession, args: list[str]) -> Reply:
    """``failures`` -> the ids of the failed (``*.envelope.bad``) messages, sorted, one a line; ``<none>``."""
    return _ids(context.spool.ids(State.BAD))


def cmd_unfail_all(context: AdminContext, session: AdminSession, args: list[str]) -> Reply:
    """``unfail-all`` -> the prompt alone; every failed message is made ready again (its
    ``Reason`` lines stay), errors ignored."""
    for msg_id in context.spool.ids(State.BAD):
        try:
            context.spool.rename(msg_id, State.BAD, State.READY)
        except OSError:
            pass
    return Reply("")


def cmd_pid(context: AdminContext, session: AdminSession, args: list[str]) -> Reply:
    """``pid`` -> the process id."""
    return Reply(str(context.pid))


def cmd_smtp(context: AdminContext, session: AdminSession, args: list[str]) -> Reply:
    """``smtp disable`` / ``smtp enable`` -> ``OK``; from now on new SMTP sessions get (or stop
    getting) ``421 service not available`` as the greeting and in reply to MAIL.  Anything
    else -> ``usage: smtp {disable|enable}``."""
    action = args[0].lower() if args else ""
    if action not in ("disable", "enable"):
        return Reply("usage: smtp {disable|enable}")
    context.smtp_enable(action == "enable")
    return Reply("OK")


def cmd_dnsbl(context: AdminContext, session: AdminSession, args: list[str]) -> Reply:
    """``dnsbl start`` -> ``OK``, DNSBL checks resume; ``dnsbl stop [<seconds>]`` -> ``OK``, they
    are suspended for that long (for ever without a time).  Anything else -> ``usage: dnsbl
    {start|stop <timeout>}``."""
    action = args[0].lower() if args else ""
    arg = args[1] if len(args) > 1 else ""
    if action == "start" and not arg:
        context.dnsbl_suspend(0)
        return Reply("OK")
    if action == "stop" and (not arg or (arg.isascii() and arg.isdigit() and int(arg) <= 0xFFFFFFFF)):
        context.dnsbl_suspend(float(arg) if arg else math.inf)
        return Reply("OK")
    return Reply("usage: dnsbl {start|stop <timeout>}")


def cmd_notify(context: AdminContext, session: AdminSession, args: list[str]) -> Reply:
    """``notify`` -> nothing, not even the prompt; events are written to this connection from now on."""
    session.notifying = True
    return Reply(None, Then.NOTIFY)


def cmd_quit(context: AdminContext, session: AdminSession, args: list[str]) -> Reply:
    """``quit`` -> nothing; the connection is closed."""
    return Reply(None, Then.CLOSE)


def cmd_terminate(context: AdminContext, session: AdminSession, args: list[str]) -> Reply:
    """``terminate`` (only with --admin-terminate, else unrecognised) -> nothing; the whole
    process stops as after a clean shutdown, exit code 0."""
    assert context.terminate is not None
    context.terminate()
    return Reply(None)


COMMANDS: dict[str, Command] = {
    "dnsbl": cmd_dnsbl,
    "failures": cmd_failures,
    "flush": cmd_flush,
    "forward": cmd_forward,
    "help": cmd_help,
    "info": cmd_info,
    "list": cmd_list,
    "notify": cmd_notify,
    "pid": cmd_pid,
    "quit": cmd_quit,
    "smtp": cmd_smtp,
    "status": cmd_status,
    "terminate": cmd_terminate,
    "unfail-all": cmd_unfail_all,
}


# -- the asyncio adapter ----------------------------------------------------------


class AdminServer:
    """Serves the admin interface on already-bound listening sockets."""

    def __init__(
        self,
        context: AdminContext,
        log: Log,
        *,
        remote_clients: bool = False,
        bus: EventBus | None = None,
        monitor: NetworkMonitor | None = None,
    ) -> None:
        self.context = context
        self.log = log
        self.remote_clients = remote_clients
        self.bus = bus
        self.monitor = monitor
        self._servers: list[tuple[asyncio.AbstractServer, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, sockets: list[socket.socket]) -> None:
        for sock in sockets:
            address = display_address(sock.getsockname())
            server = await asyncio.start_server(self._accept, sock=sock, limit=READ_SIZE)
            self._servers.append((server, address))
            if self.monitor is not None:
                self.monitor.listening(address)

    async def stop(self) -> None:
        """Stop listening and close every admin connection."""
        for server, address in self._servers:
            server.close()
            if self.monitor is not None:
                self.monitor.not_listening(address)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for server, _ in self._servers:
            await server.wait_closed()

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a task until it ends; `stop` cancels the ones left."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.track(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass  # stop() cancelled it: ending quietly spares asyncio's "unhandled exception" report

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer_address = display_address(peer)
        peer_ip = str(peer[0]) if isinstance(peer, tuple) else ""
        if not self.remote_clients and peer_ip and not is_local_address(peer_ip):
            self.log.warning(
                f"admin connection from {peer_address} refused: not a local address: use --remote-clients to allow it"
            )
            writer.transport.abort()
            return
        self.log.info(f"admin connection from {peer_address}")
        record = None
        if self.monitor is not None:
            record = self.monitor.inbound(display_address(writer.get_extra_info("sockname")), peer_address)
        connection = _Connection(AdminSession(self.context), writer, self)
        reason = "disconnected"
        try:
            reason = await connection.run(reader)
        except (ConnectionError, OSError) as e:
            reason = str(e) or type(e).__name__
        except asyncio.CancelledError:
            reason = "shutting down"
            raise
        finally:
            await connection.close()
            if record is not None and self.monitor is not None:
                self.monitor.closed(record)
            self.log.info(f"admin connection closed: {reason}: {peer_address}")


class _Connection:
    """One admin connection: the command loop, and the event writer after ``notify``.

    A ``flush`` runs in a task of the server's (`AdminServer.track`), so a
    client that goes away does not cut a forwarding run short in the middle
    of a message; only shutdown does.
    """

    def __init__(self, session: AdminSession, writer: asyncio.StreamWriter, server: AdminServer) -> None:
        self.session = session
        self.writer = writer
        self.server = server
        self.events: EventQueue | None = None
        self.events_ready = asyncio.Event()
        self.event_task: asyncio.Task[None] | None = None

    async def run(self, reader: asyncio.StreamReader) -> str:
        """Read and answer commands until the peer goes or a command closes; returns why."""
        session = self.session
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                return "disconnected"
            try:
                lines = session.feed(data)
            except LineTooLong:
                return "line too long"
            for line in lines:
                reply = session.handle(line)
                if reply.text is not None:
                    self.writer.write(session.render(reply.text))
                if reply.then is Then.CLOSE:
                    await _drain(self.writer)
                    return "quit" if reply.text is None else "too many errors"
                if reply.then is Then.FLUSH:
                    self.server.track(asyncio.get_running_loop().create_task(self._flush()))
                elif reply.then is Then.NOTIFY:
                    self._notify()
            await _drain(self.writer)

    async def _flush(self) -> None:
        flush = self.session.context.flush
        assert flush is not None
        try:
            error = await flush()
        except Exception as e:  # a bug must cost one reply, never the connection
            error = f"internal error: {type(e).__name__}: {e}"
            self.server.log.error(f"admin flush failed: {error}")
        if not self.writer.is_closing():
            self.writer.write(self.session.flush_done(error))
            await _drain(self.writer)

    def _notify(self) -> None:
        bus = self.server.bus
        if self.events is not None or bus is None:
            return
        self.events = EventQueue()
        bus.subscribe(self._on_event)
        self.event_task = asyncio.get_running_loop().create_task(self._write_events())

    def _on_event(self, fields: tuple[str, ...]) -> None:
        assert self.events is not None
        dropped = self.events.dropped
        self.events.put(fields)
        if self.events.dropped and not dropped:
            self.server.log.warning("too many notification events: discarding old ones")
        self.events_ready.set()

    async def _write_events(self) -> None:
        assert self.events is not None
        while True:
            await self.events_ready.wait()
            self.events_ready.clear()
            for fields in self.events.take():
                if self.writer.is_closing():
                    return
                self.writer.write(self.session.event(fields))
                await _drain(self.writer)

    async def close(self) -> None:
        """Stop the events and close the socket; a running flush goes on to its end, unanswered."""
        if self.events is not None and self.server.bus is not None:
            self.server.bus.unsubscribe(self._on_event)
        if self.event_task is not None:
            self.event_task.cancel()
            await asyncio.gather(self.event_task, return_exceptions=True)
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - the transport may be gone already
            pass


async def _drain(writer: asyncio.StreamWriter) -> None:
    try:
        await writer.drain()
    except (ConnectionError, OSError):
        pass
