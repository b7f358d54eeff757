"""The storage worker: an SMTP server that stores each message in the spool.

`run(config)` is the whole life of an ``emailrelay --as-server`` process:
open the log, check the spool directory (one-line error, exit 1), clean up
after dead writers (spool recovery), bind the listening sockets (exit 2 on
failure), serve until SIGTERM/SIGINT/SIGHUP/SIGQUIT, then stop listening,
drop unfinished messages and exit 128+signo.

`SpoolHandler` is the mail policy of the storage server: MAIL creates the
content file, content is streamed into it, and end of data commits the
message durably (durable.py/spool.py) before ``250 message processed``.
A write error or a full disk gets a 452 and leaves no file behind.  This
module does no protocol parsing (smtp_protocol.py) and no socket I/O
(smtp_server.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

from emailrelay import COMPATIBLE_VERSION, __version__, durable
from emailrelay.config import ServerConfig
from emailrelay.envelope import Envelope
from emailrelay.log import Log, LogSettings
from emailrelay.smtp_protocol import BODY_TO_CONTENT, Session, SessionConfig, Transaction
from emailrelay.smtp_server import ServerSettings, SmtpServer, bind, format_address
from emailrelay.spool import Spool, SpoolError, check_spool_dir, default_spool_dir

VERSION_TEXT = f"emailrelay {__version__} (E-MailRelay {COMPATIBLE_VERSION} compatible)"


class SpoolHandler:
    """Stores each SMTP transaction as a spool message."""

    def __init__(self, spool: Spool, log: Log) -> None:
        self.spool = spool
        self.log = log

    def begin(self, session: Session, transaction: Transaction) -> None:
        transaction.message = self.spool.create()

    def write(self, transaction: Transaction, data: bytes) -> None:
        transaction.message.write(data)  # type: ignore[union-attr]

    async def commit(self, session: Session, transaction: Transaction) -> str:
        msg = transaction.message
        envelope = Envelope(
            content=BODY_TO_CONTENT.get(transaction.body, "unknown"),
            from_address=transaction.mail_from,
            to_local=list(transaction.to_local),
            to_remote=list(transaction.to_remote),
            client=session.peer_ip,
            mail_from_auth_in=transaction.auth_in,
            utf8_mailbox_names=transaction.utf8_names,
        )
        try:
            await self.spool.commit(msg, envelope)  # type: ignore[arg-type]
        except OSError as e:
            reason = (e.strerror or str(e)).lower()
            self.log.error(f"cannot store message {msg.id}: {reason}")  # type: ignore[union-attr]
            return f"452 cannot store message: {reason}"
        self.log.info(f"stored message {msg.id} ({msg.size} bytes)")  # type: ignore[union-attr]
        return "250 message processed"

    def abort(self, transaction: Transaction) -> None:
        if transaction.message is not None:
            self.spool.discard(transaction.message)  # type: ignore[arg-type]
            transaction.message = None


def default_domain() -> str:
    """The host's canonical name from a DNS lookup, as E-MailRelay does.

    If the lookup fails, ``<host>.localnet`` (2.6's ``<host>:0.localnet``
    quirk fixed).
    """
    host = socket.gethostname().split(".", 1)[0] or os.environ.get("HOSTNAME", "") or "localhost"
    try:
        info = socket.getaddrinfo(host, None, flags=socket.AI_CANONNAME)
    except OSError:
        return f"{host}.localnet"
    canonical = info[0][3] if info and info[0][3] else ""
    return canonical or f"{host}.localnet"


def log_settings(config: ServerConfig) -> LogSettings:
    c = config.log
    return LogSettings(
        program=c.program,
        enabled=c.enabled,
        verbose=c.verbose,
        debug=c.debug,
        file=c.file,
        time=c.time,
        syslog=c.syslog,
        facility=c.facility,
    )


def run(config: ServerConfig) -> int:
    """Run the storage server until a terminating signal; returns the exit code."""
    durable.set_umask(0o007)
    log = Log(log_settings(config))
    for warning in config.log_warnings:
        log.warning(warning)
    program = config.log.program
    try:
        spool_dir = Path(config.spool_dir) if config.spool_dir else default_spool_dir()
        check_spool_dir(spool_dir)
    except (SpoolError, OSError) as e:
        _fatal(program, str(e))
        return 1
    spool = Spool(spool_dir.absolute())
    log.info(f"spool directory: {spool.directory}")
    spool.recover(log=log.info)
    try:
        sockets = bind(list(config.interfaces), config.port)
    except OSError as e:
        _fatal(program, f"socket bind error: {(e.strerror or str(e)).lower()}")
        return 2
    session = SessionConfig(
        domain=config.domain or default_domain(),
        version_text=VERSION_TEXT,
        size=config.size,
        pipelining=config.smtp.pipelining,
        chunking=config.smtp.chunking,
        smtputf8=config.smtp.smtputf8,
        smtputf8strict=config.smtp.smtputf8strict,
        strictparsing=config.smtp.strictparsing,
        anonymous=config.anonymous,
    )
    settings = ServerSettings(
        session=session,
        remote_clients=config.remote_clients,
        idle_timeout=config.idle_timeout,
        log_address=config.log.address,
        log_port=config.log.port,
    )
    server = SmtpServer(settings, lambda: SpoolHandler(spool, log), log)
    try:
        return asyncio.run(_serve(server, sockets, log, config.log.close_stderr))
    except KeyboardInterrupt:
        return 130


async def _serve(server: SmtpServer, sockets: list[socket.socket], log: Log, close_stderr: bool) -> int:
    loop = asyncio.get_running_loop()
    stopping: asyncio.Future[int] = loop.create_future()

    def on_signal(signo: int) -> None:  # only records the signal
        if not stopping.done():
            stopping.set_result(signo)

    for signo in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        loop.add_signal_handler(signo, on_signal, signo)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    addresses = [s.getsockname() for s in sockets]
    await server.start(sockets)
    for address in addresses:
        log.info(f"smtp server on {format_address(address[0], address[1])}")
    if close_stderr:
        _close_stderr()
    signo = await stopping
    log.info(f"stopping: {signal.Signals(signo).name}")
    try:
        async with asyncio.timeout(10):
            await server.stop()
    except TimeoutError:
        log.warning("shutdown deadline passed: some sessions did not end")
    return 128 + signo


def _close_stderr() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _fatal(program: str, text: str) -> None:
    sys.stderr.write(f"{program}: error: {text}\n")
    sys.stderr.flush()
