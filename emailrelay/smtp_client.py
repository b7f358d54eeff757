"""The SMTP client that forwarding and proxying use: one connection, many messages.

`SmtpClient` connects to the next hop, waits for its greeting (at most
--prompt-timeout, then carries on), says EHLO (HELO if EHLO is refused),
and sends messages with `send(envelope, content_path)`: MAIL FROM with the
parameters of SPEC.md 7.3, the RCPTs (all in one write when the server
offers PIPELINING and our --client-smtp-config allows it), then the content,
streamed from its file, with line endings normalised to CRLF and lines
dot-stuffed (DATA), or raw in BDAT chunks for BINARYMIME messages.  The
content is never held in memory as a whole.

`send` returns a `Delivery` for a per-message outcome (accepted, or refused
with the reply code and text); anything that breaks the connection (timeout,
disconnect, garbage, an unexpected reply in the handshake) raises
`SmtpError`, and a failure to connect at all raises `ConnectError`: the
caller (workers/forward.py) decides what each means for the spool.

Why not aiosmtplib: its protocol drops reply bytes that arrive while an
earlier reply is unclaimed, so pipelined MAIL/RCPT replies are lost; its
`data()` wants the whole message in memory; and it knows neither BDAT nor
E-MailRelay's reply rules (a 20,000-byte reply limit, the prompt timeout).
This module is a small client on asyncio streams instead.

Not here: spool states (spool.py), what a failure means for a message
(workers/forward.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import socket
import ssl
from dataclasses import dataclass, field

from emailrelay.envelope import Envelope, xtext_encode, xtext_valid
from emailrelay.secrets import Secrets, SecretsError, client_mechanisms
from emailrelay.timeouts import WaitTimer

#: Largest reply accepted (SPEC.md appendix A).
MAX_REPLY = 20_000
#: BDAT chunk size (SPEC.md appendix A).
BDAT_CHUNK = 1_000_000
READ_CHUNK = 256 * 1024


class SmtpError(Exception):
    """The connection can no longer be used; str() is the reason."""

    def __init__(self, reason: str, code: int = 0) -> None:
        super().__init__(reason)
        self.code = code


class ConnectError(SmtpError):
    """No connection was made (nothing was sent)."""


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The reply text without its code, lines joined by a space."""
        return " ".join(line for line in self.lines if line)

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()


@dataclass(frozen=True)
class ClientSmtpConfig:
    """``--client-smtp-config`` switches (OPTIONS.md 3.8)."""

    pipelining: bool = True
    smtputf8strict: bool = True
    eightbitstrict: bool = False
    binarymimestrict: bool = True


@dataclass(frozen=True)
class ClientSettings:
    domain: str  # for EHLO; an address literal is sent if it has no dot
    connection_timeout: float = 40.0
    response_timeout: float = 60.0
    prompt_timeout: float = 20.0
    client_interface: str | None = None
    smtp: ClientSmtpConfig = field(default_factory=ClientSmtpConfig)
    secrets: Secrets | None = None  # --client-auth
    auth_config: str = ""  # --client-auth-config
    anonymous: bool = False  # --anonymous=client: MAIL FROM ... AUTH=<>
    tls: ClientTls | None = None  # None: no client TLS


@dataclass(frozen=True)
class ClientTls:
    """Client TLS (OPTIONS.md 2.7, 3.5): STARTTLS or implicit TLS, and how to verify."""

    implicit: bool = False  # --client-tls-connection
    required: bool = False  # --client-tls-required
    certificate: tuple[str, ...] = ()  # one PEM with key and chain, or key then cert
    verify: str | None = None  # CA file or directory, "<default>", "<none>"; None = no verification
    verify_name: str | None = None  # --client-tls-verify-name
    server_name: str | None = None  # --client-tls-server-name (SNI)
    config: tuple[str, ...] = ()  # --tls-config items

    def context(self) -> ssl.SSLContext:
        """The SSL context; raises ssl.SSLError/OSError for bad files."""
        from emailrelay.tls import client_context

        return client_context(self.config, self.certificate, self.verify)

    def check_name(self, peer: dict | None) -> str:
        """Why the server certificate does not carry verify_name, or ""."""
        if not self.verify_name or self.verify is None:
            return ""
        names = [v for k, v in (peer or {}).get("subjectAltName", ()) if k in ("DNS", "IP Address")]
        for rdn in (peer or {}).get("subject", ()):
            names += [v for k, v in rdn if k == "commonName"]
        wanted = self.verify_name.lower()
        for name in names:
            name = name.lower()
            if name == wanted or (name.startswith("*.") and wanted.partition(".")[2] == name[2:]):
                return ""
        return f"certificate name mismatch: wanted [{self.verify_name}], got [{','.join(names)}]"


@dataclass
class Delivery:
    """The outcome of one message on a working connection."""

    accepted: list[str] = field(default_factory=list)
    rejected: list[tuple[str, Reply]] = field(default_factory=list)
    reply: Reply | None = None  # the deciding reply (final, MAIL or the first RCPT refusal)
    reason: str = ""  # "" when the message was delivered to every accepted recipient
    code: int = 0

    @property
    def delivered(self) -> bool:
        return not self.reason


def split_address(address: str) -> tuple[str, int]:
    """``host:port``, ``[ipv6]:port``, ``ipv6:port`` or ``ipv6.port`` -> (host, port).

    The split is at the last ``:`` (OPTIONS.md 3.1); an IPv6 address whose
    last part is not a port splits at the last ``.`` instead.
    """
    sep = address.rfind(":")
    if address.count(":") > 1 and not address.startswith("[") and not address[sep + 1 :].isdigit():
        sep = address.rfind(".")
    if sep <= 0 or sep == len(address) - 1:
        raise ConnectError(f"invalid host:service format: {address}")
    host, service = address[:sep], address[sep + 1 :]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if service.isdigit():
        return host, int(service)
    try:
        return host, socket.getservbyname(service, "tcp")
    except OSError:
        raise ConnectError(f"invalid host:service format: {address}") from None


class DataEncoder:
    """Streams content as SMTP DATA: CRLF line endings and dot-stuffing.

    Bare CR, bare LF and CRLF all become CRLF (SPEC.md 7.3); a line that
    starts with "." gets another; an unterminated last line gets CRLF.
    """

    _EOL = re.compile(rb"\r\n|\r|\n")

    def __init__(self) -> None:
        self._bol = True
        self._held_cr = False
        self._empty = True

    def encode(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        if self._held_cr:
            chunk = b"\r" + chunk
            self._held_cr = False
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
            self._held_cr = True
            if not chunk:
                return b""
        self._empty = False
        crlf = chunk.count(b"\r\n")
        if chunk.count(b"\r") != crlf or chunk.count(b"\n") != crlf:
            chunk = self._EOL.sub(b"\r\n", chunk)
        chunk = chunk.replace(b"\r\n.", b"\r\n..")
        if self._bol and chunk.startswith(b"."):
            chunk = b"." + chunk
        self._bol = chunk.endswith(b"\r\n")
        return chunk

    def finish(self) -> bytes:
        tail = b""
        if self._held_cr:
            tail = b"\r\n"
            self._held_cr = False
            self._bol = True
        if not self._bol and not self._empty:
            tail += b"\r\n"
        return tail + b".\r\n"


class SmtpClient:
    """One client connection to the next hop."""

    def __init__(self, settings: ClientSettings, log: object | None = None) -> None:
        self.settings = settings
        self.log = log
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._response = WaitTimer(settings.response_timeout)  # each reply and each drain
        self.extensions: dict[str, str] = {}
        self.address = ""
        self.selector = ""
        self.auth_id: str | None = None  # who we authenticated as, if we did
        self.secure = False

    # connection

    async def connect(self, address: str, selector: str = "") -> None:
        """Connect, then greeting, EHLO and AUTH; raises ConnectError/SmtpError.

        `selector` is the envelope's ClientAccountSelector: it picks the
        client secret to authenticate with (SPEC.md 5.4).
        """
        self.address = address
        self.selector = selector
        target, _, socks = address.partition("@")
        host, port = split_address(target)
        tls = self.settings.tls
        context = self._tls_context()
        implicit = tls is not None and tls.implicit
        server_name = (tls.server_name if tls else None) or host
        local = (self.settings.client_interface, 0) if self.settings.client_interface else None
        timeout = self.settings.connection_timeout or None
        try:
            async with asyncio.timeout(timeout):
                if socks:
                    sock = await self._socks_connect(socks, host, port, timeout)
                    self._reader, self._writer = await asyncio.open_connection(
                        sock=sock, limit=MAX_REPLY * 2, ssl=context if implicit else None,
                        server_hostname=server_name if implicit else None,
                    )
                else:
                    self._reader, self._writer = await asyncio.open_connection(
                        host, port, local_addr=local, limit=MAX_REPLY * 2, ssl=context if implicit else None,
                        server_hostname=server_name if implicit else None,
                    )
        except TimeoutError:
            raise ConnectError(f"connect failure: cannot connect to {address}: timed out") from None
        except ssl.SSLError as e:
            raise SmtpError(f"tls error: {e.reason or e}") from None
        except OSError as e:
            raise ConnectError(f"connect failure: cannot connect to {address}: {_strerror(e)}") from None
        if implicit:
            self._tls_established()
        sock = self._writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await self._greeting()
        await self._hello()
        await self._starttls()
        await self._authenticate()

    def _tls_context(self) -> ssl.SSLContext | None:
        tls = self.settings.tls
        if tls is None:
            return None
        try:
            return tls.context()
        except (ssl.SSLError, OSError) as e:
            raise ConnectError(f"tls error: cannot use the tls files: {getattr(e, 'reason', None) or e}") from None

    async def _socks_connect(self, socks: str, host: str, port: int, timeout: float | None) -> socket.socket:
        """A socket connected to host:port through a SOCKS 4a proxy (python-socks)."""
        from python_socks import ProxyError, ProxyTimeoutError
        from python_socks.async_.asyncio import Proxy

        socks_host, socks_port = split_address(socks)
        proxy = Proxy.from_url(f"socks4://{socks_host}:{socks_port}", rdns=True)
        try:
            return await proxy.connect(dest_host=host, dest_port=port, timeout=timeout)
        except ProxyTimeoutError:
            raise TimeoutError from None
        except ProxyError as e:
            raise ConnectError(f"connect failure: cannot connect to {self.address}: socks error: {e}") from None

    def _tls_established(self) -> None:
        assert self._writer is not None and self.settings.tls is not None
        self.secure = True
        why = self.settings.tls.check_name(self._writer.get_extra_info("peercert"))
        if why:
            raise SmtpError(f"tls error: {why}")

    async def _starttls(self) -> None:
        """STARTTLS when --client-tls is on and the server offers it (SPEC.md 7.2)."""
        tls = self.settings.tls
        if tls is None or tls.implicit or self.secure:
            return
        if not self.has("STARTTLS"):
            if tls.required:
                raise SmtpError("tls is mandated but the server cannot do starttls")
            return
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            raise SmtpError(f"tls error: unexpected response to starttls: {reply}", reply.code)
        assert self._writer is not None
        host, _ = split_address(self.address.partition("@")[0])
        try:
            async with asyncio.timeout(self.settings.connection_timeout or None):
                await self._writer.start_tls(self._tls_context(), server_hostname=tls.server_name or host)
        except TimeoutError:
            raise SmtpError("tls error: handshake timed out") from None
        except (ssl.SSLError, OSError) as e:
            raise SmtpError(f"tls error: {getattr(e, 'reason', None) or e}") from None
        self._tls_established()
        await self._hello()

    async def _greeting(self) -> None:
        try:
            async with asyncio.timeout(self.settings.prompt_timeout or None):
                reply = await self._read_reply()
        except TimeoutError:
            self._trace("no greeting within the prompt timeout: carrying on")
            return
        if reply.code != 220:
            raise SmtpError(f"smtp error: unexpected response: {reply}", reply.code)

    def _ehlo_name(self) -> str:
        domain = self.settings.domain
        if "." in domain:
            return domain
        assert self._writer is not None
        local = self._writer.get_extra_info("sockname")
        host = str(local[0]) if local else "127.0.0.1"
        return f"[IPv6:{host}]" if ":" in host else f"[{host}]"

    async def _hello(self) -> None:
        name = self._ehlo_name()
        reply = await self.command(f"EHLO {name}")
        if reply.code in (500, 501, 502):
            reply = await self.command(f"HELO {name}")
            if not reply.ok:
                raise SmtpError(f"smtp error: unexpected response: {reply}", reply.code)
            self.extensions = {}
            return
        if not reply.ok:
            raise SmtpError(f"smtp error: unexpected response: {reply}", reply.code)
        self.extensions = {}
        for line in reply.lines[1:]:
            keyword, _, params = line.partition(" ")
            self.extensions[keyword.upper()] = params

    async def _authenticate(self) -> None:
        """SMTP AUTH with the client secret for our selector, if there is one (SPEC.md 5.4)."""
        from emailrelay.sasl import ClientMechanism, SaslError

        secrets = self.settings.secrets
        if secrets is None:
            return
        try:
            account = secrets.client_account(self.selector)
        except SecretsError as e:
            raise SmtpError(str(e)) from None
        if account is None:
            return
        offered = self.extensions.get("AUTH")
        if offered is None:
            raise SmtpError("authentication is not supported by the remote smtp server")
        names = client_mechanisms(account, self.settings.auth_config, offered.split(), secure=self.secure)
        if not names:
            which = f" with selector [{self.selector}]" if self.selector else ""
            raise SmtpError(f"cannot do authentication: check for a compatible client secret{which}")
        reply: Reply | None = None
        for name in names:
            try:
                mech = ClientMechanism(name, account)
            except SaslError:
                continue
            initial = mech.initial_response()
            line = f"AUTH {name}"
            if initial is not None:
                line += " " + (base64.b64encode(initial).decode() or "=")
            reply = await self.command(line, secret=True)
            while reply.code == 334:
                try:
                    challenge = base64.b64decode(reply.text.encode(), validate=True) if reply.text else b""
                    answer = base64.b64encode(mech.respond(challenge)).decode()
                except (SaslError, binascii.Error, ValueError):
                    answer = "*"
                reply = await self.command(answer, secret=True)
            if reply.ok:
                self.auth_id = mech.id
                return
        if reply is None:
            raise SmtpError(f"cannot do authentication: no usable secret for {', '.join(names)}")
        raise SmtpError(
            f"authentication failed using mechanism [{name}] and {mech.secret_kind} secret for "
            f"[{mech.id}]: [{reply.text}]"
        )

    def has(self, extension: str) -> bool:
        return extension in self.extensions

    async def quit(self) -> None:
        """Say QUIT (waiting at most a second for 221) and close."""
        if self._writer is None:
            return
        try:
            self._write(b"QUIT\r\n")
            async with asyncio.timeout(1.0):
                await self._read_reply()
        except (SmtpError, TimeoutError, OSError):
            pass
        self.close()

    def close(self) -> None:
        self._response.close()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    # replies and commands

    def _trace(self, text: str) -> None:
        if self.log is not None and getattr(self.log, "verbose_on", False):
            self.log.verbose(text)  # type: ignore[attr-defined]

    async def _read_reply(self) -> Reply:
        assert self._reader is not None
        lines: list[str] = []
        total = 0
        code = 0
        while True:
            try:
                raw = await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                raise SmtpError("smtp error: connection closed by the server") from None
            except asyncio.LimitOverrunError:
                raise SmtpError("smtp error: overflow on input") from None
            except OSError as e:
                raise SmtpError(f"smtp error: {_strerror(e)}") from None
            total += len(raw)
            if total > MAX_REPLY:
                raise SmtpError("smtp error: overflow on input")
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if self.log is not None:
                self._trace(f'rx<<: "{line}"')
            if len(line) < 3 or not line[:3].isdigit() or (len(line) > 3 and line[3] not in " -"):
                raise SmtpError(f"smtp error: invalid response: {line[:100]}")
            if lines and int(line[:3]) != code:
                raise SmtpError(f"smtp error: invalid response: {line[:100]}")
            code = int(line[:3])
            lines.append(line[4:])
            if len(line) == 3 or line[3] == " ":
                return Reply(code, tuple(lines))

    async def reply(self) -> Reply:
        """The next reply, within the response timeout."""
        try:
            return await self._response.wait(self._read_reply())
        except TimeoutError:
            raise SmtpError(f"smtp error: response timeout after {self.settings.response_timeout:g}s") from None

    def _write(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            raise SmtpError("smtp error: connection closed")
        self._writer.write(data)

    async def _drain(self) -> None:
        assert self._writer is not None
        try:
            await self._response.wait(self._writer.drain())
        except TimeoutError:
            raise SmtpError(f"smtp error: response timeout after {self.settings.response_timeout:g}s") from None
        except OSError as e:
            raise SmtpError(f"smtp error: {_strerror(e)}") from None

    async def command(self, line: str, *, secret: bool = False) -> Reply:
        self._trace(f'tx>>: "{line.split(" ")[0] + " ..." if secret else line}"')
        self._write(line.encode("utf-8", "surrogateescape") + b"\r\n")
        await self._drain()
        return await self.reply()

    # messages

    def unsendable(self, envelope: Envelope) -> str:
        """Why this server cannot take the message (SPEC.md 7.3), or ""."""
        c = self.settings.smtp
        if envelope.content == "8bit" and c.eightbitstrict and not self.has("8BITMIME"):
            return "cannot send 8-bit message to 7-bit server"
        if envelope.content == "binarymime" and c.binarymimestrict and not (
            self.has("BINARYMIME") and self.has("CHUNKING")
        ):
            return "cannot send binarymime message to a non-chunking server"
        if envelope.utf8_mailbox_names and c.smtputf8strict and not self.has("SMTPUTF8"):
            return "cannot send utf8 message to non-smtputf8 server"
        return ""

    def _mail_from(self, envelope: Envelope, bdat: bool) -> str:
        line = f"MAIL FROM:<{envelope.from_address}>"
        if envelope.content == "binarymime" and bdat:
            line += " BODY=BINARYMIME"
        elif self.has("8BITMIME") and envelope.content in ("7bit", "8bit"):
            line += " BODY=8BITMIME" if envelope.content == "8bit" else " BODY=7BIT"
        if self.has("SMTPUTF8") and envelope.utf8_mailbox_names:
            line += " SMTPUTF8"
        if self.auth_id is not None:  # SPEC.md 7.3
            out = envelope.mail_from_auth_out
            if self.settings.anonymous:
                line += " AUTH=<>"
            elif not out:
                line += f" AUTH={xtext_encode(self.auth_id)}"
            elif out != "<>" and xtext_valid(out):
                line += f" AUTH={out}"
            else:
                line += " AUTH=<>"
        return line

    async def send(self, envelope: Envelope, content_path: str | os.PathLike[str], *, some: bool = False) -> Delivery:
        """Send one message; `some` = --forward-to-some (deliver to the accepted ones).

        Raises SmtpError when the connection fails; OSError when the
        content file cannot be read (the connection is then unusable too).
        """
        outcome = Delivery()
        recipients = envelope.to_remote
        bdat = envelope.content == "binarymime" and self.has("CHUNKING") and self.has("BINARYMIME")
        lines = [self._mail_from(envelope, bdat)] + [f"RCPT TO:<{r}>" for r in recipients]
        if self.settings.smtp.pipelining and self.has("PIPELINING"):
            for line in lines:
                self._trace(f'tx>>: "{line}"')
            self._write("".join(f"{line}\r\n" for line in lines).encode("utf-8", "surrogateescape"))
            await self._drain()
            replies = [await self.reply() for _ in lines]
        else:
            replies = []
            for line in lines:
                replies.append(await self.command(line))
                if not replies[0].ok:
                    break
        mail = replies[0]
        if not mail.ok:
            outcome.reply, outcome.reason, outcome.code = mail, mail.text or str(mail), mail.code
            if len(replies) > 1:  # pipelined RCPTs after a refused MAIL: start afresh
                await self.command("RSET")
            return outcome
        for recipient, reply in zip(recipients, replies[1:], strict=True):
            if reply.ok:
                outcome.accepted.append(recipient)
            else:
                outcome.rejected.append((recipient, reply))
        if outcome.rejected and (not some or not outcome.accepted):
            first = outcome.rejected[0][1]
            outcome.reply, outcome.code = first, first.code
            outcome.reason = "all recipients rejected" if some else "one or more recipients rejected"
            await self.command("RSET")
            return outcome
        final = await (self._send_bdat(content_path) if bdat else self._send_data(content_path))
        if not final.ok:
            outcome.reply, outcome.reason, outcome.code = final, final.text or str(final), final.code
        elif outcome.rejected:  # --forward-to-some: sent to the others
            outcome.reply, outcome.code = outcome.rejected[0][1], outcome.rejected[0][1].code
            outcome.reason = "one or more recipients rejected"
        return outcome

    async def _send_data(self, content_path: str | os.PathLike[str]) -> Reply:
        reply = await self.command("DATA")
        if reply.code != 354:
            return reply
        encoder = DataEncoder()
        with open(content_path, "rb") as f:
            chunk = f.read(READ_CHUNK)
            while True:
                following = f.read(READ_CHUNK) if chunk else b""
                data = encoder.encode(chunk) if chunk else b""
                if not following:  # the last chunk goes out with the end of data: one write for a small message
                    self._write(data + encoder.finish())
                    await self._drain()
                    break
                self._write(data)
                await self._drain()
                chunk = following
        return await self.reply()

    async def _send_bdat(self, content_path: str | os.PathLike[str]) -> Reply:
        size = os.path.getsize(content_path)
        sent = 0
        with open(content_path, "rb") as f:
            while True:
                chunk = f.read(BDAT_CHUNK)
                last = sent + len(chunk) >= size
                header = f"BDAT {len(chunk)} LAST" if last else f"BDAT {len(chunk)}"
                self._trace(f'tx>>: "{header}"')
                self._write(header.encode() + b"\r\n" + chunk)
                await self._drain()
                sent += len(chunk)
                reply = await self.reply()
                if last or not reply.ok:
                    return reply


def _strerror(e: OSError) -> str:
    if e.errno:
        return os.strerror(e.errno).lower()
    return (e.strerror or str(e) or type(e).__name__).lower()
