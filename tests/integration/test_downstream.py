"""Tests of the downstream test servers themselves (downstream.py).

The forwarding tests trust these servers, so each behaviour is checked
here with a client that is not ours: smtplib, aiosmtplib, python-socks, or
the raw client of smtpraw.py where exact bytes matter.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import smtplib
import socket
import ssl
import threading

import aiosmtplib
import pytest
from python_socks import ProxyError, ProxyType
from python_socks.sync import Proxy

from .downstream import (
    GARBAGE,
    AuthAttempt,
    BareConnection,
    BareSink,
    Received,
    Sink,
    Socks4Proxy,
    SocksRequest,
    downstream_fixture,
    format_reply,
)
from .smtpraw import RawSmtp

downstream = downstream_fixture()
sink = Sink.fixture()

QUICK = 0.3  # client timeout for the stall tests


STEPS = [
    ("greeting", None),
    ("ehlo", "EHLO me"),
    ("mail", "MAIL FROM:<a@b>"),
    ("rcpt", "RCPT TO:<c@d>"),
    ("data", "DATA"),
    ("end-of-data", "hi\r\n."),
    ("quit", "QUIT"),
]


def ehlo_keywords(reply: str) -> list[str]:
    return [line[4:] for line in reply.split("\n")[1:]]


def replies_until(raw: RawSmtp, point: str) -> list[str]:
    """Play a session up to the reply given at ``point``; every reply read."""
    replies = []
    for name, line in STEPS:
        if line is not None:
            raw.send(line.encode() + b"\r\n")
        replies.append(raw.reply())
        if name == point:
            return replies
    raise AssertionError(point)


# -- plain SMTP


def test_accepts_and_records_a_message(sink: Sink) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        refused = client.sendmail("a@b", ["c@d", "e@f"], b"Subject: x\r\n\r\n.dot\r\nend\r\n")
    assert refused == {}
    assert sink.wait_for_messages(1) == [
        Received("a@b", ["c@d", "e@f"], ["size=25"], b"Subject: x\r\n\r\n.dot\r\nend\r\n")
    ]
    assert sink.messages[0].reply == "250 OK" and not sink.messages[0].tls
    sink.wait_for_sessions(1, closed=True)
    assert sink.commands[1:] == ["MAIL FROM:<a@b> size=25", "RCPT TO:<c@d>", "RCPT TO:<e@f>", "DATA", "QUIT"]
    assert sink.events == ["connect", "close"]


def test_null_sender_and_mail_parameters_as_sent(sink: Sink) -> None:
    with RawSmtp(sink.port) as raw:
        raw.start_data("", "c@d")
        raw.send(b"hi\r\n.\r\n")
        assert raw.reply() == "250 OK"
        assert raw.cmd("MAIL FROM:<a@b> BODY=8BITMIME SMTPUTF8 AUTH=<>").startswith("250")
        assert raw.cmd("MAIL FROM:<x@y>").startswith("503")  # nested MAIL, as a real server says
    assert [m.mail_from for m in sink.messages] == [""]
    assert sink.commands[-2] == "MAIL FROM:<a@b> BODY=8BITMIME SMTPUTF8 AUTH=<>"


def test_default_ehlo_extensions(sink: Sink) -> None:
    with RawSmtp(sink.port) as raw:
        assert raw.reply().startswith("220 sink.localhost")
        assert ehlo_keywords(raw.cmd("EHLO me")) == ["SIZE 33554432", "8BITMIME", "SMTPUTF8", "PIPELINING"]


def test_chosen_ehlo_extensions(downstream) -> None:
    sink = downstream(Sink, ehlo_extensions=["CHUNKING", "BINARYMIME", "DSN"], size=None)
    with RawSmtp(sink.port) as raw:
        raw.reply()
        assert ehlo_keywords(raw.cmd("EHLO me")) == ["CHUNKING", "BINARYMIME", "DSN"]


def test_ehlo_reply_then_helo(downstream) -> None:
    sink = downstream(Sink, ehlo_reply=(502, "no EHLO here"))
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        client.sendmail("a@b", ["c@d"], b"x\r\n")  # smtplib falls back to HELO
    assert sink.commands[:2] == ["EHLO " + sink.commands[0].split()[1], "HELO " + sink.commands[1].split()[1]]
    assert len(sink.messages) == 1


def test_pipelined_commands_answered_in_order(sink: Sink) -> None:
    with RawSmtp(sink.port) as raw:
        raw.reply()
        raw.cmd("EHLO me")
        raw.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\n")
        assert [raw.reply(), raw.reply(), raw.reply()] == ["250 OK"] * 3


def test_mail_reply(downstream) -> None:
    sink = downstream(Sink, mail_reply=(452, "mailbox busy"))
    with RawSmtp(sink.port) as raw:
        raw.reply()
        raw.cmd("EHLO me")
        assert raw.cmd("MAIL FROM:<a@b>") == "452 mailbox busy"
        assert raw.cmd("RCPT TO:<c@d>").startswith("503")  # no transaction began
    sink.configure(mail_reply=lambda address, options: "553 bad sender" if address == "bad@x" else None)
    with RawSmtp(sink.port) as raw:
        raw.reply()
        raw.cmd("EHLO me")
        assert raw.cmd("MAIL FROM:<bad@x> BODY=7BIT") == "553 bad sender"
        assert raw.cmd("MAIL FROM:<good@x>") == "250 OK"


def test_rcpt_replies_and_accepted_recipients(downstream) -> None:
    sink = downstream(Sink, rcpt_replies={"no@x": (550, "no such user"), "later@x": (450, "try later")})
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        refused = client.sendmail("a@b", ["yes@x", "no@x", "later@x"], b"x\r\n")
    assert refused == {"no@x": (550, b"no such user"), "later@x": (450, b"try later")}
    assert sink.wait_for_messages(1)[0].rcpt_tos == ["yes@x"]
    sink.configure(rcpt_replies=lambda address: (551, "moved") if address.startswith("m") else None)
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        assert client.sendmail("a@b", ["mo@x", "yes@x"], b"x\r\n") == {"mo@x": (551, b"moved")}


def test_multi_line_reply(downstream) -> None:
    sink = downstream(Sink, rcpt_replies={"c@d": (550, "first line\nsecond line\nlast line")})
    assert format_reply((550, "a\nb")) == "550-a\r\n550 b"
    with RawSmtp(sink.port) as raw:
        raw.reply()
        raw.cmd("EHLO me")
        raw.cmd("MAIL FROM:<a@b>")
        assert raw.cmd("RCPT TO:<c@d>") == "550-first line\n550-second line\n550 last line"


def test_data_command_reply(downstream) -> None:
    sink = downstream(Sink, data_command_reply=(451, "no data today"))
    with RawSmtp(sink.port) as raw:
        raw.reply()
        raw.cmd("EHLO me")
        raw.cmd("MAIL FROM:<a@b>")
        raw.cmd("RCPT TO:<c@d>")
        assert raw.cmd("DATA") == "451 no data today"


def test_data_reply_changes_between_messages(sink: Sink) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        client.sendmail("a@b", ["c@d"], b"one\r\n")
        sink.configure(data_reply=(554, "rejected"))
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail("a@b", ["c@d"], b"two\r\n")
        assert info.value.smtp_code == 554
        sink.configure(data_reply=lambda message: (452, "too big") if len(message.data) > 10 else None)
        client.sendmail("a@b", ["c@d"], b"three\r\n")
        with pytest.raises(smtplib.SMTPDataError):
            client.sendmail("a@b", ["c@d"], b"four, a long one\r\n")
    assert [m.data for m in sink.messages] == [b"one\r\n", b"three\r\n"]
    assert [(m.data, m.reply) for m in sink.rejected] == [
        (b"two\r\n", "554 rejected"),
        (b"four, a long one\r\n", "452 too big"),
    ]


def test_long_data_lines_are_kept(sink: Sink) -> None:
    line = b"x" * 100_000 + b"\r\n"
    with RawSmtp(sink.port) as raw:
        raw.start_data()
        raw.send(line + b"..two dots\r\n.\r\n")
        assert raw.reply() == "250 OK"
    assert sink.messages[0].data == line + b".two dots\r\n"


def test_custom_greeting(downstream) -> None:
    sink = downstream(Sink, greeting=(220, "hello.example ESMTP custom"))
    with RawSmtp(sink.port) as raw:
        assert raw.reply() == "220 hello.example ESMTP custom"


def test_421_greeting_closes(downstream) -> None:
    sink = downstream(Sink, greeting="421 too busy")
    with pytest.raises(smtplib.SMTPConnectError) as info:
        smtplib.SMTP(sink.host, sink.port, timeout=5)
    assert info.value.smtp_code == 421
    with RawSmtp(sink.port) as raw:
        assert raw.reply() == "421 too busy"
        assert raw.closed()


# -- drops, stalls, garbage


@pytest.mark.parametrize(
    "point", ["greeting", "ehlo", "mail", "rcpt", "data", "mid-data", "end-of-data", "quit"]
)
def test_drop(downstream, point: str) -> None:
    sink = downstream(Sink, drop=point)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client = smtplib.SMTP(sink.host, sink.port, timeout=5)
        client.sendmail("a@b", ["c@d"], b"line one\r\nline two\r\n")
        client.quit()
    sink.wait_for_event("close")
    assert f"drop:{point}" in sink.events
    assert len(sink.messages) == (1 if point == "quit" else 0)
    if point == "end-of-data":
        assert [m.data for m in sink.rejected] == [b"line one\r\nline two\r\n"]


@pytest.mark.parametrize("point", ["greeting", "ehlo", "mail", "rcpt", "data", "end-of-data", "quit"])
def test_stall(downstream, point: str) -> None:
    sink = downstream(Sink, stall=point)
    with RawSmtp(sink.port, timeout=QUICK) as raw:
        with pytest.raises(TimeoutError):
            replies_until(raw, point)
        assert f"stall:{point}" in sink.events
    assert len(sink.messages) == (1 if point == "quit" else 0)


def test_unstall_answers(downstream) -> None:
    sink = downstream(Sink, stall="mail")
    with RawSmtp(sink.port, timeout=5) as raw:
        raw.reply()
        raw.cmd("EHLO me")
        raw.send(b"MAIL FROM:<a@b>\r\n")
        sink.wait_for_event("stall:mail")
        sink.configure(stall=None)
        sink.unstall()
        assert raw.reply() == "250 OK"
        assert raw.cmd("RCPT TO:<c@d>") == "250 OK"


@pytest.mark.parametrize("point", ["greeting", "ehlo", "mail", "rcpt", "data", "end-of-data", "quit"])
def test_garbage(downstream, point: str) -> None:
    sink = downstream(Sink, garbage=point)
    with RawSmtp(sink.port) as raw:
        replies = replies_until(raw, point)
    assert replies[-1] == GARBAGE
    assert all(reply[:3].isdigit() for reply in replies[:-1])
    assert f"garbage:{point}" in sink.events


def test_garbage_true_is_the_greeting(downstream) -> None:
    sink = downstream(Sink, garbage=True)
    with pytest.raises(smtplib.SMTPConnectError):
        smtplib.SMTP(sink.host, sink.port, timeout=5)


# -- BDAT


def test_bdat_chunks(downstream) -> None:
    sink = downstream(Sink, ehlo_extensions=["8BITMIME", "CHUNKING", "BINARYMIME"])
    with RawSmtp(sink.port) as raw:
        raw.reply()
        assert "CHUNKING" in ehlo_keywords(raw.cmd("EHLO me"))
        assert raw.cmd("MAIL FROM:<a@b> BODY=BINARYMIME") == "250 OK"
        raw.cmd("RCPT TO:<c@d>")
        raw.send(b"BDAT 6\r\n\x00\r\n.\n\r")
        assert raw.reply() == "250 2.0.0 6 octets received"
        raw.send(b"BDAT 3 LAST\r\nend")
        assert raw.reply() == "250 OK"
        assert raw.cmd("MAIL FROM:<a@b>") == "250 OK"
        raw.cmd("RCPT TO:<c@d>")
        raw.send(b"BDAT 0 LAST\r\n")
        assert raw.reply() == "250 OK"
    assert [(m.data, m.command, m.mail_options) for m in sink.messages] == [
        (b"\x00\r\n.\n\rend", "BDAT", ["BODY=BINARYMIME"]),
        (b"", "BDAT", []),
    ]


def test_bdat_refused_without_chunking(sink: Sink) -> None:
    with RawSmtp(sink.port) as raw:
        raw.start_data()
        raw.send(b".\r\n")
        raw.reply()
        assert raw.cmd("BDAT 1 LAST").startswith("500")


def test_bdat_drop_mid_data(downstream) -> None:
    sink = downstream(Sink, ehlo_extensions=["CHUNKING"], drop="mid-data")
    with RawSmtp(sink.port) as raw:
        raw.reply()
        raw.cmd("EHLO me")
        raw.cmd("MAIL FROM:<a@b>")
        raw.cmd("RCPT TO:<c@d>")
        raw.send(b"BDAT 2\r\nab")
        assert raw.closed()
    assert "drop:mid-data" in sink.events


# -- TLS


def test_starttls_with_the_ca(downstream) -> None:
    sink = downstream(Sink, tls="starttls")
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        client.starttls(context=sink.certs.client_context())
        client.ehlo()
        assert not client.has_extn("starttls")
        client.sendmail("a@b", ["c@d"], b"secret\r\n")
    assert sink.messages[0].tls
    session = sink.sessions[0]
    assert session.tls_version in ("TLSv1.2", "TLSv1.3") and session.client_cert is None
    assert not sink.client_cert_presented
    assert sink.ca_pem.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert b"PRIVATE KEY" in sink.cert_pem.read_bytes()


def test_starttls_client_certificate(downstream) -> None:
    sink = downstream(Sink, tls="starttls")
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        client.starttls(context=sink.certs.client_context(client_cert=True))
        client.ehlo()
        client.noop()
    sink.wait_for_event("tls")
    assert sink.client_cert_presented
    assert dict(x[0] for x in sink.sessions[0].client_cert["subject"])["commonName"] == "client.test"
    assert b"PRIVATE KEY" in sink.client_pem.read_bytes() and b"CERTIFICATE" in sink.client_pem.read_bytes()


def test_required_client_certificate(downstream) -> None:
    sink = downstream(Sink, tls="implicit", require_client_cert=True)
    with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
        with smtplib.SMTP_SSL(sink.host, sink.port, timeout=5, context=sink.certs.client_context()) as client:
            client.noop()  # TLS 1.3: the server's refusal arrives after the handshake
    sink.wait_for_event("tls-failed")
    with smtplib.SMTP_SSL(
        sink.host, sink.port, timeout=5, context=sink.certs.client_context(client_cert=True)
    ) as client:
        assert client.noop()[0] == 250
    assert sink.client_cert_presented


def test_implicit_tls(downstream) -> None:
    sink = downstream(Sink, tls="implicit")
    with smtplib.SMTP_SSL(sink.host, sink.port, timeout=5, context=sink.certs.client_context()) as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        client.sendmail("a@b", ["c@d"], b"over tls\r\n")
    assert sink.messages[0].tls


def test_implicit_tls_with_aiosmtplib(downstream) -> None:
    sink = downstream(Sink, tls="implicit", auth={"alice": "pw"})

    async def send() -> None:
        client = aiosmtplib.SMTP(
            hostname="localhost",
            port=sink.port,
            use_tls=True,
            tls_context=sink.certs.client_context(),
            timeout=5,
        )
        async with client:
            await client.login("alice", "pw")
            await client.sendmail("a@b", ["c@d"], b"hi\r\n")

    asyncio.run(send())
    assert sink.wait_for_messages(1)[0].auth == "alice"


@pytest.mark.parametrize("cert", ["wrong-name", "expired", "untrusted", "self-signed"])
def test_bad_certificate_rejected_by_a_verifying_client(downstream, cert: str) -> None:
    sink = downstream(Sink, tls="starttls", cert=cert)
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        with pytest.raises(ssl.SSLCertVerificationError):
            client.starttls(context=sink.certs.client_context())
    sink.wait_for_event("tls-failed")
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        client.starttls(context=sink.certs.client_context(verify=False))  # the server itself works
        client.sendmail("a@b", ["c@d"], b"x\r\n")
    assert len(sink.messages) == 1


def test_implicit_tls_bad_certificate(downstream) -> None:
    sink = downstream(Sink, tls="implicit", cert="wrong-name")
    with pytest.raises(ssl.SSLCertVerificationError):
        smtplib.SMTP_SSL(sink.host, sink.port, timeout=5, context=sink.certs.client_context())
    sink.wait_for_event("tls-failed")
    assert sink.sessions == []


def test_starttls_reply(downstream) -> None:
    sink = downstream(Sink, tls="starttls", starttls_reply=(454, "TLS not available now"))
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPResponseException) as info:
            client.starttls(context=sink.certs.client_context())
        assert info.value.smtp_code == 454


def test_require_starttls(downstream) -> None:
    sink = downstream(Sink, tls="starttls", require_starttls=True)
    with RawSmtp(sink.port) as raw:
        raw.reply()
        raw.cmd("EHLO me")
        assert raw.cmd("MAIL FROM:<a@b>").startswith("530")


# -- AUTH


def cram(secret: str, challenge_line: str, digest: str, ident: str = "alice") -> str:
    challenge = base64.b64decode(challenge_line[4:])
    answer = f"{ident} {hmac.new(secret.encode(), challenge, digest).hexdigest()}"
    return base64.b64encode(answer.encode()).decode()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_auth_with_smtplib(downstream, mechanism: str) -> None:
    sink = downstream(Sink, auth={"alice": "s3cret"}, mechanisms=[mechanism], require_auth=True)
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        client.ehlo()
        assert client.esmtp_features["auth"] == f" {mechanism}"
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            client.sendmail("a@b", ["c@d"], b"x\r\n")
        assert info.value.smtp_code == 530
        client.rset()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("alice", "wrong")
        client.login("alice", "s3cret")
        client.sendmail("a@b", ["c@d"], b"x\r\n")
    assert sink.auths == [AuthAttempt(mechanism, "alice", False), AuthAttempt(mechanism, "alice", True)]
    assert sink.sessions[0].auth == (mechanism, "alice")
    assert sink.messages[0].auth == "alice"


@pytest.mark.parametrize("mechanism", ["CRAM-SHA1", "CRAM-SHA256", "CRAM-SHA512"])
def test_auth_cram_sha(downstream, mechanism: str) -> None:
    sink = downstream(
        Sink, auth={"alice": "pw"}, mechanisms=["CRAM-SHA512", "CRAM-SHA256", "CRAM-SHA1", "CRAM-MD5"]
    )
    digest = mechanism.removeprefix("CRAM-").lower()
    with RawSmtp(sink.port) as raw:
        raw.reply()
        assert "AUTH CRAM-SHA512 CRAM-SHA256 CRAM-SHA1 CRAM-MD5" in ehlo_keywords(raw.cmd("EHLO me"))
        challenge = raw.cmd(f"AUTH {mechanism}")
        assert challenge.startswith("334 ")
        assert base64.b64decode(challenge[4:]).decode().endswith("@sink.localhost>")
        assert raw.cmd(cram("pw", challenge, digest)).startswith("235")
    assert sink.auths == [AuthAttempt(mechanism, "alice", True)]


def test_auth_cram_md5_with_aiosmtplib(downstream) -> None:
    sink = downstream(Sink, auth={"bob": "pw"}, mechanisms=["CRAM-MD5"])

    async def login() -> None:
        async with aiosmtplib.SMTP(
            hostname="127.0.0.1", port=sink.port, start_tls=False, timeout=5
        ) as client:
            await client.ehlo()
            await client.auth_crammd5("bob", "pw")

    asyncio.run(login())
    assert sink.auths == [AuthAttempt("CRAM-MD5", "bob", True)]


def test_auth_xoauth2(downstream) -> None:
    sink = downstream(Sink, auth={"carol": "token-1"}, mechanisms=["XOAUTH2"])
    good = base64.b64encode(b"user=carol\x01auth=Bearer token-1\x01\x01").decode()
    bad = base64.b64encode(b"user=carol\x01auth=Bearer nope\x01\x01").decode()
    with RawSmtp(sink.port) as raw:
        raw.reply()
        raw.cmd("EHLO me")
        assert raw.cmd(f"AUTH XOAUTH2 {bad}").startswith("535")
        assert raw.cmd(f"AUTH XOAUTH2 {good}").startswith("235")
    assert [a.ok for a in sink.auths] == [False, True]


def test_auth_cancelled_gets_one_reply(downstream) -> None:
    sink = downstream(Sink, auth={"alice": "pw"}, mechanisms=["PLAIN", "LOGIN", "CRAM-MD5"])
    with RawSmtp(sink.port) as raw:
        raw.reply()
        raw.cmd("EHLO me")
        for mechanism in ("PLAIN", "LOGIN", "CRAM-MD5"):
            assert raw.cmd(f"AUTH {mechanism}").startswith("334")
            assert raw.cmd("*").startswith("501")
            assert raw.cmd("NOOP") == "250 OK"  # no second reply to the "*"
        assert raw.cmd("AUTH DIGEST-MD5").startswith("504")


def test_auth_parameter_of_mail_recorded(downstream) -> None:
    sink = downstream(Sink, auth={"alice": "pw"}, mechanisms=["PLAIN"])
    with RawSmtp(sink.port) as raw:
        raw.reply()
        raw.cmd("EHLO me")
        assert raw.cmd("AUTH PLAIN " + base64.b64encode(b"\0alice\0pw").decode()).startswith("235")
        raw.cmd("MAIL FROM:<a@b> AUTH=alice+2Bx")
        raw.cmd("RCPT TO:<c@d>")
        raw.cmd("DATA")
        raw.send(b"x\r\n.\r\n")
        assert raw.reply() == "250 OK"
    assert sink.messages == [Received("a@b", ["c@d"], ["AUTH=alice+2Bx"], b"x\r\n")]


def test_auth_only_after_tls(downstream) -> None:
    sink = downstream(Sink, tls="starttls", auth={"alice": "pw"}, auth_require_tls=True)
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        client.ehlo()
        assert not client.has_extn("auth")
        client.starttls(context=sink.certs.client_context())
        client.ehlo()
        assert client.esmtp_features["auth"] == " PLAIN LOGIN CRAM-MD5"
        client.login("alice", "pw")


def test_no_auth_configured(sink: Sink) -> None:
    with RawSmtp(sink.port) as raw:
        raw.reply()
        assert not any(k.startswith("AUTH") for k in ehlo_keywords(raw.cmd("EHLO me")))
        assert raw.cmd("AUTH PLAIN AGFsaWNlAHB3").startswith("504")


# -- SOCKS


class SocksSMTP(smtplib.SMTP):
    """smtplib through a SOCKS4 proxy (python-socks)."""

    def __init__(self, proxy: Proxy, host: str, port: int) -> None:
        self.proxy = proxy
        super().__init__(host, port, timeout=5)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = self.proxy.connect(dest_host=host, dest_port=port, timeout=timeout)
        sock.settimeout(timeout)
        return sock


def test_socks4a_with_python_socks(sink: Sink, downstream) -> None:
    proxy = downstream(Socks4Proxy)
    client_proxy = Proxy(ProxyType.SOCKS4, proxy.host, proxy.port, rdns=True)
    with SocksSMTP(client_proxy, "localhost", sink.port) as client:
        client.sendmail("a@b", ["c@d"], b"via socks\r\n")
    assert proxy.requests == [SocksRequest("localhost", sink.port, "", True)]
    assert sink.messages[0].data == b"via socks\r\n"


def test_socks4_numeric(sink: Sink, downstream) -> None:
    proxy = downstream(Socks4Proxy)
    client_proxy = Proxy(ProxyType.SOCKS4, proxy.host, proxy.port, rdns=False)
    with SocksSMTP(client_proxy, "127.0.0.1", sink.port) as client:
        client.noop()
    assert proxy.requests == [SocksRequest("127.0.0.1", sink.port, "", False)]


def test_socks4a_request_as_emailrelay_sends_it(sink: Sink, downstream) -> None:
    """GNet::Socks::buildPdu: version 4, CONNECT, port, 0.0.0.1, empty userid, far host."""
    proxy = downstream(Socks4Proxy, target=sink.port)
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        sock.sendall(
            b"\x04\x01" + (25).to_bytes(2, "big") + b"\x00\x00\x00\x01" + b"\x00" + b"smtp.example.com\x00"
        )
        assert sock.recv(8)[:2] == b"\x00\x5a"
        assert sock.recv(100).startswith(b"220 sink.localhost")
    assert proxy.wait_for_requests(1) == [SocksRequest("smtp.example.com", 25, "", True)]


def test_socks_rejects(sink: Sink, downstream) -> None:
    refusing = downstream(Socks4Proxy, reject=True)
    with pytest.raises(ProxyError):
        Proxy(ProxyType.SOCKS4, refusing.host, refusing.port, rdns=True).connect(
            "localhost", sink.port, timeout=5
        )
    loopback_only = downstream(Socks4Proxy)
    with pytest.raises(ProxyError):
        Proxy(ProxyType.SOCKS4, loopback_only.host, loopback_only.port, rdns=True).connect(
            "smtp.example.com", 25, timeout=5
        )
    assert loopback_only.requests == [SocksRequest("smtp.example.com", 25, "", True)]
    assert sink.sessions == []


# -- BareSink


def test_bare_sink_huge_ehlo_reply(downstream) -> None:
    async def huge_ehlo(conn: BareConnection) -> None:
        await conn.reply(220, "bare")
        await conn.expect("EHLO")
        await conn.reply((250, "\n".join(["x" * 70] * 400)))
        await conn.serve()

    bare = downstream(BareSink, huge_ehlo)
    with RawSmtp(bare.port) as raw:
        assert raw.reply() == "220 bare"
        reply = raw.cmd("EHLO me")
        assert len(reply) > 20_000 and reply.endswith("250 " + "x" * 70)
        assert raw.cmd("QUIT") == "221 bye"
    assert bare.commands == ["EHLO me", "QUIT"]


def test_bare_sink_serves_data_and_bdat(downstream) -> None:
    bare = downstream(BareSink)
    with smtplib.SMTP(bare.host, bare.port, timeout=5) as client:
        client.ehlo()
        assert client.has_extn("chunking")
        client.sendmail("a@b", ["c@d"], b"..x\r\n")
    with RawSmtp(bare.port) as raw:
        raw.reply()
        raw.cmd("EHLO me")
        raw.cmd("MAIL FROM:<a@b> BODY=BINARYMIME")
        raw.cmd("RCPT TO:<c@d>")
        raw.send(b"BDAT 2 LAST\r\n\r\n")
        assert raw.reply() == "250 ok"
    assert [(m.data, m.command, m.mail_options) for m in bare.wait_for_messages(2)] == [
        (b"..x\r\n", "DATA", []),
        (b"\r\n", "BDAT", ["BODY=BINARYMIME"]),
    ]


def test_bare_sink_hold_and_split_reply(downstream) -> None:
    async def slow(conn: BareConnection) -> None:
        await conn.send(b"220-first half\r\n")
        await conn.hold()
        await conn.send(b"220 second half\r\n")

    bare = downstream(BareSink, slow)
    with RawSmtp(bare.port, timeout=5) as raw:
        assert raw.line() == b"220-first half"
        bare.wait_for_event("hold")
        bare.unstall()
        assert raw.line() == b"220 second half"


def test_bare_sink_script_error_recorded() -> None:
    async def broken(conn: BareConnection) -> None:
        raise RuntimeError("script bug")

    with BareSink(broken) as bare:
        with RawSmtp(bare.port) as raw:
            assert raw.closed()
        bare.wait_for_sessions(1, closed=True)
    assert "script bug" in bare.errors[0]


# -- life


def test_stop_with_connections_open() -> None:
    """Stalled, idle, half-handshaken and proxied connections all end at stop()."""
    socks: list[socket.socket] = []
    try:
        with (
            Sink(stall="mail") as plain,
            Sink(tls="implicit") as tls,
            Socks4Proxy(target=plain.port) as proxy,
        ):
            stalled = RawSmtp(plain.port, timeout=5)
            socks.append(stalled.sock)
            stalled.reply()
            stalled.cmd("EHLO me")
            stalled.send(b"MAIL FROM:<a@b>\r\n")
            plain.wait_for_event("stall:mail")
            idle = RawSmtp(plain.port, timeout=5)
            socks.append(idle.sock)
            assert idle.reply().startswith("220")
            socks.append(socket.create_connection((tls.host, tls.port), timeout=5))  # sends no ClientHello
            proxied = socket.create_connection((proxy.host, proxy.port), timeout=5)
            socks.append(proxied)
            proxied.sendall(b"\x04\x01\x00\x19\x00\x00\x00\x01\x00far.example\x00")
            assert proxied.recv(8)[:2] == b"\x00\x5a"
            plain.wait_for_sessions(3)
        for sock in socks:
            assert sock.recv(65536) in (b"", b"220 sink.localhost test sink\r\n")
        assert plain.errors == tls.errors == proxy.errors == []
    finally:
        for sock in socks:
            sock.close()


def test_servers_in_threads_do_not_block_each_other(downstream) -> None:
    def send(sink: Sink) -> None:
        with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
            client.sendmail("a@b", ["c@d"], b"x")

    sinks = [downstream(Sink) for _ in range(3)]
    threads = [threading.Thread(target=send, args=(s,)) for s in sinks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert [len(s.wait_for_messages(1)) for s in sinks] == [1, 1, 1]
