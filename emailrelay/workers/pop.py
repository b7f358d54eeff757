"""The POP3 server of the storage process: the asyncio adapter and the spool maildrop.

`PopServer` serves POP3 (SPEC.md section 8) on listening sockets that the
storage worker has bound.  For each connection it applies the remote-client
rule of the SMTP server (non-local peers are dropped without a reply unless
--remote-clients, SPEC.md 6.1), sends the greeting, feeds what it reads into
a `pop3.LineFramer`, hands each line to the `pop3.Session` and sends the
replies.  RETR and TOP content is streamed from the content file in 64 KiB
pieces through `pop3.DotStuffer` (and `pop3.BodyLimit`), with writer
back-pressure, so a 100 MB message costs a few hundred KiB at most.
STLS is done with ``writer.start_tls`` and the server's SSL context; a
session that says nothing for --idle-timeout seconds is closed; after a
failed login the reply waits as long as the auth policy says.

`SpoolMaildrop` is the mailbox of one session: at login it takes the
mailbox lock (one session per mailbox in this process: the storage process
is the only POP server of a spool), creates the --pop-by-name directory
(0770) if needed, and lists the READY envelopes (spool.py's names) that have
a non-empty content file, in the mailbox directory first, then in the main
spool directory; sizes come from stat, content is read only by RETR/TOP.
At QUIT it deletes the marked messages durably: every envelope first, then
the directory fsync, then the content files that no other envelope of the
same id still uses (in the main spool directory or any of its
sub-directories, in any state), then the directory fsyncs again; only then
is ``+OK`` sent.  --pop-no-delete deletes nothing.  A session that ends any
other way deletes nothing.

`load_auth` makes the POP auth policy from --pop-auth (secrets file or
``pam:``) and --server-auth-config.

Not here: the protocol (pop3.py), binding sockets and the process life
(storage.py), the spool's file names (spool.py).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import stat
from pathlib import Path
from typing import BinaryIO

from emailrelay import auth_policy, durable, pop3
from emailrelay.config import ServerConfig
from emailrelay.envelope import printable
from emailrelay.listener import Listener
from emailrelay.log import Log
from emailrelay.smtp_server import _tls_details, format_address, is_local_address
from emailrelay.spool import Spool, State, content_name
from emailrelay.timeouts import WaitTimer
from emailrelay.workers import runtime

READ_SIZE = 64 * 1024
#: Content is read and sent in pieces of this size.
CHUNK = 64 * 1024


# -- authentication -------------------------------------------------------------


class PopSecretsAuth(auth_policy.SecretsAuth):
    """The SMTP secrets policy with POP's mechanism list (APOP appended, SPEC.md 5.3)."""

    def mechanisms(self, secure: bool) -> list[str]:
        return self.secrets.server_mechanisms(secure, self.config, pop=True)

    def start(self, mechanism: str, challenge: bytes | None = None):  # noqa: ANN201 - sasl.ServerMechanism
        from emailrelay.sasl import ServerMechanism

        return ServerMechanism(mechanism, self.secrets, self.domain, challenge=challenge)


class PopPamAuth(auth_policy.PamAuth):
    """``--pop-auth pam:``: PLAIN (USER/PASS, AUTH PLAIN) against PAM; no APOP (PAM cannot check it)."""

    def start(self, mechanism: str, challenge: bytes | None = None):  # noqa: ANN201 - a PAM exchange
        return super().start(mechanism)


def load_auth(config: ServerConfig, domain: str, log: Log) -> pop3.PopAuth:
    """The POP auth policy from --pop-auth; raises runtime.StartupError for a broken secrets file."""
    assert config.pop is not None
    value = config.pop.auth
    if value in ("pam:", "/pam"):
        if not auth_policy.pam_available():
            raise runtime.StartupError("pam authentication is not available: the python-pam package is missing")
        return PopPamAuth(config.server_auth_config, log.warning)
    from emailrelay.secrets import Secrets, SecretsError

    try:
        secrets = Secrets.load(value)
    except SecretsError as e:
        raise runtime.StartupError(str(e)) from None
    for warning in secrets.warnings:
        log.warning(warning)
    log.info(f'pop server authentication secrets from "{value}"')
    return PopSecretsAuth(secrets, domain, config.server_auth_config, log.warning)


# -- mailboxes ----------------------------------------------------------------------


class MailboxLocks:
    """The mailboxes that sessions of this process hold (RFC 1939's exclusive lock)."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    def acquire(self, key: str) -> bool:
        if key in self._held:
            return False
        self._held.add(key)
        return True

    def release(self, key: str) -> None:
        self._held.discard(key)


#: The process-wide lock table.
LOCKS = MailboxLocks()


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


class SpoolMaildrop:
    """One session's view of the spool: lock, list, read and delete (see the module docstring)."""

    def __init__(self, spool: Spool, *, by_name: bool, no_delete: bool, locks: MailboxLocks = LOCKS) -> None:
        self.spool = spool
        self.by_name = by_name
        self.no_delete = no_delete
        self.locks = locks
        self.directory: Path | None = None
        self._key: str | None = None

    async def open(self, user: str) -> list[pop3.Message]:
        if self._key is not None:
            raise pop3.MailboxError("[IN-USE] mailbox already open")
        directory = self.spool.directory
        if self.by_name:
            from emailrelay.filters_file import mailbox_problem

            problem = mailbox_problem(user)
            if problem:
                raise pop3.MailboxError("[SYS/PERM] invalid mailbox name", problem)
            directory = directory / user
        key = str(directory)
        if not self.locks.acquire(key):
            raise pop3.MailboxError(pop3.LOCKED, "mailbox locked by another session")
        try:
            messages = await asyncio.to_thread(self._scan, directory)
        except OSError as e:
            self.locks.release(key)
            reason = (e.strerror or str(e)).lower()
            raise pop3.MailboxError("[SYS/TEMP] cannot open mailbox", f"{reason}: {directory}") from None
        self._key = key
        self.directory = directory
        return messages

    def _scan(self, directory: Path) -> list[pop3.Message]:
        if self.by_name:
            try:
                os.mkdir(directory, 0o770)
            except FileExistsError:
                if not directory.is_dir():
                    raise NotADirectoryError(20, "not a directory") from None
        box = Spool(directory)
        places = (box, self.spool) if directory != self.spool.directory else (box,)
        messages = []
        for msg_id in box.ids(State.READY):
            for place in places:
                path = place.content_path(msg_id)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_size > 0:
                    messages.append(pop3.Message(msg_id, content_name(msg_id), st.st_size, str(path)))
                break
        return messages

    def content(self, message: pop3.Message) -> BinaryIO:
        return open(message.location, "rb", buffering=0)  # noqa: SIM115 - the adapter closes it

    async def update(self, deleted: list[pop3.Message]) -> None:
        if self.no_delete or not deleted:
            return
        assert self.directory is not None
        await asyncio.to_thread(self._delete, self.directory, deleted)

    def _delete(self, directory: Path, messages: list[pop3.Message]) -> None:
        box = Spool(directory)
        for message in messages:
            _unlink(box.envelope_path(message.id, State.READY))
        durable.fsync_directory(directory)  # no envelope may outlive its content after a crash
        main = self.spool.directory
        synced: set[Path] = set()
        others: list[Spool] | None = None
        for message in messages:
            content = Path(message.location)
            if content.parent != main:  # a mailbox directory's own copy
                if _unlink(content):
                    synced.add(content.parent)
                continue
            if others is None:  # the main spool and every sub-directory may hold envelopes of it
                with os.scandir(main) as it:
                    others = [self.spool] + [
                        Spool(entry.path) for entry in it if entry.is_dir(follow_symlinks=False)
                    ]
            if any(place.id_in_use(message.id) for place in others):
                continue  # shared with another mailbox, or still queued for forwarding
            if _unlink(content):
                synced.add(main)
        for path in synced:
            durable.fsync_directory(path)

    def close(self) -> None:
        if self._key is not None:
            key, self._key = self._key, None
            self.locks.release(key)


# -- the server -------------------------------------------------------------------


class PopServer(Listener):
    """Serves POP3 on already-bound listening sockets."""

    def __init__(
        self,
        config: ServerConfig,
        spool: Spool,
        auth: pop3.PopAuth,
        tls_context: ssl.SSLContext | None,
        domain: str,
        log: Log,
    ) -> None:
        assert config.pop is not None
        tls = config.server_tls
        # any server TLS profile offers STLS on POP, --server-tls-connection included (OPTIONS.md 3.5)
        starttls = tls_context is not None and tls is not None
        self.session_config = pop3.SessionConfig(
            domain=domain, starttls=starttls, tls_required=starttls and tls is not None and tls.required
        )
        self.tls_context = tls_context if starttls else None
        self.pop = config.pop
        self.spool = spool
        self.auth = auth
        self.log = log
        self.remote_clients = config.remote_clients
        self.idle_timeout = config.idle_timeout or None
        self.handshake_timeout = config.connection_timeout or None
        super().__init__()

    async def start(self, sockets: list[socket.socket]) -> None:
        for sock in sockets:
            await self.listen(sock, limit=READ_SIZE)

    async def stop(self, drain: float = 0.0) -> None:
        """Stop listening, let sessions finish for `drain` seconds, end the rest (unfinished sessions delete nothing)."""
        await self.close(drain)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        peer_ip, peer_port = str(peer[0]), int(peer[1]) if len(peer) > 1 else 0
        address = format_address(peer_ip, peer_port)
        log = self.log
        if not self.remote_clients and not is_local_address(peer_ip):
            log.warning(f"pop connection from {address} refused: not a local address: use --remote-clients to allow it")
            writer.transport.abort()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.info(f"pop connection from {address}")
        framer = pop3.LineFramer()
        maildrop = SpoolMaildrop(self.spool, by_name=self.pop.by_name, no_delete=self.pop.no_delete)
        session: pop3.Session | None = None

        def state_change(old: pop3.State, new: pop3.State) -> None:
            if log.debug_on:
                log.debug(f"pop state: {old.value} -> {new.value}")
            if new is pop3.State.TRANSACTION and session is not None:
                log.info(
                    f"pop authentication of {printable(session.user)} connected from {address}: "
                    f"{len(session.messages)} message(s)"
                )

        session = pop3.Session(
            self.session_config, self.auth, maildrop, peer_ip, on_state_change=state_change, notice=log.warning
        )
        trace = log.verbose_on
        reason = "disconnected"
        idle = WaitTimer(self.idle_timeout)
        try:
            greeting = session.greeting()
            self._send(writer, [greeting], trace)
            while True:
                try:
                    data = await idle.wait(reader.read(READ_SIZE))
                except TimeoutError:
                    reason = "idle timeout"
                    break
                if not data:
                    break
                framer.feed(data)
                ended = False
                # One command at a time: a pipelined RETR is streamed before the next command runs.
                while (event := framer.next_event()) is not None:
                    if trace:
                        log.verbose(f'rx<<: "{_loggable(event, session)}"')
                    try:
                        replies = await session.handle(event)
                    except pop3.Closed as closed:
                        await self._reply(writer, closed.replies, trace)
                        reason, ended = closed.reason, True
                        break
                    if session.auth_delay:
                        await asyncio.sleep(session.auth_delay)  # slow down password guessing
                        session.auth_delay = 0.0
                    await self._reply(writer, replies, trace)
                    if session.starttls_pending:
                        framer.clear()  # nothing sent before the handshake may count after it
                        await self._start_tls(writer, session)
                        break
                if ended:
                    break
        except (ConnectionError, OSError) as e:
            reason = str(e) or type(e).__name__
        except asyncio.CancelledError:
            reason = "shutting down"
            raise
        except Exception as e:  # a bug must cost one session, never the server
            reason = f"internal error: {type(e).__name__}: {e}"
            log.error(f"pop session failed: {reason}")
        finally:
            idle.close()
            session.close()
            if session.state is pop3.State.END and reason == "quit" and session.user:
                deleted = sum(1 for m in session.messages if m.deleted)
                if deleted:
                    verb = "kept (--pop-no-delete)" if self.pop.no_delete else "deleted"
                    log.info(f"pop: {deleted} message(s) {verb} for {printable(session.user)}")
            log.info(f"pop connection closed: {reason}")
            session.on_state_change = None  # break the session <-> callback cycle: free the listing now
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the transport may be gone already
                pass

    async def _start_tls(self, writer: asyncio.StreamWriter, session: pop3.Session) -> None:
        """The server side of STLS; a failed handshake ends the session."""
        assert self.tls_context is not None
        try:
            async with asyncio.timeout(self.handshake_timeout):
                await writer.start_tls(self.tls_context)
        except (TimeoutError, ssl.SSLError, OSError) as e:
            raise ConnectionError(f"tls handshake failed: {getattr(e, 'reason', None) or e or 'timed out'}") from None
        session.tls_started()
        self.log.info(f"pop tls established: {_tls_details(writer)[0]}")

    def _send(self, writer: asyncio.StreamWriter, lines: list[str], trace: bool) -> bytes:
        data = _encode(lines)
        if trace:
            for line in lines:
                self.log.verbose(f'tx>>: "{printable(line)}"')
        writer.write(data)
        return data

    async def _reply(self, writer: asyncio.StreamWriter, replies: list[pop3.Reply], trace: bool) -> None:
        """Send reply lines, streaming content items in place; lines before content go with its first piece."""
        lines: list[str] = []
        for item in replies:
            if isinstance(item, str):
                lines.append(item)
                continue
            if trace:
                for line in lines:
                    self.log.verbose(f'tx>>: "{printable(line)}"')
            sent = await _stream(writer, _encode(lines), item)
            if trace:
                self.log.verbose(f"tx>>: [{sent} octets of content]")
            lines = []
        if lines:
            self._send(writer, lines, trace)
        await writer.drain()


def _encode(lines: list[str]) -> bytes:
    if not lines:
        return b""
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")


async def _stream(writer: asyncio.StreamWriter, head: bytes, content: pop3.Content) -> int:
    """Send `head`, then the content dot-stuffed and terminated; returns the content octets read.

    One piece is read ahead, so a small message goes out in one write with
    its reply line and terminator; a large one waits for the socket
    (drain) between pieces.
    """
    stuffer = pop3.DotStuffer()
    limit = pop3.BodyLimit(content.body_lines) if content.body_lines is not None else None
    total = 0
    source = content.source
    try:
        chunk = source.read(CHUNK)
        while True:
            if not chunk:
                writer.write(head + stuffer.end())
                return total
            total += len(chunk)
            if limit is not None:
                chunk = limit.feed(chunk)
            data = stuffer.feed(chunk)
            following = b"" if limit is not None and limit.done else source.read(CHUNK)
            if not following:
                writer.write(head + data + stuffer.end())
                return total
            writer.write(head + data if head else data)
            head = b""
            await writer.drain()
            chunk = following
    finally:
        source.close()


def _loggable(event: pop3.Event, session: pop3.Session) -> str:
    """A received line for the verbose log, with passwords and SASL responses left out."""
    if isinstance(event, pop3.TooLong):
        return "[line too long]"
    text = event.text.decode("utf-8", "surrogateescape")
    if session.state is pop3.State.SASL:
        return "[response not logged]"
    verb = text.split(" ", 1)[0].upper()
    if verb == "PASS":
        return "PASS [password not logged]"
    if verb == "AUTH" and len(text.split()) > 2:
        return " ".join(text.split()[:2]) + " [response not logged]"
    return printable(text)
