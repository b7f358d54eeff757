"""The asyncio adapter of the SMTP server: sockets in, smtp_protocol out.

This module only moves bytes.  For each accepted connection it checks the
peer address (non-local peers are dropped without a reply unless
--remote-clients, SPEC.md 6.1), sends the greeting, feeds what it reads into
a `smtp_protocol.Framer`, hands each event to the `smtp_protocol.Session`
and writes the replies; pipelined replies are written together.  Reading
stops while the session awaits a commit (back-pressure: the socket's
receive buffer fills and the client waits), and an idle timeout closes a
silent connection.  TCP_NODELAY is set on every accepted socket.

Two switches belong to the admin interface (SPEC.md 6.1, 9): `enable(False)`
(``smtp disable``) makes sessions opened from then on answer
``421 service not available`` as their greeting and to MAIL;
`suspend_dnsbl(seconds)` (``dnsbl stop``) lets clients in unchecked for a
while.  Given a `NetworkMonitor`, the server reports its listeners and
sessions to it (admin ``status`` and ``notify``).

It holds no mail policy (that is the session's handler) and knows nothing
of the spool.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from emailrelay.dnsbl import Dnsbl
from emailrelay.events import NetworkMonitor
from emailrelay.listener import Listener
from emailrelay.log import Log
from emailrelay.smtp_protocol import Closed, Framer, Handler, Session, SessionConfig
from emailrelay.timeouts import WaitTimer

OUT_OF_SERVICE = "421 service not available"

READ_SIZE = 256 * 1024

_LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "169.254.0.0/16",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::1/128",
        "fe80::/64",
        "fc00::/7",
    )
)


def is_local_address(ip: str) -> bool:
    """True for loopback, link-local and private peers (SPEC.md 6.1)."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _LOCAL_NETWORKS)


def format_address(host: str, port: int) -> str:
    """E-MailRelay's display form: ``1.2.3.4:25`` and ``::1.25``."""
    return f"{host}.{port}" if ":" in host else f"{host}:{port}"


def display_address(name: object) -> str:
    """`format_address` of a socket name (``getsockname()``/``getpeername()``), a path as it is."""
    if isinstance(name, tuple) and len(name) >= 2:
        return format_address(str(name[0]), int(name[1]))
    return str(name or "")


@dataclass(frozen=True)
class ServerSettings:
    session: SessionConfig
    remote_clients: bool = False
    idle_timeout: float = 60.0
    log_address: bool = False  # --log-address / --log-format=address: "<ip>; " on session lines
    log_port: bool = False  # --log-format=port: "<port>: " on session lines
    dnsbl: Dnsbl | None = None  # --dnsbl
    tls_context: ssl.SSLContext | None = None  # for STARTTLS or implicit TLS
    implicit_tls: bool = False  # --server-tls-connection
    handshake_timeout: float = 40.0  # --connection-timeout


def log_context(ip: str, port: int, address: bool, with_port: bool) -> str:
    """The session-line prefix of OPTIONS.md 3.10: ``<ip>; ``, ``<port>: ``, ``<ip>;<port>: ``."""
    if address and with_port:
        return f"{ip};{port}: "
    if address:
        return f"{ip}; "
    if with_port:
        return f"{port}: "
    return ""


class _OutOfServiceSession(Session):
    """A session opened while the admin ``smtp disable`` is in force (SPEC.md 6.1)."""

    def greeting(self) -> str:
        return OUT_OF_SERVICE

    async def smtp_MAIL(self, arg: str, line: str) -> list[str]:
        return [OUT_OF_SERVICE]


class SmtpServer(Listener):
    """Serves SMTP on already-bound listening sockets."""

    def __init__(
        self,
        settings: ServerSettings,
        make_handler: Callable[[], Handler],
        log: Log,
        *,
        on_session_end: Callable[[], None] | None = None,
        monitor: NetworkMonitor | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.on_session_end = on_session_end
        self.make_handler = make_handler
        self.log = log
        self.monitor = monitor
        self._addresses: list[str] = []
        self.sessions_started = 0
        self.sessions_finished = 0
        self.enabled = True  # admin "smtp disable" / "smtp enable"
        self._dnsbl_suspended_until = 0.0  # time.monotonic(); admin "dnsbl stop"

    def enable(self, enabled: bool) -> None:
        """Admin ``smtp enable|disable``: sessions opened from now on are in or out of service."""
        self.enabled = enabled
        self.log.info(f"smtp server {'enabled' if enabled else 'disabled'} by the admin interface")

    def suspend_dnsbl(self, seconds: float) -> None:
        """Admin ``dnsbl stop``/``start``: no DNSBL checks for `seconds` (0 resumes, math.inf for ever)."""
        self._dnsbl_suspended_until = time.monotonic() + seconds
        if not seconds:
            self.log.info("dnsbl enabled")
        else:
            self.log.info("dnsbl disabled" + ("" if math.isinf(seconds) else f" for {seconds:g}s"))

    def _dnsbl_suspended(self) -> bool:
        return time.monotonic() < self._dnsbl_suspended_until

    async def start(self, sockets: list[socket.socket]) -> None:
        implicit = self.settings.tls_context if self.settings.implicit_tls else None
        for sock in sockets:
            await self.listen(
                sock, limit=READ_SIZE, ssl=implicit,
                ssl_handshake_timeout=self.settings.handshake_timeout if implicit else None,
            )
            self._addresses.append(display_address(sock.getsockname()))
            if self.monitor is not None:
                self.monitor.listening(self._addresses[-1])

    async def stop(self, drain: float = 0.0) -> None:
        """Stop listening, let sessions finish for `drain` seconds, then end the rest (unfinished messages are dropped)."""
        if self.monitor is not None:
            for address in self._addresses:
                self.monitor.not_listening(address)
        await self.close(drain)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        peer_ip, peer_port = str(peer[0]), int(peer[1]) if len(peer) > 1 else 0
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log = _SessionLog(
            self.log, log_context(peer_ip, peer_port, self.settings.log_address, self.settings.log_port)
        )
        if not self.settings.remote_clients and not is_local_address(peer_ip):
            log.warning(
                f"smtp connection from {format_address(peer_ip, peer_port)} refused: "
                "not a local address: use --remote-clients to allow it"
            )
            writer.transport.abort()
            return
        if self.settings.dnsbl is not None and not is_local_address(peer_ip) and not self._dnsbl_suspended():
            verdict = await self.settings.dnsbl.check(peer_ip)
            if verdict.listed or verdict.timed_out:
                what = "timed out" if verdict.timed_out else "listed by " + ",".join(verdict.listed)
                log.warning(f"dnsbl: {peer_ip}: {what}" + (": connection refused" if verdict.blocked else ""))
            if verdict.blocked:
                writer.transport.abort()
                return
        self.sessions_started += 1
        log.info(f"smtp connection from {format_address(peer_ip, peer_port)}")
        record = None
        if self.monitor is not None:
            record = self.monitor.inbound(
                display_address(writer.get_extra_info("sockname")), format_address(peer_ip, peer_port)
            )
        framer = Framer()
        handler = self.make_handler()
        session = (Session if self.enabled else _OutOfServiceSession)(
            self.settings.session,
            handler,
            framer,
            peer_ip,
            peer_port=peer_port,
            on_state_change=(lambda old, new: log.debug(f"smtp state: {old.value} -> {new.value}"))
            if self.log.debug_on
            else None,
        )
        session.is_connected = lambda: not (reader.at_eof() or writer.is_closing())
        trace = log.verbose_on
        reason = "disconnected"
        idle = WaitTimer(self.settings.idle_timeout)
        if writer.get_extra_info("ssl_object") is not None:
            session.tls_started(*_tls_details(writer))
        try:
            greeting = session.greeting()
            if trace:
                log.verbose(f'tx>>: "{greeting}"')
            writer.write(greeting.encode() + b"\r\n")
            while True:
                try:
                    data = await idle.wait(reader.read(READ_SIZE))
                except TimeoutError:
                    reason = "idle timeout"
                    break
                if not data:
                    break
                framer.feed(data)
                out: list[str] = []
                try:
                    while (event := framer.next_event()) is not None:
                        if trace and hasattr(event, "text"):
                            log.verbose(f'rx<<: "{_printable(event.text)}"')
                        replies = await session.handle(event)
                        if replies:
                            out += replies
                except Closed as closed:
                    out += closed.replies
                    reason = closed.reason
                    self._send(writer, out, log if trace else None)
                    await _drain(writer)
                    break
                if session.auth_delay:
                    await asyncio.sleep(session.auth_delay)  # slow down password guessing
                    session.auth_delay = 0.0
                if out:
                    self._send(writer, out, log if trace else None)
                    await _drain(writer)
                if session.starttls_pending:
                    framer.clear()
                    await self._start_tls(writer, session, log)
        except (ConnectionError, OSError) as e:
            reason = str(e) or type(e).__name__
        except asyncio.CancelledError:
            reason = "shutting down"
            raise
        except Exception as e:  # a bug must cost one session, never the server
            reason = f"internal error: {type(e).__name__}: {e}"
            log.error(f"smtp session failed: {reason}")
        finally:
            idle.close()
            session.close()
            closed = getattr(handler, "session_closed", None)
            if closed is not None:
                try:
                    await closed()
                except Exception:  # noqa: BLE001 - ending politely is best effort
                    pass
            self.sessions_finished += 1
            if record is not None and self.monitor is not None:
                self.monitor.closed(record)
            log.info(f"smtp connection closed: {reason}")
            if self.on_session_end is not None and reason != "shutting down":
                self.on_session_end()
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the transport may be gone already
                pass

    async def _start_tls(self, writer: asyncio.StreamWriter, session: Session, log: _SessionLog) -> None:
        """The server side of STARTTLS; a failed handshake ends the session."""
        assert self.settings.tls_context is not None
        try:
            async with asyncio.timeout(self.settings.handshake_timeout or None):
                await writer.start_tls(self.settings.tls_context)
        except (TimeoutError, ssl.SSLError, OSError) as e:
            raise ConnectionError(f"tls handshake failed: {getattr(e, 'reason', None) or e or 'timed out'}") from None
        session.tls_started(*_tls_details(writer))
        log.info(f"tls established: {session.cipher}")

    @staticmethod
    def _send(writer: asyncio.StreamWriter, lines: list[str], log: _SessionLog | None) -> None:
        if not lines:
            return
        if log is not None:
            for line in lines:
                log.verbose(f'tx>>: "{line}"')
        writer.write(("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape"))


class _SessionLog:
    """A Log that puts one session's context prefix on every line."""

    def __init__(self, log: Log, prefix: str) -> None:
        self._log = log
        self._prefix = prefix
        self.verbose_on = log.verbose_on

    def info(self, text: str) -> None:
        self._log.info(self._prefix + text)

    def verbose(self, text: str) -> None:
        self._log.verbose(self._prefix + text)

    def warning(self, text: str) -> None:
        self._log.warning(self._prefix + text)

    def error(self, text: str) -> None:
        self._log.error(self._prefix + text)

    def debug(self, text: str) -> None:
        self._log.debug(self._prefix + text)


def _tls_details(writer: asyncio.StreamWriter) -> tuple[str, str]:
    """(cipher name, client certificate PEM or "") of a TLS connection."""
    ssl_object = writer.get_extra_info("ssl_object")
    if ssl_object is None:
        return "", ""
    cipher = (ssl_object.cipher() or ("",))[0]
    der = ssl_object.getpeercert(binary_form=True)
    return cipher, ssl.DER_cert_to_PEM_cert(der) if der else ""


def _printable(data: bytes) -> str:
    from emailrelay.envelope import printable

    return printable(data.decode("utf-8", "surrogateescape"))


async def _drain(writer: asyncio.StreamWriter) -> None:
    try:
        await writer.drain()
    except (ConnectionError, OSError):
        pass


def bind(addresses: list[str], port: int) -> list[socket.socket]:
    """Create listening sockets; () means the wildcards 0.0.0.0 and ::.

    Raises OSError (the caller reports ``socket bind error`` and exits 2).
    """
    sockets: list[socket.socket] = []
    targets = addresses or ["0.0.0.0", "::"]
    try:
        for host in targets:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            if family == socket.AF_INET6 and not socket.has_ipv6:
                continue
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((host, port))
            except OSError as e:
                if not addresses and family == socket.AF_INET6 and e.errno == 99:  # no IPv6 here
                    sockets.pop().close()
                    continue
                raise
            sock.listen(1024)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
