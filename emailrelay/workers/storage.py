"""The storage worker: an SMTP server that stores each message in the spool.

`run(config)` is the whole life of an ``emailrelay --as-server`` process:
open the log, check the spool directory (one-line error, exit 1), clean up
after dead writers (spool recovery), bind the listening sockets (exit 2 on
failure), serve until SIGTERM/SIGINT/SIGHUP/SIGQUIT, then stop listening,
drop unfinished messages and exit 128+signo.  The admin ``terminate``
command (--admin-terminate) ends it the same way with exit code 0.

With --admin the process also serves the admin interface
(admin_server.py); this module builds its `AdminContext` from the spool,
the forwarder and the SMTP server, and gives the servers and the forwarder
the event bus and network monitor (events.py) that ``notify`` and
``status`` read.

`SpoolHandler` is the mail policy of the storage server: MAIL creates the
content file, content is streamed into it, and end of data commits the
message durably (durable.py/spool.py) before ``250 message processed``.
A write error or a full disk gets a 452 and leaves no file behind.  This
module does no protocol parsing (smtp_protocol.py) and no socket I/O
(smtp_server.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from emailrelay import filters
from emailrelay.config import ServerConfig
from emailrelay.envelope import Envelope
from emailrelay.events import EventBus, NetworkMonitor
from emailrelay.log import Log
from emailrelay.smtp_client import SmtpClient
from emailrelay.smtp_protocol import BODY_TO_CONTENT, Session, SessionConfig, Transaction
from emailrelay.smtp_server import ServerSettings, SmtpServer, bind, format_address
from emailrelay.spool import NewMessage, Spool
from emailrelay.verifiers import Query, Verdict, Verifier
from emailrelay.workers import runtime
from emailrelay.workers.forward import Forwarder, ForwardSettings
from emailrelay.workers.link import Link, WorkerSpec

#: Seconds a supervised worker's sessions may run on after SIGTERM.
WORKER_DRAIN = 8.0


@dataclass(frozen=True)
class StoragePolicy:
    """What the storage server does with a message between storing and committing it."""

    filter: filters.Chain = field(default_factory=filters.Chain)
    filter_timeout: float = 60.0
    rescan: Callable[[], None] | None = None  # ask for a forwarding run (filter exits 102-104)
    domain: str = "localhost"
    delivery_dir: str = ""
    verifier: Verifier | None = None  # --address-verifier


class SpoolHandler:
    """Stores each SMTP transaction as a spool message.

    With --immediate (`forwarder` given) each committed message is forwarded
    before the reply, on a client connection that this session owns.
    """

    def __init__(self, spool: Spool, log: Log, policy: StoragePolicy, forwarder: Forwarder | None = None) -> None:
        self.spool = spool
        self.log = log
        self.policy = policy
        self.forwarder = forwarder
        self._client: SmtpClient | None = None

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
            authentication=session.auth_id or session.trust,
            client_certificate=session.client_certificate,
            mail_from_auth_in=transaction.auth_in,
            utf8_mailbox_names=transaction.utf8_names,
        )
        if not self.policy.filter:  # the common case: written and committed in one group commit
            try:
                await self.spool.commit(msg, envelope)  # type: ignore[arg-type]
            except OSError as e:
                return self._cannot_store(msg, e)  # type: ignore[arg-type]
            return await self._stored(msg)  # type: ignore[arg-type]
        try:
            await self.spool.prepare(msg, envelope)  # type: ignore[arg-type]
        except OSError as e:
            return self._cannot_store(msg, e)  # type: ignore[arg-type]
        context = filters.FilterContext(
            spool_dir=str(self.spool.directory),
            msg_id=msg.id,
            domain=self.policy.domain,
            delivery_dir=self.policy.delivery_dir,
            new_id=self.spool.new_id,
        )
        verdict = await self.policy.filter.run(
            str(msg.content_path), str(msg.new_envelope_path), client=False,
            timeout=self.policy.filter_timeout, context=context,
        )
        for warning in filters.drain_warnings():
            self.log.warning(warning)
        if not session.is_connected():  # SPEC.md 1.3 #5: a disconnect before the commit drops it
            self.spool.discard(msg)  # type: ignore[arg-type]
            self.log.warning(f"message {msg.id} dropped: the client disconnected while the filter ran")
            return "451 client disconnected"
        try:
            return await self._finish(msg, verdict)  # type: ignore[arg-type]
        finally:
            if verdict.special and self.policy.rescan is not None:
                self.policy.rescan()  # after the reply is decided (SPEC.md 3.5)

    async def _finish(self, msg: NewMessage, verdict: filters.Result) -> str:
        """Commit, drop or leave the message as the filter said; returns the reply."""
        if verdict.outcome is filters.Outcome.FAIL:
            self.spool.discard(msg)
            self.log.warning(f"message {msg.id} rejected by the filter: {verdict.reason}")
            code = verdict.code if 400 <= verdict.code < 600 else 452
            return f"{code} {verdict.response}"
        try:
            if verdict.outcome is filters.Outcome.ABANDON:
                self.spool.forget(msg)
                kept = await self.spool.finish(msg, missing_ok=True)
                self.log.info(f"message {msg.id} {'kept' if kept else 'taken'} by the filter")
                return "250 message processed"
            await self.spool.finish(msg, rewritten=True)
        except OSError as e:
            self.log.error(f"cannot commit message {msg.id}: {(e.strerror or str(e)).lower()}")
            return "452 rejected"
        return await self._stored(msg)

    def _cannot_store(self, msg: NewMessage, e: OSError) -> str:
        reason = (e.strerror or str(e)).lower()
        self.log.error(f"cannot store message {msg.id}: {reason}")
        return f"452 cannot store message: {reason}"

    async def _stored(self, msg: NewMessage) -> str:
        """The reply for a message now READY (forwarded first with --immediate)."""
        self.log.info(f"stored message {msg.id} ({msg.size} bytes)")
        if self.forwarder is not None:
            reply, self._client = await self.forwarder.forward_now(msg.id, self._client)
            return reply
        return "250 message processed"

    async def verify(self, session: Session, address: str, mail_from: str) -> Verdict | None:
        verifier = self.policy.verifier
        if verifier is None:
            return None
        ip, port = session.peer_ip, session.peer_port
        query = Query(
            recipient=address,
            mail_from=mail_from,
            client=f"{ip}.{port}" if ":" in ip else f"{ip}:{port}",
            domain=self.policy.domain,
            mechanism=session.auth_mechanism.lower() if session.auth_id else "none",
            auth_id=session.auth_id or session.trust,
        )
        verdict = await verifier.verify(query, timeout=self.policy.filter_timeout)
        if not verdict.valid:
            self.log.info(f"recipient [{address}] refused by the address verifier: {verdict.reason}")
        return verdict

    async def session_closed(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.quit()

    def abort(self, transaction: Transaction) -> None:
        if transaction.message is not None:
            self.spool.discard(transaction.message)  # type: ignore[arg-type]
            transaction.message = None


@dataclass
class _Unit:
    """One instance (OPTIONS.md section 5) ready to serve: its configuration, log, spool and sockets."""

    config: ServerConfig
    settings: ServerSettings
    spool: Spool
    sockets: list[socket.socket]
    log: Log
    forward_settings: ForwardSettings | None
    pop_listener: tuple[object, list[socket.socket]] | None = None
    admin_sockets: list[socket.socket] = field(default_factory=list)

    @property
    def listening(self) -> bool:
        return bool(self.sockets or self.pop_listener is not None or self.admin_sockets)


def _prepare(config: ServerConfig, spec: WorkerSpec | None) -> _Unit:
    """Everything that can fail at start-up, for one instance; raises runtime.StartupError."""
    log = runtime.open_log(config)
    spool = runtime.open_spool(config, log)
    sockets = [] if config.no_smtp else _listening(spec, "smtp", list(config.interfaces), config.port)
    domain = config.domain or runtime.default_domain()
    forward_settings = runtime.forward_settings(config, domain)
    auth = runtime.server_auth(config, domain, log)
    tls_context = runtime.server_tls_context(config)
    pop_listener = None
    if config.pop is not None:
        from emailrelay.workers import pop

        pop_auth = pop.load_auth(config, domain, log)
        pop_sockets = _listening(spec, "pop", list(config.pop.interfaces), config.pop.port)
        pop_listener = (pop.PopServer(config, spool, pop_auth, tls_context, domain, log), pop_sockets)
    admin_sockets: list[socket.socket] = []
    if config.admin is not None:
        admin_sockets = _listening(spec, "admin", list(config.admin.interfaces), config.admin.port)
    session = SessionConfig(
        domain=domain,
        version_text=runtime.VERSION_TEXT,
        size=config.size,
        pipelining=config.smtp.pipelining,
        chunking=config.smtp.chunking,
        smtputf8=config.smtp.smtputf8,
        smtputf8strict=config.smtp.smtputf8strict,
        strictparsing=config.smtp.strictparsing,
        anonymous=config.anonymous,
        auth=auth,
        starttls=config.server_tls is not None and not config.server_tls.implicit,
        tls_required=config.server_tls is not None and config.server_tls.required,
    )
    settings = ServerSettings(
        session=session,
        remote_clients=config.remote_clients,
        idle_timeout=config.idle_timeout,
        log_address=config.log.address,
        log_port=config.log.port,
        dnsbl=config.dnsbl,
        tls_context=tls_context,
        implicit_tls=config.server_tls is not None and config.server_tls.implicit,
        handshake_timeout=config.connection_timeout,
    )
    return _Unit(config, settings, spool, sockets, log, forward_settings, pop_listener, admin_sockets)


def run(config: ServerConfig | list[ServerConfig], spec: WorkerSpec | None = None) -> int:
    """Run the storage server until a terminating signal; returns the exit code.

    `config` may be a list: the instances of a multi-instance command line
    (OPTIONS.md section 5), all served by this one process, the first one's
    process-wide settings (log, daemon, pid file, user) applying to all.
    With `spec` this is one worker of ``emailrelay supervise``
    (workers/child.py): its listening sockets are inherited, it does not
    detach, and it does only its role's job (`_start_unit`).
    """
    configs = config if isinstance(config, list) else [config]
    first = configs[0]
    try:
        units = [_prepare(c, spec) for c in configs]
        runtime.switch_user(first)
    except runtime.StartupError as e:
        runtime.fatal(first.log.program, str(e))
        return e.code
    if spec is not None:
        try:
            return runtime.run_event_loop(_serve(units, spec))
        except KeyboardInterrupt:
            return 130
    busy = any(u.listening or (u.config.forward and (u.config.forward.at_startup or u.config.forward.poll)) for u in units)
    if not busy:
        sys.stderr.write(f"{first.log.program}: nothing to do\n")
        return 0
    pid_file = runtime.daemonize(first)
    if pid_file is None:
        return 1
    try:
        return runtime.run_event_loop(_serve(units))
    except KeyboardInterrupt:
        return 130
    finally:
        if pid_file is not True:
            pid_file.remove()


async def _serve(units: list[_Unit], spec: WorkerSpec | None = None) -> int:
    """Serve every instance until stopped.  Plain ``emailrelay`` (no `spec`) does every job here.

    As a supervised worker, the role decides: ``storage`` stores but does
    not forward (it asks the supervisor, which tells the ``forward``
    worker); ``proxy`` forwards each message before replying (--immediate)
    and leaves polling to ``forward``; ``forward`` and ``pop`` have only
    their own listeners.  SIGUSR1 asks a forwarding worker for a run.
    """
    loop = asyncio.get_running_loop()
    stopping: asyncio.Future[int] = loop.create_future()  # the signal number; 0 = admin terminate

    def on_signal(signo: int) -> None:  # only records the signal
        if not stopping.done():
            stopping.set_result(signo)

    for signo in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        loop.add_signal_handler(signo, on_signal, signo)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    link = Link(spec) if spec is not None else None
    for unit in units:  # log lines to stderr (the supervisor's pipe, a terminal or a file): one write per loop turn
        unit.log.batch_stderr_lines()
    if link is not None:
        await link.open(lambda: on_signal(signal.SIGTERM))
    stops = [await _start_unit(unit, on_signal, link, spec) for unit in units]
    units[0].log.verbose(f"event loop: {runtime.event_loop_name()}")
    if units[0].config.log.close_stderr:
        for unit in units:
            unit.log.flush()  # the start-up lines first
        _close_stderr()
    if link is not None:
        link.ready()
    signo = await stopping
    for unit in units:
        unit.log.info(f"stopping: {signal.Signals(signo).name if signo else 'admin terminate command'}")
    await asyncio.gather(*(stop() for stop in stops))
    if link is not None:
        await link.close()
    return 128 + signo if signo else 0


async def _start_unit(
    unit: _Unit, on_signal: Callable[[int], None], link: Link | None, spec: WorkerSpec | None
) -> Callable[[], Awaitable[None]]:
    """Start one instance's servers, forwarder and poller; returns the coroutine function that stops them."""
    loop = asyncio.get_running_loop()
    config, settings, spool, sockets, log = unit.config, unit.settings, unit.spool, unit.sockets, unit.log
    forward_settings, pop_listener, admin_sockets = unit.forward_settings, unit.pop_listener, unit.admin_sockets
    if link is not None:
        spool.observer = link.spool_event
    # OPTIONS.md section 5: "server on" lines always name their instance
    tag = f"[{config.unit}] " if config.unit and not config.log.unit else ""
    bus = monitor = None
    if admin_sockets:
        bus = EventBus()
        monitor = NetworkMonitor(bus)
    forwarder = None
    forward = config.forward
    on_session_end = None
    request: Callable[[str], None] | None = None
    if forward is not None and link is not None and spec is not None and spec.role == "storage":
        request = link.forward_request  # the forward worker forwards
    elif forward is not None:
        assert forward_settings is not None
        forwarder = Forwarder(spool, forward_settings, log, monitor=monitor, events=bus)
        request = forwarder.request
        if link is not None:
            loop.add_signal_handler(signal.SIGUSR1, forwarder.request, "supervisor request")
    if forward is not None and forward.on_disconnect:
        on_session_end = lambda: request("client disconnect")  # noqa: E731
    immediate = forwarder if forward is not None and forward.immediate else None
    if immediate is not None:
        log.warning("using --immediate can result in client timeout errors: try --forward-on-disconnect instead")
    policy = StoragePolicy(
        filter=config.filter,
        filter_timeout=config.filter_timeout,
        rescan=(lambda: request("rescan")) if request is not None else None,
        domain=settings.session.domain,
        delivery_dir=config.delivery_dir or str(spool.directory),
        verifier=config.address_verifier,
    )
    server = SmtpServer(
        settings, lambda: SpoolHandler(spool, log, policy, immediate), log, on_session_end=on_session_end,
        monitor=monitor,
    )
    addresses = [s.getsockname() for s in sockets]
    await server.start(sockets)
    for address in addresses:
        log.info(f"{tag}smtp server on {format_address(address[0], address[1])}")
    pop_server = None
    if pop_listener is not None:
        pop_server, pop_sockets = pop_listener
        pop_addresses = [s.getsockname() for s in pop_sockets]
        await pop_server.start(pop_sockets)  # type: ignore[attr-defined]
        for address in pop_addresses:
            log.info(f"{tag}pop server on {format_address(address[0], address[1])}")
    admin = None
    if admin_sockets:
        admin = _admin_server(config, spool, log, server, request, forward_settings, bus, monitor, on_signal)
        admin_addresses = [s.getsockname() for s in admin_sockets]
        await admin.start(admin_sockets)
        for address in admin_addresses:
            log.info(f"{tag}admin server on {format_address(address[0], address[1])}")
    if forward is not None:
        log.verbose(f"forwarding to {forward.address}")
    poller = None
    if forwarder is not None:
        if forward.at_startup:
            forwarder.request("startup")
        if forward.poll:
            poller = loop.create_task(_poll(forwarder, forward.poll))

    async def stop() -> None:
        if poller is not None:
            poller.cancel()
        # Plain emailrelay ends sessions at once, as 2.6 does; a supervised
        # worker lets them finish for a while (the supervisor's shutdown).
        drain = WORKER_DRAIN if link is not None else 0.0
        try:
            async with asyncio.timeout(drain + 10):
                await asyncio.gather(
                    server.stop(drain),
                    *([pop_server.stop(drain)] if pop_server is not None else []),  # type: ignore[attr-defined]
                )
                if admin is not None:
                    await admin.stop()
                if forwarder is not None:
                    await forwarder.stop()
        except TimeoutError:
            log.warning("shutdown deadline passed: some sessions did not end")

    return stop


def _admin_server(
    config: ServerConfig,
    spool: Spool,
    log: Log,
    server: SmtpServer,
    request: Callable[[str], None] | None,
    forward_settings: ForwardSettings | None,
    bus: EventBus | None,
    monitor: NetworkMonitor | None,
    stop: Callable[[int], None],
):  # noqa: ANN202 - admin_server.AdminServer
    """The admin server of this process, its commands wired to the spool, forwarder and SMTP server."""
    from emailrelay import admin_server

    assert config.admin is not None and monitor is not None
    flush = None
    if forward_settings is not None:
        # flush runs a forwarder of its own, without client events; retries stay the main forwarder's
        flush_settings = dataclasses.replace(forward_settings, retry_limit=0)

        async def flush() -> str:
            own = Forwarder(spool, flush_settings, log, monitor=monitor)
            return (await own.run("admin flush")).error

    context = admin_server.AdminContext(
        spool=spool,
        forward_to=forward_settings.forward_to if forward_settings is not None else "",
        request_forwarding=request,
        flush=flush,
        network_report=monitor.report,
        smtp_enable=server.enable,
        dnsbl_suspend=server.suspend_dnsbl,
        terminate=(lambda: stop(0)) if config.admin.terminate else None,
    )
    return admin_server.AdminServer(context, log, remote_clients=config.remote_clients, bus=bus, monitor=monitor)


def _listening(spec: WorkerSpec | None, service: str, interfaces: list[str], port: int) -> list[socket.socket]:
    """A service's listening sockets: inherited from the supervisor, or bound here (exit 2 on failure)."""
    if spec is not None:
        return spec.sockets(service)
    try:
        return bind(interfaces, port)
    except OSError as e:
        raise runtime.StartupError(f"socket bind error: {(e.strerror or str(e)).lower()}", 2) from None


async def _poll(forwarder: object, period: int) -> None:
    """Request a forwarding run every `period` seconds (the timer restarts each tick)."""
    while True:
        await asyncio.sleep(period)
        forwarder.request("poll")  # type: ignore[attr-defined]


def _close_stderr() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)

