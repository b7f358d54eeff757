"""--forward-connections: one run's messages over several connections at once.

The downstream here is `HoldingSink`, an aiosmtpd server that makes
concurrency observable without timing: it holds each message at the end
of its data until `gate` messages are held at the same moment, and it
records, per message, the connection it came on and the most connections
and messages it had at once.  A forwarder that sends over one connection
at a time can never open the gate; it runs into the `hold` bound (a
liveness bound, not a measurement) and the test then fails on the
numbers.

Each test checks the run's whole outcome: every message delivered exactly
once or left in the state the rules give it, no ``.busy`` files, and the
``forwarding: done: N sent, M failed`` line adding up over all
connections.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aiosmtpd.smtp import SMTP, Envelope, Session

from .conftest import Relay, as_user, command
from .downstream import Reply, Sink, _ServerThread, downstream_fixture, format_reply
from .test_admin import admin  # noqa: F401 - a fixture
from .test_forward import as_client, bad_envelope, states, store

downstream = downstream_fixture()

Action = Reply | Literal["drop", "wait"] | None


@dataclass(frozen=True)
class Arrival:
    """One message that reached the end of its data: its subject, its connection (1, 2, ...) and the reply."""

    subject: str
    session: int
    reply: str


class _HoldingProtocol(SMTP):
    """One connection to a HoldingSink: aiosmtpd's SMTP, numbered and counted."""

    def __init__(self, sink: HoldingSink, loop: asyncio.AbstractEventLoop) -> None:
        self.sink = sink
        self.number = 0
        super().__init__(_HoldingHandler(sink), hostname="holding.localhost", ident="holding sink", timeout=3600, loop=loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sink._track(transport)
        self.number = self.sink._opened()
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.sink._untrack(self.transport)
        self.sink._closed()
        super().connection_lost(error)


class _HoldingHandler:
    def __init__(self, sink: HoldingSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: _HoldingProtocol, session: Session, envelope: Envelope) -> str:
        sink = self.sink
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        m = re.search(rb"^Subject: (.*?)\r?$", content, re.M)
        subject = m.group(1).decode() if m else ""
        await sink._hold()
        action = sink.policy(subject) if sink.policy is not None else None
        if action == "wait":
            await sink._wait_for_release()
            action = None
        if action == "drop":
            sink._record(Arrival(subject, server.number, "(dropped)"))
            assert server.transport is not None
            server.transport.close()
            await asyncio.get_running_loop().create_future()  # cancelled when the connection is lost
        reply = format_reply(action or (250, "OK"))  # type: ignore[arg-type]
        sink._record(Arrival(subject, server.number, reply))
        return reply


class HoldingSink(_ServerThread):
    """An SMTP server that shows how many connections a forwarder uses at once.

    Args:
        gate: hold every message at the end of its data until this many are
            held at once; from then on nothing is held.
        hold: ... or until this many seconds passed (then the gate opens too).
        policy: ``policy(subject)`` -> a Reply to refuse the message, ``"drop"``
            to close its connection instead of answering, ``"wait"`` to answer
            250 only after ``release()``, or None for 250.
    """

    def __init__(self, *, gate: int = 2, hold: float = 10.0, policy: Callable[[str], Action] | None = None) -> None:
        super().__init__()
        self.gate = gate
        self.hold = hold
        self.policy = policy
        self._open = 0
        self._held = 0
        self._sessions = 0
        self._max_open = 0
        self._max_held = 0
        self._arrivals: list[Arrival] = []
        self._gate_open: asyncio.Event | None = None
        self._released: asyncio.Event | None = None

    async def _listen(self) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        self._gate_open, self._released = asyncio.Event(), asyncio.Event()
        return await loop.create_server(lambda: _HoldingProtocol(self, loop), self.host, 0)

    # on the server's loop

    def _opened(self) -> int:
        with self._cond:
            self._sessions += 1
            self._open += 1
            self._max_open = max(self._max_open, self._open)
            self._cond.notify_all()
            return self._sessions

    def _closed(self) -> None:
        with self._cond:
            self._open -= 1
            self._cond.notify_all()

    async def _hold(self) -> None:
        assert self._gate_open is not None
        with self._cond:
            self._held += 1
            self._max_held = max(self._max_held, self._held)
            if self._held >= self.gate:
                self._gate_open.set()
        try:
            await asyncio.wait_for(self._gate_open.wait(), self.hold)
        except TimeoutError:
            self._gate_open.set()
        finally:
            with self._cond:
                self._held -= 1

    async def _wait_for_release(self) -> None:
        assert self._released is not None
        await self._released.wait()

    def _record(self, arrival: Arrival) -> None:
        with self._cond:
            self._arrivals.append(arrival)
            self._cond.notify_all()

    # for tests

    def release(self) -> None:
        """Let the messages that wait (policy ``"wait"``) have their 250."""
        assert self._loop is not None and self._released is not None
        self._loop.call_soon_threadsafe(self._released.set)

    @property
    def arrivals(self) -> list[Arrival]:
        with self._cond:
            return list(self._arrivals)

    @property
    def sessions(self) -> int:
        """Connections made so far."""
        with self._cond:
            return self._sessions

    @property
    def max_open(self) -> int:
        """The most connections open at the same moment."""
        with self._cond:
            return self._max_open

    @property
    def max_held(self) -> int:
        """The most messages waiting at the end of their data at the same moment."""
        with self._cond:
            return self._max_held

    def delivered(self) -> list[str]:
        return [a.subject for a in self.arrivals if a.reply.startswith("250")]


def fill(spool: Path, count: int, **fields: object) -> dict[str, str]:
    """`count` messages with subjects "0", "1", ...; returns subject -> id."""
    return {str(n): store(spool, f"Subject: {n}\r\n\r\nbody {n}\r\n".encode(), **fields) for n in range(count)}


def done_line(stderr: bytes) -> str:
    (line,) = [x for x in stderr.decode().splitlines() if "forwarding: done:" in x]
    return line.split("forwarding: ", 1)[1]


EMPTY = {"ready": [], "busy": [], "bad": [], "content": []}


def test_four_connections_deliver_every_message_once_and_at_the_same_time(downstream, spool):
    sink = downstream(HoldingSink, gate=2)
    ids = fill(spool, 40)
    result = as_client(spool, sink.address, "--forward-connections", "4")
    assert result.returncode == 0, result.stderr
    assert sorted(Counter(sink.delivered()).items()) == sorted((s, 1) for s in ids)
    assert states(spool) == EMPTY
    assert done_line(result.stderr) == "done: 40 sent, 0 failed"
    assert sink.max_held >= 2 and sink.max_open >= 2  # two messages in flight at once, on two connections
    assert sink.sessions <= 4 and sink.max_open <= 4
    by_session: dict[int, list[str]] = {}
    for a in sink.arrivals:
        by_session.setdefault(a.session, []).append(ids[a.subject])
    assert len(by_session) >= 2
    for sent in by_session.values():  # one queue in name order: each connection takes later ids only
        assert sent == sorted(sent)


def test_by_default_one_connection_carries_everything(downstream, spool):
    sink = downstream(HoldingSink, gate=2, hold=0.2)  # the first message waits out the hold
    ids = fill(spool, 12)
    result = as_client(spool, sink.address)
    assert result.returncode == 0, result.stderr
    assert sink.delivered() == sorted(ids, key=ids.__getitem__)  # in name order, on one connection
    assert (sink.sessions, sink.max_open, sink.max_held) == (1, 1, 1)
    assert states(spool) == EMPTY
    assert done_line(result.stderr) == "done: 12 sent, 0 failed"


def test_no_more_connections_than_messages(downstream, spool):
    sink = downstream(HoldingSink, gate=2)
    fill(spool, 2)
    result = as_client(spool, sink.address, "--forward-connections", "8")
    assert result.returncode == 0, result.stderr
    assert (sink.sessions, sink.max_held) == (2, 2)
    assert states(spool) == EMPTY


def test_refused_messages_go_bad_and_the_others_are_delivered(downstream, spool):
    sink = downstream(HoldingSink, gate=2, policy=lambda s: (550, "5.7.1 not this one") if int(s) % 5 == 0 else None)
    ids = fill(spool, 40)
    refused = {s for s in ids if int(s) % 5 == 0}
    result = as_client(spool, sink.address, "--forward-connections", "4")
    assert result.returncode == 0, result.stderr
    assert sorted(sink.delivered()) == sorted(set(ids) - refused)
    assert sink.max_held >= 2
    assert sorted(states(spool)["bad"]) == sorted(ids[s] for s in refused)
    assert sorted(states(spool)["content"]) == sorted(ids[s] for s in refused)
    assert states(spool)["ready"] == states(spool)["busy"] == []
    for s in refused:
        _, extra = bad_envelope(spool, ids[s])
        assert extra == [
            "X-MailRelay-Reason: 5.7.1 not this one",
            "X-MailRelay-ReasonCode: 550",
            "X-MailRelay-ReasonKind: permanent",
        ]
    assert done_line(result.stderr) == "done: 32 sent, 8 failed"


def test_a_broken_connection_ends_the_run_for_all_connections(downstream, spool):
    """The first message's connection breaks while the next three are in flight on
    the others: those three are still delivered, the first goes BAD (temporary),
    and no connection takes another message."""
    ids = fill(spool, 10)
    first, *others = sorted(ids, key=ids.__getitem__)  # subjects in name order
    sink = downstream(HoldingSink, gate=4, policy=lambda s: "drop" if s == first else "wait")
    proc = Relay(
        [command("emailrelay"), "--as-client", sink.address, "--spool-dir", str(spool),
         *as_user(["--forward-connections", "4"])],
        spool,
    )
    try:
        proc.wait_for(rf"forwarding: {re.escape(ids[first])}: failed: ")  # the run is ending from here on
        sink.release()
        assert proc.proc.wait(timeout=60) == 1
    finally:
        proc.stop()
    assert sorted(sink.delivered()) == sorted(others[:3])
    assert states(spool)["bad"] == [ids[first]]
    assert sorted(states(spool)["ready"]) == sorted(ids[s] for s in others[3:])
    assert states(spool)["busy"] == []
    _, extra = bad_envelope(spool, ids[first])
    assert extra[1:] == ["X-MailRelay-ReasonCode:", "X-MailRelay-ReasonKind: temporary"]
    assert proc.count("forwarding: done: 3 sent, 1 failed") == 1
    assert re.fullmatch(r"emailrelay: error: smtp error: .+", [x for x in proc.lines if x != "<eof>"][-1])


def test_unreachable_next_hop_leaves_everything_ready(downstream, spool):
    sink = downstream(Sink)
    port = sink.port
    sink.stop()
    ids = fill(spool, 10)
    result = as_client(spool, f"127.0.0.1:{port}", "--forward-connections", "4")
    assert result.returncode == 1
    assert result.stderr.decode().splitlines()[-1] == (
        f"emailrelay: error: connect failure: cannot connect to 127.0.0.1:{port}: connection refused"
    )
    assert sorted(states(spool)["ready"]) == sorted(ids.values())
    assert states(spool)["busy"] == states(spool)["bad"] == []
    assert done_line(result.stderr) == "done: 0 sent, 0 failed"


def test_an_unreachable_routed_address_is_skipped_by_every_connection(downstream, spool):
    sink = downstream(HoldingSink, gate=2)
    gone = downstream(Sink)
    gone_address = gone.address
    gone.stop()
    routed = {store(spool, f"Subject: r{n}\r\n\r\nx\r\n".encode(), forward_to_address=gone_address) for n in range(5)}
    direct = fill(spool, 10)
    result = as_client(spool, sink.address, "--forward-connections", "3")
    assert result.returncode == 0, result.stderr
    assert sorted(sink.delivered()) == sorted(direct)
    assert set(states(spool)["ready"]) == routed
    assert states(spool)["busy"] == states(spool)["bad"] == []
    assert 1 <= result.stderr.decode().count("skipping its messages in this run") <= 3
    assert done_line(result.stderr) == "done: 10 sent, 0 failed"


def test_admin_events_add_up_over_the_connections(admin, downstream, spool):  # noqa: F811 - the admin fixture
    sink = downstream(HoldingSink, gate=2)
    ids = sorted(fill(spool, 9).values())
    r, connect = admin("--forward-to", sink.address, "--forward-connections", "3")
    a = connect()
    a.send("notify")
    assert a.cmd("forward") == "OK\r\nE-MailRelay> "
    events = a.events_until("client: forward: end")
    client = [e for e in events if e.startswith("client: ")]
    assert client[0] == "client: forward: start: admin" and client[-1] == "client: forward: end"
    assert sorted(e.removeprefix("client: sending: ") for e in client if e.startswith("client: sending: ")) == ids
    assert sorted(e.removeprefix("client: sent: ") for e in client if e.startswith("client: sent: ")) == ids
    for msg_id in ids:
        assert client.index(f"client: sending: {msg_id}") < client.index(f"client: sent: {msg_id}")
    n = sink.sessions
    assert 2 <= n <= 3 and sink.max_held >= 2
    assert events.count(f"client: connecting: {sink.address}") == events.count(f"client: connected: {sink.address}") == n
    assert events.count("network: out: start") == events.count("network: out: stop") == n
    r.wait_for("forwarding: done: 9 sent, 0 failed")
    assert states(spool) == EMPTY
