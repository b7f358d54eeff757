"""SMTP server protocol: framing, command parsing and the session state machine.

This module is the protocol logic of the storage server and does no socket
I/O.  The asyncio adapter (smtp_server.py) feeds received bytes into a
`Framer`, hands each framed event to `Session.handle`, and writes the reply
lines it gets back.  Mail policy (where a message goes, who may send) stays
in a `Handler` object that the worker supplies.

Why not aiosmtpd: aiosmtpd reads a whole DATA section into memory, fixes its
own reply texts and parameter rules, accepts bare-LF line endings and has no
BDAT; E-MailRelay compatibility (SPEC.md sections 0 and 6) needs exact reply
texts, streaming of message content to the spool, CRLF-only framing and
per-state rules, which would mean overriding nearly every method.  A small
sans-I/O module with a thin adapter is shorter, faster and testable without
sockets.

States and transitions follow E-MailRelay 2.6's server state machine and
live in one table, `TRANSITIONS`; `Session.enter_state` refuses moves that
are not in it.

    START --EHLO/HELO--> IDLE --MAIL--> GOT_MAIL --RCPT--> GOT_RCPT
    GOT_RCPT --DATA--> DATA --end of data--> IDLE
    GOT_RCPT --BDAT--> BDAT (chunks) --BDAT LAST--> IDLE
    any --RSET--> IDLE (START stays START); BDAT/DATA misuse --> MUST_RESET
    any --QUIT--> END

Framing (SPEC.md 6.5): a command line ends only at CRLF; a line over
MAX_LINE bytes gets ``500 line too long`` and is discarded.  Message data
ends only at CRLF "." CRLF: bare LF and bare CR are ordinary data, so
``\\n.\\n`` and ``\\r.\\n`` do not end a message (no SMTP smuggling).
"""

from __future__ import annotations

import base64
import binascii
import enum
import inspect
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from emailrelay.verifiers import Verdict

#: Longest command line accepted, including CRLF (SPEC.md section 0).
MAX_LINE = 2048
#: Longest mailbox (address) accepted, in octets (SPEC.md section 0).
MAX_ADDRESS = 256
#: Protocol errors after which the connection is dropped (SPEC.md 6.3).
ERROR_LIMIT = 8


# -- framing ----------------------------------------------------------------


class Mode(enum.Enum):
    COMMAND = "command"
    DATA = "data"
    BDAT = "bdat"


@dataclass(frozen=True, slots=True)
class Line:
    """A command line without its CRLF."""

    text: bytes


@dataclass(frozen=True, slots=True)
class TooLong:
    """A command line exceeded MAX_LINE; it is being discarded."""


@dataclass(frozen=True, slots=True)
class Data:
    """A piece of message content, already dot-unstuffed, CRLFs kept."""

    chunk: bytes


@dataclass(frozen=True, slots=True)
class DataEnd:
    """The CRLF "." CRLF that ends a DATA section."""


@dataclass(frozen=True, slots=True)
class ChunkEnd:
    """All the bytes of one BDAT chunk have arrived."""


Event = Line | TooLong | Data | DataEnd | ChunkEnd


class Framer:
    """Turns a byte stream into SMTP events.  Feed bytes, then pull events.

    The mode is set by the session (DATA after a 354, BDAT after a BDAT
    command); events are pulled one at a time so a mode change applies to
    the very next byte.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.mode = Mode.COMMAND
        self._discarding = False  # inside an over-long command line
        self._bol = True  # DATA: at the beginning of a line
        self._remaining = 0  # BDAT: bytes still expected

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def clear(self) -> None:
        """Drop everything buffered (after STARTTLS: no plaintext may leak into the TLS session)."""
        self._buf.clear()
        self._pos = 0
        self._discarding = False

    def start_data(self) -> None:
        self.mode = Mode.DATA
        self._bol = True

    def start_chunk(self, size: int) -> None:
        self.mode = Mode.BDAT
        self._remaining = size

    def next_event(self) -> Event | None:
        """The next complete event, or None if more bytes are needed."""
        if self.mode is Mode.COMMAND:
            return self._next_line()
        if self.mode is Mode.DATA:
            return self._next_data()
        return self._next_chunk()

    def _next_line(self) -> Event | None:
        buf, pos = self._buf, self._pos
        end = buf.find(b"\r\n", pos)
        if self._discarding:
            if end < 0:
                # keep a trailing CR: it may be the start of the CRLF
                self._pos = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
                return None
            self._pos = end + 2
            self._discarding = False
            return self._next_line()
        if end < 0:
            if len(buf) - pos >= MAX_LINE:
                self._discarding = True
                self._pos = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
                return TooLong()
            return None
        self._pos = end + 2
        if end + 2 - pos > MAX_LINE:
            return TooLong()
        return Line(bytes(buf[pos:end]))

    def _next_data(self) -> Event | None:
        buf, pos = self._buf, self._pos
        size = len(buf)
        if pos >= size:
            return None
        if self._bol and buf[pos] == 0x2E:  # "."
            if size - pos < 2:
                return None
            if buf[pos + 1] == 0x0D:  # ".\r"
                if size - pos < 3:
                    return None
                if buf[pos + 2] == 0x0A:  # ".\r\n": end of data
                    self._pos = pos + 3
                    self.mode = Mode.COMMAND
                    return DataEnd()
            pos += 1  # dot-unstuffing: drop the leading dot
            self._pos = pos
            self._bol = False
            if pos >= size:
                return None
        end = buf.find(b"\r\n.", pos)
        if end >= 0:
            self._pos = end + 2
            self._bol = True
            return Data(bytes(buf[pos : end + 2]))
        stop = size
        if buf.endswith(b"\r\n"):
            self._bol = True
        elif buf.endswith(b"\r"):
            stop = size - 1  # may be the start of CRLF "."
            self._bol = False
        else:
            self._bol = False
        if stop <= pos:
            return None
        self._pos = stop
        return Data(bytes(buf[pos:stop]))

    def _next_chunk(self) -> Event | None:
        if self._remaining == 0:
            self.mode = Mode.COMMAND
            return ChunkEnd()
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        if available <= 0:
            return None
        n = min(available, self._remaining)
        self._pos = pos + n
        self._remaining -= n
        return Data(bytes(buf[pos : pos + n]))


# -- address parsing (SPEC.md 6.4) -------------------------------------------


@dataclass
class AddressCommand:
    """The parsed address part of MAIL FROM / RCPT TO."""

    error: str = ""
    address: str = ""  # domain converted to IDNA A-labels
    raw: str = ""  # as received
    utf8_mailbox: bool = False
    tail: str = ""  # the parameters after the address


def _address_style(address: str) -> tuple[bool, bool, bool]:
    """(valid, utf8 local part, utf8 domain) of an address (SPEC.md 6.4)."""
    if address.startswith("@") or address.endswith("@"):
        return False, False, False
    for ch in address:
        o = ord(ch)
        if o < 0x20 or o == 0x7F or 0xDC80 <= o <= 0xDCFF:  # control, DEL, bad UTF-8
            return False, False, False
    at = address.rfind("@")
    local, domain = (address, "") if at < 0 else (address[:at], address[at + 1 :])
    return True, not local.isascii(), not domain.isascii()


def _to_alabels(address: str) -> str:
    at = address.rfind("@")
    if at < 0:
        return address
    domain = address[at + 1 :]
    try:
        encoded = domain.encode("idna").decode("ascii")
    except UnicodeError:
        encoded = domain
    return address[: at + 1] + encoded


def parse_address_command(line: str, *, allow_empty: bool, strict: bool = True) -> AddressCommand:
    """Parse the ``<address> params`` part after ``FROM:`` / ``TO:``."""
    if "\0" in line or "\r" in line or "\n" in line:
        return AddressCommand("invalid character in mailbox name")
    colon = line.find(":")
    if colon < 0:
        return AddressCommand("missing colon")
    start = colon + 1
    while start < len(line) and line[start] in " \t":
        start += 1
    nobrackets = start < len(line) and line[start] != "<"
    if nobrackets and strict:
        return AddressCommand("missing angle brackets in mailbox name")
    if nobrackets:
        end = start
        while end < len(line) and line[end] not in " \t":
            end += 1
        address, tail = line[start:end], line[end:]
    else:
        if start + 2 > len(line) or line.find(">", start + 1) < 0:
            return AddressCommand("invalid angle brackets in mailbox name")
        open_pos = start
        if line[start + 1] == "@":  # source route <@a,@b:user@c>
            open_pos = line.find(":", start + 1)
            if open_pos < 0 or open_pos + 2 >= len(line):
                return AddressCommand("invalid source route in mailbox name")
        if line[open_pos + 1] == '"':
            end = -1
            i = open_pos + 2
            while i < len(line):
                if line[i] == "\\":
                    i += 1
                elif line[i] == '"':
                    end = line.find(">", i)
                    break
                i += 1
            if end < 0:
                return AddressCommand("invalid quoting")
        else:
            end = line.find(">", open_pos + 1)
        if end + 1 < len(line) and line[end + 1] != " ":
            return AddressCommand("invalid angle brackets")
        address, tail = line[open_pos + 1 : end], line[end + 1 :]
    if not address and not allow_empty:
        return AddressCommand("invalid empty mailbox")
    if len(address.encode("utf-8", "surrogateescape")) > MAX_ADDRESS:
        return AddressCommand("address too long")
    valid, utf8_local, utf8_domain = _address_style(address)
    if not valid:
        return AddressCommand("invalid character in mailbox name")
    encoded = _to_alabels(address) if utf8_domain else address
    return AddressCommand("", encoded, address, utf8_local, tail)


@dataclass
class MailParams:
    size: int = 0
    body: str = ""
    auth: str = ""
    smtputf8: bool = False
    error: str = ""


def parse_mail_params(tail: str) -> MailParams:
    """MAIL FROM parameters; unknown ones are ignored (SPEC.md 6.4)."""
    from emailrelay.envelope import xtext_decode, xtext_encode

    params = MailParams()
    for word in tail.replace("\t", " ").split():
        key, eq, value = word.partition("=")
        key = key.upper()
        if key == "SMTPUTF8":
            if eq:
                params.error = "invalid mail-from parameter"
            params.smtputf8 = True
        elif not eq or not value:
            continue
        elif key == "SIZE" and not params.size:
            params.size = int(value) if value.isdigit() else 0
        elif key == "BODY" and not params.body:
            params.body = value.upper()
        elif key == "AUTH" and not params.auth:
            params.auth = value if value == "<>" else xtext_encode(xtext_decode(value))
    return params


BODY_TO_CONTENT = {"7BIT": "7bit", "8BITMIME": "8bit", "BINARYMIME": "binarymime"}


# -- policy interface ----------------------------------------------------------


@dataclass
class Transaction:
    """One mail transaction: from MAIL to the end of its data."""

    mail_from: str
    body: str = ""
    auth_in: str = ""
    smtputf8: bool = False
    utf8_names: bool = False
    to_remote: list[str] = field(default_factory=list)
    to_local: list[str] = field(default_factory=list)
    size: int = 0  # bytes of content received
    overflow: bool = False
    write_error: str = ""
    message: object = None  # the handler's handle on its stored message


class Handler(Protocol):
    """What the session needs from the mail policy (implemented by workers)."""

    def begin(self, session: Session, transaction: Transaction) -> None:
        """A MAIL FROM was accepted: create the message. Raises OSError."""

    def write(self, transaction: Transaction, data: bytes) -> None:
        """Store content bytes. Raises OSError."""

    def commit(self, session: Session, transaction: Transaction) -> Awaitable[str]:
        """End of data: make the message durable; returns the reply line."""

    def abort(self, transaction: Transaction) -> None:
        """Drop an unfinished transaction's files."""

    def verify(self, session: Session, address: str, mail_from: str) -> Awaitable[Verdict | None]:
        """Check a RCPT (or VRFY: mail_from "") address; None = valid remote, unchanged."""


class ServerAuth(Protocol):
    """Server authentication policy (secrets, trust, mechanisms); None when there is no --server-auth."""

    def mechanisms(self, secure: bool) -> list[str]:
        """Mechanisms offered in a plain (or TLS) session; [] = none."""

    def start(self, mechanism: str) -> AuthExchange:
        """A new exchange for one offered mechanism."""

    def trusted(self, peer_ip: str) -> str | None:
        """The trust keyword of a ``server none`` line matching the peer, or None."""

    def failed(self, peer_ip: str, mechanism: str, user: str, reason: str) -> float:
        """Record a failure (logged by the policy); returns seconds to wait before replying."""

    def succeeded(self, peer_ip: str) -> None:
        """Forget earlier failures of this peer."""


class AuthExchange(Protocol):
    """One SASL exchange (sasl.ServerMechanism has this shape)."""

    id: str | None

    def challenge(self) -> bytes: ...

    def respond(self, data: bytes) -> tuple[str, object] | Awaitable[tuple[str, object]]: ...


@dataclass(frozen=True)
class SessionConfig:
    domain: str
    version_text: str  # e.g. "emailrelay 0.1.0 (E-MailRelay 2.6 compatible)"
    size: int = 0
    pipelining: bool = True
    chunking: bool = False
    smtputf8: bool = False
    smtputf8strict: bool = False
    strictparsing: bool = True
    anonymous: frozenset[str] = frozenset()
    auth: ServerAuth | None = None  # --server-auth
    starttls: bool = False  # --server-tls: STARTTLS offered
    tls_required: bool = False  # --server-tls-required


# -- the session state machine -------------------------------------------------


class State(enum.Enum):
    START = "start"
    IDLE = "idle"
    GOT_MAIL = "got-mail"
    GOT_RCPT = "got-rcpt"
    DATA = "data"
    BDAT = "bdat"
    MUST_RESET = "must-reset"
    AUTH = "auth"  # inside a SASL exchange: the next line is a response
    END = "end"


S = State
#: Every legal state change.  "RSET/EHLO/HELO" may go to IDLE from anywhere.
TRANSITIONS: dict[State, frozenset[State]] = {
    S.START: frozenset({S.IDLE, S.END}),
    S.IDLE: frozenset({S.IDLE, S.GOT_MAIL, S.MUST_RESET, S.AUTH, S.END}),
    S.GOT_MAIL: frozenset({S.IDLE, S.GOT_RCPT, S.MUST_RESET, S.END}),
    S.GOT_RCPT: frozenset({S.IDLE, S.DATA, S.BDAT, S.MUST_RESET, S.END}),
    S.DATA: frozenset({S.IDLE, S.END}),
    S.BDAT: frozenset({S.IDLE, S.MUST_RESET, S.END}),
    S.MUST_RESET: frozenset({S.IDLE, S.END}),
    S.AUTH: frozenset({S.IDLE, S.END}),
    S.END: frozenset(),
}

#: Commands allowed in each state (anything else valid is "out of sequence").
ALLOWED: dict[str, frozenset[State]] = {
    "MAIL": frozenset({S.IDLE}),
    "RCPT": frozenset({S.GOT_MAIL, S.GOT_RCPT}),
    "DATA": frozenset({S.GOT_MAIL, S.GOT_RCPT}),
    "BDAT": frozenset({S.IDLE, S.GOT_MAIL, S.GOT_RCPT, S.BDAT}),
    "VRFY": frozenset({S.START, S.IDLE, S.GOT_MAIL, S.GOT_RCPT}),
    "AUTH": frozenset({S.IDLE}),
    "STARTTLS": frozenset({S.IDLE}),
}

OUT_OF_SEQUENCE = "503 command out of sequence -- use RSET to resynchronise"


class Closed(Exception):
    """The session is over: close the connection after sending `replies`."""

    def __init__(self, replies: list[str], reason: str) -> None:
        super().__init__(reason)
        self.replies = replies
        self.reason = reason


class Session:
    """One SMTP server session: events in, reply lines out.

    `handle(event)` returns the reply lines (without CRLF) to send, and may
    change the framer's mode.  It raises `Closed` when the connection must
    end (QUIT, too many errors).  Only `commit` is asynchronous.
    """

    def __init__(
        self,
        config: SessionConfig,
        handler: Handler,
        framer: Framer,
        peer_ip: str,
        *,
        peer_port: int = 0,
        on_state_change: Callable[[State, State], None] | None = None,
    ) -> None:
        self.config = config
        self.on_state_change = on_state_change
        self.handler = handler
        self.framer = framer
        self.peer_ip = peer_ip
        self.peer_port = peer_port
        self.state = State.START
        self.peer_name = ""
        self.transaction: Transaction | None = None
        self.errors = 0
        self._bdat_last = False
        self._bdat_size = 0
        self.secure = False  # TLS is on (implicit, or after STARTTLS)
        self.cipher = ""
        self.client_certificate = ""  # PEM, when the client presented one
        self.starttls_pending = False  # the adapter must now do the TLS handshake
        self.auth_id = ""  # authenticated id
        self.auth_mechanism = ""
        self.trust = ""  # keyword of a matching "server none" line
        self.auth_delay = 0.0  # seconds the adapter should wait before sending the next replies
        self._exchange: AuthExchange | None = None
        #: Set by the adapter: False once the client has gone (checked before a slow commit).
        self.is_connected: Callable[[], bool] = lambda: True
        if config.auth is not None:
            self.trust = config.auth.trusted(peer_ip) or ""

    # state

    def enter_state(self, new: State) -> None:
        old = self.state
        if new is not old and new not in TRANSITIONS[old]:
            raise AssertionError(f"illegal smtp state change {old.value} -> {new.value}")
        self.state = new
        if self.on_state_change is not None and new is not old:
            self.on_state_change(old, new)

    def greeting(self) -> str:
        if "server" in self.config.anonymous:
            return "220 greeting"
        return f"220 {self.config.domain} -- {self.config.version_text} -- Service ready"

    def _error(self, reply: str) -> list[str]:
        self.errors += 1
        if self.errors >= ERROR_LIMIT:
            raise Closed([reply], "too many protocol errors from the client")
        return [reply]

    def _clear(self) -> None:
        if self.transaction is not None:
            self.handler.abort(self.transaction)
            self.transaction = None

    def close(self) -> None:
        """The connection has gone: drop any unfinished message."""
        self._clear()

    # events

    async def handle(self, event: Event) -> list[str]:
        if isinstance(event, Line):
            return await self._command(event.text)
        if isinstance(event, TooLong):
            return self._error("500 line too long")
        if isinstance(event, Data):
            self._store(event.chunk)
            return []
        if isinstance(event, DataEnd):
            return [await self._end_of_message()]
        if isinstance(event, ChunkEnd):
            return await self._chunk_end()
        raise TypeError(event)

    def _store(self, chunk: bytes) -> None:
        t = self.transaction
        if t is None or t.write_error:
            return
        t.size += len(chunk)
        if self.config.size and t.size > self.config.size:
            t.overflow = True
            return
        try:
            self.handler.write(t, chunk)
        except OSError as e:
            t.write_error = (e.strerror or str(e)).lower()

    async def _end_of_message(self) -> str:
        t = self.transaction
        assert t is not None
        self.transaction = None
        self.enter_state(State.IDLE)
        if t.overflow:
            self.handler.abort(t)
            return "552 message size exceeds fixed maximum message size"
        if t.write_error:
            self.handler.abort(t)
            return f"452 cannot store message: {t.write_error}"
        return await self.handler.commit(self, t)

    async def _command(self, raw: bytes) -> list[str]:
        line = raw.decode("utf-8", "surrogateescape")
        if self.state is State.AUTH:
            return await self._auth_response(line)
        verb, _, arg = line.replace("\t", " ").partition(" ")
        verb = verb.upper()
        method = getattr(self, "smtp_" + verb, None) if verb.isalpha() else None
        if method is None or (verb == "BDAT" and not self.config.chunking) or (
            verb == "STARTTLS" and not self.config.starttls
        ):
            return self._error("500 command unrecognized")
        allowed = ALLOWED.get(verb)
        if allowed is not None and self.state not in allowed:
            return self._error(OUT_OF_SEQUENCE)
        if self.state is State.MUST_RESET and verb not in ("RSET", "QUIT", "NOOP", "HELP", "EXPN", "EHLO", "HELO"):
            return self._error(OUT_OF_SEQUENCE)
        return await method(arg.strip(" "), line)

    # commands

    async def smtp_QUIT(self, arg: str, line: str) -> list[str]:
        self._clear()
        self.enter_state(State.END)
        raise Closed(["221 OK"], "quit")

    async def smtp_NOOP(self, arg: str, line: str) -> list[str]:
        return ["250 noop"]

    async def smtp_HELP(self, arg: str, line: str) -> list[str]:
        return ["502 command not implemented"]

    smtp_EXPN = smtp_HELP

    async def smtp_RSET(self, arg: str, line: str) -> list[str]:
        self._clear()
        if self.state is not State.START:
            self.enter_state(State.IDLE)
        return ["250 state reset"]

    def _hello(self, arg: str, *, ehlo: bool = False) -> bool:
        """EHLO/HELO: a new peer name ends any transaction (EHLO also AUTH); False if no name."""
        name = arg.strip(" \t")
        if not name:
            return False
        self.peer_name = name
        self._clear()
        if ehlo:
            self.auth_id = self.auth_mechanism = ""
        self.enter_state(State.IDLE)
        return True

    async def smtp_EHLO(self, arg: str, line: str) -> list[str]:
        if not self._hello(arg, ehlo=True):
            return ["501 parameter required"]
        c = self.config
        hello = "smtp says hello" if "server" in c.anonymous else f"{c.domain} says hello"
        lines = [hello]
        if c.size:
            lines.append(f"SIZE {c.size}")
        mechanisms = self._mechanisms()
        if mechanisms:
            lines.append("AUTH " + " ".join(mechanisms))
        if c.starttls and not self.secure:
            lines.append("STARTTLS")
        if "vrfy" not in c.anonymous:
            lines.append("VRFY")
        if c.chunking:
            lines += ["CHUNKING", "BINARYMIME"]
        if c.pipelining:
            lines.append("PIPELINING")
        if c.smtputf8:
            lines.append("SMTPUTF8")
        lines.append("8BITMIME")
        return [f"250-{x}" for x in lines[:-1]] + [f"250 {lines[-1]}"]

    async def smtp_HELO(self, arg: str, line: str) -> list[str]:
        if not self._hello(arg):
            return ["501 parameter required"]
        return ["250 hello"]

    # authentication and TLS (SPEC.md 6.3, section 0)

    def _mechanisms(self) -> list[str]:
        auth = self.config.auth
        return auth.mechanisms(self.secure) if auth is not None else []

    def _must_starttls(self) -> bool:
        return self.config.tls_required and not self.secure

    def _needs_auth(self) -> str:
        """The 530 reply when MAIL/VRFY must wait for TLS or AUTH, else ""."""
        if self._must_starttls():
            return "530 must issue a STARTTLS command first"
        if self.config.auth is not None and not self.auth_id and not self.trust:
            return "530 authentication required"
        return ""

    async def smtp_AUTH(self, arg: str, line: str) -> list[str]:
        auth = self.config.auth
        if auth is None:
            return ["502 command not implemented"]
        if self.auth_id:
            return self._error(OUT_OF_SEQUENCE)
        if self._must_starttls():
            return ["530 must issue a STARTTLS command first"]
        offered = self._mechanisms()
        if not offered:
            if auth.mechanisms(True) and not self.secure:
                suffix = ": use starttls" if self.config.starttls else ""
                return [f"504 unsupported authentication mechanism{suffix}"]
            return ["502 command not implemented"]
        words = arg.split()
        name = words[0].upper() if words else ""
        if name not in offered:
            return ["504 unsupported authentication mechanism"]
        from emailrelay import sasl

        try:
            initial = sasl.initial_response(name, words)
        except sasl.SaslError:
            return ["501 invalid argument"]
        exchange = auth.start(name)
        self._exchange = exchange
        self.auth_mechanism = name
        self.enter_state(State.AUTH)
        if initial is not None:
            return await self._auth_step(initial)
        return ["334 " + base64.b64encode(exchange.challenge()).decode()]

    async def _auth_response(self, line: str) -> list[str]:
        if line.strip() == "*":
            self._exchange = None
            self.enter_state(State.IDLE)
            return ["501 authentication cancelled"]
        try:
            data = base64.b64decode(line.strip(), validate=True)
        except (binascii.Error, ValueError):
            return self._auth_done("fail", "response not base64")
        return await self._auth_step(data)

    async def _auth_step(self, data: bytes) -> list[str]:
        assert self._exchange is not None
        answer = self._exchange.respond(data)
        if inspect.isawaitable(answer):  # PAM checks run in a thread
            answer = await answer
        outcome, value = answer
        if outcome == "continue":
            assert isinstance(value, bytes)
            return ["334 " + base64.b64encode(value).decode()]
        return self._auth_done(outcome, str(value))

    def _auth_done(self, outcome: str, value: str) -> list[str]:
        exchange, self._exchange = self._exchange, None
        self.enter_state(State.IDLE)
        auth = self.config.auth
        assert auth is not None and exchange is not None
        if outcome == "ok":
            self.auth_id = value
            auth.succeeded(self.peer_ip)
            return ["235 authentication successful"]
        self.auth_delay = auth.failed(self.peer_ip, self.auth_mechanism, exchange.id or "", value)
        self.auth_mechanism = ""
        return ["535 authentication failed"]

    async def smtp_STARTTLS(self, arg: str, line: str) -> list[str]:
        if self.secure:
            return self._error(OUT_OF_SEQUENCE)
        self.starttls_pending = True
        return ["220 ready to start tls"]

    def tls_started(self, cipher: str, certificate: str) -> None:
        """The adapter finished a handshake (STARTTLS or implicit TLS)."""
        self.starttls_pending = False
        self.secure = True
        self.cipher = cipher
        self.client_certificate = certificate
        self.auth_id = self.auth_mechanism = ""
        if self.state is not State.START:
            self._clear()
            self.enter_state(State.IDLE)

    async def smtp_VRFY(self, arg: str, line: str) -> list[str]:
        if "vrfy" in self.config.anonymous:
            return ["252 cannot vrfy"]
        refusal = self._needs_auth()
        if refusal:
            return [refusal]
        address = arg.strip(" \t")
        if address.upper().endswith(" SMTPUTF8"):
            address = address[:-9].rstrip(" \t")
        if not address:
            return ["550 invalid mailbox"]
        from emailrelay.envelope import printable

        verdict = await self.handler.verify(self, address, "")
        if verdict is None or (verdict.valid and not verdict.local):
            shown = verdict.address if verdict is not None and verdict.address else address
            return [f"252 cannot verify but will accept: {printable(shown)}"]
        if verdict.abort:
            raise Closed([], verdict.reason or "verifier abort")
        if verdict.valid:
            return [f"250 {printable(verdict.full_name)}"]
        return [self._refusal(verdict, address)]

    @staticmethod
    def _refusal(verdict: Verdict, raw: str) -> str:
        from emailrelay.envelope import printable

        code = 450 if verdict.temporary else 550
        text = printable(verdict.text)
        if not (raw.isascii() and raw.isprintable()):
            text = f"recipient {printable(raw)} {text}".rstrip()
        return f"{code} {text}".rstrip()

    async def smtp_MAIL(self, arg: str, line: str) -> list[str]:
        refusal = self._needs_auth()
        if refusal:
            return [refusal]
        head, _, rest = line.replace("\t", " ").partition(" ")
        if not rest.lstrip(" ").upper().startswith("FROM:"):
            return ["553 mailbox name not allowed: invalid mail-from command"]
        parsed = parse_address_command(line, allow_empty=True, strict=self.config.strictparsing)
        if parsed.error:
            return [f"553 mailbox name not allowed: {parsed.error}"]
        params = parse_mail_params(parsed.tail)
        if params.error:
            return [f"553 mailbox name not allowed: {params.error}"]
        if self.config.size and params.size > self.config.size:
            return ["552 message size exceeds fixed maximum message size"]
        if parsed.utf8_mailbox and self.config.smtputf8strict and not params.smtputf8:
            return ["553 mailbox name not allowed: invalid character in mailbox name: not using smptutf8"]
        t = Transaction(
            mail_from=parsed.address,
            body=params.body,
            auth_in=params.auth,
            smtputf8=params.smtputf8,
            utf8_names=parsed.utf8_mailbox,
        )
        try:
            self.handler.begin(self, t)
        except OSError as e:
            return [f"452 cannot store message: {(e.strerror or str(e)).lower()}"]
        self.transaction = t
        self.enter_state(State.GOT_MAIL)
        return [f"250 sender <{parsed.raw}> OK"]

    async def smtp_RCPT(self, arg: str, line: str) -> list[str]:
        head, _, rest = line.replace("\t", " ").partition(" ")
        if not rest.lstrip(" ").upper().startswith("TO:"):
            return ["550 invalid rcpt-to command"]
        parsed = parse_address_command(line, allow_empty=False, strict=self.config.strictparsing)
        if parsed.error == "address too long":
            return ["553 mailbox name not allowed: address too long"]
        if parsed.error:
            return [f"550 {parsed.error}"]
        t = self.transaction
        assert t is not None
        verdict = await self.handler.verify(self, parsed.address, t.mail_from)
        if verdict is not None and verdict.abort:
            raise Closed([], verdict.reason or "verifier abort")
        if verdict is not None and not verdict.valid:
            return [self._refusal(verdict, parsed.raw)]
        if verdict is not None and verdict.local:
            t.to_local.append(verdict.address)
            self.enter_state(State.GOT_RCPT)
            return [f"250 recipient <{parsed.raw}>  OK"]
        t.to_remote.append(verdict.address if verdict is not None and verdict.address else parsed.address)
        if parsed.utf8_mailbox:
            t.utf8_names = True
        self.enter_state(State.GOT_RCPT)
        return [f"250 recipient <{parsed.raw}> OK"]

    def _received(self) -> None:
        """Start the content with the Received line (SPEC.md 6.6)."""
        if "content" in self.config.anonymous:
            return
        from emailrelay.envelope import printable_ascii

        helo = printable_ascii(self.peer_name.replace(" ", "-"))
        stamp = time.strftime("%a, %-d %b %Y %H:%M:%S %z", time.localtime())
        protocol = "ESMTP" + ("S" if self.secure else "") + ("A" if self.auth_id else "")
        if self.secure and self.cipher:
            protocol += " tls " + re.sub(r"[^A-Za-z0-9_]", "", self.cipher.replace("-", "_"))
        line = f"Received: from {helo} ([{self.peer_ip}]) by {self.config.domain} with {protocol} ; {stamp}\r\n"
        self._store(line.encode("utf-8", "surrogateescape"))

    async def smtp_DATA(self, arg: str, line: str) -> list[str]:
        t = self.transaction
        assert t is not None
        if self.state is State.GOT_MAIL:
            self._clear()
            self.enter_state(State.IDLE)
            return ["554 no valid recipients"]
        if t.body == "BINARYMIME":
            self.enter_state(State.MUST_RESET)
            return self._error("503 invalid data command with binarymime -- use RSET to resynchronise")
        self._received()
        self.enter_state(State.DATA)
        self.framer.start_data()
        return ["354 start mail input -- end with <CRLF>.<CRLF>"]

    async def smtp_BDAT(self, arg: str, line: str) -> list[str]:
        words = arg.split()
        size_text = words[0] if words else ""
        last = len(words) == 2 and words[1].upper() == "LAST"
        valid = size_text.isdigit() and len(words) in (1, 2) and (len(words) == 1 or last)
        if self.state is State.IDLE:
            self.enter_state(State.MUST_RESET)
            return self._error(OUT_OF_SEQUENCE)
        if self.state is State.GOT_MAIL:
            self._clear()
            self.enter_state(State.IDLE)
            return ["554 no valid recipients"]
        size = int(size_text) if valid else 0
        if not valid or (size == 0 and not last):
            self._clear()
            self.enter_state(State.MUST_RESET)
            return ["501 invalid argument"]
        if self.state is State.GOT_RCPT:
            self._received()
            self.enter_state(State.BDAT)
        self._bdat_last = last
        self._bdat_size = size
        if size == 0:
            return await self._chunk_end()
        self.framer.start_chunk(size)
        return []

    async def _chunk_end(self) -> list[str]:
        if self._bdat_last:
            return [await self._end_of_message()]
        return [f"250 {self._bdat_size} bytes received"]
