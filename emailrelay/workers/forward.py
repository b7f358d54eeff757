"""The forwarding worker: passes READY messages from the spool to the next hop.

A `Forwarder` runs forwarding runs over one spool, one at a time: a request
that arrives during a run (poll, client disconnect, admin) is remembered and
starts one more run afterwards (SPEC.md 7.1).  A run takes a snapshot of the
READY ids in name order and puts them in one queue.  ``--forward-connections
N`` connections (default 1) work through that queue side by side, each an
asyncio task running `Forwarder._connection`: it takes the next id, claims
it (spool.claim: lock and rename to BUSY, so no two connections, and no two
processes, ever send the same message), reads the envelope, sends it on its
own connection, which it reuses for as long as the next hop stays the same,
and then:

- delivered -> the files are removed;
- refused (a 4xx or 5xx reply to MAIL, RCPT or the content), a local
  problem (no remote recipients, corrupt envelope, missing content, a server
  that cannot take the message) -> BAD with the reason and reason code
  appended, plus an ``X-MailRelay-ReasonKind: temporary|permanent`` line
  that E-MailRelay's reader ignores, for the opt-in retry;
- the default next hop cannot be reached -> the message goes back to READY
  and the run ends with that error; a routed ``ForwardToAddress`` that cannot
  be reached is skipped for the rest of the run (its messages stay READY);
- the connection breaks after connecting -> that message goes BAD
  (temporary) and the run ends.

A run opens at most as many connections as it has messages.  "The run
ends" (also when a client filter asks for it) means, with several
connections, that no connection takes another message: the others finish
the message they are on and say QUIT; what is left in the queue stays
READY for the next run.  The first error is the run's error.  A next hop
that refuses the extra connections (a connection limit answered by a
refused connect or a 421 greeting) is treated like any other: the run
ends, so N should not exceed what the next hop accepts.  Messages start in
name order but, over N connections, may finish in any order.  The
connections share the run's counts and the set of unreachable routed
addresses and nothing else; they are tasks on one event loop, so there is
no locking.  An unexpected exception in one connection cancels the others
(asyncio.TaskGroup) and ends the run with that exception, as with one.
``--immediate`` (`forward_now`) does not use the queue: one message on the
SMTP session's own connection.

Retry (SPEC.md section 0, opt-in with --retry-limit): BAD messages whose
last failure was temporary go back to READY after --retry-interval seconds,
doubling per failure and capped at an hour, until they have failed
retry-limit + 1 times; never after a 5xx.

Given an `EventBus`, a forwarder publishes the ``client:`` events of the
admin ``notify`` command (SPEC.md 9): ``forward: start: <reason>`` and
``forward: end[: <error or "no messages">]`` around a run,
``connecting``/``connected: <address>`` for each connection, and
``sending: <id>`` / ``sent: <id>[: <short reason>]`` for each message it
takes to a connected next hop (over several connections the events of
different messages interleave).  Given a `NetworkMonitor`, its connections
appear in the admin ``status`` report.  Without either it does nothing
extra.

`run_client(config)` is the ``--as-client`` / ``--dont-serve`` process:
one run, then exit 0, or 1 with ``error: <reason>`` when the run was cut
short by a connection failure.

Not here: SMTP details (smtp_client.py), file names (spool.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from emailrelay import filters
from emailrelay.config import ServerConfig
from emailrelay.envelope import Envelope, EnvelopeError, parse, reason_lines, serialise
from emailrelay.events import Connection, EventBus, NetworkMonitor
from emailrelay.filters import Chain, FilterContext, Outcome
from emailrelay.log import Log
from emailrelay.smtp_client import ClientSettings, ConnectError, SmtpClient, SmtpError
from emailrelay.smtp_server import display_address
from emailrelay.spool import Claim, Spool, State
from emailrelay.workers import runtime

RETRY_CAP = 3600.0
KIND_KEY = "X-MailRelay-ReasonKind"


@dataclass(frozen=True)
class ForwardSettings:
    forward_to: str
    client: ClientSettings
    forward_to_some: bool = False
    retry_limit: int = 0
    retry_interval: float = 60.0
    client_filter: Chain = field(default_factory=Chain)
    filter_timeout: float = 60.0
    delivery_dir: str = ""  # --delivery-dir, for a client-side deliver:
    connections: int = 1  # --forward-connections: connections working through a run at once


@dataclass
class RunResult:
    """What one forwarding run did; `error` is set when it was cut short."""

    sent: int = 0
    failed: int = 0
    error: str = ""
    messages: int = 0
    reason: str = ""  # the last failure's reason and reply code
    code: int = 0


@dataclass
class _Run:
    """What the connections of one run share."""

    queue: Iterator[str]  # the READY ids in name order; each is taken by one connection
    result: RunResult
    unreachable: set[str] = field(default_factory=set)  # routed addresses skipped for the rest of the run
    ending: bool = False  # set by the first message that ends the run: take no more


@dataclass
class _Report:
    """The ``sent`` event of one message: due once its ``sending`` event went out."""

    announced: bool = False
    outcome: str = "abandoned"  # "" when delivered, else the short reason


class _ReportingClient(SmtpClient):
    """An SmtpClient that tells the network monitor and the event bus about its connection."""

    def __init__(
        self, settings: ClientSettings, log: Log, monitor: NetworkMonitor | None, events: EventBus | None
    ) -> None:
        super().__init__(settings, log)
        self._monitor = monitor
        self._events = events
        self._record: Connection | None = None

    async def connect(self, address: str, selector: str = "") -> None:
        if self._monitor is not None:
            self._record = self._monitor.outbound(address)
        if self._events is not None:
            self._events.publish("client", "connecting", address)
        await super().connect(address, selector)
        peer = display_address(self._writer.get_extra_info("peername")) if self._writer else address
        if self._record is not None and self._writer is not None:
            self._record.local = display_address(self._writer.get_extra_info("sockname"))
            self._record.remote = peer
        if self._events is not None:
            self._events.publish("client", "connected", peer)

    def close(self) -> None:
        super().close()
        if self._record is not None and self._monitor is not None:
            record, self._record = self._record, None
            self._monitor.closed(record)


class Forwarder:
    """Forwarding runs over one spool, one at a time."""

    def __init__(
        self,
        spool: Spool,
        settings: ForwardSettings,
        log: Log,
        *,
        monitor: NetworkMonitor | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.spool = spool
        self.settings = settings
        self.log = log
        self.monitor = monitor
        self.events = events
        self._task: asyncio.Task[None] | None = None
        self._pending: str | None = None
        self._retry_timer: asyncio.TimerHandle | None = None
        self.runs = 0

    def _event(self, *fields: str) -> None:
        if self.events is not None:
            self.events.publish("client", *fields)

    def _new_client(self) -> SmtpClient:
        if self.monitor is None and self.events is None:
            return SmtpClient(self.settings.client, self.log)
        return _ReportingClient(self.settings.client, self.log, self.monitor, self.events)

    # triggers

    def request(self, reason: str) -> None:
        """Ask for a forwarding run (the entry point for poll, disconnect, admin)."""
        if self._task is not None and not self._task.done():
            self._pending = self._pending or reason
            return
        self._task = asyncio.get_running_loop().create_task(self._loop(reason))

    async def _loop(self, reason: str) -> None:
        next_reason: str | None = reason
        while next_reason is not None:
            try:
                await self.run(next_reason)
            except Exception as e:  # a bug must not stop later runs
                self.log.error(f"forwarding: internal error: {type(e).__name__}: {e}")
            next_reason, self._pending = self._pending, None

    async def idle(self) -> None:
        """Wait until no run is in progress or pending."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    # one run

    async def run(self, reason: str) -> RunResult:
        self.runs += 1
        self.log.info(f"forwarding: {reason}")
        self.spool.recover_busy(log=self.log.info)
        self.retry_due()
        result = RunResult()
        ids = self.spool.ids(State.READY)
        result.messages = len(ids)
        if not ids:
            self.log.info("forwarding: no messages to send")
            self._event("forward", "end", "no messages")
            self._schedule_retry()
            return result
        self._event("forward", "start", reason)
        run = _Run(iter(ids), result)
        try:
            await self._connections(run, min(self.settings.connections, len(ids)))
        finally:
            self._event("forward", "end", result.error)
        if result.error:
            self.log.error(f"forwarding: {result.error}")
        self.log.info(f"forwarding: done: {result.sent} sent, {result.failed} failed")
        self._schedule_retry()
        return result

    async def _connections(self, run: _Run, count: int) -> None:
        """Work `count` connections through the run's queue until it is empty or the run ends."""
        if count <= 1:
            await self._connection(run)
            return
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(count):
                    group.create_task(self._connection(run))
        except BaseExceptionGroup as errors:  # a bug in one connection (the others were cancelled)
            raise errors.exceptions[0] from None

    async def _connection(self, run: _Run) -> None:
        """One connection: take the next message from the queue, forward it, repeat; QUIT at the end."""
        client: SmtpClient | None = None
        try:
            while not run.ending and (msg_id := next(run.queue, None)) is not None:
                claim = self.spool.claim(msg_id)
                if claim is None:  # gone, or taken by another process
                    continue
                report = _Report()
                client, stop = await self._forward_one(claim, client, run.unreachable, run.result, report=report)
                if report.announced:
                    self._event("sent", claim.id, report.outcome)
                if stop and not run.ending:
                    run.ending = True
                    if not run.result.error:
                        self.log.info("forwarding: a client filter asked to stop this run")
        finally:
            if client is not None:
                await client.quit()

    async def _forward_one(
        self, claim: Claim, client: SmtpClient | None, unreachable: set[str], result: RunResult,
        *, report: _Report | None = None,
    ) -> tuple[SmtpClient | None, bool]:
        """Forward one claimed message; returns the client to reuse and whether to stop.

        With a `report`, a "sending" event goes out once the next hop is
        connected, and the report gets the outcome for the "sent" event.
        """
        try:
            envelope = parse(self.spool.read_claimed(claim))
        except EnvelopeError as e:
            self._fail(claim, None, f"invalid envelope: {e}", 0, temporary=False, result=result, report=report)
            return client, False
        content = self.spool.content_path(claim.id)
        if not content.exists():
            self._fail(claim, envelope, "content file missing", 0, temporary=False, result=result, report=report)
            return client, False
        routed = bool(self.settings.client_filter) and (bool(envelope.forward_to) or not envelope.to_remote)
        if routed:  # before connecting: as the routing filter, or for local-only mail (deliver:)
            envelope, stop = await self._client_filter(
                claim, envelope, result, routing=bool(envelope.forward_to), report=report
            )
            if envelope is None:
                return client, stop
        if not envelope.to_remote:
            self._fail(claim, envelope, "no remote recipients", 0, temporary=False, result=result, report=report)
            return client, False
        address = envelope.forward_to_address or self.settings.forward_to
        if address in unreachable:
            self.spool.release(claim)
            return client, False
        selector = envelope.client_account_selector
        if client is not None and (client.address != address or client.selector != selector):
            await client.quit()
            client = None
        if client is None:
            client = self._new_client()
            try:
                await client.connect(address, selector)
            except ConnectError as e:
                client.close()
                self.spool.release(claim)
                if address == self.settings.forward_to:
                    result.error = result.error or str(e)
                    return None, True
                self.log.warning(f"forwarding: {e}: skipping its messages in this run")
                unreachable.add(address)
                return None, False
            except SmtpError as e:
                client.close()
                self._fail(claim, envelope, str(e), e.code, temporary=True, result=result, report=report)
                result.error = result.error or str(e)
                return None, True
        if report is not None:
            report.announced = True
            self._event("sending", claim.id)
        stop = False
        if self.settings.client_filter and not routed:
            envelope, stop = await self._client_filter(claim, envelope, result, routing=False, report=report)
            if envelope is None:
                return client, stop
        why = client.unsendable(envelope)
        if why:
            self._fail(claim, envelope, why, 0, temporary=False, result=result, report=report)
            return client, False
        try:
            delivery = await client.send(envelope, content, some=self.settings.forward_to_some)
        except SmtpError as e:
            client.close()
            self._fail(claim, envelope, str(e), e.code, temporary=True, result=result, report=report)
            result.error = result.error or str(e)
            return None, True
        except OSError as e:  # the content file went away or cannot be read
            client.close()
            reason = f"cannot read content: {(e.strerror or str(e)).lower()}"
            self._fail(claim, envelope, reason, 0, temporary=False, result=result, report=report)
            return None, False
        if delivery.delivered:
            self.spool.deliver(claim)
            if report is not None:
                report.outcome = ""
            result.sent += 1
            self.log.info(f"forwarding: {claim.id}: sent")
            return client, stop
        rewrite = None
        if self.settings.forward_to_some and delivery.accepted and delivery.rejected:
            rewrite = _with_recipients(envelope, [r for r, _ in delivery.rejected])
        temporary = 400 <= delivery.code < 500
        self._fail(
            claim, envelope, delivery.reason, delivery.code,
            temporary=temporary, result=result, report=report, rewrite=rewrite,
        )
        return client, stop

    async def _client_filter(
        self, claim: Claim, envelope: Envelope, result: RunResult, *, routing: bool, report: _Report | None
    ) -> tuple[Envelope | None, bool]:
        """Run --client-filter on a claimed message (SPEC.md 3.6, 7.7).

        Returns the envelope to send (re-read: the filter may edit it), or
        None when the message is not to be sent now; and the stop flag.
        """
        content = str(self.spool.content_path(claim.id))
        context = FilterContext(
            spool_dir=str(self.spool.directory),
            msg_id=claim.id,
            domain=self.settings.client.domain,
            delivery_dir=self.settings.delivery_dir,
            new_id=self.spool.new_id,
        )
        verdict = await self.settings.client_filter.run(
            content, str(claim.path), client=True, timeout=self.settings.filter_timeout, context=context
        )
        for warning in filters.drain_warnings():
            self.log.warning(warning)
        if verdict.outcome is Outcome.ABANDON:
            self.spool.release(claim)
            return None, verdict.special
        if verdict.outcome is Outcome.FAIL:
            self.spool.relock(claim)  # the filter may have rewritten the envelope before failing
            reason = "routing filter failed" if routing else (verdict.reason or verdict.response)
            self._fail(claim, envelope, reason, 0 if routing else 550, temporary=False, result=result, report=report)
            if report is not None:
                report.outcome = "rejected"
            return None, verdict.special
        if not self.spool.relock(claim):  # the filter replaced or removed the file
            if claim.path.exists():
                claim.close()
                self.log.warning(f"forwarding: {claim.id}: taken by another process during the client filter")
                return None, verdict.special
        try:
            return parse(claim.path.read_bytes()), verdict.special
        except (OSError, EnvelopeError) as e:
            self._fail(claim, envelope, f"failed: {e}", 0, temporary=False, result=result, report=report)
            return None, verdict.special

    def _fail(
        self,
        claim: Claim,
        envelope: Envelope | None,
        reason: str,
        code: int,
        *,
        temporary: bool,
        result: RunResult,
        report: _Report | None = None,
        rewrite: bytes | None = None,
    ) -> None:
        crlf = envelope.crlf if envelope is not None else True
        eol = "\r\n" if crlf else "\n"
        kind = "temporary" if temporary else "permanent"
        lines = reason_lines(reason, code, crlf) + f"{KIND_KEY}: {kind}{eol}".encode()
        try:
            self.spool.fail(claim, lines, rewrite=rewrite)
        except FileNotFoundError:
            claim.close()  # deleted under us: nothing left to fail
        except OSError as e:
            self.log.error(f"forwarding: {claim.id}: cannot record the failure: {e}")
            claim.close()
            return
        result.failed += 1
        result.reason, result.code = reason, code
        if report is not None:
            report.outcome = reason
        self.log.warning(f"forwarding: {claim.id}: failed: {reason}" + (f" ({code})" if code else ""))

    # --immediate: one message, on a connection owned by the SMTP session

    async def forward_now(self, msg_id: str, client: SmtpClient | None) -> tuple[str, SmtpClient | None]:
        """Forward one just-committed message before the submitter gets its reply.

        Returns the reply for the submitter (SPEC.md 7.8) and the client
        connection to reuse for the session's next message.
        """
        claim = self.spool.claim(msg_id)
        if claim is None:
            return "250 message processed", client
        try:
            envelope = parse(self.spool.read_claimed(claim))
        except EnvelopeError:
            envelope = None
        if envelope is not None and not envelope.to_remote:
            self.spool.release(claim)  # local recipients only: it stays stored
            return "250 message processed", client
        result = RunResult()
        client, _ = await self._forward_one(claim, client, set(), result)
        if result.sent:
            return "250 message processed", client
        if result.failed:
            code = result.code if 400 <= result.code < 600 else 452
            return f"{code} {result.reason}", client
        return "452 forwarding failed", client

    # opt-in retry of temporary failures

    def _retry_state(self, msg_id: str) -> float | None:
        """When a BAD message may be retried (a time.time()), or None if never."""
        path = self.spool.envelope_path(msg_id, State.BAD)
        try:
            data = path.read_bytes()
            mtime = path.stat().st_mtime
            envelope = parse(data)
        except (OSError, EnvelopeError):
            return None
        kinds = [line.split(":", 1)[1].strip() for line in envelope.extra_lines if line.startswith(KIND_KEY + ":")]
        failures = envelope.reason_count
        if not kinds or kinds[-1] != "temporary" or failures > self.settings.retry_limit:
            return None
        delay = min(self.settings.retry_interval * 2 ** max(failures - 1, 0), RETRY_CAP)
        return mtime + delay

    def retry_due(self) -> None:
        """Return BAD messages whose temporary failure is due for a retry to READY."""
        if self.settings.retry_limit <= 0:
            return
        now = time.time()
        for msg_id in self.spool.ids(State.BAD):
            due = self._retry_state(msg_id)
            if due is not None and due <= now:
                try:
                    self.spool.rename(msg_id, State.BAD, State.READY)
                    self.log.info(f"forwarding: {msg_id}: retrying after a temporary failure")
                except FileNotFoundError:
                    pass

    def _schedule_retry(self) -> None:
        if self.settings.retry_limit <= 0:
            return
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        dues = [d for d in (self._retry_state(i) for i in self.spool.ids(State.BAD)) if d is not None]
        if dues:
            delay = max(min(dues) - time.time(), 0.0) + 0.05
            self._retry_timer = asyncio.get_running_loop().call_later(delay, self.request, "retry")


def _with_recipients(envelope: Envelope, recipients: list[str]) -> bytes:
    """The envelope rewritten with only these remote recipients (for --forward-to-some)."""
    return serialise(dataclasses.replace(envelope, to_remote=list(recipients), to_local=[]))


def run_client(config: ServerConfig) -> int:
    """The ``--as-client`` / ``--dont-serve`` process: at most one run, then exit.

    Exit 0 when the run finished (even if some messages failed), 1 with
    ``<prog>: error: <reason>`` when it was cut short by a connection
    failure, and 0 with ``nothing to do`` / ``no messages to send`` when
    there is no work (OPTIONS.md 7.1 and 7.6).
    """
    program = config.log.program
    log = runtime.open_log(config)
    try:
        spool = runtime.open_spool(config, log)
    except runtime.StartupError as e:
        runtime.fatal(program, str(e))
        return e.code
    forward = config.forward
    if forward is None or not (forward.at_startup or forward.poll):
        sys.stderr.write(f"{program}: nothing to do\n")
        return 0
    try:
        settings = runtime.forward_settings(config, config.domain or runtime.default_domain())
        runtime.switch_user(config)
    except runtime.StartupError as e:
        runtime.fatal(program, str(e))
        return e.code
    forwarder = Forwarder(spool, settings, log)
    forwarder.retry_due()
    if not forward.poll and not spool.ids(State.READY):
        sys.stderr.write(f"{program}: no messages to send\n")
        return 0
    pid_file = runtime.daemonize(config)
    if pid_file is None:
        return 1
    try:
        return runtime.run_event_loop(_client_main(forwarder, forward.poll))
    except KeyboardInterrupt:
        return 130
    finally:
        if pid_file is not True:
            pid_file.remove()


async def _client_main(forwarder: Forwarder, poll: int) -> int:
    forwarder.log.batch_stderr_lines()
    forwarder.log.verbose(f"event loop: {runtime.event_loop_name()}")
    result = await forwarder.run("startup")
    while poll:  # --dont-serve --poll: keep polling until killed
        await asyncio.sleep(poll)
        result = await forwarder.run("poll")
    forwarder.log.flush()  # the run's lines before the error line
    if result.error:
        runtime.fatal(forwarder.log.settings.program, result.error)
        return 1
    return 0
