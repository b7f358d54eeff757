"""Policy faults against the real server process.

What goes wrong at the edges of policy, each checked on a real
``emailrelay`` process over loopback sockets (and the real forwarding
client where the outcome is a forwarded message):

* every exit code a ``--filter`` or ``--client-filter`` program can give
  (0..106, 127 and death by a signal), against SPEC.md 3.3's table: the SMTP
  reply, whether the message is committed, forwarding runs (rescan) and
  stopped client runs;
* filters that are missing, cannot be executed, print megabytes, turn the
  content into garbage, edit it by renaming (the product overview's
  spamassassin recipe) or hang; an address verifier that hangs;
* AUTH faults: bad base64, wrong passwords, a replayed CRAM-MD5 response,
  unknown mechanisms, AUTH before STARTTLS with ``--server-tls-required``,
  the failure log line and the per-address slow-down;
* swaks as an independent client: PLAIN, LOGIN and CRAM-MD5 with plain and
  ``emailrelay-passwd`` secrets, STARTTLS and implicit TLS with verification;
* TLS handshakes that never finish;
* secrets files written for E-MailRelay (SPEC.md 5.1 forms and the older
  forms of the product overview) and the examples in ``config/``.

Not repeated here (see test_filters.py, test_server_auth.py,
test_verifiers.py): the filter's argv and environment, a filter without the
execute bit, the simple hung filter, PLAIN's bad initial response, AUTH
cancel, plaintext pipelined after STARTTLS.

Two servers are shared by many tests to keep the run short: one runs the
exit-code filter for the 109 server cases, and one forwarding run carries
the 106 client cases that do not stop the run.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import os
import re
import shutil
import smtplib
import socket
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from emailrelay.envelope import Envelope, parse
from emailrelay.spool import Spool

from .conftest import Relay, as_user, command, daemon_dir, reachable, spool_files
from .downstream import Certificates, Sink, downstream_fixture
from .smtpraw import RawSmtp
from .test_forward import as_client, bad_envelope, states

downstream = downstream_fixture()

CONFIG = Path(__file__).resolve().parents[2] / "config"

#: SPEC.md 3.3 for server filters.
CODES: list[int | str] = [*range(107), 127, "signal"]
SERVER_OK = {0, 101, 103}
SERVER_ABANDON = {100, 102}  # abandon still commits a message the filter left in place (SPEC 1.3 #4a)
RESCAN = {102, 103, 104}
#: SPEC.md 3.3 for client filters.
CLIENT_OK = {0, 101, 102, 103}
CLIENT_ABANDON = {100, 104}
CLIENT_STOP = {102, 104, 105}

#: A filter (server or client) that takes its exit code and a tag from the
#: message: ``Subject: exit <code> <tag>``.  It prints an empty first
#: ``<<>>`` line and the tag as the second, so a failure's SMTP response is
#: ``rejected`` and its reason (log, envelope) is the tag (SPEC.md 3.4).
#: ``signal`` makes it kill itself with SIGKILL.
EXIT_FILTER = """\
line=$(tr -d '\\r' < "$1" | sed -n 's/^Subject: exit //p' | head -n 1)
code=${line%% *}
tag=${line#* }
printf '<<>>\\n<<%s>>\\n' "$tag"
if [ "$code" = signal ]; then kill -9 $$; fi
exit "$code"
"""


def script(directory: Path, name: str, body: str) -> str:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def start_relay(spool: Path, *args: str) -> Relay:
    """The conftest ``relay`` fixture's server, for module-scoped fixtures."""
    argv = [command("emailrelay"), "--log", "--no-daemon", "--port", "0", "--interface", "127.0.0.1",
            "--spool-dir", str(spool), *as_user(args)]
    return Relay(argv, spool).started()


def line_index(relay: Relay, pattern: str, start: int = 0) -> int:
    """Wait for a log line matching pattern at or after start; returns its index."""
    relay.wait_for(pattern, start=start)
    regex = re.compile(pattern)
    return next(i for i in range(start, len(relay.lines)) if regex.search(relay.lines[i]))


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def cram(user: str, password: str | bytes, challenge: bytes, digest: str = "md5") -> str:
    key = password.encode() if isinstance(password, str) else password
    return b64(f"{user} {hmac.new(key, challenge, digest).hexdigest()}")


def gone(pid: int) -> bool:
    """True once a process has ended (a zombie counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def ready_contents(spool: Path) -> list[bytes]:
    """The content of every committed (ready) message."""
    return [p.with_suffix(".content").read_bytes() for p in sorted(spool.glob("*.envelope"))]


def stored(spool: Path) -> list[Envelope]:
    return [parse(p.read_bytes()) for p in sorted(spool.glob("*.envelope"))]


class Peer(RawSmtp):
    """A RawSmtp from a chosen loopback source address (the server counts AUTH failures per address)."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 20.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
        self.buf = b""

    def hello(self) -> None:
        assert self.reply().startswith("220 ")
        assert self.cmd("EHLO me").startswith("250")

    def send_message(self, body: str = "Subject: m\r\n\r\nx\r\n", rcpt: str = "c@d.example") -> str:
        assert self.cmd("MAIL FROM:<a@b.example>").startswith("250 ")
        assert self.cmd(f"RCPT TO:<{rcpt}>").startswith("250 ")
        assert self.cmd("DATA").startswith("354 ")
        return self.cmd(body + ".")


class Store:
    """Puts messages into a spool the way the server would, in id order."""

    def __init__(self, spool: Path) -> None:
        self.spool = Spool(spool, fsync=False)

    def put(self, data: bytes, **fields: object) -> str:
        envelope = Envelope(**{"from_address": "a@example.com", "to_remote": ["b@example.net"], "client": "127.0.0.1",
                               **fields})
        msg = self.spool.create()
        msg.write(data)
        self.spool.commit_sync(msg, envelope)
        return msg.id


@pytest.fixture(scope="module")
def certs() -> Certificates:
    return Certificates.shared()


# =====================================================================================
# 1. server filter exit codes (SPEC.md 3.3, 3.5)


@dataclass
class FilterServer:
    relay: Relay
    sink: Sink
    spool: Path


@pytest.fixture(scope="module")
def filter_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FilterServer]:
    base = reachable(tmp_path_factory.mktemp("exit-codes"))
    spool = daemon_dir(base / "spool")
    sink = Sink().start()
    relay = start_relay(spool, "--filter", script(base, "exit-filter", EXIT_FILTER), "--filter-timeout", "10",
                        "--forward-to", sink.address)
    try:
        yield FilterServer(relay, sink, spool)
    finally:
        relay.stop()
        sink.stop()
    assert not sink.errors, "\n".join(sink.errors)


@pytest.mark.parametrize("code", CODES, ids=str)
def test_server_filter_exit_code(filter_server: FilterServer, code: int | str) -> None:
    relay, sink, spool = filter_server.relay, filter_server.sink, filter_server.spool
    tag = f"server-{code}-{uuid.uuid4().hex[:8]}"
    start = len(relay.lines)
    with Peer(relay.port) as c:
        c.hello()
        reply = c.send_message(f"Subject: exit {code} {tag}\r\n\r\nbody\r\n")
        # A second message in the same session whose rejection is logged: every
        # log line the first message caused (a rescan is requested before its
        # reply is sent) comes before this one.
        assert c.send_message(f"Subject: exit 1 sentinel-{tag}\r\n\r\nx\r\n") == "452 rejected"
    sentinel = line_index(relay, rf"rejected by the filter: sentinel-{re.escape(tag)}$", start)
    lines = relay.lines[start:sentinel]

    ok = code in SERVER_OK
    abandon = code in SERVER_ABANDON
    committed = ok or abandon
    assert reply == ("250 message processed" if committed else "452 rejected")
    rejections = [line for line in lines if line.endswith(f"rejected by the filter: {tag}")]
    assert len(rejections) == (0 if committed else 1), lines  # output ignored unless it fails (3.4)

    rescans = [i for i, line in enumerate(lines) if line == "emailrelay: info: forwarding: rescan"]
    assert len(rescans) == (1 if code in RESCAN else 0), lines
    if code in RESCAN:
        relay.wait_for(r"forwarding: (done: |no messages to send$)", start=start + rescans[0])
        forwarded = [m for m in sink.messages if tag.encode() in m.data]
        assert len(forwarded) == (1 if committed else 0)
    elif committed:
        assert any(tag.encode() in content for content in ready_contents(spool))
    if not committed:
        assert not any(tag.encode() in p.read_bytes() for p in spool.glob("*.content"))
        assert not list(spool.glob("*.envelope.new"))


# =====================================================================================
# 1b. client filter exit codes (SPEC.md 3.3, 3.6)


@dataclass
class ClientRun:
    spool: Path
    sink: Sink
    ids: dict[int | str, str]
    tags: dict[int | str, str]
    envelopes: dict[int | str, bytes]
    result: subprocess.CompletedProcess[bytes]


@pytest.fixture(scope="module")
def client_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClientRun]:
    """One forwarding run over one message per exit code that does not stop the run."""
    base = reachable(tmp_path_factory.mktemp("client-exit-codes"))
    spool = daemon_dir(base / "spool")
    store = Store(spool)
    ids, tags, envelopes = {}, {}, {}
    for code in CODES:
        if code in CLIENT_STOP:
            continue
        tags[code] = f"client-{code}-{uuid.uuid4().hex[:8]}"
        ids[code] = store.put(f"Subject: exit {code} {tags[code]}\r\n\r\nbody\r\n".encode())
        envelopes[code] = (spool / f"{ids[code]}.envelope").read_bytes()
    with Sink() as sink:
        result = as_client(spool, sink.address, "--client-filter", script(base, "exit-filter", EXIT_FILTER),
                           "--filter-timeout", "10")
        yield ClientRun(spool, sink, ids, tags, envelopes, result)
    assert not sink.errors, "\n".join(sink.errors)


@pytest.mark.parametrize("code", [c for c in CODES if c not in CLIENT_STOP], ids=str)
def test_client_filter_exit_code(client_run: ClientRun, code: int | str) -> None:
    assert client_run.result.returncode == 0, client_run.result.stderr
    msg_id, tag, spool = client_run.ids[code], client_run.tags[code], client_run.spool
    sent = [m for m in client_run.sink.messages if tag.encode() in m.data]
    left = states(spool)
    if code in CLIENT_OK:
        assert len(sent) == 1
        assert all(msg_id not in ids for ids in left.values())
    elif code in CLIENT_ABANDON:
        assert sent == []
        assert msg_id in left["ready"] and msg_id in left["content"]
        assert (spool / f"{msg_id}.envelope").read_bytes() == client_run.envelopes[code]
    else:
        assert sent == []
        assert msg_id in left["bad"]
        assert bad_envelope(spool, msg_id)[1][:2] == [f"X-MailRelay-Reason: {tag}", "X-MailRelay-ReasonCode: 550"]


@pytest.mark.parametrize("code", sorted(CLIENT_STOP))
def test_client_filter_stop_codes_end_the_run_after_this_message(downstream, tmp_path, code):
    sink = downstream(Sink)
    spool = tmp_path / "spool"
    spool.mkdir()
    store = Store(spool)
    first = store.put(f"Subject: exit {code} first\r\n\r\nx\r\n".encode())
    rest = [store.put(f"Subject: exit 0 rest-{n}\r\n\r\nx\r\n".encode()) for n in range(2)]
    result = as_client(spool, sink.address, "--client-filter", script(tmp_path, "f", EXIT_FILTER))
    assert result.returncode == 0, result.stderr
    left = states(spool)
    assert sorted(set(left["ready"]) - {first}) == rest  # not even tried
    assert not any(b"rest-" in m.data for m in sink.messages)
    if code in CLIENT_OK:
        assert [m.data.split(b"\r\n")[0] for m in sink.wait_for_messages(1)] == [b"Subject: exit 102 first"]
        assert first not in left["ready"] + left["bad"]
    elif code in CLIENT_ABANDON:
        assert first in left["ready"] and sink.messages == []
    else:
        assert bad_envelope(spool, first)[1][:2] == ["X-MailRelay-Reason: first", "X-MailRelay-ReasonCode: 550"]
        assert sink.messages == []
    # the next run goes on with the rest
    result = as_client(spool, sink.address)
    assert result.returncode == 0, result.stderr
    assert sorted(m.data.split(b"\r\n")[0] for m in sink.messages if b"rest-" in m.data) == [
        b"Subject: exit 0 rest-0", b"Subject: exit 0 rest-1"
    ]


# =====================================================================================
# 2. broken, noisy, editing and hanging filters


def send(port: int, body: bytes = b"Subject: f\r\n\r\nx\r\n", to: str = "c@d.example", sender: str = "a@b.example") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail(sender, [to], body)


def data_error(port: int, body: bytes = b"Subject: f\r\n\r\nx\r\n", sender: str = "a@b.example") -> tuple[int, bytes]:
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(port, body, sender=sender)
    return e.value.smtp_code, e.value.smtp_error


def test_missing_filter_warns_at_startup_and_each_message_is_an_exec_error(relay, spool, tmp_path):
    missing = tmp_path / "filters" / "not-yet"
    r = relay("--filter", str(missing))
    r.wait_for(rf"^emailrelay: warning: filter program does not exist: {re.escape(str(missing))}$")
    for _ in range(2):
        assert data_error(r.port) == (452, b"rejected")
    assert r.count(r"rejected by the filter: filter exec error: no such file or directory$") == 2
    assert spool_files(spool) == []
    # only a start-up warning: the program is looked for again for each message
    missing.parent.mkdir()
    script(missing.parent, "not-yet", "exit 0")
    send(r.port)
    assert len(stored(spool)) == 1


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("no-interpreter-line", "exec format error"), ("missing-interpreter", "no such file or directory"),
     ("directory", "permission denied")],
)
def test_filter_that_cannot_be_executed(relay, spool, tmp_path, kind, reason):
    path = tmp_path / "filter"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_text("exit 0\n" if kind == "no-interpreter-line" else "#!/no/such/interpreter\nexit 0\n")
        path.chmod(0o755)
    r = relay("--filter", str(path))
    if kind == "directory":
        r.wait_for(rf"^emailrelay: warning: invalid program: {re.escape(str(path))}$")
    assert data_error(r.port) == (452, b"rejected")
    r.wait_for(rf"rejected by the filter: filter exec error: {reason}$")
    assert spool_files(spool) == []


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        # a reason, then megabytes: only the first 1024 bytes are read for the verdict
        ("echo '<<550 5.7.1 too much>>'\necho '<<log reason>>'\nyes 0123456789abcdef | head -c 4000000\nexit 1",
         "550 5.7.1 too much"),
        # a reason line that ends exactly at byte 1024 is kept ...
        ("printf '<<%s>>' $(head -c 1020 /dev/zero | tr '\\0' x)\nyes | head -c 2000000\nexit 1", "452 " + "x" * 1020),
        # ... one byte more and its closer is cut off, so it is no reason line
        ("printf '<<%s>>' $(head -c 1021 /dev/zero | tr '\\0' x)\nyes | head -c 2000000\nexit 1", "452 rejected"),
        # a reason after the first 1024 bytes is never seen
        ("head -c 1100 /dev/zero | tr '\\0' x\necho\necho '<<too late>>'\nyes | head -c 2000000\nexit 1",
         "452 rejected"),
        # output of a filter that accepts is read and ignored
        ("yes '<<550 not a verdict>>' | head -c 4000000\nexit 0", "250 message processed"),
    ],
    ids=["reason-then-megabytes", "reason-ends-at-1024", "reason-ends-at-1025", "reason-after-1024", "ok"],
)
def test_filter_printing_megabytes(relay, spool, tmp_path, body, reply):
    # a server that stopped reading the pipe would leave the filter blocked: 452 error after the timeout
    r = relay("--filter", script(tmp_path, "noisy", body), "--filter-timeout", "10")
    with Peer(r.port) as c:
        c.hello()
        assert c.send_message() == reply
        assert c.cmd("NOOP") == "250 noop"
    assert len(stored(spool)) == (1 if reply.startswith("250") else 0)
    if "log reason" in body:
        r.wait_for(r"rejected by the filter: log reason$")


GARBAGE = b"".join(
    line + b"\r\n"
    for line in [
        bytes(b for b in range(256) if b not in b"\r\n"),
        b".",
        b"..two dots",
        b"",
        b"QUIT",
        b"\0" * 40,
        b"\xff\xfe not utf-8 \xc3\x28",
    ]
)


@pytest.mark.parametrize("garbage", [GARBAGE, b""], ids=["binary", "empty"])
def test_filter_editing_the_content_into_garbage_is_stored_and_forwarded_as_it_is(
    relay, downstream, spool, tmp_path, garbage
):
    source = tmp_path / "garbage"
    source.write_bytes(garbage)
    r = relay("--filter", script(tmp_path, "garble", f'cat {source} > "$1"\nexit 0'))
    send(r.port, b"Subject: fine\r\n\r\nfine\r\n")
    (env,) = stored(spool)
    assert env.to_remote == ["c@d.example"]
    assert ready_contents(spool) == [garbage]
    sink = downstream(Sink)
    result = as_client(spool, sink.address)
    assert result.returncode == 0, result.stderr
    (m,) = sink.wait_for_messages(1)
    assert (m.mail_from, m.rcpt_tos, m.data) == ("a@b.example", ["c@d.example"], garbage)


#: The product overview's recipe for spamassassin, with a stand-in for spamassassin:
#: write "$1.tmp", then rename it over "$1".
OVERVIEW_SPAM_FILTER = """\
{ printf 'X-Spam-Checked: yes\\r\\n'; if grep -q 'buy now' "$1"; then printf 'X-Spam-Flag: YES\\r\\n'; fi; cat "$1"; } > "$1.tmp"
mv "$1.tmp" "$1"
exit 0
"""


def test_overview_style_filter_replacing_the_content_file_chained_with_the_example_filter(
    relay, downstream, spool, tmp_path
):
    mark = script(tmp_path, "spamassassin-standin", OVERVIEW_SPAM_FILTER)
    r = relay("--filter", f"{mark},{CONFIG / 'filter-example.sh'}")
    send(r.port, b"Subject: hello\r\n\r\nsee you\r\n")
    assert data_error(r.port, b"Subject: offer\r\n\r\nbuy now\r\n") == (550, b"5.7.1 message refused as spam")
    r.wait_for(r"rejected by the filter: spam flag set, sender \[a@b\.example\]$")
    (content,) = ready_contents(spool)
    assert content.startswith(b"X-Spam-Checked: yes\r\nReceived: from ")
    assert not list(spool.glob("*.tmp")) and len(spool_files(spool)) == 2
    sink = downstream(Sink)
    assert as_client(spool, sink.address).returncode == 0
    assert sink.wait_for_messages(1)[0].data == content


def test_filter_ignoring_sigterm_is_killed_after_the_timeout_while_others_are_served(relay, spool, tmp_path):
    """SIGTERM at --filter-timeout (SPEC.md 3.2), then SIGKILL: the port's addition (filters.py)."""
    pidfile = tmp_path / "hung.pid"
    body = f'case "$(cat "$1")" in *hang*) echo $$ > {pidfile}; trap "" TERM; while :; do sleep 1; done;; esac\nexit 0'
    r = relay("--filter", script(tmp_path, "stubborn", body), "--filter-timeout", "1")
    outcome: dict[str, object] = {}

    def hung() -> None:
        started = time.monotonic()
        with Peer(r.port) as c:
            c.hello()
            outcome["reply"] = c.send_message("Subject: hang\r\n\r\nx\r\n")
            outcome["after"] = c.cmd("NOOP")
        outcome["seconds"] = time.monotonic() - started

    t = threading.Thread(target=hung)
    t.start()
    deadline = time.monotonic() + 10
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pidfile.exists()
    send(r.port, b"Subject: quick\r\n\r\nx\r\n")  # served while the other filter hangs
    quick_done = "reply" not in outcome
    t.join(30)
    assert not t.is_alive()
    assert quick_done
    assert (outcome["reply"], outcome["after"]) == ("452 error", "250 noop")
    assert outcome["seconds"] >= 1
    r.wait_for(r"rejected by the filter: timeout$")
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while not gone(pid):
        assert time.monotonic() < deadline, "the hung filter was not killed"
        time.sleep(0.05)
    assert [c.split(b"\r\n")[1] for c in ready_contents(spool)] == [b"Subject: quick"]


def test_client_disconnecting_while_the_filter_runs_gets_nothing_committed(relay, spool, tmp_path):
    started, release = tmp_path / "started", tmp_path / "release"
    body = (f'echo $$ > {started}\nn=0\nwhile [ ! -e {release} ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done\n'
            "exit 0")
    r = relay("--filter", script(tmp_path, "slow", body), "--filter-timeout", "30")
    with Peer(r.port) as c:
        c.hello()
        assert c.cmd("MAIL FROM:<a@b.example>").startswith("250 ")
        assert c.cmd("RCPT TO:<c@d.example>").startswith("250 ")
        assert c.cmd("DATA").startswith("354 ")
        c.send(b"Subject: given up\r\n\r\nx\r\n.\r\n")
        deadline = time.monotonic() + 10
        while not started.exists():
            assert time.monotonic() < deadline, "the filter did not start"
            time.sleep(0.02)
    # the client has gone (its own timeout, say) before any reply
    with contextlib.suppress(AssertionError):
        r.wait_for(r"smtp connection closed", timeout=2)
    release.touch()
    r.wait_for(r"smtp connection closed")
    pid = int(started.read_text())
    deadline = time.monotonic() + 10
    while not gone(pid):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert spool_files(spool) == []


def test_hung_address_verifier_times_out_the_recipient_and_the_session_goes_on(relay, spool, tmp_path):
    pidfile = tmp_path / "verifier.pid"
    body = f"case \"$1\" in slow@*) echo $$ > {pidfile}; sleep 300;; esac\nprintf '\\n%s\\n' \"$1\"\nexit 1"
    r = relay("--address-verifier", script(tmp_path, "verify", body), "--filter-timeout", "1")
    outcome: dict[str, str] = {}

    def slow() -> None:
        with Peer(r.port) as c:
            c.hello()
            assert c.cmd("MAIL FROM:<a@b.example>").startswith("250 ")
            outcome["slow"] = c.cmd("RCPT TO:<slow@x.example>")
            outcome["next"] = c.cmd("RCPT TO:<next@x.example>")
            assert c.cmd("DATA").startswith("354 ")
            outcome["data"] = c.cmd("Subject: after\r\n\r\nx\r\n.")

    t = threading.Thread(target=slow)
    t.start()
    deadline = time.monotonic() + 10
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    send(r.port, b"Subject: meanwhile\r\n\r\nx\r\n", to="other@x.example")
    meanwhile_done = "slow" not in outcome
    t.join(30)
    assert meanwhile_done
    assert outcome == {"slow": "450 timeout", "next": "250 recipient <next@x.example> OK",
                       "data": "250 message processed"}
    assert sorted(e.to_remote for e in stored(spool)) == [["next@x.example"], ["other@x.example"]]
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while not gone(pid):
        assert time.monotonic() < deadline, "the hung verifier was not killed"
        time.sleep(0.05)


# =====================================================================================
# 3. AUTH faults (SPEC.md 5.3, 6.3, section 0)

AUTH_SECRETS = """\
server plain alice secret
server md5 carol gNYiNPCsyQUbUnJD1B4nQJGG2FXhHrpSenpSyoKzE+E=
"""
FAILURE = r"^emailrelay: warning: authentication failed: client {addr}: mechanism (\S+): user \[(.*?)\]: (.+)$"


@pytest.fixture
def auth_file(tmp_path: Path) -> str:
    path = tmp_path / "auth"
    path.write_text(AUTH_SECRETS)
    return str(path)


def failures(relay: Relay, addr: str = "127.0.0.1", end: int | None = None) -> list[tuple[str, str]]:
    regex = re.compile(FAILURE.format(addr=re.escape(addr)))
    return [(m.group(1), m.group(2)) for line in relay.lines[:end] if (m := regex.search(line))]


@pytest.mark.parametrize(("user", "password"), [("alice", "secret"), ("carol", "password")])
def test_replayed_cram_md5_response_is_refused(relay, auth_file, user, password):
    r = relay("--server-auth", auth_file, "--domain", "relay.example")
    with Peer(r.port) as c:
        c.hello()
        first = base64.b64decode(c.cmd("AUTH CRAM-MD5")[4:])
        assert re.fullmatch(rb"<\d+\.(\d+)@relay\.example>", first)
        assert abs(int(re.search(rb"\.(\d+)@", first).group(1)) - time.time()) < 60
        answer = cram(user, password, first)
        assert c.cmd(answer) == "235 authentication successful"
    with Peer(r.port) as c:  # challenges are not reused, even within one second
        c.hello()
        challenges = set()
        for _ in range(20):
            challenges.add(c.cmd("AUTH CRAM-MD5"))
            assert c.cmd("*") == "501 authentication cancelled"
        assert len(challenges) == 20 and ("334 " + b64(first)) not in challenges
    with Peer(r.port) as c:
        c.hello()
        second = base64.b64decode(c.cmd("AUTH CRAM-MD5")[4:])
        assert second != first
        assert c.cmd(answer) == "535 authentication failed"  # the right digest, for an old challenge
        assert c.cmd("MAIL FROM:<a@b.example>") == "530 authentication required"
        third = base64.b64decode(c.cmd("AUTH CRAM-MD5")[4:])
        assert c.cmd(cram(user, password, third)) == "235 authentication successful"
        assert c.send_message() == "250 message processed"
    r.wait_for(FAILURE.format(addr=r"127\.0\.0\.1"))
    assert failures(r) == [("CRAM-MD5", user)]


ALICE_PLAIN = "AUTH PLAIN " + b64(b"\0alice\0secret")


@pytest.mark.parametrize(
    ("steps", "logged"),
    [
        # bad base64 in a response (not in an initial response: test_server_auth.py)
        ([("AUTH PLAIN", "334 "), ("%%%not base64%%%", "535 authentication failed")], [("PLAIN", "")]),
        ([("AUTH CRAM-MD5", None), ("@@@", "535 authentication failed")], [("CRAM-MD5", "")]),
        ([("AUTH LOGIN " + b64("alice"), "334 UGFzc3dvcmQ6"), ("pass word", "535 authentication failed")],
         [("LOGIN", "alice")]),
        # base64, but not what the mechanism expects
        ([("AUTH PLAIN " + b64("alice secret"), "535 authentication failed")], [("PLAIN", "")]),
        ([("AUTH CRAM-MD5", None), (b64("alice"), "535 authentication failed")], [("CRAM-MD5", "")]),
        # wrong passwords and unknown users
        ([("AUTH LOGIN", "334 VXNlcm5hbWU6"), (b64("alice"), "334 UGFzc3dvcmQ6"), (b64("wrong"), "535 authentication failed")],
         [("LOGIN", "alice")]),
        ([("AUTH CRAM-MD5", "cram:alice:wrong"), ("", "535 authentication failed")], [("CRAM-MD5", "alice")]),
        ([("AUTH CRAM-MD5", "cram:carol:secret"), ("", "535 authentication failed")], [("CRAM-MD5", "carol")]),
        ([("AUTH PLAIN " + b64(b"\0mallory\0secret"), "535 authentication failed")], [("PLAIN", "mallory")]),
        # mechanisms not offered: refused, not an authentication failure
        ([("AUTH DIGEST-MD5", "504 unsupported authentication mechanism"),
          ("AUTH XOAUTH2 " + b64("x"), "504 unsupported authentication mechanism"),
          ("AUTH CRAM-SHA1X", "504 unsupported authentication mechanism")], []),
    ],
    ids=["plain-bad-base64", "cram-bad-base64", "login-bad-base64-password", "plain-no-nuls", "cram-no-digest",
         "login-wrong-password", "cram-wrong-password", "cram-wrong-password-md5-secret", "plain-unknown-user",
         "unknown-mechanisms"],
)
def test_auth_fault_reply_log_line_and_the_server_goes_on(relay, spool, auth_file, steps, logged):
    """Each step is (line to send, expected reply).  A reply of None is any 334
    challenge; ``cram:<user>:<password>`` is a 334 challenge that the next step,
    whose line is "", answers with that user's CRAM-MD5 digest.  ``logged`` is
    the (mechanism, user) of each ``authentication failed`` line due."""
    r = relay("--server-auth", auth_file)
    with Peer(r.port) as c:
        c.hello()
        answer: list[str] = []  # the CRAM user and password for the next "" step
        challenge = b""
        for line, reply in steps:
            got = c.cmd(cram(answer[0], answer[1], challenge) if line == "" else line)
            if reply is None or reply.startswith("cram:"):
                assert got.startswith("334 ")
                challenge = base64.b64decode(got[4:])
                answer = reply.split(":")[1:] if reply else []
            else:
                assert got == reply
        assert c.cmd(ALICE_PLAIN) == "235 authentication successful"  # the session goes on
        assert c.send_message() == "250 message processed"
    # then a failure from another address that is always logged: every line the
    # steps caused is in the log before it
    with Peer(r.port, "127.0.0.2") as c:
        c.hello()
        assert c.cmd("AUTH PLAIN " + b64(b"\0sentinel\0x")) == "535 authentication failed"
    end = line_index(r, FAILURE.format(addr=r"127\.0\.0\.2"))
    assert failures(r, end=end) == logged
    assert failures(r, "127.0.0.2") == [("PLAIN", "sentinel")]
    assert [e.authentication for e in stored(spool)] == ["alice"]


def test_auth_failures_are_slowed_down_per_address_and_others_are_served(relay, spool, auth_file):
    r = relay("--server-auth", auth_file)
    wrong = "AUTH PLAIN " + b64(b"\0alice\0wrong")
    outcome: dict[str, float] = {}
    with Peer(r.port, "127.0.0.2") as c:
        c.hello()
        assert c.cmd(wrong) == "535 authentication failed"
        before = time.monotonic()
        assert c.cmd(wrong) == "535 authentication failed"  # the second failure: after 1 s (auth_policy.py)
        assert time.monotonic() - before >= 0.9

        def third() -> None:
            c.send(wrong.encode() + b"\r\n")
            assert c.reply() == "535 authentication failed"  # after 2 s
            outcome["third"] = time.monotonic()

        t = threading.Thread(target=third)
        t.start()
        try:
            time.sleep(0.1)
            with Peer(r.port, "127.0.0.3") as other:  # another address: not slowed down, not blocked
                other.hello()
                assert other.cmd(wrong) == "535 authentication failed"
                assert other.cmd(ALICE_PLAIN) == "235 authentication successful"
                assert other.send_message() == "250 message processed"
            served = time.monotonic()
        finally:
            t.join(30)
        assert served < outcome["third"]
        assert c.cmd(ALICE_PLAIN) == "235 authentication successful"
    assert [e.authentication for e in stored(spool)] == ["alice"]
    r.wait_for(FAILURE.format(addr=r"127\.0\.0\.3"))
    assert failures(r, "127.0.0.2") == [("PLAIN", "alice")] * 3


def test_auth_before_starttls_is_refused_when_tls_is_required(relay, spool, auth_file, certs):
    r = relay("--server-auth", auth_file, "--server-tls", "--server-tls-certificate", str(certs.paths["good"]),
              "--server-tls-required")
    with Peer(r.port) as c:
        c.hello()
        for line in (ALICE_PLAIN, "AUTH PLAIN", "AUTH LOGIN " + b64("alice"), "AUTH CRAM-MD5", "AUTH NOSUCH"):
            assert c.cmd(line) == "530 must issue a STARTTLS command first"
        assert c.cmd("MAIL FROM:<a@b.example>") == "530 must issue a STARTTLS command first"
        assert c.cmd("STARTTLS") == "220 ready to start tls"
        c.sock = certs.client_context().wrap_socket(c.sock, server_hostname="localhost")
        assert "250-STARTTLS" not in c.cmd("EHLO me")
        assert c.cmd("AUTH PLAIN " + b64(b"\0alice\0wrong")) == "535 authentication failed"
        assert c.cmd(ALICE_PLAIN) == "235 authentication successful"
        assert c.send_message() == "250 message processed"
    r.wait_for(FAILURE.format(addr=r"127\.0\.0\.1"))
    assert failures(r) == [("PLAIN", "alice")]  # the refusals before TLS were not authentication failures
    (content,) = ready_contents(spool)
    assert b" with ESMTPSA tls " in content.split(b"\r\n")[0]


# =====================================================================================
# 4. swaks, an independent client

needs_swaks = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed (.ci/run installs it)")


def swaks(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(port), "--from", "a@b.example", "--to", "c@d.example",
         "--ehlo", "swaks.test", "--header", "Subject: swaks", "--body", "hello from swaks", "--timeout", "20", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )


def masked_md5(password: str) -> str:
    result = subprocess.run([command("emailrelay-passwd"), "--password", password], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def swaks_secrets(tmp_path: Path) -> str:
    key = masked_md5("carol's pass")
    path = tmp_path / "swaks.auth"
    path.write_text(f"server plain alice secret\nserver md5 carol {key}\nclient md5 carol {key}\n")
    return str(path)


@needs_swaks
@pytest.mark.parametrize(
    ("mechanism", "user", "password", "ok"),
    [
        ("PLAIN", "alice", "secret", True),
        ("LOGIN", "alice", "secret", True),
        ("CRAM-MD5", "alice", "secret", True),
        ("CRAM-MD5", "carol", "carol's pass", True),
        ("PLAIN", "carol", "carol's pass", False),  # a hashed secret serves CRAM-MD5 only
        ("LOGIN", "alice", "wrong", False),
        ("CRAM-MD5", "carol", "wrong", False),
    ],
    ids=["plain", "login", "cram-md5", "cram-md5-hashed", "plain-hashed", "login-wrong", "cram-md5-wrong"],
)
def test_swaks_auth(relay, spool, swaks_secrets, mechanism, user, password, ok):
    r = relay("--server-auth", swaks_secrets)
    result = swaks(r.port, "--auth", mechanism, "--auth-user", user, "--auth-password", password)
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
        (env,) = stored(spool)
        assert env.authentication == user
        (content,) = ready_contents(spool)
        assert b" with ESMTPA ;" in content.split(b"\r\n")[0] and b"hello from swaks" in content
    else:
        assert result.returncode == 28, result.stdout + result.stderr  # swaks: authentication failed
        assert "<** 535 authentication failed" in result.stdout
        assert spool_files(spool) == []
        r.wait_for(FAILURE.format(addr=r"127\.0\.0\.1").replace(r"\[(.*?)\]", rf"\[{user}\]"))


@needs_swaks
def test_swaks_starttls_with_verification_then_auth(relay, spool, swaks_secrets, certs):
    r = relay("--server-auth", swaks_secrets, "--server-tls", "--server-tls-certificate", str(certs.paths["good"]),
              "--server-tls-required")
    args = ["--tls", "--tls-verify", "--auth", "CRAM-MD5", "--auth-user", "carol", "--auth-password", "carol's pass"]
    refused = swaks(r.port, *args, "--tls-ca-path", str(certs.other_ca_pem))  # the wrong CA: no TLS, no mail
    assert refused.returncode == 29, refused.stdout + refused.stderr  # swaks: TLS failed
    assert spool_files(spool) == []
    result = swaks(r.port, *args, "--tls-ca-path", str(certs.ca_pem))
    assert result.returncode == 0, result.stdout + result.stderr
    (env,) = stored(spool)
    assert env.authentication == "carol"
    (content,) = ready_contents(spool)
    assert b" with ESMTPSA tls " in content.split(b"\r\n")[0]


@needs_swaks
def test_swaks_implicit_tls(relay, spool, certs):
    r = relay("--server-tls-connection", "--server-tls-certificate", str(certs.paths["good"]))
    result = swaks(r.port, "--tlsc", "--tls-verify", "--tls-ca-path", str(certs.ca_pem))
    assert result.returncode == 0, result.stdout + result.stderr
    (content,) = ready_contents(spool)
    assert b" with ESMTPS tls " in content.split(b"\r\n")[0]


# =====================================================================================
# 5. TLS handshakes that never finish


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    buf = b""
    while marker not in buf:
        chunk = sock.recv(4096)
        assert chunk, f"closed before {marker!r}: {buf!r}"
        buf += chunk
    return buf


@pytest.mark.parametrize(
    "how", ["implicit-silent", "implicit-half-hello", "implicit-plaintext", "starttls-silent", "starttls-plaintext"]
)
def test_unfinished_tls_handshake_is_dropped_while_others_are_served(relay, spool, certs, how):
    """A silent or half-done handshake is dropped after --connection-timeout; plaintext at once."""
    implicit = how.startswith("implicit")
    stall = how.endswith(("silent", "half-hello"))
    mode = "--server-tls-connection" if implicit else "--server-tls"
    timeout = "2" if stall else "30"
    r = relay(mode, "--server-tls-certificate", str(certs.paths["good"]), "--connection-timeout", timeout)
    stalled = socket.create_connection(("127.0.0.1", r.port), timeout=40)
    dropped: dict[str, object] = {}

    def wait_for_drop() -> None:
        received = b""
        try:
            while chunk := stalled.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
        dropped["at"] = time.monotonic()
        dropped["received"] = received

    try:
        if not implicit:
            read_until(stalled, b"\r\n")
            stalled.sendall(b"EHLO me\r\n")
            read_until(stalled, b"250 ")
            stalled.sendall(b"STARTTLS\r\n")
            read_until(stalled, b"220 ready to start tls\r\n")
        started = time.monotonic()
        if how == "implicit-half-hello":  # a record header and the start of a ClientHello
            stalled.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        elif not stall:
            stalled.sendall(b"EHLO me\r\nMAIL FROM:<a@b.example>\r\n")
        t = threading.Thread(target=wait_for_drop)
        t.start()
        # another TLS client is served meanwhile
        context = certs.client_context()
        if implicit:
            with smtplib.SMTP_SSL("127.0.0.1", r.port, context=context, timeout=10) as s:
                s.sendmail("a@b.example", ["c@d.example"], b"Subject: meanwhile\r\n\r\nx\r\n")
        else:
            with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as s:
                s.starttls(context=context)
                s.sendmail("a@b.example", ["c@d.example"], b"Subject: meanwhile\r\n\r\nx\r\n")
        served = time.monotonic()
        t.join(40)
        assert not t.is_alive(), "the connection was not dropped"
    finally:
        stalled.close()
    if stall:
        assert served < dropped["at"]  # type: ignore[operator]
        assert dropped["at"] - started >= 1.5  # type: ignore[operator]
    else:
        assert dropped["at"] - started < 15  # type: ignore[operator]  # not the 30 s timeout
    # no SMTP reply without a finished handshake (a TLS alert at most)
    assert re.search(rb"(^|\n)\d{3}[ -]", dropped["received"]) is None, dropped["received"]  # type: ignore[call-overload]
    assert [c.split(b"\r\n")[1] for c in ready_contents(spool)] == [b"Subject: meanwhile"]


# =====================================================================================
# 6. secrets files written for E-MailRelay

#: SPEC.md 5.1's forms, then the older forms of the product overview (the
#: overview's own example runs its two APOP lines together on one line of
#: text; they are two lines in E-MailRelay's documentation).  OLD_LINES are
#: the line numbers that must warn, with a word the warning must contain.
EMAILRELAY_SECRETS = """\
# SPEC.md 5.1 forms
server plain alice secret
server plain:b Ym9i cGFzcw==
server md5 carol gNYiNPCsyQUbUnJD1B4nQJGG2FXhHrpSenpSyoKzE+E=
server md5 dave 874698368.97103088.1131565595.1076305620.1440253585.1387929313.3394402938.3776164738
server cram-md5 erin v1HOpuLIbbvgoJjhueeoqwfvtIp2C+gMA285ke+xxow=
server plain frank+40example.com my+20password
SERVER PLAIN Grace Sup3r+3Dsecret
server sha256 heidi kMSleJ/PyJvDBgIFo+fE4glsjNXYsJTPGN2vxwgisOn6wQO/b1M7365eRtszCcreGsA81kUexKn+EtcLPk5omQ==
server none 127.0.0.9 trusted-nine
client plain:b = = nobody
client oauth me@example.com dXNlcj1tZUBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnRva2VuAQE= mail
# the product overview's forms (E-MailRelay 1.x)
server APOP user1 password1
server APOP user2 password2
login server olduser oldpass
APOP server user3 password3
login client myname@gmail.com mypassword
"""
OLD_LINES = {14: "apop", 15: "apop", 16: "login", 17: "apop", 18: "login"}
ACCOUNTS = [
    ("alice", "secret", ("PLAIN", "LOGIN", "CRAM-MD5")),
    ("bob", "pass", ("PLAIN", "CRAM-MD5")),
    ("carol", "password", ("CRAM-MD5",)),
    ("dave", "password", ("CRAM-MD5",)),
    ("erin", "e=mc2", ("CRAM-MD5",)),
    ("frank@example.com", "my password", ("PLAIN", "LOGIN")),
    ("Grace", "Sup3r=secret", ("PLAIN", "CRAM-SHA1")),
    ("heidi", "heidi-pw", ("CRAM-SHA256",)),
    ("user1", "password1", ("PLAIN", "LOGIN", "CRAM-MD5")),
    ("user2", "password2", ("PLAIN",)),
    ("olduser", "oldpass", ("LOGIN", "CRAM-MD5")),
    ("user3", "password3", ("PLAIN", "CRAM-MD5")),
]


def authenticate(c: RawSmtp, mechanism: str, user: str, password: str) -> str:
    """One AUTH exchange; returns the final reply."""
    if mechanism == "PLAIN":
        return c.cmd("AUTH PLAIN " + b64(f"\0{user}\0{password}"))
    if mechanism == "LOGIN":
        assert c.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
        assert c.cmd(b64(user)) == "334 UGFzc3dvcmQ6"
        return c.cmd(b64(password))
    challenge = base64.b64decode(c.cmd(f"AUTH {mechanism}")[4:])
    return c.cmd(cram(user, password, challenge, mechanism.removeprefix("CRAM-").lower()))


def test_secrets_file_written_for_emailrelay_works_unchanged(relay, spool, tmp_path):
    path = tmp_path / "emailrelay.auth"
    path.write_text(EMAILRELAY_SECRETS)
    r = relay("--server-auth", str(path))
    warned: dict[int, list[str]] = {}
    for line in r.lines:
        m = re.match(rf"^emailrelay: warning: {re.escape(str(path))}:(\d+): (.+)$", line)
        if m:
            warned.setdefault(int(m.group(1)), []).append(m.group(2))
    assert sorted(warned) == sorted(OLD_LINES)  # each old line named, no other line
    for number, kind in OLD_LINES.items():
        assert any(kind in text.lower() for text in warned[number]), warned[number]
    for number in (16, 17, 18):  # <type> <side>: turned round
        assert any("order" in text for text in warned[number]), warned[number]
    with Peer(r.port) as c:
        c.hello()
        for user, password, mechanisms in ACCOUNTS:
            for mechanism in mechanisms:
                assert authenticate(c, mechanism, user, password) == "235 authentication successful", (user, mechanism)
                assert c.cmd("EHLO me").startswith("250")  # EHLO resets the AUTH state
        assert authenticate(c, "PLAIN", "carol", "password") == "535 authentication failed"  # md5 secret: CRAM only
        assert authenticate(c, "CRAM-MD5", "user1", "password1") == "235 authentication successful"
        assert c.send_message() == "250 message processed"
    with Peer(r.port, "127.0.0.9") as c:  # the trust line
        c.hello()
        assert c.send_message() == "250 message processed"
    assert sorted(e.authentication for e in stored(spool)) == ["trusted-nine", "user1"]


def test_overview_client_line_authenticates_the_forwarding_client(downstream, tmp_path):
    sink = downstream(Sink, auth={"myname@gmail.com": "mypassword"}, mechanisms=["PLAIN", "LOGIN"], require_auth=True)
    path = tmp_path / "emailrelay.auth"
    path.write_text(EMAILRELAY_SECRETS)
    spool = tmp_path / "spool"
    spool.mkdir()
    store = Store(spool)
    store.put(b"Subject: old client line\r\n\r\nx\r\n")
    nobody = store.put(b"Subject: no auth\r\n\r\nx\r\n", client_account_selector="nobody")
    result = as_client(spool, sink.address, "--client-auth", str(path))
    assert result.returncode == 0, result.stderr
    (m,) = sink.wait_for_messages(1)
    assert m.auth == "myname@gmail.com"
    # the "do not authenticate" selector: no AUTH, so this sink refuses it
    assert states(spool)["bad"] == [nobody]
    assert "530" in bad_envelope(spool, nobody)[1][1]


# =====================================================================================
# config/: the example secrets file and the example filter

#: Passwords the comments of config/emailrelay.auth.example give.
EXAMPLE_ACCOUNTS = [
    ("alice", "alice-secret", "PLAIN"),
    ("bob@example.com", "my secret", "LOGIN"),
    ("carol", "carol-password", "CRAM-MD5"),
]


def test_example_secrets_file_loads_cleanly_and_its_accounts_work(relay, spool):
    example = CONFIG / "emailrelay.auth.example"
    r = relay("--server-auth", str(example))
    assert [line for line in r.lines if "warning" in line or "error" in line] == []
    with Peer(r.port, "127.0.0.2") as c:  # not a trusted address
        c.hello()
        assert c.cmd("MAIL FROM:<a@b.example>") == "530 authentication required"
        for user, password, mechanism in EXAMPLE_ACCOUNTS:
            assert authenticate(c, mechanism, user, password) == "235 authentication successful", user
            assert c.cmd("EHLO me").startswith("250")
        assert authenticate(c, "CRAM-MD5", "carol", "carol-password") == "235 authentication successful"
        assert c.send_message() == "250 message processed"
    with Peer(r.port) as c:  # 127.0.0.1: the "server none" line
        c.hello()
        assert c.send_message() == "250 message processed"
    assert sorted(e.authentication for e in stored(spool)) == ["carol", "localhost"]
    # the md5 line is what emailrelay-passwd gives for the documented password
    assert f"server md5 carol {masked_md5('carol-password')}" in example.read_text().splitlines()


def test_example_secrets_file_client_lines_and_selectors(downstream, tmp_path):
    sink = downstream(Sink, auth={"myname@isp.example": "my-isp-password", "office-relay": "office-password"},
                      mechanisms=["CRAM-MD5", "PLAIN", "LOGIN"])
    spool = tmp_path / "spool"
    spool.mkdir()
    store = Store(spool)
    store.put(b"Subject: default account\r\n\r\nx\r\n")
    store.put(b"Subject: office account\r\n\r\nx\r\n", client_account_selector="office")
    store.put(b"Subject: no account\r\n\r\nx\r\n", client_account_selector="local")
    result = as_client(spool, sink.address, "--client-auth", str(CONFIG / "emailrelay.auth.example"))
    assert result.returncode == 0, result.stderr
    got = {m.data.split(b"\r\n")[0]: m.auth for m in sink.wait_for_messages(3)}
    assert got == {b"Subject: default account": "myname@isp.example", b"Subject: office account": "office-relay",
                   b"Subject: no account": None}
    assert [s.auth for s in sink.sessions] == [("CRAM-MD5", "myname@isp.example"), ("CRAM-MD5", "office-relay"), None]


def test_example_filter_script(relay, spool):
    example = CONFIG / "filter-example.sh"
    assert os.access(example, os.X_OK)
    r = relay("--filter", str(example))
    send(r.port, b"Subject: hello\r\n\r\nX-Spam-Flag: YES in the body is fine\r\n")
    assert data_error(r.port, b"X-Spam-Flag: YES\r\nSubject: hello\r\n\r\nx\r\n") == (
        550, b"5.7.1 message refused as spam"
    )
    r.wait_for(r"rejected by the filter: spam flag set, sender \[a@b\.example\]$")
    assert data_error(r.port, sender="someone@spam.example") == (550, b"5.7.1 sender not accepted")
    r.wait_for(r"rejected by the filter: blocked sender \[someone@spam\.example\]$")
    assert len(stored(spool)) == 1 and len(spool_files(spool)) == 2
