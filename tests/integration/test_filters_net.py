"""net:, spam:, spam-edit: and mx: filters against real servers on 127.0.0.1.

The relay under test is the real ``emailrelay`` process (the ``relay``
fixture for --filter, ``as_client`` for --client-filter).  What it talks to
is started here: a ``net:`` filter daemon and a fake spamd (each a few lines
of asyncio on downstream.py's server thread), SMTP sinks (downstream.py) and
a DNS server (dnsserver.py) that serves a test zone whose MX and A records
point at 127.0.0.1 (and, for split:, 127.0.0.2).
"""

from __future__ import annotations

import asyncio
import importlib.util
import smtplib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from emailrelay.envelope import Envelope, parse

from .conftest import command, run, spool_files
from .dnsserver import DnsServer
from .downstream import Sink, _ServerThread, _SinkProtocol, downstream_fixture
from .test_forward import as_client, bad_envelope, states, store

downstream = downstream_fixture()

SPAM_VERDICT = "True ; 6.2 / 5.0"


def send(port: int, body: bytes = b"Subject: f\r\n\r\nx\r\n") -> tuple[int, bytes]:
    """Send one message in its own session; returns the end-of-data reply."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        try:
            s.sendmail("a@b.example", ["c@d.example"], body)
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error
    return 250, b""


def contents(spool: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(spool.glob("*.content"))]


# -- servers ------------------------------------------------------------------------


CLOSE = b"<close>"


class FilterDaemon(_ServerThread):
    """A ``net:`` filter daemon: answers request n (from 1) with ``answer(n, path)``.

    An answer of None holds that request unanswered until ``unstall()`` (or
    the end), CLOSE closes the connection without an answer;
    ``close_after_answer`` closes each connection after one answer.
    """

    def __init__(
        self,
        answer: Callable[[int, str], bytes | None] = lambda n, path: b"ok",
        *,
        unix: str | None = None,
        close_after_answer: bool = False,
    ) -> None:
        super().__init__()
        self.answer = answer
        self.unix = unix
        self.close_after_answer = close_after_answer
        self.requests: list[bytes] = []
        self.files_seen: list[tuple[bool, bool]] = []  # (content, .envelope.new) existed at request time
        self.connections = 0

    @property
    def address(self) -> str:
        return self.unix or super().address

    async def _listen(self) -> asyncio.Server:
        if self.unix:
            return await asyncio.start_unix_server(self._connection, self.unix)
        return await asyncio.start_server(self._connection, self.host, 0)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track(writer.transport)
        with self._cond:
            self.connections += 1
        self._event("connect")
        try:
            while line := await reader.readline():
                path = line.rstrip(b"\n").decode()
                seen = (Path(path).exists(), Path(path.removesuffix(".content") + ".envelope.new").exists())
                with self._cond:
                    self.requests.append(line)
                    self.files_seen.append(seen)
                    n = len(self.requests)
                self._event("request")
                reply = self.answer(n, path)
                if reply is None:
                    await self._hold()
                    continue
                if reply is CLOSE:
                    break
                writer.write(reply + b"\n")
                await writer.drain()
                if self.close_after_answer:
                    break
        except ConnectionError:
            pass
        finally:
            writer.close()
            self._untrack(writer.transport)
            self._event("close")


@dataclass
class SpamRequest:
    head: list[bytes]  # the request line and headers, without line ends
    body: bytes


def spamd_reply(spam: str, body: bytes, *, status: bytes = b"SPAMD/1.1 0 EX_OK") -> bytes:
    return status + b"\r\nContent-length: %d\r\nSpam: %s\r\n\r\n" % (len(body), spam.encode()) + body


def default_spamd(request: SpamRequest) -> bytes:
    """Like spamd: mark the message, and call it spam if it mentions VIAGRA."""
    if b"VIAGRA" in request.body:
        return spamd_reply(SPAM_VERDICT, b"X-Spam-Flag: YES\r\n" + request.body)
    return spamd_reply("False ; 0.1 / 5.0", b"X-Spam-Flag: NO\r\n" + request.body)


class FakeSpamd(_ServerThread):
    """Reads a ``PROCESS`` request (headers, then Content-length bytes) and
    writes ``respond(request)`` back (None: hold until the end), then closes."""

    def __init__(self, respond: Callable[[SpamRequest], bytes | None] = default_spamd) -> None:
        super().__init__()
        self.respond = respond
        self.requests: list[SpamRequest] = []
        self.connections = 0

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._connection, self.host, 0, limit=1 << 20)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track(writer.transport)
        with self._cond:
            self.connections += 1
        try:
            head = []
            while (line := await reader.readline()) not in (b"\r\n", b""):
                head.append(line.rstrip(b"\r\n"))
            length = next(int(h.split(b":")[1]) for h in head if h.lower().startswith(b"content-length:"))
            request = SpamRequest(head, await reader.readexactly(length))
            with self._cond:
                self.requests.append(request)
            reply = self.respond(request)
            if reply is None:
                await self._hold()
            else:
                writer.write(reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._untrack(writer.transport)
            self._event("close")


class SinkAt(Sink):
    """A Sink on a given address and port (downstream.Sink always takes port 0)."""

    def __init__(self, host: str, port: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.host = host
        self._wanted_port = port

    async def _listen(self) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _SinkProtocol(self, loop, implicit_tls=False), self.host, self._wanted_port)


# -- specification checks ------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("net:", "invalid host:service format"),
        ("spam:", "invalid host:service format"),
        ("spam-edit:127.0.0.1", "invalid host:service format: 127.0.0.1"),
        ("net::783", "invalid host:service format: :783"),
        ("spam:far.example:783@127.0.0.1:1080", "invalid host:service format: far.example:783@127.0.0.1:1080: socks is not allowed here"),
    ],
)
def test_bad_network_addresses_are_startup_errors(spool, spec, reason):
    result = run(command("emailrelay"), "--no-daemon", "--port", "0", "--spool-dir", str(spool), "--filter", spec)
    assert (result.returncode, result.stderr.decode().splitlines()[-1]) == (
        1,
        f"emailrelay: usage error: invalid filter specification: {reason}",
    )


# -- net: -------------------------------------------------------------------------------


def test_net_filter_passes_the_content_path_on_one_persistent_connection(relay, downstream, spool):
    daemon = downstream(FilterDaemon, lambda n, path: b"ok go ahead")
    r = relay("--filter", f"net:{daemon.address}")
    for n in range(3):
        assert send(r.port, b"Subject: %d\r\n\r\nx\r\n" % n) == (250, b"")
    assert daemon.connections == 1
    ids = sorted(name.removesuffix(".envelope") for name in spool_files(spool) if name.endswith(".envelope"))
    assert len(ids) == 3
    assert sorted(daemon.requests) == [f"{spool}/{i}.content\n".encode() for i in ids]
    assert daemon.files_seen == [(True, True)] * 3


@pytest.mark.parametrize(
    ("answer", "reply", "reason"),
    [
        (b"550 5.7.1 go away\tvirus found", (550, b"5.7.1 go away"), "virus found"),
        (b"not today\r", (452, b"not today"), "not today"),
        (b"451\ttry later", (451, b"rejected"), "try later"),
        (b"", (452, b"rejected"), "rejected"),
        (b"okay", (250, b""), None),
    ],
    ids=["code-and-reason", "no-tab", "code-only", "empty-line", "ok-prefix"],
)
def test_net_filter_answer_decides_the_reply(relay, downstream, spool, answer, reply, reason):
    daemon = downstream(FilterDaemon, lambda n, path: answer)
    r = relay("--filter", f"net:{daemon.address}")
    assert send(r.port) == reply
    if reason is None:
        assert len(list(spool.glob("*.envelope"))) == 1
    else:
        r.wait_for(rf"rejected by the filter: {reason}$")
        assert spool_files(spool) == []


def test_net_filter_timeout_fails_and_the_next_message_gets_a_new_connection(relay, downstream, spool):
    daemon = downstream(FilterDaemon, lambda n, path: None if n == 1 else b"ok")
    r = relay("--filter", f"net:{daemon.address}", "--filter-timeout", "1")
    assert send(r.port) == (452, b"failed")
    r.wait_for("rejected by the filter: timeout$")
    assert send(r.port) == (250, b"")
    assert daemon.connections == 2
    assert len(list(spool.glob("*.envelope"))) == 1


def test_net_filter_daemon_down_fails_with_the_connection_error(relay, downstream, spool):
    daemon = downstream(FilterDaemon)
    address = daemon.address
    daemon.stop()
    r = relay("--filter", f"net:{address}")
    assert send(r.port) == (452, b"failed")
    r.wait_for(f"rejected by the filter: connect failure: cannot connect to {address}: connection refused$")
    assert spool_files(spool) == []


def test_net_filter_reconnects_when_the_daemon_closes_the_connection(relay, downstream, spool):
    daemon = downstream(FilterDaemon, close_after_answer=True)
    r = relay("--filter", f"net:{daemon.address}")
    for n in range(3):
        assert send(r.port) == (250, b"")
        daemon.wait_for_event("close", n + 1)
    assert daemon.connections == 3
    assert len(list(spool.glob("*.envelope"))) == 3


def test_net_filter_sends_once_more_when_a_reused_connection_closes_under_it(relay, downstream, spool):
    daemon = downstream(FilterDaemon, lambda n, path: CLOSE if n in (1, 3) else b"ok")
    r = relay("--filter", f"net:{daemon.address}")
    assert send(r.port) == (452, b"failed")  # a new connection: no second try
    r.wait_for("rejected by the filter: peer disconnected$")
    assert send(r.port) == (250, b"")  # request 2, on connection 2
    assert send(r.port) == (250, b"")  # request 3 closes connection 2; request 4 on connection 3
    requests = daemon.requests
    assert len(requests) == 4 and requests[2] == requests[3]
    assert daemon.connections == 3
    assert len(list(spool.glob("*.envelope"))) == 2


def test_net_filter_on_a_unix_socket(relay, downstream, spool, tmp_path):
    daemon = downstream(FilterDaemon, lambda n, path: b"550 no\tunix says no" if n == 2 else b"ok", unix=str(tmp_path / "filter.sock"))
    r = relay("--filter", f"net:{daemon.address}")
    assert send(r.port) == (250, b"")
    assert send(r.port) == (550, b"no")
    assert daemon.connections == 1
    assert len(list(spool.glob("*.envelope"))) == 1


# -- spam: and spam-edit: ----------------------------------------------------------------


def test_spam_filter_streams_the_content_and_passes_ham(relay, downstream, spool):
    spamd = downstream(FakeSpamd)
    r = relay("--filter", f"spam:{spamd.address}")
    big = b"Subject: big\r\n\r\n" + b"".join(b"%07d " % n + b"y" * 90 + b"\r\n" for n in range(40_000))  # 3.9 MB
    assert send(r.port, big) == (250, b"")
    assert send(r.port, b"Subject: small\r\n\r\nhello\r\n") == (250, b"")
    assert spamd.connections == 2  # a new connection per message
    stored = sorted(contents(spool), key=len)
    assert [c.split(b"\r\n", 1)[1] for c in stored] == [b"Subject: small\r\n\r\nhello\r\n", big]  # spam: never edits
    by_size = sorted(spamd.requests, key=lambda q: len(q.body))
    assert [q.body for q in by_size] == stored
    assert [q.head for q in by_size] == [[b"PROCESS SPAMC/1.4", b"Content-length: %d" % len(s)] for s in stored]


def test_spam_filter_rejects_spam_with_the_verdict_as_reason(relay, downstream, spool):
    spamd = downstream(FakeSpamd)
    r = relay("--filter", f"spam:{spamd.address}")
    assert send(r.port, b"Subject: buy VIAGRA\r\n\r\nnow\r\n") == (452, b"rejected")
    r.wait_for(f"rejected by the filter: spam: {SPAM_VERDICT}$")
    assert spool_files(spool) == []


def test_spam_edit_replaces_the_content_byte_for_byte_and_passes_spam(relay, downstream, spool):
    edited = b"X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=6.2\nSubject: buy VIAGRA\r\n\r\n\x00\xff\xfe odd bytes\rno newline at the end"
    spamd = downstream(FakeSpamd, lambda q: spamd_reply(SPAM_VERDICT, edited))
    r = relay("--filter", f"spam-edit:{spamd.address}")
    assert send(r.port, b"Subject: buy VIAGRA\r\n\r\nnow\r\n") == (250, b"")
    assert contents(spool) == [edited]
    assert [p.name for p in spool.iterdir() if p.name.endswith((".spamd", ".tmp"))] == []
    assert len(list(spool.glob("*.envelope"))) == 1


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"SPAMD/1.5 76 EX_PROTOCOL Bad header line\r\n\r\n", "invalid response: SPAMD/1.5 76 EX_PROTOCOL Bad header line"),
        (b"HTTP/1.1 200 OK\r\n\r\n", "invalid response: HTTP/1.1 200 OK"),
        (b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; 0.0 / 5.0\r\n\r\n", "invalid response headers"),
        (spamd_reply("False ; 0.0 / 5.0", b"x" * 100)[:-60], "peer disconnected"),
    ],
    ids=["bad-status", "not-spamd", "no-content-length", "short-body"],
)
@pytest.mark.parametrize("kind", ["spam", "spam-edit"])
def test_spamd_protocol_errors_reject_the_message(relay, downstream, spool, kind, reply, reason):
    spamd = downstream(FakeSpamd, lambda q: reply)
    r = relay("--filter", f"{kind}:{spamd.address}")
    assert send(r.port) == (452, b"rejected")
    r.wait_for(f"rejected by the filter: {reason}$")
    assert spool_files(spool) == []  # no .spamd left behind either


@pytest.mark.parametrize("kind", ["spam", "spam-edit"])
def test_spamd_down_or_silent_rejects_the_message(relay, downstream, spool, kind):
    down = downstream(FakeSpamd)
    address = down.address
    down.stop()
    r = relay("--filter", f"{kind}:{address}")
    assert send(r.port) == (452, b"rejected")
    r.wait_for(f"rejected by the filter: connect failure: cannot connect to {address}: connection refused$")
    silent = downstream(FakeSpamd, lambda q: None)
    r = relay("--filter", f"{kind}:{silent.address}", "--filter-timeout", "1")
    assert send(r.port) == (452, b"rejected")
    r.wait_for("rejected by the filter: timeout$")
    assert spool_files(spool) == []


# -- mx: ---------------------------------------------------------------------------------

ZONE = [
    "alpha.test MX 20 backup.alpha.test",
    "alpha.test MX 10 mx1.alpha.test",
    "mx1.alpha.test A 127.0.0.1",
    "backup.alpha.test A 127.0.0.9",
    "beta.test MX 5 mail.beta.test",
    "mail.beta.test CNAME real.beta.test",
    "real.beta.test A 127.0.0.1",
    "gamma.test CNAME alpha.test",
    "delta.test CNAME alpha.test",
    "zero.test MX 10 nowhere.zero.test",
    "nowhere.zero.test A 0.0.0.0",
    "nomx.test A 127.0.0.1",
]


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer(ZONE, servfail=["broken.test"], drop=["slow.test"], cname_alone=["delta.test"]) as server:
        yield server
    assert server.errors == []


def subjects(sink: Sink, count: int) -> list[bytes]:
    return sorted(m.data.split(b"\r\n")[0] for m in sink.wait_for_messages(count))


def test_mx_routes_each_message_by_the_mx_of_its_forward_to(downstream, spool, dns):
    default, a, b = downstream(Sink), downstream(Sink), downstream(Sink)
    for subject, forward_to in [
        ("alpha", f"alpha.test:{a.port}"),  # lowest preference wins
        ("beta", f"postmaster@beta.test:{b.port}"),  # user@ dropped; CNAME in the answer
        ("gamma", f"gamma.test:{a.port}"),  # the domain itself is a CNAME
        ("delta", f"delta.test:{a.port}"),  # a CNAME that came alone: asked again
        ("literal", f"[127.0.0.1]:{b.port}"),  # no DNS at all
        ("zero", f"zero.test:{a.port}"),  # 0.0.0.0: the default --forward-to
        ("none", ""),  # nothing to route
    ]:
        store(spool, f"Subject: {subject}\r\n\r\nx\r\n".encode(), forward_to=forward_to)
    result = as_client(spool, default.address, "--client-filter", f"mx:{dns.address}")
    assert result.returncode == 0, result.stderr
    assert subjects(a, 3) == [b"Subject: alpha", b"Subject: delta", b"Subject: gamma"]
    assert subjects(b, 2) == [b"Subject: beta", b"Subject: literal"]
    assert subjects(default, 2) == [b"Subject: none", b"Subject: zero"]
    assert states(spool) == {"ready": [], "busy": [], "bad": [], "content": []}
    queries = dns.queries
    assert ("mx1.alpha.test", "A") in queries and ("backup.alpha.test", "A") not in queries
    assert ("mail.beta.test", "A") in queries and ("real.beta.test", "A") not in queries  # the server chased it
    assert ("delta.test", "MX") in queries and queries.count(("alpha.test", "MX")) == 2  # alpha, and delta's CNAME
    assert not [q for q in queries if "127.0.0.1" in q[0]]
    assert b"warning" not in result.stderr


def test_mx_writes_forward_to_address_with_the_port_of_forward_to_or_25(downstream, spool, dns):
    closed = downstream(Sink)
    port = closed.port
    closed.stop()
    with socket.socket() as probe:
        port_25_open = probe.connect_ex(("127.0.0.1", 25)) == 0
    given = store(spool, forward_to=f"alpha.test:{port}")
    default = store(spool, forward_to="beta.test") if not port_25_open else None
    literal = store(spool, forward_to="[IPv6:::1]:2525", forward_to_address="127.0.0.1:9")
    sink = downstream(Sink)
    assert as_client(spool, sink.address, "--client-filter", f"mx:{dns.address}").returncode == 0
    # every routed address was unreachable, so the messages are still there, with what mx: wrote
    assert sorted(states(spool)["ready"]) == sorted(i for i in (given, default, literal) if i)

    def envelope(msg_id: str) -> Envelope:
        return parse((spool / f"{msg_id}.envelope").read_bytes())

    assert envelope(given).forward_to_address == f"127.0.0.1:{port}"
    if default:
        assert envelope(default).forward_to_address == "127.0.0.1:25"
    assert envelope(literal).forward_to_address == "::1.2525"
    assert [p.name for p in spool.iterdir() if p.name.endswith(".tmp")] == []
    assert sink.messages == []


@pytest.mark.parametrize(
    ("forward_to", "extra"),
    [
        ("nowhere.test", ()),  # NXDOMAIN
        ("nomx.test", ()),  # no MX records
        ("broken.test", ()),  # every nameserver fails
        ("slow.test", ("--filter-timeout", "1")),  # no answer in time
    ],
)
def test_mx_failure_fails_the_message_as_routing_filter_failed(downstream, spool, dns, forward_to, extra):
    sink = downstream(Sink)
    msg_id = store(spool, forward_to=f"{forward_to}:{sink.port}")
    ok = store(spool, b"Subject: fine\r\n\r\nx\r\n", forward_to=f"alpha.test:{sink.port}")
    result = as_client(spool, sink.address, "--client-filter", f"mx:{dns.address}", *extra)
    assert result.returncode == 0, result.stderr
    env, extra_lines = bad_envelope(spool, msg_id)
    assert extra_lines[:2] == ["X-MailRelay-Reason: routing filter failed", "X-MailRelay-ReasonCode:"]
    assert env.forward_to_address == ""
    assert [m.data for m in sink.wait_for_messages(1)] == [b"Subject: fine\r\n\r\nx\r\n"]
    assert states(spool)["bad"] == [msg_id] and ok not in states(spool)["ready"]


def test_mx_failure_clears_a_stale_forward_to_address_and_keeps_the_reason(downstream, spool, dns):
    sink = downstream(Sink)
    msg_id = store(spool, forward_to=f"nowhere.test:{sink.port}", forward_to_address=sink.address)
    assert as_client(spool, sink.address, "--client-filter", f"mx:{dns.address}").returncode == 0
    env, extra_lines = bad_envelope(spool, msg_id)
    assert env.forward_to_address == ""
    assert extra_lines[:1] == ["X-MailRelay-Reason: routing filter failed"]


def test_a_message_routed_by_mx_and_refused_there_goes_bad_with_the_reason(downstream, spool, dns):
    default, a = downstream(Sink), downstream(Sink, data_reply=(554, "5.7.1 not here"))
    msg_id = store(spool, forward_to=f"alpha.test:{a.port}")
    assert as_client(spool, default.address, "--client-filter", f"mx:{dns.address}").returncode == 0
    env, extra_lines = bad_envelope(spool, msg_id)
    assert env.forward_to_address == f"127.0.0.1:{a.port}"
    assert extra_lines[:2] == ["X-MailRelay-Reason: 5.7.1 not here", "X-MailRelay-ReasonCode: 554"]
    assert default.messages == []


def test_mx_tries_the_next_nameserver_and_warns_once_about_unknown_options(downstream, spool, dns):
    sink = downstream(Sink)
    with DnsServer(servfail=["*"]) as broken:
        for n in range(2):
            store(spool, b"Subject: %d\r\n\r\nx\r\n" % n, forward_to=f"alpha.test:{sink.port}")
        spec = f"mx:nst=2;rt=3;bogus;{broken.address};{dns.address};nst=x"
        result = as_client(spool, "127.0.0.1:9", "--client-filter", spec)
    assert result.returncode == 0, result.stderr
    assert subjects(sink, 2) == [b"Subject: 0", b"Subject: 1"]
    assert ("alpha.test", "MX") in broken.queries
    warnings = [line for line in result.stderr.decode().splitlines() if "warning: mx:" in line]
    assert warnings == [
        "emailrelay: warning: mx: ignoring unrecognised option: bogus",
        "emailrelay: warning: mx: ignoring unrecognised option: nst=x",
    ]


@pytest.mark.skipif(
    importlib.util.find_spec("emailrelay.filters_file") is None,
    reason="split: is in emailrelay/filters_file.py, which has not landed yet",
)
def test_split_then_mx_delivers_each_domain_to_its_own_mx(relay, downstream, spool, dns):
    a = downstream(Sink)
    b = downstream(SinkAt, "127.0.0.2", a.port)
    dns.add("split-a.test MX 10 mx.split-a.test")
    dns.add("mx.split-a.test A 127.0.0.1")
    dns.add("split-b.test MX 10 mx.split-b.test")
    dns.add("mx.split-b.test A 127.0.0.2")
    r = relay("--filter", f"split:{a.port}")
    with smtplib.SMTP("127.0.0.1", r.port, timeout=30) as s:
        s.sendmail("x@sender.example", ["one@split-a.test", "two@split-b.test", "three@Split-A.test"], b"Subject: split\r\n\r\nx\r\n")
    assert len(list(spool.glob("*.envelope"))) == 2
    result = as_client(spool, "127.0.0.1:9", "--client-filter", f"mx:{dns.address}")
    assert result.returncode == 0, result.stderr
    (got_a,) = a.wait_for_messages(1)
    (got_b,) = b.wait_for_messages(1)
    assert sorted(got_a.rcpt_tos) == ["one@split-a.test", "three@Split-A.test"]
    assert got_b.rcpt_tos == ["two@split-b.test"]
    assert got_a.data == got_b.data and got_a.data.endswith(b"\r\nSubject: split\r\n\r\nx\r\n")
    assert states(spool) == {"ready": [], "busy": [], "bad": [], "content": []}
