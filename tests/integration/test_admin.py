"""The admin interface (``--admin``, SPEC.md 9) of a real emailrelay process.

Every command is checked byte for byte as a client sees it, with CRLF and
LF clients, against ``emailrelay --log --no-daemon --port 0 --interface
127.0.0.1 --admin 0 ...``; the admin port comes from the ``admin server
on`` log line.  Forwarding goes to a real downstream `Sink`.  The
remote-clients rule and ``dnsbl stop`` need a non-local client, which lives
in the network namespace of test_remote_clients.py (root only).  A few
tests at the end drive the protocol object without sockets: the event
format and the bound on queued events.
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from emailrelay.admin_server import AdminContext, AdminSession, EventQueue, LineTooLong, Then
from emailrelay.spool import Spool

from .conftest import Relay, command
from .downstream import Sink, downstream_fixture
from .smtpraw import RawSmtp
from .test_forward import states, store
from .test_remote_clients import NS, greeting_from_namespace, namespace  # noqa: F401 - a fixture

downstream = downstream_fixture()
PROMPT = "E-MailRelay> "
HELP = "commands: dnsbl, failures, flush, forward, help, info, list, notify, pid, quit, smtp, status, unfail-all"
HELP_TERMINATE = (
    "commands: dnsbl, failures, flush, forward, help, info, list, notify, pid, quit, smtp, status, terminate, "
    "unfail-all"
)
needs_netns = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")


class Admin:
    """A raw admin client: replies (with their prompt) and events, as bytes arrive."""

    def __init__(self, port: int, eol: str = "\r\n", host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=20)
        self.eol = eol.encode()
        self.buf = b""
        self.events: list[str] = []

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + self.eol)

    def cmd(self, line: str) -> str:
        self.send(line)
        return self.reply()

    def _next(self) -> tuple[str, str]:
        """The next ("event", text) or ("reply", text and prompt) in the stream."""
        marker = self.eol + b"EVENT: "
        while True:
            if self.buf.startswith(marker):
                end = self.buf.find(b"  ", len(marker))
                if end >= 0:
                    text, self.buf = self.buf[len(marker) : end], self.buf[end + 2 :]
                    return "event", text.decode()
            elif not marker.startswith(self.buf):
                end = self.buf.find(PROMPT.encode())
                if end >= 0:
                    end += len(PROMPT)
                    text, self.buf = self.buf[:end], self.buf[end:]
                    return "reply", text.decode()
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by the admin server; unread: {self.buf!r}")
            self.buf += chunk

    def reply(self) -> str:
        """The next reply, prompt included; events that come first are kept in `events`."""
        while True:
            kind, text = self._next()
            if kind == "reply":
                return text
            self.events.append(text)

    def events_until(self, prefix: str) -> list[str]:
        """Read events until one starts with `prefix`; returns (and forgets) all read so far."""
        while not any(e.startswith(prefix) for e in self.events):
            kind, text = self._next()
            assert kind == "event", f"a reply where an event was expected: {text!r}"
            self.events.append(text)
        events, self.events = self.events, []
        return events

    def closed(self) -> bool:
        """True when the server closes the connection without sending anything more."""
        try:
            while chunk := self.sock.recv(65536):
                self.buf += chunk
        except ConnectionResetError:
            pass
        return self.buf == b""

    def close(self) -> None:
        self.sock.close()


def admin_port(r: Relay, host: str = r"127\.0\.0\.1") -> int:
    return int(r.wait_for(rf"admin server on {host}:(\d+)").group(1))


@pytest.fixture
def admin(relay):
    """Start a relay with ``--admin 0`` plus arguments; returns (relay, connect) where connect(eol) opens a client."""
    clients: list[Admin] = []

    def start(*args: str) -> tuple[Relay, object]:
        r = relay("--admin", "0", *args)
        port = admin_port(r)

        def connect(eol: str = "\r\n") -> Admin:
            clients.append(Admin(port, eol))
            return clients[-1]

        return r, connect

    yield start
    for client in clients:
        client.close()


def make_bad(spool: Path, msg_id: str) -> None:
    """Fail a ready message by hand, as a forwarder would: Reason lines and the .bad name."""
    path = spool / f"{msg_id}.envelope"
    path.write_bytes(path.read_bytes() + b"X-MailRelay-Reason: 550 no\r\nX-MailRelay-ReasonCode: 550\r\n")
    path.rename(spool / f"{msg_id}.envelope.bad")


# -- the wire format ------------------------------------------------------------


def test_crlf_client_gets_crlf_replies_and_no_greeting(admin):
    r, connect = admin()
    a = connect()
    assert a.cmd("pid") == f"{r.proc.pid}\r\n{PROMPT}"  # nothing came before it: no greeting, no prompt
    assert a.cmd("help") == f"{HELP}\r\n{PROMPT}"
    assert a.cmd("") == PROMPT
    assert a.cmd(" \t ") == PROMPT


def test_lf_client_gets_lf_replies(admin, spool):
    ids = sorted(store(spool) for _ in range(2))
    r, connect = admin()
    a = connect("\n")
    assert a.cmd("help") == f"{HELP}\n{PROMPT}"
    assert a.cmd("list") == f"{ids[0]}\n{ids[1]}\n{PROMPT}"
    assert a.cmd("") == PROMPT


def test_commands_are_case_insensitive_and_take_the_first_token(admin):
    r, connect = admin()
    a = connect()
    assert a.cmd("HELP") == f"{HELP}\r\n{PROMPT}"
    assert a.cmd("  Pid  ignored words") == f"{r.proc.pid}\r\n{PROMPT}"
    assert a.cmd("helpme") == f"error: unrecognised command\r\n{PROMPT}"


def test_pipelined_commands_are_answered_in_order(admin):
    r, connect = admin()
    a = connect()
    a.sock.sendall(b"pid\r\n\r\nbogus\r\ninfo version\r\n")
    assert [a.reply() for _ in range(4)] == [
        f"{r.proc.pid}\r\n{PROMPT}", PROMPT, f"error: unrecognised command\r\n{PROMPT}", f"2.6\r\n{PROMPT}",
    ]


def test_quit_closes_without_a_reply(admin):
    r, connect = admin()
    a = connect()
    a.send("quit")
    assert a.closed()
    r.wait_for(r"admin connection closed: quit: 127\.0\.0\.1:\d+")
    assert connect().cmd("pid") == f"{r.proc.pid}\r\n{PROMPT}"  # the server goes on


def test_thirty_unrecognised_commands_drop_the_connection(admin):
    r, connect = admin()
    a = connect()
    error = f"error: unrecognised command\r\n{PROMPT}"
    a.sock.sendall(b"bogus\r\n" * 29 + b"\r\npid\r\n")  # blank lines and good commands do not reset the count
    assert [a.reply() for _ in range(29)] == [error] * 29
    assert a.reply() == PROMPT
    assert a.reply() == f"{r.proc.pid}\r\n{PROMPT}"
    assert a.cmd("bogus") == error  # the 30th is answered, then the connection goes
    assert a.closed()
    r.wait_for(r"admin connection closed: too many errors: 127\.0\.0\.1:\d+")


def test_no_idle_timeout(admin):
    r, connect = admin("--idle-timeout", "1")
    a = connect()
    smtp = RawSmtp(r.port)
    try:
        assert smtp.reply().startswith("220 ")
        r.wait_for(r"smtp connection closed: idle timeout")  # an SMTP session opened later has timed out
        assert a.cmd("pid") == f"{r.proc.pid}\r\n{PROMPT}"
    finally:
        smtp.close()


# -- the commands -------------------------------------------------------------------


def test_status_reports_listeners_and_connections(admin):
    r, connect = admin()
    a = connect()
    assert a.cmd("pid") == f"{r.proc.pid}\r\n{PROMPT}"  # the server has this connection now
    admin_local, admin_peer = a.sock.getpeername()[1], a.sock.getsockname()[1]
    smtp = RawSmtp(r.port)
    try:
        assert smtp.reply().startswith("220 ")
        smtp_peer = smtp.sock.getsockname()[1]
        assert a.cmd("status") == "\r\n".join([
            f"LISTEN: 127.0.0.1:{r.port}",
            f"LISTEN: 127.0.0.1:{admin_local}",
            "OUT started: 0",
            "OUT finished: 0",
            "IN started: 2",
            "IN finished: 0",
            f"IN: 127.0.0.1:{admin_local} <- 127.0.0.1:{admin_peer}",
            f"IN: 127.0.0.1:{r.port} <- 127.0.0.1:{smtp_peer}",
            PROMPT,
        ])
        assert smtp.cmd("QUIT").startswith("221")
        r.wait_for(r"smtp connection closed: quit")
        assert a.cmd("status").split("\r\n")[4:7] == [
            "IN started: 2", "IN finished: 1", f"IN: 127.0.0.1:{admin_local} <- 127.0.0.1:{admin_peer}",
        ]
    finally:
        smtp.close()


def test_info(admin):
    r, connect = admin()
    a = connect()
    usage = f"usage: info {{copyright|credit|version|warranty}}\r\n{PROMPT}"
    assert a.cmd("info") == usage
    assert a.cmd("info nonsense") == usage
    assert a.cmd("info version") == f"2.6\r\n{PROMPT}"
    assert a.cmd("INFO Version") == f"2.6\r\n{PROMPT}"
    copyright = a.cmd("info copyright")
    assert copyright.startswith("emailrelay ") and "Copyright (C)" in copyright and copyright.endswith(f"\r\n{PROMPT}")
    assert "ABSOLUTELY NO WARRANTY" in a.cmd("info warranty")
    assert a.cmd("info credit").startswith("TLS library: ")


def test_pid(admin):
    r, connect = admin()
    assert connect("\n").cmd("pid") == f"{r.proc.pid}\n{PROMPT}"


def test_list_failures_and_unfail_all(admin, spool):
    ready = store(spool)
    bad = sorted(store(spool) for _ in range(2))
    for msg_id in bad:
        make_bad(spool, msg_id)
    r, connect = admin()
    a = connect()
    assert a.cmd("list") == f"{ready}\r\n{PROMPT}"
    assert a.cmd("failures") == f"{bad[0]}\r\n{bad[1]}\r\n{PROMPT}"
    assert a.cmd("unfail-all") == PROMPT
    assert a.cmd("failures") == f"<none>\r\n{PROMPT}"
    assert a.cmd("list") == "\r\n".join([*sorted([ready, *bad]), PROMPT])
    assert states(spool)["ready"] == sorted([ready, *bad]) and states(spool)["bad"] == []
    for msg_id in bad:  # renamed as they were: the reasons stay, as in 2.6
        assert b"X-MailRelay-Reason: 550 no\r\n" in (spool / f"{msg_id}.envelope").read_bytes()


def test_empty_spool_lists_none(admin):
    r, connect = admin()
    a = connect()
    assert a.cmd("list") == f"<none>\r\n{PROMPT}"
    assert a.cmd("failures") == f"<none>\r\n{PROMPT}"
    assert a.cmd("unfail-all") == PROMPT


def test_smtp_disable_puts_new_sessions_out_of_service(admin):
    r, connect = admin()
    a = connect()
    before = RawSmtp(r.port)
    assert before.reply().startswith("220 ")
    assert a.cmd("smtp") == f"usage: smtp {{disable|enable}}\r\n{PROMPT}"
    assert a.cmd("smtp off") == f"usage: smtp {{disable|enable}}\r\n{PROMPT}"
    assert a.cmd("smtp disable") == f"OK\r\n{PROMPT}"
    during = RawSmtp(r.port)
    try:
        assert during.reply() == "421 service not available"  # the greeting; the connection stays open
        assert during.cmd("EHLO me").startswith("250")
        assert during.cmd("MAIL FROM:<a@example.com>") == "421 service not available"
        assert during.cmd("NOOP") == "250 noop"
        assert before.cmd("EHLO me").startswith("250")  # a session opened earlier still works
        assert before.cmd("MAIL FROM:<a@example.com>") == "250 sender <a@example.com> OK"
        assert a.cmd("SMTP Enable") == f"OK\r\n{PROMPT}"
        after = RawSmtp(r.port)
        assert after.reply().startswith("220 ")
        after.close()
        assert during.cmd("MAIL FROM:<a@example.com>") == "421 service not available"  # decided at connect
    finally:
        before.close()
        during.close()


def test_dnsbl_usage(admin):
    r, connect = admin()
    a = connect()
    usage = f"usage: dnsbl {{start|stop <timeout>}}\r\n{PROMPT}"
    for bad in ("dnsbl", "dnsbl pause", "dnsbl start 10", "dnsbl stop soon", "dnsbl stop -1", "dnsbl stop 99999999999"):
        assert a.cmd(bad) == usage, bad
    for good in ("dnsbl stop", "dnsbl stop 10", "DNSBL STOP 0", "dnsbl start"):
        assert a.cmd(good) == f"OK\r\n{PROMPT}", good


# -- forwarding ----------------------------------------------------------------------


def test_forward_and_flush_need_a_forward_address(admin, spool):
    store(spool)
    r, connect = admin()
    a = connect()
    assert a.cmd("forward") == f"error: no remote server configured: use --forward-to\r\n{PROMPT}"
    assert a.cmd("flush") == f"error: no remote server configured: use --forward-to\r\n{PROMPT}"


def test_forward_requests_a_run(admin, downstream, spool):
    sink = downstream(Sink)
    msg_id = store(spool)
    r, connect = admin("--forward-to", sink.address)
    a = connect()
    assert a.cmd("forward") == f"OK\r\n{PROMPT}"
    r.wait_for("forwarding: admin")
    r.wait_for(r"forwarding: done: 1 sent, 0 failed")
    assert [m.mail_from for m in sink.messages] == ["a@example.com"]
    assert states(spool)["ready"] == [] and msg_id
    assert a.cmd("status").split("\r\n")[2:4] == ["OUT started: 1", "OUT finished: 1"]
    assert a.cmd("forward") == f"OK\r\n{PROMPT}"  # with nothing left
    r.wait_for("forwarding: no messages to send")


def test_flush_answers_when_its_run_ends(admin, downstream, spool):
    sink = downstream(Sink)
    store(spool)
    store(spool)
    r, connect = admin("--forward-to", sink.address)
    a = connect()
    assert a.cmd("flush") == f"OK\r\n{PROMPT}"
    assert len(sink.messages) == 2  # already there: the reply waited for the run
    assert states(spool) == {"ready": [], "busy": [], "bad": [], "content": []}
    assert a.cmd("flush") == f"error: no messages to send\r\n{PROMPT}"


def test_flush_still_working_and_other_commands_meanwhile(admin, downstream, spool):
    sink = downstream(Sink, stall="data")
    store(spool)
    r, connect = admin("--forward-to", sink.address)
    a = connect()
    a.send("flush")
    assert a.cmd("flush") == f"error: still working\r\n{PROMPT}"  # the first flush has not answered yet
    sink.wait_for_event("stall:data")
    assert a.cmd("pid") == f"{r.proc.pid}\r\n{PROMPT}"
    assert connect().cmd("list") == f"<none>\r\n{PROMPT}"  # the message is busy
    sink.unstall()
    assert a.reply() == f"OK\r\n{PROMPT}"
    assert len(sink.messages) == 1


def test_flush_reports_a_connection_failure(admin, downstream, spool):
    sink = downstream(Sink)
    port = sink.port
    sink.stop()
    msg_id = store(spool)
    r, connect = admin("--forward-to", f"127.0.0.1:{port}")
    a = connect("\n")
    assert a.cmd("flush") == f"error: connect failure: cannot connect to 127.0.0.1:{port}: connection refused\n{PROMPT}"
    assert states(spool)["ready"] == [msg_id]


def test_notify_streams_network_and_forwarding_events(admin, downstream, spool):
    sink = downstream(Sink)
    r, connect = admin("--forward-to", sink.address)
    a = connect()
    a.send("notify")  # no reply at all
    assert a.cmd("pid") == f"{r.proc.pid}\r\n{PROMPT}"
    with smtplib.SMTP("127.0.0.1", r.port, timeout=20) as smtp:
        smtp.sendmail("a@example.com", ["b@example.net"], b"Subject: hi\r\n\r\nhello\r\n")
    assert a.events_until("network: in: stop") == ["network: in: start", "network: in: stop"]
    (msg_id,) = states(spool)["ready"]
    assert a.cmd("forward") == f"OK\r\n{PROMPT}"
    assert a.events_until("client: forward: end") == [
        "client: forward: start: admin",
        "network: out: start",
        f"client: connecting: {sink.address}",
        f"client: connected: {sink.address}",
        f"client: sending: {msg_id}",
        f"client: sent: {msg_id}",
        "network: out: stop",
        "client: forward: end",
    ]
    assert a.cmd("forward") == f"OK\r\n{PROMPT}"
    assert a.events_until("client: forward: end") == ["client: forward: end: no messages"]
    assert a.buf == b""


def test_notify_events_of_a_failed_message_and_their_raw_form(admin, downstream, spool):
    sink = downstream(Sink, data_reply=(554, "no   way"))
    msg_id = store(spool)
    r, connect = admin("--forward-to", sink.address)
    a = connect("\n")
    a.send("notify")
    assert a.cmd("forward") == f"OK\n{PROMPT}"
    raw = b""
    while not raw.endswith(b"EVENT: client: forward: end  "):
        chunk = a.sock.recv(65536)
        assert chunk, raw
        raw += chunk
    assert raw.startswith(b"\nEVENT: client: forward: start: admin  \nEVENT: network: out: start  ")
    assert f"\nEVENT: client: sent: {msg_id}: no way  ".encode() in raw  # spaces squeezed
    assert states(spool)["bad"] == [msg_id]


def test_flush_runs_without_client_events(admin, downstream, spool):
    sink = downstream(Sink)
    store(spool)
    r, connect = admin("--forward-to", sink.address)
    a = connect()
    a.send("notify")
    assert a.cmd("flush") == f"OK\r\n{PROMPT}"
    assert a.cmd("pid") == f"{r.proc.pid}\r\n{PROMPT}"
    events = a.events_until("network: out: stop")
    assert a.cmd("pid") == f"{r.proc.pid}\r\n{PROMPT}"
    events += a.events
    assert sorted(events) == ["network: out: start", "network: out: stop"]  # no client: events


# -- terminate and the command line ----------------------------------------------------


def test_terminate_needs_admin_terminate(admin):
    r, connect = admin()
    a = connect()
    assert a.cmd("terminate") == f"error: unrecognised command\r\n{PROMPT}"
    assert a.cmd("pid") == f"{r.proc.pid}\r\n{PROMPT}"
    assert r.proc.poll() is None


def test_terminate_stops_the_process_with_exit_0(admin, spool):
    r, connect = admin("--admin-terminate", "--pid-file", str(spool.parent / "pid"))
    a = connect()
    assert a.cmd("help") == f"{HELP_TERMINATE}\r\n{PROMPT}"
    a.send("TERMINATE")
    assert a.closed()  # no reply
    assert r.proc.wait(timeout=15) == 0
    r.wait_for("stopping: admin terminate command")
    assert not (spool.parent / "pid").exists()


def test_admin_with_as_client_is_a_usage_error(spool):
    for mode in (["--as-client", "127.0.0.1:9"], ["--dont-serve", "--forward-to", "127.0.0.1:9"]):
        result = subprocess.run(
            [command("emailrelay"), *mode, "--admin", "1", "--spool-dir", str(spool)], capture_output=True, timeout=60
        )
        assert (result.returncode, result.stderr.decode()) == (
            1, "emailrelay: usage error: the --admin option cannot be used with --as-client or --dont-serve\n"
        )
    result = subprocess.run([command("emailrelay"), "--admin-terminate", "--no-daemon"], capture_output=True, timeout=60)
    assert (result.returncode, result.stderr.decode()) == (
        1, "emailrelay: usage error: the --admin-terminate option requires --admin\n"
    )


def test_admin_port_in_use_exits_2(relay):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = relay("--admin", str(taken.getsockname()[1]), wait=False)
        assert r.proc.wait(timeout=30) == 2
        r.wait_for("emailrelay: error: socket bind error: address already in use")


def test_admin_interface_qualifier_and_no_smtp(spool):
    argv = [command("emailrelay"), "--log", "--no-daemon", "--no-smtp", "--admin", "0",
            "--interface", "admin=127.0.0.2", "--spool-dir", str(spool)]
    r = Relay(argv, spool)
    try:
        port = admin_port(r, r"127\.0\.0\.2")
        a = Admin(port, host="127.0.0.2")
        assert a.cmd("pid") == f"{r.proc.pid}\r\n{PROMPT}"
        assert a.cmd("status").startswith(f"LISTEN: 127.0.0.2:{port}\r\nOUT started: 0\r\n")
        a.close()
        assert r.count("smtp server on") == 0
    finally:
        r.stop()


# -- non-local clients (network namespace, root only) --------------------------------------

ADMIN_CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[2], int(sys.argv[1])), timeout=10)
data = b""
try:
    s.sendall(b"pid\\r\\n")
    while not data.endswith(b"E-MailRelay> "):
        chunk = s.recv(1000)
        if not chunk:
            break
        data += chunk
except (ConnectionResetError, BrokenPipeError):
    pass
print(repr(data))
"""


def admin_from_namespace(host_ip: str, port: int) -> str:
    result = subprocess.run(
        ["ip", "netns", "exec", NS, sys.executable, "-c", ADMIN_CLIENT, str(port), host_ip],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def start_on(spool: Path, host_ip: str, *extra: str) -> tuple[Relay, int, int]:
    argv = [command("emailrelay"), "--log", "--no-daemon", "--port", "0", "--admin", "0",
            "--spool-dir", str(spool), *extra]
    r = Relay(argv, spool)
    smtp = int(r.wait_for(r"smtp server on [\d.]+:(\d+)").group(1))
    return r, smtp, admin_port(r, r"[\d.]+")


@needs_netns
def test_non_local_admin_client_needs_remote_clients(namespace, spool):  # noqa: F811
    host_ip, peer_ip = namespace
    r, _, port = start_on(spool, host_ip, "--interface", host_ip)
    try:
        assert admin_from_namespace(host_ip, port) == "b''"
        r.wait_for(rf"admin connection from {re.escape(peer_ip)}:\d+ refused: not a local address")
    finally:
        r.stop()
    r, _, port = start_on(spool, host_ip, "--interface", host_ip, "--remote-clients")
    try:
        assert admin_from_namespace(host_ip, port) == repr(f"{r.proc.pid}\r\n{PROMPT}".encode())
    finally:
        r.stop()


@needs_netns
def test_dnsbl_stop_and_start(namespace, spool):  # noqa: F811
    from .dnsserver import DnsServer

    host_ip, peer_ip = namespace
    listed = ".".join(reversed(peer_ip.split("."))) + ".bl.test A 127.0.0.2"
    with DnsServer([listed]) as dns:
        r, smtp_port, port = start_on(
            spool, host_ip, "--interface", f"smtp={host_ip},admin=127.0.0.1", "--remote-clients",
            "--dnsbl", f"bl.test,1,2000,{dns.address}",
        )
        a = Admin(port)
        try:
            assert greeting_from_namespace(host_ip, smtp_port) == "b''"
            assert a.cmd("dnsbl stop") == f"OK\r\n{PROMPT}"
            assert greeting_from_namespace(host_ip, smtp_port).startswith("b'220 ")
            assert a.cmd("dnsbl start") == f"OK\r\n{PROMPT}"
            assert greeting_from_namespace(host_ip, smtp_port) == "b''"
            assert a.cmd("dnsbl stop 3600") == f"OK\r\n{PROMPT}"
            assert greeting_from_namespace(host_ip, smtp_port).startswith("b'220 ")
        finally:
            a.close()
            r.stop()


# -- the protocol object, without sockets -----------------------------------------------


def test_event_format_escapes_and_squeezes(tmp_path):
    session = AdminSession(AdminContext(spool=Spool(tmp_path)))
    assert session.event(("client", "forward", "end", "")) == b"\r\nEVENT: client: forward: end  "
    assert session.event(("client", "sent", "x", "550  no\tsuch   user\\")) == (
        b"\r\nEVENT: client: sent: x: 550 no\\tsuch user\\\\  "
    )
    assert session.feed(b"pi") == [] and session.feed(b"d\nlist\n") == ["pid", "list"]
    assert session.event(("network", "in", "start")) == b"\nEVENT: network: in: start  "


def test_line_ending_is_detected_once_and_long_lines_close(tmp_path):
    session = AdminSession(AdminContext(spool=Spool(tmp_path)))
    assert session.feed(b"help\r") == []
    assert session.feed(b"\nlist\nfailures\r\n") == ["help", "list\nfailures"]
    assert session.handle("list\nfailures").text == "<none>"  # the LF is white space: "list" it is
    with pytest.raises(LineTooLong):
        session.feed(b"x" * 20000)


def test_notify_queue_keeps_the_newest_hundred():
    queue = EventQueue()
    for n in range(150):
        queue.put(("n", str(n)))
    assert len(queue) == 100 and queue.dropped == 50
    assert queue.take() == [("n", str(n)) for n in range(50, 150)]
    assert len(queue) == 0


def test_commands_without_sockets(tmp_path):
    requested: list[str] = []
    switches: list[object] = []
    context = AdminContext(
        spool=Spool(tmp_path), forward_to="127.0.0.1:25", request_forwarding=requested.append,
        smtp_enable=switches.append, dnsbl_suspend=switches.append, pid=42,
    )
    session = AdminSession(context)
    assert session.handle("pid").text == "42"
    assert session.handle("forward").text == "OK" and requested == ["admin"]
    assert session.handle("smtp disable").text == "OK"
    assert session.handle("dnsbl stop").text == "OK"
    assert session.handle("dnsbl stop 7").text == "OK"
    assert session.handle("dnsbl start").text == "OK"
    assert switches == [False, float("inf"), 7.0, 0]
    assert session.handle("notify") == session.handle("notify")
    assert session.handle("notify").then is Then.NOTIFY and session.handle("notify").text is None
    assert session.render("a\nb") == b"a\r\nb\r\nE-MailRelay> " and session.render("") == b"E-MailRelay> "
