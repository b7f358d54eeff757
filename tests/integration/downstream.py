"""Real downstream servers on 127.0.0.1 for the forwarding tests.

The forwarding client is tested against servers that speak SMTP over real
loopback sockets, never against mocks.  Each server here runs its own
asyncio event loop in a thread, listens on ``127.0.0.1`` port 0 and exposes
``.port`` (and ``.address``, ``host:port``).  Each is a context manager; each
also makes a pytest fixture: ``sink = Sink.fixture(tls="starttls")`` at module
level gives the tests of that module a started ``sink`` fixture, and
``downstream = downstream_fixture()`` gives a factory fixture,
``downstream(Sink, drop="mail")``, that stops what it started.

Servers:

``Sink``
    An aiosmtpd-based SMTP server that records what it receives and
    misbehaves on request: configurable replies for EHLO, MAIL, each RCPT,
    the DATA command and end of data; ``drop`` (close the connection),
    ``stall`` (never answer until the server stops or ``unstall()``) and
    ``garbage`` (answer with a line that is not an SMTP reply) at a named
    point of the session; a custom greeting; the EHLO extensions it offers;
    STARTTLS or implicit TLS with trustme certificates (good or deliberately
    bad); AUTH PLAIN, LOGIN, CRAM-MD5/SHA1/SHA256/SHA512 and XOAUTH2; BDAT
    (CHUNKING, BINARYMIME), which aiosmtpd lacks and this file adds.
    Configuration is read per command, so a test may change it between
    messages (``sink.configure(data_reply=(452, "later"))``).

``BareSink``
    A raw asyncio server for what aiosmtpd cannot do: each connection runs a
    script (an async function given a ``BareConnection``) that sends exact
    bytes when it likes: replies over 20,000 bytes, split replies, replies
    with no CRLF.  ``conn.serve()`` carries on as a plain accepting SMTP
    server.

``Socks4Proxy``
    A SOCKS 4/4a proxy that records the target each client asked for and
    forwards to a loopback port.  Hand-written: pproxy 2.7.9 (the well-kept
    package) reads only the 4-byte address of a SOCKS4 request and ignores
    the 4a host name (``proto.py`` ``Socks4.accept``), so E-MailRelay's
    request, which is always 4a (address 0.0.0.1 then the far host name,
    even when that name is numeric), is sent by pproxy to 0.0.0.1 (checked:
    it replies "granted", then fails to connect).  asyncio-socks-server is
    SOCKS5 only, and the server part of SOCKS4a is some forty lines.

``Certificates``
    A trustme CA and certificates for ``localhost``/``127.0.0.1`` (good,
    wrong name, expired, issued by an untrusted CA, self-signed) and a client
    certificate, written as PEM files.  One set per test process.

Why not aiosmtpd's ``Controller``: in aiosmtpd 1.4.6 its ``start()``
opens a trigger connection to ``self.port``, which fails with port 0 and
would count as a session (and hang with ``stall="greeting"``); its
``stop()`` cancels tasks without awaiting them and leaves connections open,
which warnings-as-errors turns into failures.  So each server here runs
``asyncio.run`` in its own thread, as ``UnthreadedController`` would, and
shuts down in a fixed order: stop listening, abort every transport, cancel
and await every task, close the loop.

Misbehaviour points (``Point``): ``greeting``, ``ehlo``, ``starttls``,
``auth``, ``mail``, ``rcpt`` (the first RCPT), ``data`` (the DATA or first
BDAT command), ``mid-data`` (after the first line of data, or after the
first BDAT chunk), ``end-of-data`` (after the final dot or ``BDAT LAST``),
``quit``.

Replies (``Reply``) are ``(code, text)`` tuples (a text with ``\\n`` makes a
multi-line reply) or a complete reply string such as ``"550 no such user"``.

Failure behaviour: an exception in a server's own code is recorded in
``.errors`` (and, in the Sink, answered ``451``) instead of being raised in
its thread; the tests here assert that list is empty.  ``stop()`` aborts
every connection, cancels every task and closes the loop, so nothing is
left for the garbage collector to warn about.

Not here: the relay under test (see ``conftest.py``), and anything that
leaves 127.0.0.1: the SOCKS proxy refuses non-loopback targets.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import contextlib
import datetime
import hmac
import ipaddress
import random
import re
import shutil
import socket
import ssl
import tempfile
import threading
import time
import traceback
from asyncio import sslproto
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, Self

import pytest
import trustme
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session, TLSSetupException, syntax
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOCALHOST = "127.0.0.1"
GARBAGE = "this is not an smtp reply"

Reply = tuple[int, str] | str
Point = Literal[
    "greeting", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "mid-data", "end-of-data", "quit"
]
POINTS: tuple[str, ...] = (
    "greeting",
    "ehlo",
    "starttls",
    "auth",
    "mail",
    "rcpt",
    "data",
    "mid-data",
    "end-of-data",
    "quit",
)
CertKind = Literal["good", "wrong-name", "expired", "untrusted", "self-signed"]

#: EHLO keywords offered when ``ehlo_extensions`` is not given.  STARTTLS
#: appears only with ``tls="starttls"`` (before the handshake), AUTH only
#: with ``auth=``.
DEFAULT_EXTENSIONS: tuple[str, ...] = ("SIZE", "8BITMIME", "SMTPUTF8", "PIPELINING", "STARTTLS", "AUTH")
MECHANISMS: tuple[str, ...] = (
    "CRAM-SHA512",
    "CRAM-SHA256",
    "CRAM-SHA1",
    "CRAM-MD5",
    "PLAIN",
    "LOGIN",
    "XOAUTH2",
)


def format_reply(reply: Reply) -> str:
    """A reply as the text to send, without the final CRLF."""
    if isinstance(reply, str):
        return reply
    code, text = reply
    lines = text.split("\n")
    return "\r\n".join([f"{code}-{line}" for line in lines[:-1]] + [f"{code} {lines[-1]}"])


def reply_code(reply: str) -> int:
    """The code of a formatted reply, 0 if it has none."""
    return int(reply[:3]) if reply[:3].isdigit() else 0


# ---------------------------------------------------------------------------
# Records


@dataclass
class Received:
    """One message whose content the server read to the end.

    Equality compares only the first four fields, so a test can write
    ``assert sink.messages == [Received("a@b", ["c@d"], [], b"...")]``.
    ``mail_from`` is ``""`` for ``MAIL FROM:<>``; ``rcpt_tos`` are the
    accepted recipients; ``mail_options`` the MAIL parameters as sent
    (``BODY=8BITMIME``, ``AUTH=<>``, ...); ``data`` the content with dots
    unstuffed and line endings as received.
    """

    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    data: bytes
    reply: str = field(default="", compare=False)
    command: str = field(default="DATA", compare=False)
    tls: bool = field(default=False, compare=False)
    auth: str | None = field(default=None, compare=False)


@dataclass
class SessionRecord:
    """One client connection as the server saw it."""

    peer: tuple[Any, ...] | None
    commands: list[str] = field(default_factory=list)
    tls_version: str | None = None
    client_cert: dict[str, Any] | None = None
    auth: tuple[str, str] | None = None
    closed: bool = False

    @property
    def tls(self) -> bool:
        return self.tls_version is not None


@dataclass(frozen=True)
class AuthAttempt:
    mechanism: str
    ident: str
    ok: bool


@dataclass(frozen=True)
class SocksRequest:
    host: str
    port: int
    userid: str
    socks4a: bool
    command: int = 1


# ---------------------------------------------------------------------------
# Certificates


def _self_signed(*names: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


class Certificates:
    """A test PKI written as PEM files into ``directory``.

    Files: ``ca.pem`` (the CA to trust: ``--client-tls-verify``),
    ``<kind>.pem`` for each server certificate kind (private key then
    certificate, the form ``--server-tls-certificate`` takes), ``client.pem``
    (key and certificate for ``--client-tls-certificate``) with
    ``client.crt``/``client.key``, and ``other-ca.pem`` (the CA of the
    ``untrusted`` kind).  Server certificates name ``localhost``,
    ``127.0.0.1`` and ``::1``; ``wrong-name`` names only ``wrong.example``.
    """

    KINDS: tuple[str, ...] = ("good", "wrong-name", "expired", "untrusted", "self-signed")

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name="emailrelay tests")
        other = trustme.CA(organization_name="emailrelay tests (untrusted)")
        names = ("localhost", "127.0.0.1", "::1")
        now = datetime.datetime.now(datetime.UTC)
        leaves = {
            "good": self.ca.issue_cert(*names),
            "wrong-name": self.ca.issue_cert("wrong.example"),
            "expired": self.ca.issue_cert(
                *names,
                not_before=now - datetime.timedelta(days=10),
                not_after=now - datetime.timedelta(days=1),
            ),
            "untrusted": other.issue_cert(*names),
        }
        self.ca_pem = self._write("ca.pem", self.ca.cert_pem.bytes())
        self.other_ca_pem = self._write("other-ca.pem", other.cert_pem.bytes())
        self.paths: dict[str, Path] = {}
        for kind, leaf in leaves.items():
            self.paths[kind] = self._write(
                f"{kind}.pem", leaf.private_key_pem.bytes() + leaf.cert_chain_pems[0].bytes()
            )
        key, cert = _self_signed(*names)
        self.paths["self-signed"] = self._write("self-signed.pem", key + cert)
        client = self.ca.issue_cert("client.test", common_name="client.test")
        self.client_key = self._write("client.key", client.private_key_pem.bytes())
        self.client_cert = self._write("client.crt", client.cert_chain_pems[0].bytes())
        self.client_pem = self._write(
            "client.pem", client.private_key_pem.bytes() + client.cert_chain_pems[0].bytes()
        )

    def _write(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        return path

    def server_context(self, kind: str = "good", *, require_client_cert: bool = False) -> ssl.SSLContext:
        """A server-side context presenting the ``kind`` certificate.

        Client certificates from the CA are asked for (CERT_OPTIONAL) and
        verified; with ``require_client_cert`` a client without one fails the
        handshake.
        """
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.paths[kind])
        ctx.load_verify_locations(self.ca_pem)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        return ctx

    def client_context(self, *, client_cert: bool = False, verify: bool = True) -> ssl.SSLContext:
        """A client-side context trusting the CA (for tests of the servers)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_pem))
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if client_cert:
            ctx.load_cert_chain(self.client_pem)
        return ctx

    @staticmethod
    @cache
    def shared() -> Certificates:
        """One set for the whole test process, removed when it exits."""
        directory = Path(tempfile.mkdtemp(prefix="emailrelay-test-pki-"))
        atexit.register(shutil.rmtree, directory, True)
        return Certificates(directory)


# ---------------------------------------------------------------------------
# The thread and loop every server runs in


class _ServerThread:
    """An asyncio server on 127.0.0.1 port 0, run in its own thread.

    Subclasses implement ``_listen()``.  Every connection's transport goes
    through ``_track``/``_untrack`` so ``stop()`` can abort it.
    """

    host = LOCALHOST

    def __init__(self) -> None:
        self.port = 0
        self._cond = threading.Condition()
        self._events: list[str] = []
        self._errors: list[str] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._stopping = False
        self._transports: set[asyncio.BaseTransport] = set()
        self._holds: set[asyncio.Future[None]] = set()

    # -- life

    def start(self) -> Self:
        """Start the thread and wait until the server listens."""
        assert self._thread is None, "already started"
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name=f"{type(self).__name__}-loop", daemon=True
        )
        self._thread.start()
        if not ready.wait(20):
            raise TimeoutError(f"{type(self).__name__} did not start")
        if failure:
            self._thread.join(5)
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Abort every connection, stop the loop and join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        self._stopping = True
        if loop is not None and self._stop_event is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._stop_event.set)
        thread.join(20)
        assert not thread.is_alive(), f"{type(self).__name__} thread did not stop"
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @classmethod
    def fixture(cls, **kwargs: Any) -> Any:
        """A pytest fixture yielding a started server: ``sink = Sink.fixture()``.

        After the test the server is stopped and the test fails if it
        recorded an error in its own code."""

        @pytest.fixture
        def _fixture() -> Iterator[Any]:
            with cls(**kwargs) as server:
                yield server
            assert not server.errors, "\n".join(server.errors)

        return _fixture

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            asyncio.run(self._main(ready, failure))
        except BaseException as error:  # reported to start() or recorded
            if not ready.is_set():
                failure.append(error)
                ready.set()
            else:
                self._error("".join(traceback.format_exception(error)))

    async def _main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        loop.set_exception_handler(self._loop_exception)
        self._stop_event = asyncio.Event()
        try:
            server = await self._listen()
        except Exception as error:
            failure.append(error)
            ready.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            await self._stop_event.wait()
        finally:
            server.close()
            current = asyncio.current_task()
            for _ in range(3):
                for transport in list(self._transports):
                    transport.abort()
                tasks = [task for task in asyncio.all_tasks() if task is not current]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await asyncio.sleep(0)
            await server.wait_closed()

    async def _listen(self) -> asyncio.Server:
        raise NotImplementedError

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if self._stopping or isinstance(error, ssl.SSLError | ConnectionError):
            return
        text = context.get("message", "")
        if error is not None:
            text += ": " + "".join(traceback.format_exception(error))
        self._error(text)

    # -- bookkeeping, called on the loop thread

    def _track(self, transport: asyncio.BaseTransport) -> None:
        self._transports.add(transport)
        if self._stopping:
            transport.abort()

    def _untrack(self, transport: asyncio.BaseTransport | None) -> None:
        self._transports.discard(transport)  # type: ignore[arg-type]

    def _event(self, name: str) -> None:
        with self._cond:
            self._events.append(name)
            self._cond.notify_all()

    def _error(self, text: str) -> None:
        with self._cond:
            self._errors.append(text)
            self._cond.notify_all()

    async def _hold(self) -> None:
        """Wait until ``unstall()`` (or until the server stops)."""
        future = asyncio.get_running_loop().create_future()
        self._holds.add(future)
        try:
            await future
        finally:
            self._holds.discard(future)

    def _release(self) -> None:
        for future in list(self._holds):
            if not future.done():
                future.set_result(None)

    # -- for tests

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def events(self) -> list[str]:
        """What happened, in order: ``connect``, ``close``, ``tls`` (a handshake
        done), ``tls-failed``, ``stall:<point>``, ``drop:<point>``,
        ``garbage:<point>``, ``hold`` (BareSink)."""
        with self._cond:
            return list(self._events)

    @property
    def errors(self) -> list[str]:
        """Exceptions in the server's own code (should stay empty)."""
        with self._cond:
            return list(self._errors)

    def unstall(self) -> None:
        """Let every stalled session answer; later stalls still stall."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._release)

    def wait_until(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        """Wait (on a condition variable, no polling) until predicate() is truthy; return it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate()
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{type(self).__name__}: timed out waiting for {what}; {self._diagnosis()}"
                    )
                self._cond.wait(left)

    def wait_for_event(self, name: str, count: int = 1, timeout: float = 10.0) -> None:
        self.wait_until(lambda: self._events.count(name) >= count, timeout, f"{count} x {name!r}")

    def _diagnosis(self) -> str:
        return f"events={self._events!r} errors={self._errors!r}"


class _SmtpRecorder(_ServerThread):
    """What Sink and BareSink share: the message and session records."""

    def __init__(self) -> None:
        super().__init__()
        self._messages: list[Received] = []
        self._rejected: list[Received] = []
        self._sessions: list[SessionRecord] = []

    def _record_session(self, record: SessionRecord) -> None:
        with self._cond:
            self._sessions.append(record)
            self._events.append("connect")
            self._cond.notify_all()

    def _record_command(self, record: SessionRecord, line: str) -> None:
        with self._cond:
            record.commands.append(line)
            self._cond.notify_all()

    def _record_close(self, record: SessionRecord) -> None:
        with self._cond:
            if not record.closed:
                record.closed = True
                self._events.append("close")
                self._cond.notify_all()

    def _record_message(self, message: Received) -> None:
        with self._cond:
            if 200 <= reply_code(message.reply) < 300:
                self._messages.append(message)
            else:
                self._rejected.append(message)
            self._cond.notify_all()

    @property
    def messages(self) -> list[Received]:
        """Messages answered 2xx at the end of data, in order."""
        with self._cond:
            return list(self._messages)

    @property
    def rejected(self) -> list[Received]:
        """Messages read to the end but answered otherwise (4xx, 5xx, garbage, dropped)."""
        with self._cond:
            return list(self._rejected)

    @property
    def sessions(self) -> list[SessionRecord]:
        with self._cond:
            return list(self._sessions)

    @property
    def commands(self) -> list[str]:
        """Every command line of every session, in order (AUTH responses excluded)."""
        with self._cond:
            return [line for session in self._sessions for line in session.commands]

    def wait_for_messages(self, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """Wait until ``count`` messages were accepted; returns them all."""
        return self.wait_until(
            lambda: list(self._messages) if len(self._messages) >= count else None,
            timeout,
            f"{count} message(s)",
        )

    def wait_for_rejected(self, count: int = 1, timeout: float = 10.0) -> list[Received]:
        return self.wait_until(
            lambda: list(self._rejected) if len(self._rejected) >= count else None,
            timeout,
            f"{count} rejected message(s)",
        )

    def wait_for_sessions(
        self, count: int = 1, timeout: float = 10.0, closed: bool = False
    ) -> list[SessionRecord]:
        """Wait until ``count`` connections were made (and, with ``closed``, have ended)."""

        def ready() -> list[SessionRecord] | None:
            done = [s for s in self._sessions if s.closed or not closed]
            return list(self._sessions) if len(done) >= count else None

        return self.wait_until(ready, timeout, f"{count} session(s)")

    def wait_for_command(self, prefix: str, count: int = 1, timeout: float = 10.0) -> list[str]:
        """Wait until ``count`` command lines start with ``prefix`` (case-insensitive)."""
        upper = prefix.upper()

        def ready() -> list[str] | None:
            lines = [line for s in self._sessions for line in s.commands if line.upper().startswith(upper)]
            return lines if len(lines) >= count else None

        return self.wait_until(ready, timeout, f"{count} x command {prefix!r}")

    def _diagnosis(self) -> str:
        commands = [line for s in self._sessions for line in s.commands]
        return f"commands={commands!r} " + super()._diagnosis()


# ---------------------------------------------------------------------------
# Sink: aiosmtpd with the parts it lacks


class _CommandTable(dict):  # type: ignore[type-arg]
    """aiosmtpd's verb -> method table, recording each command line."""

    def __init__(self, methods: dict[str, Any], record: Callable[[str], None]) -> None:
        super().__init__(methods)
        self._record = record

    def get(self, command: str, default: Any = None) -> Any:
        method = super().get(command)
        if method is None:
            self._record(command)
            return default

        async def call(arg: str | None) -> None:
            self._record(f"{command} {arg}" if arg else command)
            await method(arg)

        return call


class _SinkProtocol(SMTP):
    """One Sink connection: aiosmtpd's SMTP plus misbehaviour, BDAT and SASL.

    aiosmtpd keeps the session state; the policy (which reply to give) is
    read from the Sink at each command.
    """

    line_length_limit = 1 << 24  # data lines of any length (aiosmtpd: 1001)

    def __init__(self, sink: Sink, loop: asyncio.AbstractEventLoop, implicit_tls: bool) -> None:
        self.sink = sink
        self._implicit_tls = implicit_tls
        self._record: SessionRecord | None = None
        self._greeted = False
        self._chunks: list[bytes] = []
        self._raw_mail_options: list[str] = []
        self._rcpt_seen = False
        super().__init__(
            _SinkHandler(sink),
            hostname=sink.hostname,
            ident="test sink",
            tls_context=sink._tls_context if sink.tls == "starttls" else None,
            require_starttls=sink.require_starttls,
            enable_SMTPUTF8=True,
            data_size_limit=sink.size,
            timeout=3600,
            auth_require_tls=False,
            loop=loop,
        )
        # Set after __init__: aiosmtpd warns (a warning is an error here)
        # when AUTH is required without TLS.
        self._auth_required = sink.require_auth
        self._auth_require_tls = sink.auth_require_tls and not implicit_tls
        wanted = [m.upper() for m in sink.mechanisms] if sink.auth is not None else []
        self._auth_methods = {m: impl for m, impl in self._auth_methods.items() if m in wanted}
        self._smtp_methods = _CommandTable(self._smtp_methods, self._log_command)

    # -- connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self._record is None
        if first:
            self._record = SessionRecord(peer=transport.get_extra_info("peername"))
            self.sink._track(transport)
            self.sink._record_session(self._record)
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self._note_tls(ssl_object)
        super().connection_made(transport)
        if not first and self.session is not None and self.session.ssl:
            self._note_tls(self.session.ssl.get("ssl_object"))

    def connection_lost(self, error: Exception | None) -> None:
        self.sink._untrack(self._original_transport or self.transport)
        if self._record is not None:
            self.sink._record_close(self._record)
        super().connection_lost(error)

    def _note_tls(self, ssl_object: ssl.SSLObject | None) -> None:
        if ssl_object is None or self._record is None:
            return
        self._record.tls_version = ssl_object.version()
        self._record.client_cert = ssl_object.getpeercert() or None
        self.sink._event("tls")

    def _log_command(self, line: str) -> None:
        if self._record is not None:
            self.sink._record_command(self._record, line)

    @property
    def tls_active(self) -> bool:
        return self._implicit_tls or self._tls_protocol is not None

    async def _forever(self) -> None:
        """Wait for connection_lost (which cancels this session's task)."""
        await self.loop.create_future()

    async def misbehave(self, point: str) -> str | None:
        """Drop, stall or answer garbage at ``point`` as configured.

        Returns a reply to send instead of the normal one (garbage), or
        None to carry on.  A drop never returns.
        """
        sink = self.sink
        if sink.drop == point:
            sink._event(f"drop:{point}")
            assert self.transport is not None
            self.transport.close()
            await self._forever()
        if sink.stall == point:
            sink._event(f"stall:{point}")
            await sink._hold()
        garbage = "greeting" if sink.garbage is True else sink.garbage
        if garbage == point:
            sink._event(f"garbage:{point}")
            return GARBAGE
        return None

    async def push(self, status: str | bytes) -> None:
        if self._greeted:
            await super().push(status)
            return
        self._greeted = True
        override = await self.misbehave("greeting")
        greeting = override or (format_reply(self.sink.greeting) if self.sink.greeting else status)
        await super().push(greeting)
        if isinstance(greeting, str) and greeting.startswith("421"):
            assert self.transport is not None
            self.transport.close()
            await self._forever()

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):  # the client refused the handshake
            self.sink._event("tls-failed")
            return ""
        self.sink._error("".join(traceback.format_exception(error)))
        return f"451 sink error: {error!r}"

    def _set_post_data_state(self) -> None:
        super()._set_post_data_state()
        self._chunks = []
        self._rcpt_seen = False

    def _getparams(self, params: Sequence[str]) -> dict[str, str | bool] | None:
        # aiosmtpd refuses MAIL parameters it does not know; a sink takes
        # AUTH= (RFC 4954) and BODY=BINARYMIME (RFC 3030) and records them.
        result = super()._getparams(params)
        if result is not None:
            result.pop("AUTH", None)
            if result.get("BODY") == "BINARYMIME":
                result["BODY"] = "8BITMIME"
        return result

    # -- commands

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        override = await self.misbehave("ehlo")
        if override or self.sink.ehlo_reply is not None:
            await self.push(override or format_reply(self.sink.ehlo_reply))  # type: ignore[arg-type]
            return
        await super().smtp_EHLO(hostname)

    def ehlo_lines(self) -> list[str]:
        sink = self.sink
        offered = [e.upper() for e in sink.ehlo_extensions]
        lines = [self.hostname]
        for keyword in offered:
            if keyword == "SIZE":
                if sink.size:
                    lines.append(f"SIZE {sink.size}")
            elif keyword == "STARTTLS":
                if sink.tls == "starttls" and not self.tls_active:
                    lines.append("STARTTLS")
            elif keyword == "AUTH":
                mechanisms = [m.upper() for m in sink.mechanisms if m.upper() in self._auth_methods]
                if mechanisms and (not self._auth_require_tls or self.tls_active):
                    lines.append("AUTH " + " ".join(mechanisms))
            else:
                lines.append(keyword)
        return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        override = await self.misbehave("starttls")
        if override or self.sink.starttls_reply is not None:
            await self.push(override or format_reply(self.sink.starttls_reply))  # type: ignore[arg-type]
            return
        await super().smtp_STARTTLS(arg)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        override = await self.misbehave("auth")
        if override:
            await self.push(override)
            return
        await super().smtp_AUTH(arg)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        self._raw_mail_options = []
        stripped = self._strip_command_keyword("FROM:", arg) if arg else None
        if stripped:
            _, rest = self._getaddr(stripped)
            self._raw_mail_options = (rest or "").split()
        await super().smtp_MAIL(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        # aiosmtpd's DATA refuses lines over 1001 bytes and cannot stop in
        # the middle; this one stores lines of any length, as E-MailRelay does.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        override = await self.misbehave("data")
        if override or self.sink.data_command_reply is not None:
            await self.push(override or format_reply(self.sink.data_command_reply))  # type: ignore[arg-type]
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        lines: list[bytes] = []
        first = True
        while True:
            line = await self._read_line()
            if first:
                first = False
                override = await self.misbehave("mid-data")
                if override:
                    await self.push(override)
            if line == b".\r\n":
                break
            lines.append(line[1:] if line.startswith(b".") else line)
        await self._end_of_data(b"".join(lines), "DATA")

    async def _read_line(self) -> bytes:
        try:
            return await self._reader.readuntil(b"\r\n")
        except asyncio.IncompleteReadError:
            await self._forever()
            raise

    @syntax("BDAT <size> [LAST]")
    async def smtp_BDAT(self, arg: str | None) -> None:
        if "CHUNKING" not in [e.upper() for e in self.sink.ehlo_extensions]:
            await self.push('500 Error: command "BDAT" not recognized')
            return
        parts = (arg or "").split()
        if (
            not parts
            or not parts[0].isdigit()
            or len(parts) > 2
            or (len(parts) == 2 and parts[1].upper() != "LAST")
        ):
            await self.push("501 Syntax: BDAT <size> [LAST]")
            return
        size, last = int(parts[0]), len(parts) == 2
        first = not self._chunks
        if first:
            override = await self.misbehave("data")
            if override:
                await self.push(override)
                return
        try:
            chunk = await self._reader.readexactly(size)
        except asyncio.IncompleteReadError:
            await self._forever()
            raise
        assert self.envelope is not None
        if await self.check_helo_needed() or await self.check_auth_needed("BDAT"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        self._chunks.append(chunk)
        if first:
            override = await self.misbehave("mid-data")
            if override:
                await self.push(override)
                return
        if not last:
            await self.push(f"250 2.0.0 {size} octets received")
            return
        await self._end_of_data(b"".join(self._chunks), "BDAT")

    async def _end_of_data(self, content: bytes, command: str) -> None:
        assert self.envelope is not None
        self.envelope.content = content
        self.envelope.original_content = content
        self._via = command
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)

    @syntax("QUIT")
    async def smtp_QUIT(self, arg: str) -> None:
        override = await self.misbehave("quit")
        if override:
            await self.push(override)
            return
        await super().smtp_QUIT(arg)

    # -- SASL (aiosmtpd's PLAIN and LOGIN answer twice after a "*")

    def _check(self, mechanism: str, ident: str, ok: bool) -> AuthResult:
        self.sink._record_auth(AuthAttempt(mechanism, ident, ok))
        if not ok:
            return AuthResult(success=False, handled=False)
        assert self._record is not None
        self._record.auth = (mechanism, ident)
        return AuthResult(success=True, auth_data=ident)

    def _password_ok(self, ident: str, password: str) -> bool:
        secret = (self.sink.auth or {}).get(ident)
        return secret is not None and hmac.compare_digest(secret.encode(), password.encode())

    async def _initial(self, args: list[str], challenge: str) -> bytes | None:
        """The initial response (from the AUTH line or after a challenge)."""
        if len(args) == 1:
            blob = await self.challenge_auth(challenge)
            return None if blob is MISSING else blob  # type: ignore[return-value]
        if args[1] == "=":
            return b""
        try:
            return base64.b64decode(args[1], validate=True)
        except binascii.Error:
            await self.push("501 5.5.2 Can't decode base64")
            return None

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        blob = await self._initial(args, "")
        if blob is None:
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\0")
        if len(parts) != 3:
            await self.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        ident, password = (p.decode("utf-8", "surrogateescape") for p in parts[1:])
        return self._check("PLAIN", ident, self._password_ok(ident, password))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        user = await self._initial(args, "Username:")
        if user is None:
            return AuthResult(success=False, handled=True)
        password = await self.challenge_auth("Password:")
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        ident = user.decode("utf-8", "surrogateescape")
        return self._check(
            "LOGIN", ident, self._password_ok(ident, password.decode("utf-8", "surrogateescape"))
        )  # type: ignore[union-attr]

    async def _cram(self, mechanism: str, digest: str, args: list[str]) -> AuthResult:
        if len(args) != 1:
            await self.push(f"501 5.5.4 {mechanism} takes no initial response")
            return AuthResult(success=False, handled=True)
        challenge = f"<{random.randrange(1 << 31)}.{int(time.time())}@{self.hostname}>".encode()
        blob = await self.challenge_auth(challenge)
        if blob is MISSING:
            return AuthResult(success=False, handled=True)
        ident, _, answer = blob.decode("utf-8", "surrogateescape").rpartition(" ")  # type: ignore[union-attr]
        secret = (self.sink.auth or {}).get(ident)
        expected = hmac.new(secret.encode(), challenge, digest).hexdigest() if secret is not None else None
        return self._check(mechanism, ident, expected is not None and hmac.compare_digest(expected, answer))

    async def auth_CRAM__MD5(self, _: Any, args: list[str]) -> AuthResult:
        return await self._cram("CRAM-MD5", "md5", args)

    async def auth_CRAM__SHA1(self, _: Any, args: list[str]) -> AuthResult:
        return await self._cram("CRAM-SHA1", "sha1", args)

    async def auth_CRAM__SHA256(self, _: Any, args: list[str]) -> AuthResult:
        return await self._cram("CRAM-SHA256", "sha256", args)

    async def auth_CRAM__SHA512(self, _: Any, args: list[str]) -> AuthResult:
        return await self._cram("CRAM-SHA512", "sha512", args)

    async def auth_XOAUTH2(self, _: Any, args: list[str]) -> AuthResult:
        """``user=<id>^Aauth=Bearer <token>^A^A``; the token is the id's secret."""
        blob = await self._initial(args, "")
        if blob is None:
            return AuthResult(success=False, handled=True)
        fields = dict(
            item.split("=", 1)
            for item in blob.decode("utf-8", "surrogateescape").split("\x01")
            if "=" in item
        )
        ident = fields.get("user", "")
        token = fields.get("auth", "").removeprefix("Bearer ")
        return self._check("XOAUTH2", ident, self._password_ok(ident, token))


class _SinkHandler:
    """The Sink's policy: which reply each command gets, and the records."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def handle_EHLO(
        self, server: _SinkProtocol, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return server.ehlo_lines()

    def handle_STARTTLS(self, server: _SinkProtocol, session: Session, envelope: Envelope) -> bool:
        return True

    async def handle_MAIL(
        self, server: _SinkProtocol, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        override = await server.misbehave("mail")
        if override:
            return override
        raw = server._raw_mail_options
        configured = self.sink.mail_reply
        if callable(configured):
            configured = configured(address, raw)
        reply = format_reply(configured or (250, "OK"))
        if 200 <= reply_code(reply) < 300:
            envelope.mail_from = address  # "<>" for the null sender: aiosmtpd tests it for truth
            envelope.mail_options = list(raw)
        return reply

    async def handle_RCPT(
        self, server: _SinkProtocol, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not server._rcpt_seen:
            server._rcpt_seen = True
            override = await server.misbehave("rcpt")
            if override:
                return override
        replies = self.sink.rcpt_replies
        configured = replies(address) if callable(replies) else (replies or {}).get(address)
        reply = format_reply(configured or (250, "OK"))
        if 200 <= reply_code(reply) < 300:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return reply

    async def handle_DATA(self, server: _SinkProtocol, session: Session, envelope: Envelope) -> str:
        record = server._record
        message = Received(
            "" if envelope.mail_from == "<>" else envelope.mail_from or "",
            list(envelope.rcpt_tos),
            list(envelope.mail_options),
            envelope.original_content or b"",
            command=getattr(server, "_via", "DATA"),
            tls=server.tls_active,
            auth=record.auth[1] if record and record.auth else None,
        )
        sink = self.sink
        if sink.drop == "end-of-data":
            message.reply = "(dropped)"
            sink._record_message(message)
        override = await server.misbehave("end-of-data")
        if override:
            message.reply = override
            sink._record_message(message)
            return override
        configured = sink.data_reply
        if callable(configured):
            configured = configured(message)
        message.reply = format_reply(configured or (250, "OK"))
        sink._record_message(message)
        return message.reply


class _TrackedSSLProtocol(sslproto.SSLProtocol):
    """Implicit TLS whose raw transport stop() can abort even mid-handshake."""

    def __init__(self, owner: _ServerThread, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner
        self._raw: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = transport
        self._owner._track(transport)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._untrack(self._raw)
        super().connection_lost(exc)

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            self._owner._event("tls-failed")
        super()._on_handshake_complete(handshake_exc)


class Sink(_SmtpRecorder):
    """An SMTP server that records what it gets and misbehaves on request.

    Args (all keyword, all also attributes a test may change later, or
    through ``configure()``; those read at connection time, marked *,
    apply from the next connection):
        greeting: the whole greeting reply (default ``220 <hostname> ...``);
            a ``421`` greeting closes the connection after it is sent.
        ehlo_extensions: the EHLO keywords in order (``DEFAULT_EXTENSIONS``);
            SIZE, STARTTLS and AUTH get their parameters; any other entry is
            sent as given (``"CHUNKING"``, ``"BINARYMIME"``, ``"DSN"``).
        ehlo_reply: answer EHLO with this instead (e.g. ``(502, "no")``);
            HELO still works.
        mail_reply: reply to MAIL, or ``callable(address, options) -> Reply|None``.
        rcpt_replies: ``{address: Reply}`` or ``callable(address) -> Reply|None``.
        data_command_reply: answer the DATA command with this instead of 354.
        data_reply: reply at end of data, or ``callable(Received) -> Reply|None``.
        drop, stall: a ``Point`` at which to close the connection, or to stop
            answering until ``unstall()`` or ``stop()``.
        garbage: a ``Point`` (``True`` = ``"greeting"``) at which to answer
            ``GARBAGE`` instead of a reply.
        tls*: ``"starttls"``, ``"implicit"`` (TLS from the first byte) or None.
        cert*: which certificate the server presents (``Certificates.KINDS``).
        require_client_cert*: fail the handshake of a client without one.
        require_starttls*: ``530`` for MAIL and the like before STARTTLS.
        starttls_reply: answer STARTTLS with this (e.g. ``(454, "no")``).
        auth*: ``{id: password}`` (the XOAUTH2 token is the password); None = no AUTH.
        mechanisms*: mechanisms offered, in order (see ``MECHANISMS``).
        require_auth*: ``530`` for MAIL, RCPT and DATA until AUTH.
        auth_require_tls*: offer and allow AUTH only after TLS.
        size*: the SIZE advertised and checked against ``MAIL ... SIZE=``.
        hostname*: the name in the greeting, the EHLO reply and CRAM challenges.
        certs: the ``Certificates`` to use (default: ``Certificates.shared()``).
    """

    def __init__(
        self,
        *,
        greeting: Reply | None = None,
        ehlo_extensions: Collection[str] = DEFAULT_EXTENSIONS,
        ehlo_reply: Reply | None = None,
        mail_reply: Reply | Callable[[str, list[str]], Reply | None] | None = None,
        rcpt_replies: Mapping[str, Reply] | Callable[[str], Reply | None] | None = None,
        data_command_reply: Reply | None = None,
        data_reply: Reply | Callable[[Received], Reply | None] | None = None,
        drop: Point | None = None,
        stall: Point | None = None,
        garbage: Point | bool | None = None,
        tls: Literal["starttls", "implicit"] | None = None,
        cert: CertKind = "good",
        require_client_cert: bool = False,
        require_starttls: bool = False,
        starttls_reply: Reply | None = None,
        auth: Mapping[str, str] | None = None,
        mechanisms: Sequence[str] = ("PLAIN", "LOGIN", "CRAM-MD5"),
        require_auth: bool = False,
        auth_require_tls: bool = False,
        size: int | None = 1 << 25,
        hostname: str = "sink.localhost",
        certs: Certificates | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("drop", drop), ("stall", stall), ("garbage", garbage)):
            assert value in (None, True, False) or value in POINTS, f"{name}={value!r}: not one of {POINTS}"
        assert tls in (None, "starttls", "implicit"), tls
        assert all(m.upper() in MECHANISMS for m in mechanisms), mechanisms
        self.greeting = greeting
        self.ehlo_extensions = list(ehlo_extensions)
        self.ehlo_reply = ehlo_reply
        self.mail_reply = mail_reply
        self.rcpt_replies = rcpt_replies
        self.data_command_reply = data_command_reply
        self.data_reply = data_reply
        self.drop = drop
        self.stall = stall
        self.garbage = garbage
        self.tls = tls
        self.cert = cert
        self.require_client_cert = require_client_cert
        self.require_starttls = require_starttls
        self.starttls_reply = starttls_reply
        self.auth = auth
        self.mechanisms = list(mechanisms)
        self.require_auth = require_auth
        self.auth_require_tls = auth_require_tls
        self.size = size
        self.hostname = hostname
        self.certs = certs or Certificates.shared()
        self._tls_context: ssl.SSLContext | None = None
        self._auths: list[AuthAttempt] = []

    def configure(self, **changes: Any) -> None:
        """Change behaviour between messages: ``sink.configure(data_reply=(452, "later"))``."""
        for name, value in changes.items():
            assert hasattr(self, name) and not name.startswith("_"), f"no setting {name!r}"
            setattr(self, name, value)

    async def _listen(self) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        if self.tls is not None:
            self._tls_context = self.certs.server_context(
                self.cert, require_client_cert=self.require_client_cert
            )
        if self.tls == "implicit":

            def factory() -> asyncio.BaseProtocol:
                app = _SinkProtocol(self, loop, implicit_tls=True)
                assert self._tls_context is not None
                return _TrackedSSLProtocol(self, loop, app, self._tls_context, None, server_side=True)

        else:

            def factory() -> asyncio.BaseProtocol:
                return _SinkProtocol(self, loop, implicit_tls=False)

        return await loop.create_server(factory, self.host, 0)

    def _record_auth(self, attempt: AuthAttempt) -> None:
        with self._cond:
            self._auths.append(attempt)
            self._cond.notify_all()

    # -- for tests

    @property
    def auths(self) -> list[AuthAttempt]:
        """Every AUTH exchange that got as far as an id, in order."""
        with self._cond:
            return list(self._auths)

    @property
    def ca_pem(self) -> Path:
        """The CA to trust (``--client-tls-verify``)."""
        return self.certs.ca_pem

    @property
    def cert_pem(self) -> Path:
        """Key and certificate the server presents."""
        return self.certs.paths[self.cert]

    @property
    def client_pem(self) -> Path:
        """Key and certificate for the client (``--client-tls-certificate``)."""
        return self.certs.client_pem

    @property
    def client_cert_presented(self) -> bool:
        """True if any client presented a (verified) certificate."""
        with self._cond:
            return any(s.client_cert for s in self._sessions)


# ---------------------------------------------------------------------------
# BareSink: exact bytes


class BareConnection:
    """One BareSink connection, for a script to drive."""

    def __init__(self, sink: BareSink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sink = sink
        self.reader = reader
        self.writer = writer
        self.record = SessionRecord(peer=writer.get_extra_info("peername"))

    async def send(self, data: bytes) -> None:
        """Send bytes exactly as given."""
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, reply: Reply | int, text: str | None = None) -> None:
        """Send a reply: ``reply(250, "ok")``, ``reply((250, "a\\nb"))``, ``reply("250 ok")``."""
        if isinstance(reply, int):
            reply = (reply, text or "")
        await self.send(format_reply(reply).encode("utf-8") + b"\r\n")

    async def line(self) -> bytes | None:
        """The next line without its CRLF; None at end of input."""
        try:
            raw = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return None
        return raw.removesuffix(b"\n").removesuffix(b"\r")

    async def command(self) -> str | None:
        """The next command line (recorded in ``commands``); None at end of input."""
        raw = await self.line()
        if raw is None:
            return None
        text = raw.decode("utf-8", "surrogateescape")
        self.sink._record_command(self.record, text)
        return text

    async def expect(self, verb: str) -> str:
        """The next command, which must start with ``verb``."""
        line = await self.command()
        if line is None or not line.upper().startswith(verb.upper()):
            raise AssertionError(f"expected {verb}, got {line!r}")
        return line

    async def read_data(self) -> bytes:
        """DATA content up to the final dot, dots unstuffed."""
        lines = []
        while True:
            raw = await self.reader.readuntil(b"\r\n")
            if raw == b".\r\n":
                return b"".join(lines)
            lines.append(raw[1:] if raw.startswith(b".") else raw)

    async def read_exactly(self, count: int) -> bytes:
        return await self.reader.readexactly(count)

    async def hold(self) -> None:
        """Wait until the test calls ``unstall()`` (or the server stops)."""
        self.sink._event("hold")
        await self.sink._hold()

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.transport.abort()

    async def serve(self, *, greet: bool = False) -> None:
        """Carry on as a plain SMTP server that accepts everything.

        EHLO offers ``sink.extensions``; BDAT works.  Messages are recorded
        in ``sink.messages``.
        """
        if greet:
            await self.reply(220, "bare sink ready")
        mail_from: str | None = None
        options: list[str] = []
        rcpts: list[str] = []
        chunks: list[bytes] = []
        while (line := await self.command()) is not None:
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                await self.reply((250, "\n".join(["bare.localhost", *self.sink.extensions])))
            elif verb in ("HELO", "NOOP"):
                await self.reply(250, "ok")
            elif verb == "RSET":
                mail_from, options, rcpts, chunks = None, [], [], []
                await self.reply(250, "ok")
            elif verb == "MAIL":
                m = re.match(r"(?i)FROM:\s*<([^>]*)>\s*(.*)", arg)
                mail_from, options = (m.group(1), m.group(2).split()) if m else ("", [])
                await self.reply(250, "ok")
            elif verb == "RCPT":
                m = re.match(r"(?i)TO:\s*<([^>]*)>", arg)
                rcpts.append(m.group(1) if m else arg)
                await self.reply(250, "ok")
            elif verb == "DATA":
                await self.reply(354, "go ahead")
                data = await self.read_data()
                self._received(mail_from, rcpts, options, data, "DATA")
                mail_from, options, rcpts = None, [], []
                await self.reply(250, "ok")
            elif verb == "BDAT":
                size, _, last = arg.partition(" ")
                chunks.append(await self.read_exactly(int(size)))
                if last.upper() != "LAST":
                    await self.reply(250, f"{size} octets")
                    continue
                self._received(mail_from, rcpts, options, b"".join(chunks), "BDAT")
                mail_from, options, rcpts, chunks = None, [], [], []
                await self.reply(250, "ok")
            elif verb == "QUIT":
                await self.reply(221, "bye")
                self.close()
                return
            else:
                await self.reply(500, "unknown command")

    def _received(
        self, mail_from: str | None, rcpts: list[str], options: list[str], data: bytes, command: str
    ) -> None:
        self.sink._record_message(
            Received(mail_from or "", list(rcpts), list(options), data, "250 ok", command)
        )


async def _default_script(conn: BareConnection) -> None:
    await conn.serve(greet=True)


class BareSink(_SmtpRecorder):
    """A raw asyncio server: each connection runs ``script(conn)``.

    ``script`` is ``async def script(conn: BareConnection)``; the default
    greets and ``serve()``\\ s.  Example, an EHLO reply over 20,000 bytes::

        async def huge_ehlo(conn):
            await conn.reply(220, "hi")
            await conn.expect("EHLO")
            await conn.reply((250, "\\n".join(["x" * 70] * 400)))
            await conn.serve()

        with BareSink(huge_ehlo) as bare: ...

    An exception in the script is recorded in ``.errors`` and closes the
    connection.
    """

    def __init__(
        self,
        script: Callable[[BareConnection], Awaitable[None]] | None = None,
        *,
        extensions: Sequence[str] = ("8BITMIME", "PIPELINING", "CHUNKING", "BINARYMIME"),
    ) -> None:
        super().__init__()
        self.script = script or _default_script
        self.extensions = list(extensions)

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._connection, self.host, 0)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        self._track(transport)
        conn = BareConnection(self, reader, writer)
        self._record_session(conn.record)
        try:
            await self.script(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as error:
            self._error("".join(traceback.format_exception(error)))
        finally:
            self._record_close(conn.record)
            if self._stopping:
                transport.abort()
            else:
                writer.close()
            self._untrack(transport)


# ---------------------------------------------------------------------------
# SOCKS 4/4a


class Socks4Proxy(_ServerThread):
    """A SOCKS v4/v4a CONNECT proxy that forwards only to loopback.

    Hand-written (see the module docstring: pproxy's SOCKS4 server ignores
    the 4a host name).  Every request is recorded in ``.requests`` as the
    client sent it.  With ``target`` (a port, or ``(host, port)`` on
    loopback) every connection goes there whatever was asked for, so a test
    can name a far host such as ``smtp.example.com:25`` and still reach its
    sink; without it the requested host must be loopback (``localhost`` or
    ``127.x.x.x``).  A request that cannot be served, or every request with
    ``reject=True``, gets reply code 91 (rejected) and the connection is
    closed.
    """

    def __init__(self, target: int | tuple[str, int] | None = None, *, reject: bool = False) -> None:
        super().__init__()
        self.target = (LOCALHOST, target) if isinstance(target, int) else target
        self.reject = reject
        self._requests: list[SocksRequest] = []

    @property
    def requests(self) -> list[SocksRequest]:
        with self._cond:
            return list(self._requests)

    def wait_for_requests(self, count: int = 1, timeout: float = 10.0) -> list[SocksRequest]:
        return self.wait_until(
            lambda: list(self._requests) if len(self._requests) >= count else None,
            timeout,
            f"{count} request(s)",
        )

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._connection, self.host, 0)

    @staticmethod
    def _loopback(host: str) -> bool:
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track(writer.transport)
        self._event("connect")
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readexactly(8)
            version, command, port, address = head[0], head[1], int.from_bytes(head[2:4], "big"), head[4:8]
            if version != 4:
                self._event(f"bad-version:{version}")
                return
            userid = (await reader.readuntil(b"\0"))[:-1].decode("latin-1")
            socks4a = address[:3] == b"\0\0\0" and address[3] != 0
            if socks4a:
                host = (await reader.readuntil(b"\0"))[:-1].decode("utf-8", "surrogateescape")
            else:
                host = socket.inet_ntoa(address)
            with self._cond:
                self._requests.append(SocksRequest(host, port, userid, socks4a, command))
                self._cond.notify_all()
            goal = self.target or ((host, port) if self._loopback(host) else None)
            if command != 1 or self.reject or goal is None:
                writer.write(b"\x00\x5b" + bytes(6))
                await writer.drain()
                return
            try:
                upstream_reader, upstream = await asyncio.open_connection(*goal)
            except OSError:
                writer.write(b"\x00\x5b" + bytes(6))
                await writer.drain()
                return
            self._track(upstream.transport)
            writer.write(b"\x00\x5a" + head[2:8])
            await writer.drain()
            await asyncio.gather(self._pipe(reader, upstream), self._pipe(upstream_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            for side in (writer, upstream):
                if side is None:
                    continue
                if self._stopping:
                    side.transport.abort()
                else:
                    side.close()
                self._untrack(side.transport)
            self._event("close")

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
            if sink.can_write_eof() and not sink.is_closing():
                sink.write_eof()
        except ConnectionError:
            sink.transport.abort()


def downstream_fixture(*, check_errors: bool = True) -> Any:
    """A factory fixture: ``downstream = downstream_fixture()`` in a test module,
    then ``sink = downstream(Sink, drop="mail")`` in a test.  Everything it
    started is stopped after the test; with ``check_errors`` the test then
    fails if a server recorded an error in its own code."""

    @pytest.fixture
    def _downstream() -> Iterator[Callable[..., Any]]:
        started: list[_ServerThread] = []

        def start(cls: type[_ServerThread], *args: Any, **kwargs: Any) -> Any:
            server = cls(*args, **kwargs)
            server.start()
            started.append(server)
            return server

        yield start
        for server in reversed(started):
            server.stop()
        if check_errors:
            errors = [error for server in started for error in server.errors]
            assert not errors, "\n".join(errors)

    return _downstream
