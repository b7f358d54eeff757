"""POP3 server protocol: line framing, the session state machine and content transforms.

This module is the protocol logic of the POP3 server (SPEC.md section 8)
and does no I/O.  The asyncio adapter (workers/pop.py) feeds received bytes
into a `LineFramer`, hands each framed event to `Session.handle`, and sends
what it gets back: reply lines, and `Content` items, which it streams from
the content file through a `DotStuffer` (and, for TOP, a `BodyLimit`).
What a user may log in with comes from a `PopAuth` policy (secrets files or
PAM, with the mechanisms of SPEC.md 5.3); which messages a user sees, the
mailbox lock and the deletions at QUIT are the `Maildrop`'s business.

States (RFC 1939), in one table, `TRANSITIONS`; `Session.enter_state`
refuses moves that are not in it and reports ``old -> new``:

    AUTHORIZATION --USER/PASS, APOP, AUTH ok + mailbox opened--> TRANSACTION
    AUTHORIZATION --AUTH <mech>--> SASL --response--> TRANSACTION or AUTHORIZATION
    TRANSACTION --QUIT--> UPDATE (deletions) --> END
    AUTHORIZATION --QUIT--> END;  any state --connection lost--> END

Which command is legal in which state is the other table, `COMMANDS`;
anything else gets ``-ERR``.  A connection that drops before QUIT never
enters UPDATE, so it deletes nothing.

Replies are E-MailRelay 2.6's (SPEC.md 8.2): ``+OK``/``-ERR`` with its texts
(``+OK <n> message(s)``, ``+OK <size> octets``, ``-ERR invalid id``,
``+OK signing off`` ...), message numbers are 1-based positions in the list
made at login, deleted messages keep their numbers, sizes are content-file
sizes, content is split on CRLF only, dot-stuffed and ended with ``.``.

Decisions where 2.6 is odd or SPEC.md leaves a choice (listed in
`COMPATIBILITY` for the man page):

* STLS: 2.6 sends a second ``+OK`` after the TLS handshake (quirk).  RFC 2595
  clients (Python's poplib, fetchmail, Thunderbird) send their next command
  straight after the handshake and would take that ``+OK`` as its reply, so
  we send nothing after the handshake.  After STLS any earlier USER is
  forgotten and STLS is no longer listed by CAPA.
* One session per mailbox (SPEC.md section 0): a login to a mailbox that
  another session holds gets ``-ERR [IN-USE] mailbox locked`` (RFC 2449
  response code; CAPA lists ``RESP-CODES`` for it) and stays in
  AUTHORIZATION.  Without --pop-by-name every user shares the spool
  directory, so that is one session at a time.
* PASS takes the rest of the line as the password (spaces included); 2.6
  takes only the first word.  USER with no name is ``-ERR``.
* --server-tls-required applies to POP as documented (2.6 ignores it there):
  before STLS, USER, PASS, APOP and AUTH get ``-ERR must use STLS before
  authentication`` and neither CAPA nor the greeting offer any mechanism.
* A mailbox name that is not one path component is refused at login with
  ``-ERR [SYS/PERM] invalid mailbox name``; a mailbox that cannot be read
  with ``-ERR [SYS/TEMP] cannot open mailbox``; a message whose content file
  has gone since login with ``-ERR cannot read message``.
* A command line over MAX_LINE bytes (CRLF included) gets ``-ERR line too
  long``; the rest of the line is discarded and the session goes on (an
  unfinished AUTH exchange is abandoned).

Not here: sockets, TLS, timeouts, reading files, the spool's file names.
"""

from __future__ import annotations

import base64
import binascii
import enum
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from emailrelay import sasl

#: Longest command line accepted, including CRLF (as for SMTP, SPEC.md section 0).
MAX_LINE = 2048

GREETING = "POP3 server ready"
SIGNING_OFF = "+OK signing off"
MUST_STLS = "-ERR must use STLS before authentication"
LOCKED = "[IN-USE] mailbox locked"

#: Man page entries (topic, text): where this POP3 server differs from 2.6 on purpose.
COMPATIBILITY: list[tuple[str, str]] = [
    ("POP3 STLS", "No second +OK is sent after the STLS handshake (2.6 sends one, which RFC 2595 "
     "clients take as the reply to their next command); STLS is not listed by CAPA once TLS is on."),
    ("POP3 locking", "Without --pop-by-name every POP user shares the spool directory, so only one POP "
     "session at a time is let in; CAPA lists RESP-CODES for the [IN-USE] response code."),
    ("POP3 PASS", "The password is the rest of the PASS line, spaces included (2.6 takes the first word)."),
    ("POP3 and --server-tls-required", "Applied to POP as documented: no USER, PASS, APOP or AUTH "
     "before STLS (2.6 does not apply it to POP)."),
    ("POP3 with pam:", "APOP is not offered (no greeting timestamp), because PAM cannot check an APOP "
     "digest (2.6 offers it and every attempt fails)."),
    ("POP3 deletions", "Deletions at QUIT are durable (envelopes removed and the directory fsynced before "
     "the content files), and a content file is kept while any envelope of the message is left in the "
     "spool directory or one of its sub-directories, in any state, also without --pop-by-name."),
]


# -- framing ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """A command line without its CRLF."""

    text: bytes


@dataclass(frozen=True, slots=True)
class TooLong:
    """A command line exceeded MAX_LINE; it is being discarded."""


Event = Line | TooLong


class LineFramer:
    """Turns a byte stream into command lines; a line ends only at CRLF."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._pos = 0
        self._discarding = False

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def clear(self) -> None:
        """Drop everything buffered (after STLS: no plaintext may leak into the TLS session)."""
        self._buf.clear()
        self._pos = 0
        self._discarding = False

    def next_event(self) -> Event | None:
        """The next complete event, or None if more bytes are needed."""
        buf, pos = self._buf, self._pos
        end = buf.find(b"\r\n", pos)
        if self._discarding:
            if end < 0:  # keep a trailing CR: it may start the CRLF
                self._pos = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
                return None
            self._pos = end + 2
            self._discarding = False
            return self.next_event()
        if end < 0:
            if len(buf) - pos >= self.limit:
                self._discarding = True
                self._pos = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
                return TooLong()
            return None
        self._pos = end + 2
        if end + 2 - pos > self.limit:
            return TooLong()
        return Line(bytes(buf[pos:end]))


# -- content transforms (RETR, TOP) -------------------------------------------


class DotStuffer:
    """Dot-stuffing of message content fed in pieces; lines end only at CRLF.

    `feed` returns the bytes to send for each piece, with a ``.`` put before
    every line that starts with ``.``; `end` returns the terminator: ``.``
    CRLF, after an extra CRLF if the content did not end with one.
    """

    def __init__(self) -> None:
        self._bol = True  # at the beginning of a line
        self._cr = False  # the last byte fed was CR

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        out = data.replace(b"\r\n.", b"\r\n..")
        if self._bol and data[0] == 0x2E:
            out = b"." + out
        elif self._cr and data[:2] == b"\n.":
            out = b"\n." + out[1:]
        self._bol = data.endswith(b"\r\n") or (self._cr and data == b"\n")
        self._cr = data.endswith(b"\r")
        return out

    def end(self) -> bytes:
        return b".\r\n" if self._bol else b"\r\n.\r\n"


class BodyLimit:
    """TOP: the header lines, the blank line, then `lines` body lines (CRLF lines).

    `feed` returns the part of each piece to send; once the limit is
    reached `done` is True and everything after is dropped.
    """

    def __init__(self, lines: int) -> None:
        self.lines = lines
        self.done = False
        self._header = True
        self._count = 0
        self._len = 0  # bytes of the current line so far (a trailing CR included)
        self._cr = False  # the last byte fed was CR

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b""
        pos = 0
        while True:
            j = data.find(b"\n", pos)
            if j < 0:
                self._len += len(data) - pos
                if data:
                    self._cr = data[-1] == 0x0D
                return data
            prev_cr = data[j - 1] == 0x0D if j > 0 else self._cr
            length = self._len + (j - pos)
            pos = j + 1
            if not prev_cr:  # a bare LF does not end a line
                self._len = length + 1
                continue
            self._len = 0
            if self._header:
                if length == 1:  # CRLF alone: the blank line after the header
                    self._header = False
                    if self.lines <= 0:
                        self.done = True
                        return data[:pos]
            else:
                self._count += 1
                if self._count >= self.lines:
                    self.done = True
                    return data[:pos]


# -- what the session needs from the worker ----------------------------------


@dataclass
class Message:
    """One message of a mailbox, as listed at login."""

    id: str  # the spool message id
    uid: str  # the UIDL unique id (2.6: the content file name)
    size: int  # content file size in bytes
    location: str  # where the maildrop finds the content
    deleted: bool = False


@dataclass(frozen=True)
class Content:
    """A reply item: stream this content, dot-stuffed, then the ``.`` line.

    The adapter reads `source` in pieces and closes it.  `body_lines` is the
    TOP limit (None: the whole message, for RETR).
    """

    source: BinaryIO
    body_lines: int | None = None


Reply = str | Content


class MailboxError(Exception):
    """A mailbox cannot be opened: `reply` is the text after ``-ERR``, str() the reason for the log."""

    def __init__(self, reply: str, reason: str = "") -> None:
        super().__init__(reason or reply)
        self.reply = reply


class Maildrop(Protocol):
    """The messages of one session's mailbox (implemented by workers/pop.py)."""

    async def open(self, user: str) -> list[Message]:
        """Lock and list the user's mailbox; raises MailboxError."""

    def content(self, message: Message) -> BinaryIO:
        """Open a message's content for reading; raises OSError."""

    async def update(self, deleted: list[Message]) -> None:
        """QUIT: delete these messages durably; raises OSError."""

    def close(self) -> None:
        """The session is over: release the mailbox (idempotent)."""


class AuthExchange(Protocol):
    """One SASL exchange (sasl.ServerMechanism has this shape)."""

    id: str | None

    def challenge(self) -> bytes: ...

    def respond(self, data: bytes) -> tuple[str, object] | Awaitable[tuple[str, object]]: ...


class PopAuth(Protocol):
    """Who may log in: mechanisms, exchanges, and what to do after a failure."""

    def mechanisms(self, secure: bool) -> list[str]:
        """Mechanisms for a plain (or TLS) session, APOP included when it can work."""

    def start(self, mechanism: str, challenge: bytes | None = None) -> AuthExchange:
        """A new exchange; APOP gets the greeting's timestamp as `challenge`."""

    def failed(self, peer_ip: str, mechanism: str, user: str, reason: str) -> float:
        """Record a failure (logged by the policy); returns seconds to wait before replying."""

    def succeeded(self, peer_ip: str) -> None:
        """Forget earlier failures of this peer."""


@dataclass(frozen=True)
class SessionConfig:
    domain: str
    starttls: bool = False  # --server-tls: STLS offered
    tls_required: bool = False  # --server-tls-required: no login before STLS


# -- the session state machine -------------------------------------------------


class State(enum.Enum):
    AUTHORIZATION = "authorization"
    SASL = "sasl"  # inside an AUTH exchange: the next line is a response
    TRANSACTION = "transaction"
    UPDATE = "update"
    END = "end"


S = State
#: Every legal state change.
TRANSITIONS: dict[State, frozenset[State]] = {
    S.AUTHORIZATION: frozenset({S.SASL, S.TRANSACTION, S.END}),
    S.SASL: frozenset({S.AUTHORIZATION, S.TRANSACTION, S.END}),
    S.TRANSACTION: frozenset({S.UPDATE, S.END}),
    S.UPDATE: frozenset({S.END}),
    S.END: frozenset(),
}

#: The states each command is legal in (SPEC.md 8.2; CAPA in both, as RFC 2449 says).
COMMANDS: dict[str, frozenset[State]] = {
    "USER": frozenset({S.AUTHORIZATION}),
    "PASS": frozenset({S.AUTHORIZATION}),
    "APOP": frozenset({S.AUTHORIZATION}),
    "AUTH": frozenset({S.AUTHORIZATION}),
    "STLS": frozenset({S.AUTHORIZATION}),
    "CAPA": frozenset({S.AUTHORIZATION, S.TRANSACTION}),
    "QUIT": frozenset({S.AUTHORIZATION, S.TRANSACTION}),
    "STAT": frozenset({S.TRANSACTION}),
    "LIST": frozenset({S.TRANSACTION}),
    "UIDL": frozenset({S.TRANSACTION}),
    "RETR": frozenset({S.TRANSACTION}),
    "TOP": frozenset({S.TRANSACTION}),
    "DELE": frozenset({S.TRANSACTION}),
    "RSET": frozenset({S.TRANSACTION}),
    "NOOP": frozenset({S.TRANSACTION}),
}


class Closed(Exception):
    """The session is over: close the connection after sending `replies`."""

    def __init__(self, replies: list[str], reason: str) -> None:
        super().__init__(reason)
        self.replies = replies
        self.reason = reason


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


class Session:
    """One POP3 session: events in, replies out.

    `handle(event)` returns the replies to send in order: lines (without
    CRLF) and `Content` items.  It raises `Closed` when the connection must
    end (QUIT, or a failed deletion: then with no reply).  After an
    ``+OK`` to STLS `starttls_pending` is set and the adapter must do the
    handshake, then call `tls_started`.  After a failed login `auth_delay`
    says how long the adapter should wait before sending the reply.
    """

    def __init__(
        self,
        config: SessionConfig,
        auth: PopAuth,
        maildrop: Maildrop,
        peer_ip: str,
        *,
        timestamp: bytes | None = None,
        on_state_change: Callable[[State, State], None] | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.auth = auth
        self.maildrop = maildrop
        self.peer_ip = peer_ip
        self.on_state_change = on_state_change
        self.notice = notice
        self.state = State.AUTHORIZATION
        self.secure = False
        self.starttls_pending = False
        self.auth_delay = 0.0
        self.user = ""  # the authenticated user, once in TRANSACTION
        self.messages: list[Message] = []
        self._user_name = ""  # from USER, for PASS
        self._exchange: AuthExchange | None = None
        self._mechanism = ""
        self._timestamp: bytes | None = None
        if "APOP" in self._mechanisms():
            if timestamp is None:
                from emailrelay.sasl import cram_challenge

                timestamp = cram_challenge(config.domain)
            self._timestamp = timestamp

    # state

    def enter_state(self, new: State) -> None:
        old = self.state
        if new is not old and new not in TRANSITIONS[old]:
            raise AssertionError(f"illegal pop state change {old.value} -> {new.value}")
        self.state = new
        if self.on_state_change is not None and new is not old:
            self.on_state_change(old, new)

    def greeting(self) -> str:
        if self._timestamp is not None:
            return f"+OK {GREETING} {self._timestamp.decode('utf-8', 'surrogateescape')}"
        return f"+OK {GREETING}"

    def close(self) -> None:
        """The connection has gone (or the session ended): release the mailbox; nothing is deleted."""
        if self.state is not State.END:
            self.enter_state(State.END)
        self.maildrop.close()

    def tls_started(self) -> None:
        """The adapter finished the STLS handshake (RFC 2595: forget what came before)."""
        self.starttls_pending = False
        self.secure = True
        self._user_name = ""

    # events

    async def handle(self, event: Event) -> list[Reply]:
        if isinstance(event, TooLong):
            if self.state is State.SASL:
                self._exchange = None
                self.enter_state(State.AUTHORIZATION)
            return ["-ERR line too long"]
        line = event.text.decode("utf-8", "surrogateescape")
        if self.state is State.SASL:
            return await self._sasl_response(line)
        verb, _, arg = line.replace("\t", " ").partition(" ")
        verb = verb.upper()
        allowed = COMMANDS.get(verb)
        if allowed is None or self.state not in allowed or (verb == "STLS" and not self.config.starttls):
            return ["-ERR"]
        return await getattr(self, "pop_" + verb)(arg.strip(" "), line)

    # authorization

    def _mechanisms(self) -> list[str]:
        if self._must_stls():
            return []
        return self.auth.mechanisms(self.secure)

    def _sasl_mechanisms(self) -> list[str]:
        return [m for m in self._mechanisms() if m != "APOP"]

    def _must_stls(self) -> bool:
        return self.config.tls_required and not self.secure

    async def pop_CAPA(self, arg: str, line: str) -> list[Reply]:
        lines = ["+OK capability list follows"]
        if "PLAIN" in self._mechanisms():
            lines.append("USER")
        lines += ["CAPA", "TOP", "UIDL", "RESP-CODES"]
        if self.config.starttls and not self.secure and self.state is State.AUTHORIZATION:
            lines.append("STLS")
        sasl = self._sasl_mechanisms()
        if sasl:
            lines.append("SASL " + " ".join(sasl))
        return [*lines, "."]

    async def pop_STLS(self, arg: str, line: str) -> list[Reply]:
        if self.secure:
            return ["-ERR"]
        self.starttls_pending = True
        return ["+OK"]

    async def pop_USER(self, arg: str, line: str) -> list[Reply]:
        from emailrelay.envelope import printable

        if self._must_stls():
            return [MUST_STLS]
        if "PLAIN" not in self._mechanisms():
            return ["-ERR no SASL PLAIN mechanism to do USER/PASS authentication"]
        if not arg:
            return ["-ERR"]
        self._user_name = arg
        return [f"+OK user: {printable(arg)}"]

    async def pop_PASS(self, arg: str, line: str) -> list[Reply]:
        if self._must_stls():
            return [MUST_STLS]
        if not self._user_name or "PLAIN" not in self._mechanisms():
            return ["-ERR"]
        password = line[5:] if len(line) > 5 else ""
        user = self._user_name.encode("utf-8", "surrogateescape")
        exchange = self.auth.start("PLAIN")
        answer = exchange.respond(b"\0" + user + b"\0" + password.encode("utf-8", "surrogateescape"))
        return await self._auth_result("USER", exchange, answer)

    async def pop_APOP(self, arg: str, line: str) -> list[Reply]:
        if self._must_stls():
            return [MUST_STLS]
        words = arg.split()
        if self._timestamp is None or "APOP" not in self._mechanisms() or len(words) != 2:
            return ["-ERR"]
        exchange = self.auth.start("APOP", self._timestamp)
        answer = exchange.respond(" ".join(words).encode("utf-8", "surrogateescape"))
        return await self._auth_result("APOP", exchange, answer)

    async def pop_AUTH(self, arg: str, line: str) -> list[Reply]:
        words = arg.split()
        if not words:  # non-standard listing that some clients want (2.6)
            return ["+OK", *self._sasl_mechanisms(), "."]
        offered = self._sasl_mechanisms()
        if not offered:
            return [MUST_STLS]
        name = words[0].upper()
        if name not in offered:
            return ["-ERR invalid mechanism"]
        try:
            initial = sasl.initial_response(name, words)
        except sasl.SaslError:
            return ["-ERR invalid initial response"]
        exchange = self.auth.start(name)
        self._exchange = exchange
        self._mechanism = name
        self.enter_state(State.SASL)
        if initial is not None:
            return await self._sasl_step(initial)
        return ["+ " + base64.b64encode(exchange.challenge()).decode("ascii")]

    async def _sasl_response(self, line: str) -> list[Reply]:
        if line.strip() == "*":
            self._exchange = None
            self.enter_state(State.AUTHORIZATION)
            return ["-ERR"]
        try:
            data = base64.b64decode(line.strip(), validate=True)
        except (binascii.Error, ValueError):
            exchange, self._exchange = self._exchange, None
            assert exchange is not None
            return await self._auth_result(self._mechanism, exchange, ("fail", "response not base64"))
        return await self._sasl_step(data)

    async def _sasl_step(self, data: bytes) -> list[Reply]:
        exchange = self._exchange
        assert exchange is not None
        answer = exchange.respond(data)
        if inspect.isawaitable(answer):  # PAM checks run in a thread
            answer = await answer
        outcome, value = answer
        if outcome == "continue":
            assert isinstance(value, bytes)
            return ["+ " + base64.b64encode(value).decode("ascii")]
        self._exchange = None
        return await self._auth_result(self._mechanism, exchange, answer)

    async def _auth_result(
        self, mechanism: str, exchange: AuthExchange, answer: tuple[str, object] | Awaitable[tuple[str, object]]
    ) -> list[Reply]:
        if inspect.isawaitable(answer):
            answer = await answer
        outcome, value = answer
        if outcome != "ok":
            if self.state is State.SASL:
                self.enter_state(State.AUTHORIZATION)
            self.auth_delay = self.auth.failed(self.peer_ip, mechanism, exchange.id or "", str(value))
            return ["-ERR"]
        self.auth.succeeded(self.peer_ip)
        user = str(value)
        try:
            messages = await self.maildrop.open(user)
        except MailboxError as e:
            if self.state is State.SASL:
                self.enter_state(State.AUTHORIZATION)
            if self.notice is not None:
                from emailrelay.envelope import printable

                self.notice(f"pop login of [{printable(user)}] refused: {e}")
            return [f"-ERR {e.reply}"]
        self.user = user
        self.messages = messages
        self.enter_state(State.TRANSACTION)
        return ["+OK"]

    async def pop_QUIT(self, arg: str, line: str) -> list[Reply]:
        if self.state is State.TRANSACTION:
            self.enter_state(State.UPDATE)
            deleted = [m for m in self.messages if m.deleted]
            try:
                await self.maildrop.update(deleted)
            except OSError as e:
                self.enter_state(State.END)
                raise Closed([], f"cannot delete messages: {(e.strerror or str(e)).lower()}") from None
        self.enter_state(State.END)
        raise Closed([SIGNING_OFF], "quit")

    # transaction

    def _message(self, text: str) -> Message | None:
        """The undeleted message numbered `text`, or None."""
        number = _number(text)
        if number is None or not 1 <= number <= len(self.messages):
            return None
        message = self.messages[number - 1]
        return None if message.deleted else message

    def _undeleted(self) -> list[tuple[int, Message]]:
        return [(i, m) for i, m in enumerate(self.messages, 1) if not m.deleted]

    async def pop_STAT(self, arg: str, line: str) -> list[Reply]:
        live = self._undeleted()
        return [f"+OK {len(live)} {sum(m.size for _, m in live)}"]

    async def pop_LIST(self, arg: str, line: str) -> list[Reply]:
        return self._listing(arg, lambda m: str(m.size))

    async def pop_UIDL(self, arg: str, line: str) -> list[Reply]:
        return self._listing(arg, lambda m: m.uid)

    def _listing(self, arg: str, column: Callable[[Message], str]) -> list[Reply]:
        words = arg.split()
        if words:
            message = self._message(words[0])
            if message is None:
                return ["-ERR invalid id"]
            return [f"+OK {_number(words[0])} {column(message)}"]
        live = self._undeleted()
        return [f"+OK {len(live)} message(s)", *(f"{i} {column(m)}" for i, m in live), "."]

    def _open(self, message: Message, body_lines: int | None) -> Content | None:
        try:
            return Content(self.maildrop.content(message), body_lines)
        except OSError as e:
            if self.notice is not None:
                self.notice(f"pop: cannot read message {message.id}: {(e.strerror or str(e)).lower()}")
            return None

    async def pop_RETR(self, arg: str, line: str) -> list[Reply]:
        words = arg.split()
        message = self._message(words[0]) if words else None
        if message is None:
            return ["-ERR"]
        content = self._open(message, None)
        if content is None:
            return ["-ERR cannot read message"]
        return [f"+OK {message.size} octets", content]

    async def pop_TOP(self, arg: str, line: str) -> list[Reply]:
        words = arg.split()
        message = self._message(words[0]) if len(words) >= 2 else None
        lines = _number(words[1]) if len(words) >= 2 else None
        if message is None or lines is None:
            return ["-ERR"]
        content = self._open(message, lines)
        if content is None:
            return ["-ERR cannot read message"]
        return ["+OK", content]

    async def pop_DELE(self, arg: str, line: str) -> list[Reply]:
        words = arg.split()
        message = self._message(words[0]) if words else None
        if message is None:
            return ["-ERR"]
        message.deleted = True
        return ["+OK"]

    async def pop_RSET(self, arg: str, line: str) -> list[Reply]:
        for message in self.messages:
            message.deleted = False
        return ["+OK"]

    async def pop_NOOP(self, arg: str, line: str) -> list[Reply]:
        return ["+OK"]


__all__ = [
    "COMMANDS",
    "COMPATIBILITY",
    "MAX_LINE",
    "TRANSITIONS",
    "AuthExchange",
    "BodyLimit",
    "Closed",
    "Content",
    "DotStuffer",
    "Line",
    "LineFramer",
    "MailboxError",
    "Maildrop",
    "Message",
    "PopAuth",
    "Session",
    "SessionConfig",
    "State",
    "TooLong",
]
