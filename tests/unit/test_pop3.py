"""Pure tests of the POP3 session state machine, framing and content transforms (no sockets).

The session runs against the real POP auth policy (secrets parsed from
text, as the worker builds it) and a maildrop that keeps its messages in
memory, so every reply of SPEC.md 8.2 can be checked line by line.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emailrelay import pop3
from emailrelay.pop3 import (
    MAX_LINE,
    BodyLimit,
    Closed,
    Content,
    DotStuffer,
    Line,
    LineFramer,
    MailboxError,
    Message,
    Session,
    SessionConfig,
    State,
    TooLong,
)
from emailrelay.secrets import Secrets
from emailrelay.workers.pop import PopSecretsAuth

TIMESTAMP = b"<1234.5678@pop.example>"
SECRETS = "server plain alice secret\nserver plain bob pw\n"


class MemoryMaildrop:
    """A Maildrop whose mailboxes are dicts of content bytes (user -> [(id, content)])."""

    def __init__(self, boxes: dict[str, list[tuple[str, bytes]]] | None = None) -> None:
        self.boxes = boxes if boxes is not None else {"alice": [("m1", b"Subject: one\r\n\r\nbody 1\r\n"),
                                                                 ("m2", b"Subject: two\r\n\r\n.dot\r\n")]}
        self.locked: set[str] = set()
        self.opened = ""
        self.updates: list[list[str]] = []
        self.closed = 0
        self.fail_update = False
        self.gone: set[str] = set()

    async def open(self, user: str) -> list[Message]:
        if "/" in user:
            raise MailboxError("[SYS/PERM] invalid mailbox name", "slash")
        if user in self.locked:
            raise MailboxError(pop3.LOCKED)
        self.locked.add(user)
        self.opened = user
        return [Message(i, f"{i}.content", len(c), i) for i, c in self.boxes.get(user, [])]

    def content(self, message: Message) -> io.BytesIO:
        if message.id in self.gone:
            raise FileNotFoundError(2, "No such file or directory")
        return io.BytesIO(dict(self.boxes[self.opened])[message.id])

    async def update(self, deleted: list[Message]) -> None:
        if self.fail_update:
            raise OSError(5, "Input/output error")
        self.updates.append([m.id for m in deleted])

    def close(self) -> None:
        self.closed += 1
        self.locked.discard(self.opened)


def make(config: SessionConfig | None = None, *, secrets: str = SECRETS, auth_config: str = "",
         maildrop: MemoryMaildrop | None = None) -> tuple[Session, MemoryMaildrop, list[str], list[tuple]]:
    log: list[str] = []
    auth = PopSecretsAuth(Secrets.parse(secrets), "pop.example", auth_config, log.append)
    drop = maildrop or MemoryMaildrop()
    changes: list[tuple] = []
    session = Session(
        config or SessionConfig(domain="pop.example"), auth, drop, "192.0.2.1",
        timestamp=TIMESTAMP, on_state_change=lambda old, new: changes.append((old, new)),
    )
    return session, drop, log, changes


def say(session: Session, text: str | bytes) -> list:
    data = text if isinstance(text, bytes) else text.encode()
    return asyncio.run(session.handle(Line(data)))


def login(session: Session, user: str = "alice", password: str = "secret") -> None:
    assert say(session, f"USER {user}") == [f"+OK user: {user}"]
    assert say(session, f"PASS {password}") == ["+OK"]


def quit_(session: Session) -> Closed:
    with pytest.raises(Closed) as info:
        say(session, "QUIT")
    return info.value


def sent(replies: list) -> list[str]:
    """Reply lines with content items expanded as the adapter sends them."""
    out: list[str] = []
    for item in replies:
        if isinstance(item, Content):
            data = item.source.read()
            if item.body_lines is not None:
                limit = BodyLimit(item.body_lines)
                data = limit.feed(data)
            stuffer = DotStuffer()
            out += (stuffer.feed(data) + stuffer.end()).decode().split("\r\n")[:-1]
        else:
            out.append(item)
    return out


# -- framing --------------------------------------------------------------------


def test_lines_end_only_at_crlf_and_long_lines_are_discarded():
    f = LineFramer()
    f.feed(b"NOOP\nX\r\n" + b"Y" * (MAX_LINE + 10))
    assert f.next_event() == Line(b"NOOP\nX")
    assert f.next_event() == TooLong()
    assert f.next_event() is None
    f.feed(b"YYY\r")
    assert f.next_event() is None
    f.feed(b"\nSTAT\r\n")
    assert f.next_event() == Line(b"STAT")
    assert f.next_event() is None


def test_line_of_exactly_the_limit_is_accepted():
    f = LineFramer()
    f.feed(b"A" * (MAX_LINE - 2) + b"\r\n" + b"B" * (MAX_LINE - 1) + b"\r\n")
    assert f.next_event() == Line(b"A" * (MAX_LINE - 2))
    assert f.next_event() == TooLong()
    assert f.next_event() is None


# -- content transforms ------------------------------------------------------------


def reference_stuffed(content: bytes) -> bytes:
    lines = content.split(b"\r\n")
    ended = content.endswith(b"\r\n") or not content
    if ended:
        lines = lines[:-1]
    body = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return body + b".\r\n"


def feed_in_pieces(transform, data: bytes, cuts: list[int]) -> bytes:
    out = b""
    last = 0
    for cut in [*sorted({c for c in cuts if 0 < c < len(data)}), len(data)]:
        out += transform(data[last:cut])
        last = cut
    return out


content_bytes = st.lists(st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"a", b"..", b"\r\n."]), max_size=40).map(b"".join)


@given(content_bytes, st.lists(st.integers(0, 80), max_size=6))
def test_dot_stuffing_matches_line_by_line_reference(content, cuts):
    stuffer = DotStuffer()
    out = feed_in_pieces(stuffer.feed, content, cuts) + stuffer.end()
    assert out == reference_stuffed(content)


def test_dot_stuffing_examples():
    s = DotStuffer()
    assert s.feed(b".a\r\n") + s.feed(b".b\r") + s.feed(b"\n.") + s.feed(b"c\n.d") + s.end() == (
        b"..a\r\n..b\r\n..c\n.d\r\n.\r\n"
    )
    assert DotStuffer().end() == b".\r\n"


def reference_top(content: bytes, n: int) -> bytes:
    lines = content.split(b"\r\n")
    out, body, count = [], False, 0
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        if last:
            if line:
                out.append(line)
            break
        out.append(line + b"\r\n")
        if not body:
            if line == b"":
                body = True
                if n == 0:
                    break
        else:
            count += 1
            if count >= n:
                break
    return b"".join(out)


@given(content_bytes, st.integers(0, 4), st.lists(st.integers(0, 80), max_size=6))
def test_top_limit_matches_reference(content, n, cuts):
    limit = BodyLimit(n)
    assert feed_in_pieces(limit.feed, content, cuts) == reference_top(content, n)


def test_top_limit_examples():
    msg = b"A: 1\r\nB: 2\r\n\r\nline 1\r\nline 2\nstill 2\r\nline 3\r\n"
    assert BodyLimit(0).feed(msg) == b"A: 1\r\nB: 2\r\n\r\n"
    assert BodyLimit(2).feed(msg) == b"A: 1\r\nB: 2\r\n\r\nline 1\r\nline 2\nstill 2\r\n"
    assert BodyLimit(9).feed(msg) == msg
    limit = BodyLimit(1)
    assert limit.feed(b"A: 1\r") + limit.feed(b"\n\r") + limit.feed(b"\nx\r") + limit.feed(b"\ny\r\n") == (
        b"A: 1\r\n\r\nx\r\n"
    )
    assert limit.done


# -- the state machine ------------------------------------------------------------


def test_transition_table_refuses_illegal_moves():
    session, *_ = make()
    with pytest.raises(AssertionError, match="illegal pop state change authorization -> update"):
        session.enter_state(State.UPDATE)
    for state, targets in pop3.TRANSITIONS.items():
        assert state not in targets
    assert pop3.TRANSITIONS[State.END] == frozenset()


def test_greeting_has_the_apop_timestamp_only_when_apop_is_offered():
    session, *_ = make()
    assert session.greeting() == "+OK POP3 server ready <1234.5678@pop.example>"
    session, *_ = make(auth_config="x:apop")
    assert session.greeting() == "+OK POP3 server ready"
    generated, *_ = make()
    auth = generated.auth
    fresh = Session(SessionConfig(domain="d.example"), auth, MemoryMaildrop(), "127.0.0.1")
    assert fresh.greeting().startswith("+OK POP3 server ready <") and fresh.greeting().endswith("@d.example>")


def test_capa_in_each_state():
    session, *_ = make(SessionConfig(domain="pop.example", starttls=True))
    mechs = " ".join(session.auth.mechanisms(False)[:-1])
    assert say(session, "capa") == ["+OK capability list follows", "USER", "CAPA", "TOP", "UIDL",
                                    "RESP-CODES", "STLS", f"SASL {mechs}", "."]
    login(session)
    assert "STLS" not in say(session, "CAPA")


def test_capa_without_plain_offers_no_user_and_md5_only():
    session, *_ = make(secrets="server md5 carol gNYiNPCsyQUbUnJD1B4nQJGG2FXhHrpSenpSyoKzE+E=\n")
    assert say(session, "CAPA") == ["+OK capability list follows", "CAPA", "TOP", "UIDL", "RESP-CODES",
                                    "SASL CRAM-MD5", "."]
    assert say(session, "USER carol") == ["-ERR no SASL PLAIN mechanism to do USER/PASS authentication"]


def test_user_pass_login_and_failures():
    session, drop, log, changes = make()
    assert say(session, "PASS secret") == ["-ERR"]  # no USER yet
    assert say(session, "USER") == ["-ERR"]
    assert say(session, "USER alice") == ["+OK user: alice"]
    assert say(session, "PASS wrong") == ["-ERR"]
    assert session.auth_delay == 0.0 and session.state is State.AUTHORIZATION
    assert log == ["authentication failed: client 192.0.2.1: mechanism USER: user [alice]: "
                   "wrong password for [alice]"]
    assert say(session, "PASS wrong") == ["-ERR"]
    assert session.auth_delay == 1.0  # the second failure waits
    session.auth_delay = 0.0
    assert say(session, "PASS secret") == ["+OK"]
    assert session.state is State.TRANSACTION and session.user == "alice" and drop.opened == "alice"
    assert changes == [(State.AUTHORIZATION, State.TRANSACTION)]


def test_pass_keeps_spaces_and_user_is_printable():
    session, *_ = make(secrets="server plain alice two+20words\n")
    assert say(session, "USER alice") == ["+OK user: alice"]
    assert say(session, "PASS two words") == ["+OK"]
    session, *_ = make()
    assert say(session, b"USER a\\b\x01") == ["+OK user: a\\\\b\\x01"]


def test_apop():
    session, drop, log, _ = make()
    digest = hashlib.md5(TIMESTAMP + b"secret").hexdigest()
    assert say(session, f"APOP alice {'0' * 32}") == ["-ERR"]
    assert "mechanism APOP: user [alice]" in log[0]
    assert say(session, "APOP alice") == ["-ERR"]
    assert say(session, f"APOP alice {digest}") == ["+OK"]
    assert session.state is State.TRANSACTION


def test_apop_refused_when_not_offered():
    session, *_ = make(auth_config="x:apop")
    digest = hashlib.md5(TIMESTAMP + b"secret").hexdigest()
    assert say(session, f"APOP alice {digest}") == ["-ERR"]


def test_auth_listing_and_errors():
    session, *_ = make()
    listing = say(session, "AUTH")
    assert listing[0] == "+OK" and listing[-1] == "." and "APOP" not in listing and "PLAIN" in listing
    assert say(session, "AUTH APOP") == ["-ERR invalid mechanism"]
    assert say(session, "AUTH FOO") == ["-ERR invalid mechanism"]
    assert say(session, "AUTH CRAM-MD5 abc") == ["-ERR invalid initial response"]
    assert say(session, "AUTH PLAIN !!!") == ["-ERR invalid initial response"]
    assert session.state is State.AUTHORIZATION
    assert say(session, "AUTH LOGIN") == ["+ VXNlcm5hbWU6"]
    assert session.state is State.SASL
    assert say(session, "*") == ["-ERR"]
    assert session.state is State.AUTHORIZATION
    assert say(session, "AUTH PLAIN") == ["+ "]
    assert say(session, "not base64!") == ["-ERR"]
    assert session.state is State.AUTHORIZATION


def test_auth_plain_with_initial_response():
    session, *_ = make()
    ir = base64.b64encode(b"\0alice\0secret").decode()
    assert say(session, f"auth plain {ir}") == ["+OK"]
    assert session.user == "alice"


def test_auth_plain_empty_initial_response_fails():
    session, _, log, _ = make()
    assert say(session, "AUTH PLAIN =") == ["-ERR"]
    assert "mechanism PLAIN" in log[0]


def test_auth_login_two_steps():
    session, *_ = make()
    assert say(session, "AUTH LOGIN") == ["+ VXNlcm5hbWU6"]
    assert say(session, base64.b64encode(b"bob").decode()) == ["+ UGFzc3dvcmQ6"]
    assert say(session, base64.b64encode(b"pw").decode()) == ["+OK"]
    assert session.user == "bob"


def test_auth_cram_md5():
    session, *_ = make()
    reply = say(session, "AUTH CRAM-MD5")
    challenge = base64.b64decode(reply[0][2:])
    assert challenge.startswith(b"<") and challenge.endswith(b"@pop.example>")
    digest = hmac.new(b"secret", challenge, "md5").hexdigest()
    assert say(session, base64.b64encode(f"alice {digest}".encode()).decode()) == ["+OK"]
    assert session.state is State.TRANSACTION


def test_mailbox_refusals_stay_in_authorization():
    drop = MemoryMaildrop()
    drop.locked.add("alice")
    notices: list[str] = []
    session, *_ = make(maildrop=drop)
    session.notice = notices.append
    assert say(session, "USER alice") == ["+OK user: alice"]
    assert say(session, "PASS secret") == ["-ERR [IN-USE] mailbox locked"]
    assert session.state is State.AUTHORIZATION
    assert notices == ["pop login of [alice] refused: [IN-USE] mailbox locked"]
    session, *_ = make(secrets="server plain a/b x\n")
    ir = base64.b64encode(b"\0a/b\0x").decode()
    assert say(session, f"AUTH PLAIN {ir}") == ["-ERR [SYS/PERM] invalid mailbox name"]
    assert session.state is State.AUTHORIZATION


def test_commands_in_the_wrong_state():
    session, *_ = make(SessionConfig(domain="pop.example", starttls=True))
    for command in ("STAT", "LIST", "UIDL", "RETR 1", "TOP 1 1", "DELE 1", "RSET", "NOOP", "XYZZY", ""):
        assert say(session, command) == ["-ERR"], command
    login(session)
    for command in ("USER alice", "PASS secret", "APOP alice x", "AUTH PLAIN", "STLS", "XYZZY"):
        assert say(session, command) == ["-ERR"], command


def test_stls_is_unknown_without_tls():
    session, *_ = make()
    assert say(session, "STLS") == ["-ERR"]
    assert not session.starttls_pending


def test_stls_then_forget_user():
    session, *_ = make(SessionConfig(domain="pop.example", starttls=True))
    assert say(session, "USER alice") == ["+OK user: alice"]
    assert say(session, "STLS") == ["+OK"]
    assert session.starttls_pending
    session.tls_started()
    assert not session.starttls_pending and session.secure
    assert say(session, "PASS secret") == ["-ERR"]  # USER was before TLS
    assert say(session, "STLS") == ["-ERR"]
    assert "STLS" not in say(session, "CAPA")
    login(session)


def test_tls_required_blocks_login_before_stls():
    session, *_ = make(SessionConfig(domain="pop.example", starttls=True, tls_required=True))
    assert session.greeting() == "+OK POP3 server ready"
    assert say(session, "CAPA") == ["+OK capability list follows", "CAPA", "TOP", "UIDL", "RESP-CODES",
                                    "STLS", "."]
    for command in ("USER alice", "PASS x", "APOP alice x", "AUTH PLAIN"):
        assert say(session, command) == ["-ERR must use STLS before authentication"], command
    assert say(session, "STLS") == ["+OK"]
    session.tls_started()
    login(session)


def test_no_mechanisms_now_means_stls_first():
    session, *_ = make(SessionConfig(domain="pop.example", starttls=True), auth_config="m:;a:plain")
    assert say(session, "AUTH PLAIN") == ["-ERR must use STLS before authentication"]
    assert say(session, "AUTH") == ["+OK", "."]


def test_transaction_commands():
    session, drop, *_ = make()
    login(session)
    assert say(session, "STAT") == ["+OK 2 46"]
    assert say(session, "LIST") == ["+OK 2 message(s)", "1 24", "2 22", "."]
    assert say(session, "LIST 2") == ["+OK 2 22"]
    assert say(session, "LIST 3") == ["-ERR invalid id"]
    assert say(session, "LIST x") == ["-ERR invalid id"]
    assert say(session, "UIDL") == ["+OK 2 message(s)", "1 m1.content", "2 m2.content", "."]
    assert say(session, "UIDL 1") == ["+OK 1 m1.content"]
    assert sent(say(session, "RETR 2")) == ["+OK 22 octets", "Subject: two", "", "..dot", "."]
    assert sent(say(session, "TOP 1 0")) == ["+OK", "Subject: one", "", "."]
    assert sent(say(session, "TOP 1 5")) == ["+OK", "Subject: one", "", "body 1", "."]
    for bad in ("RETR", "RETR 0", "RETR 3", "RETR -1", "TOP 1", "TOP 1 x", "TOP 9 1", "DELE", "DELE 3"):
        assert say(session, bad) == ["-ERR"], bad
    assert say(session, "NOOP") == ["+OK"]
    assert say(session, "DELE 1") == ["+OK"]
    assert say(session, "DELE 1") == ["-ERR"]
    assert say(session, "RETR 1") == ["-ERR"]
    assert say(session, "LIST 1") == ["-ERR invalid id"]
    assert say(session, "STAT") == ["+OK 1 22"]
    assert say(session, "LIST") == ["+OK 1 message(s)", "2 22", "."]  # numbers are kept
    assert say(session, "RSET") == ["+OK"]
    assert say(session, "STAT") == ["+OK 2 46"]
    assert say(session, "DELE 2") == ["+OK"]
    closed = quit_(session)
    assert closed.replies == ["+OK signing off"] and closed.reason == "quit"
    assert drop.updates == [["m2"]]
    assert session.state is State.END
    session.close()
    assert "alice" not in drop.locked


def test_vanished_content_is_an_error():
    session, drop, *_ = make()
    login(session)
    drop.gone.add("m1")
    assert say(session, "RETR 1") == ["-ERR cannot read message"]
    assert say(session, "TOP 1 1") == ["-ERR cannot read message"]


def test_quit_before_login_and_dropped_connection_delete_nothing():
    session, drop, *_ = make()
    assert quit_(session).replies == ["+OK signing off"]
    assert drop.updates == []
    session, drop, _, changes = make()
    login(session)
    say(session, "DELE 1")
    session.close()  # the connection dropped
    assert drop.updates == [] and drop.closed == 1 and "alice" not in drop.locked
    assert changes[-1] == (State.TRANSACTION, State.END)


def test_failed_deletion_drops_the_connection_without_a_reply():
    session, drop, *_ = make()
    login(session)
    say(session, "DELE 1")
    drop.fail_update = True
    closed = quit_(session)
    assert closed.replies == [] and closed.reason == "cannot delete messages: input/output error"


def test_update_state_is_passed_through_on_quit():
    session, _, _, changes = make()
    login(session)
    quit_(session)
    assert changes == [(State.AUTHORIZATION, State.TRANSACTION), (State.TRANSACTION, State.UPDATE),
                       (State.UPDATE, State.END)]


def test_too_long_line_and_abandoned_exchange():
    session, *_ = make()
    assert asyncio.run(session.handle(TooLong())) == ["-ERR line too long"]
    assert say(session, "AUTH PLAIN") == ["+ "]
    assert asyncio.run(session.handle(TooLong())) == ["-ERR line too long"]
    assert session.state is State.AUTHORIZATION
    login(session)
