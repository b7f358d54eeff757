"""The storage server, end to end: real emailrelay processes, real SMTP clients."""

from __future__ import annotations

import asyncio
import re
import shutil
import smtplib
import subprocess
import threading
from pathlib import Path

import aiosmtplib
import pytest

from emailrelay.envelope import parse

from .conftest import spool_files
from .smtpraw import RawSmtp

RECEIVED = re.compile(rb"^Received: from \S+ \(\[127\.0\.0\.1\]\) by \S+ with ESMTP ; [A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n")


def stored(spool: Path) -> dict[str, tuple[bytes, bytes]]:
    """Ready messages: id -> (envelope bytes, content bytes)."""
    result = {}
    for env in sorted(spool.glob("*.envelope")):
        msg_id = env.name[: -len(".envelope")]
        result[msg_id] = (env.read_bytes(), (spool / f"{msg_id}.content").read_bytes())
    return result


def body_of(content: bytes) -> bytes:
    m = RECEIVED.match(content)
    assert m, content[:200]
    return content[m.end() :]


def message(n: int, size: int = 200) -> bytes:
    body = (f"line of message {n} ".encode() * (size // 20 + 1))[:size]
    return f"Subject: test {n}\r\nX-Test-Id: {n}\r\n\r\n".encode() + body + b"\r\n"


def test_concurrent_sessions_store_every_message_with_its_envelope(relay, spool):
    r = relay()
    errors: list[BaseException] = []

    def sender(t: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", r.port, timeout=30) as s:
                for i in range(10):
                    n = t * 100 + i
                    s.sendmail(f"from{n}@example.com", [f"to{n}@example.net", f"cc{n}@example.org"], message(n))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    messages = stored(spool)
    assert len(messages) == 200
    seen = set()
    for msg_id, (env_bytes, content) in messages.items():
        assert re.fullmatch(r"emailrelay\.\d+\.\d+\.\d+", msg_id)
        env = parse(env_bytes)
        n = int(re.search(rb"X-Test-Id: (\d+)", content).group(1))
        seen.add(n)
        assert env.from_address == f"from{n}@example.com"
        assert env.to_remote == [f"to{n}@example.net", f"cc{n}@example.org"]
        assert env.to_local == []
        assert env.client == "127.0.0.1"
        assert body_of(content) == message(n)
    assert len(seen) == 200
    assert not list(spool.glob("*.new")) and not list(spool.glob("*.busy"))


def test_asyncio_clients_many_parallel_sessions(relay, spool):
    r = relay()

    async def one(n: int) -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=r.port, timeout=30) as client:
            await client.sendmail(f"a{n}@example.com", [f"b{n}@example.com"], message(n, 5000))

    async def main() -> None:
        await asyncio.gather(*(one(n) for n in range(50)))

    asyncio.run(main())
    assert len(stored(spool)) == 50


def test_envelope_matches_spec_byte_for_byte(relay, spool):
    r = relay()
    with RawSmtp(r.port) as c:
        c.reply()
        c.cmd("EHLO client.example")
        assert c.cmd("MAIL FROM:<alice@example.com> BODY=8BITMIME AUTH=<>") == "250 sender <alice@example.com> OK"
        assert c.cmd("RCPT TO:<carol@example.net>") == "250 recipient <carol@example.net> OK"
        assert c.cmd("DATA").startswith("354 ")
        assert c.cmd("Subject: x\r\n\r\nbody\r\n.") == "250 message processed"
        assert c.cmd("QUIT") == "221 OK"
    ((env_bytes, content),) = stored(spool).values()
    expected = (
        b"X-MailRelay-Format: #2821.8\r\n"
        b"X-MailRelay-Content: 8bit\r\n"
        b"X-MailRelay-From: alice@example.com\r\n"
        b"X-MailRelay-ToCount: 1\r\n"
        b"X-MailRelay-To-Remote: carol@example.net\r\n"
        b"X-MailRelay-Authentication: \r\n"
        b"X-MailRelay-Client: 127.0.0.1\r\n"
        b"X-MailRelay-ClientCertificate: \r\n"
        b"X-MailRelay-MailFromAuthIn: <>\r\n"
        b"X-MailRelay-MailFromAuthOut: \r\n"
        b"X-MailRelay-ForwardTo: \r\n"
        b"X-MailRelay-ForwardToAddress: \r\n"
        b"X-MailRelay-ClientAccountSelector: \r\n"
        b"X-MailRelay-Utf8MailboxNames: 0\r\n"
        b"X-MailRelay-End: 1\r\n"
    )
    assert env_bytes == expected
    assert RECEIVED.match(content)
    assert content.startswith(b"Received: from client.example ([127.0.0.1]) by ")
    assert body_of(content) == b"Subject: x\r\n\r\nbody\r\n"
    for path in spool.iterdir():
        assert path.stat().st_mode & 0o777 == 0o660


def test_greeting_ehlo_and_simple_commands(relay):
    r = relay("--domain", "relay.example", "--size", "1000")
    with RawSmtp(r.port) as c:
        assert re.fullmatch(r"220 relay\.example -- emailrelay \S+ \(E-MailRelay 2\.6 compatible\) -- Service ready", c.reply())
        assert c.cmd("MAIL FROM:<a@b>") == "503 command out of sequence -- use RSET to resynchronise"
        assert c.cmd("EHLO") == "501 parameter required"
        assert c.cmd("EHLO me").split("\n") == [
            "250-relay.example says hello",
            "250-SIZE 1000",
            "250-VRFY",
            "250-PIPELINING",
            "250 8BITMIME",
        ]
        assert c.cmd("HELO me") == "250 hello"
        assert c.cmd("NOOP") == "250 noop"
        assert c.cmd("HELP") == "502 command not implemented"
        assert c.cmd("EXPN x") == "502 command not implemented"
        assert c.cmd("AUTH PLAIN") == "502 command not implemented"
        assert c.cmd("STARTTLS") == "500 command unrecognized"
        assert c.cmd("BDAT 10 LAST") == "500 command unrecognized"
        assert c.cmd("VRFY") == "550 invalid mailbox"
        assert c.cmd("VRFY bob@example.com") == "252 cannot verify but will accept: bob@example.com"
        c.send(b"VRFY a\nb\x01\\\xff\r\n")  # echoed only in printable form (SPEC.md appendix B)
        assert c.reply() == "252 cannot verify but will accept: a\\nb\\x01\\\\\\xff"
        assert c.cmd("RSET") == "250 state reset"
        assert c.cmd("MAIL FROM:<a@b> SIZE=1001") == "552 message size exceeds fixed maximum message size"
        assert c.cmd("MAIL FROM:<> XUNKNOWN=1 FOO") == "250 sender <> OK"
        assert c.cmd("MAIL FROM:<a@b>") == "503 command out of sequence -- use RSET to resynchronise"
        assert c.cmd("RCPT TO:<>") == "550 invalid empty mailbox"
        assert c.cmd("DATA") == "554 no valid recipients"
        assert c.cmd("RCPT TO:<x@y>") == "503 command out of sequence -- use RSET to resynchronise"
        assert c.cmd("QUIT") == "221 OK"
        assert c.closed()


def test_anonymous_and_server_smtp_config(relay):
    r = relay("--anonymous", "--server-smtp-config", "chunking,smtputf8,-pipelining")
    with RawSmtp(r.port) as c:
        assert c.reply() == "220 greeting"
        assert c.cmd("EHLO me").split("\n") == [
            "250-smtp says hello",
            "250-CHUNKING",
            "250-BINARYMIME",
            "250-SMTPUTF8",
            "250 8BITMIME",
        ]
        assert c.cmd("VRFY x") == "252 cannot vrfy"


def test_mail_address_syntax_errors(relay):
    r = relay()
    with RawSmtp(r.port) as c:
        c.reply()
        c.cmd("EHLO me")
        assert c.cmd("MAIL FROM:a@b") == "553 mailbox name not allowed: missing angle brackets in mailbox name"
        assert c.cmd("MAIL TO:<a@b>") == "553 mailbox name not allowed: invalid mail-from command"
        assert c.cmd("MAIL FROM:<a@b>x") == "553 mailbox name not allowed: invalid angle brackets"
        assert c.cmd("MAIL FROM:<@b>") == "553 mailbox name not allowed: invalid source route in mailbox name"
        assert c.cmd("MAIL FROM:<a@>") == "553 mailbox name not allowed: invalid character in mailbox name"
        assert c.cmd("MAIL FROM:<a\x01b@c>") == "553 mailbox name not allowed: invalid character in mailbox name"
        long_address = "x" * 250 + "@example.com"
        assert c.cmd(f"MAIL FROM:<{long_address}>") == "553 mailbox name not allowed: address too long"
        assert c.cmd("MAIL FROM:<@relay.example:a@b>") == "250 sender <a@b> OK"  # source route dropped
        assert c.cmd(f"RCPT TO:<{long_address}>") == "553 mailbox name not allowed: address too long"
        assert c.cmd("RCPT TO:<b@c") == "550 invalid angle brackets in mailbox name"
        assert c.cmd("RCPT FROM:<b@c>") == "550 invalid rcpt-to command"
        assert c.cmd('RCPT TO:<"x>y"@c>') == '250 recipient <"x>y"@c> OK'


def test_too_long_command_line_is_refused_and_session_goes_on(relay):
    r = relay()
    with RawSmtp(r.port) as c:
        c.reply()
        c.send(b"NOOP " + b"x" * 5000 + b"\r\n")
        assert c.reply() == "500 line too long"
        assert c.cmd("NOOP") == "250 noop"
        c.send(b"NOOP " + b"y" * 2041 + b"\r\n")  # 2048 with CRLF: allowed
        assert c.reply() == "250 noop"
        c.send(b"NOOP " + b"y" * 2042 + b"\r\n")
        assert c.reply() == "500 line too long"
        assert c.cmd("NOOP") == "250 noop"


def test_too_many_protocol_errors_drop_the_connection(relay):
    r = relay()
    with RawSmtp(r.port) as c:
        c.reply()
        for _ in range(7):
            assert c.cmd("BOGUS") == "500 command unrecognized"
        assert c.cmd("BOGUS") == "500 command unrecognized"
        assert c.closed()


def test_oversize_message_is_refused_and_removed(relay, spool):
    r = relay("--size", "2000")
    with RawSmtp(r.port) as c:
        c.start_data()
        c.send(b"Subject: big\r\n\r\n" + b"0123456789" * 1000 + b"\r\n.\r\n")
        assert c.reply() == "552 message size exceeds fixed maximum message size"
        assert spool_files(spool) == []
        # the session is still usable, and a message within the limit is stored
        c.cmd("MAIL FROM:<a@b>")
        c.cmd("RCPT TO:<c@d>")
        c.cmd("DATA")
        assert c.cmd("Subject: small\r\n\r\nok\r\n.") == "250 message processed"
    assert len(stored(spool)) == 1


def test_message_of_exactly_size_bytes_is_accepted_one_more_is_not(relay, spool):
    r = relay("--size", "400", "--anonymous=content")  # no Received line: sizes are exact
    with RawSmtp(r.port) as c:
        c.reply()
        c.cmd("EHLO h")
        for size, reply in ((400, "250 message processed"), (401, "552 message size exceeds fixed maximum message size")):
            c.cmd("MAIL FROM:<a@b>")
            c.cmd("RCPT TO:<c@d>")
            c.cmd("DATA")
            c.send(b"x" * (size - 2) + b"\r\n.\r\n")
            assert c.reply() == reply
    ((_, content),) = stored(spool).values()
    assert len(content) == 400


@pytest.mark.parametrize(
    "smuggle",
    [b"\n.\n", b"\r.\n", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r"],
    ids=["lf-dot-lf", "cr-dot-lf", "lf-dot-crlf", "crlf-dot-lf", "crlf-dot-cr"],
)
def test_only_crlf_dot_crlf_ends_a_message(relay, spool, smuggle):
    r = relay()
    with RawSmtp(r.port) as c:
        c.start_data()
        payload = b"Subject: s\r\n\r\nbefore" + smuggle + b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nevil\r\n"
        c.send(payload + b".\r\n")
        assert c.reply() == "250 message processed"
        assert c.cmd("NOOP") == "250 noop"
    messages = stored(spool)
    assert len(messages) == 1
    ((env, content),) = messages.values()
    assert parse(env).to_remote == ["c@d"]
    # a line that starts with a dot loses it (dot-unstuffing), whatever ends the line
    assert body_of(content) == payload.replace(b"\r\n.", b"\r\n")


def test_dot_stuffing_is_removed(relay, spool):
    r = relay()
    with smtplib.SMTP("127.0.0.1", r.port) as s:
        s.sendmail("a@b", ["c@d"], b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend")
    ((_, content),) = stored(spool).values()
    assert body_of(content) == b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n"


def test_data_lines_of_any_length_are_stored(relay, spool):
    r = relay()
    long_line = b"z" * 300_000
    with RawSmtp(r.port) as c:
        c.start_data()
        c.send(b"Subject: long\r\n\r\n" + long_line + b"\r\n.\r\n")
        assert c.reply() == "250 message processed"
    ((_, content),) = stored(spool).values()
    assert body_of(content) == b"Subject: long\r\n\r\n" + long_line + b"\r\n"


def test_disconnect_mid_data_leaves_no_files(relay, spool):
    r = relay()
    with RawSmtp(r.port) as c:
        c.start_data()
        c.send(b"Subject: cut\r\n\r\n" + b"partial " * 10000)
    r.wait_for("smtp connection closed")
    assert spool_files(spool) == []


def test_rset_and_new_ehlo_drop_the_transaction(relay, spool):
    r = relay()
    with RawSmtp(r.port) as c:
        c.reply()
        c.cmd("EHLO me")
        c.cmd("MAIL FROM:<a@b>")
        c.cmd("RCPT TO:<c@d>")
        assert c.cmd("RSET") == "250 state reset"
        assert spool_files(spool) == []
        c.cmd("MAIL FROM:<a@b>")
        c.cmd("RCPT TO:<c@d>")
        c.cmd("EHLO again")
        assert spool_files(spool) == []


def test_binarymime_needs_bdat(relay, spool):
    r = relay("--server-smtp-config", "chunking")
    with RawSmtp(r.port) as c:
        c.reply()
        c.cmd("EHLO me")
        c.cmd("MAIL FROM:<a@b> BODY=BINARYMIME")
        c.cmd("RCPT TO:<c@d>")
        assert c.cmd("DATA") == "503 invalid data command with binarymime -- use RSET to resynchronise"
        assert c.cmd("MAIL FROM:<a@b>") == "503 command out of sequence -- use RSET to resynchronise"
        assert c.cmd("RSET") == "250 state reset"
        assert c.cmd("MAIL FROM:<a@b> BODY=BINARYMIME") == "250 sender <a@b> OK"
        c.cmd("RCPT TO:<c@d>")
        c.send(b"BDAT 5\r\nhello")
        assert c.reply() == "250 5 bytes received"
        c.send(b"BDAT 8 LAST\r\n\x00\r\n.\r\n\xff\n")
        assert c.reply() == "250 message processed"
        assert c.cmd("BDAT 0") == "503 command out of sequence -- use RSET to resynchronise"
    ((env, content),) = stored(spool).values()
    assert parse(env).content == "binarymime"
    assert body_of(content) == b"hello\x00\r\n.\r\n\xff\n"


def test_bdat_errors(relay, spool):
    r = relay("--server-smtp-config", "chunking")
    with RawSmtp(r.port) as c:
        c.reply()
        c.cmd("EHLO me")
        c.cmd("MAIL FROM:<a@b>")
        assert c.cmd("BDAT 3 LAST") == "554 no valid recipients"
        c.cmd("MAIL FROM:<a@b>")
        c.cmd("RCPT TO:<c@d>")
        assert c.cmd("BDAT x") == "501 invalid argument"
        assert c.cmd("RSET") == "250 state reset"
        c.cmd("MAIL FROM:<a@b>")
        c.cmd("RCPT TO:<c@d>")
        assert c.cmd("BDAT 0") == "501 invalid argument"
    assert spool_files(spool) == []


def test_pipelined_commands_get_replies_in_order(relay, spool):
    r = relay()
    with RawSmtp(r.port) as c:
        c.reply()
        c.send(
            b"EHLO me\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n"
            b"Subject: p\r\n\r\nx\r\n.\r\nMAIL FROM:<g@h>\r\nRCPT TO:<i@j>\r\nDATA\r\ny\r\n.\r\nQUIT\r\n"
        )
        replies = [c.reply() for _ in range(10)]
    assert replies[0].endswith("250 8BITMIME")
    assert replies[1:] == [
        "250 sender <a@b> OK",
        "250 recipient <c@d> OK",
        "250 recipient <e@f> OK",
        "354 start mail input -- end with <CRLF>.<CRLF>",
        "250 message processed",
        "250 sender <g@h> OK",
        "250 recipient <i@j> OK",
        "354 start mail input -- end with <CRLF>.<CRLF>",
        "250 message processed",
    ]
    assert len(stored(spool)) == 2


def test_utf8_domain_is_stored_as_alabels(relay, spool):
    r = relay("--server-smtp-config", "smtputf8")
    with RawSmtp(r.port) as c:
        c.reply()
        c.cmd("EHLO me")
        c.send("MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\n".encode())
        assert c.reply() == "250 sender <jörg@bücher.example> OK"
        c.send("RCPT TO:<anna@münchen.example>\r\n".encode())
        assert c.reply() == "250 recipient <anna@münchen.example> OK"
        c.cmd("DATA")
        assert c.cmd("x\r\n.") == "250 message processed"
    ((env, _),) = stored(spool).values()
    e = parse(env)
    assert e.from_address == "jörg@xn--bcher-kva.example"
    assert e.to_remote == ["anna@xn--mnchen-3ya.example"]
    assert e.utf8_mailbox_names is True


def test_idle_timeout_closes_a_silent_connection(relay):
    r = relay("--idle-timeout", "1")
    with RawSmtp(r.port) as c:
        c.reply()
        assert c.closed()
    r.wait_for("smtp connection closed: idle timeout")


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is installed by .ci/run")
def test_swaks_delivers_with_pipelining(relay, spool):
    r = relay()
    result = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(r.port), "--from", "s@example.com",
         "--to", "r1@example.net,r2@example.net", "--pipeline", "--body", "hello from swaks"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<-  250 message processed" in result.stdout
    ((env, content),) = stored(spool).values()
    e = parse(env)
    assert (e.from_address, e.to_remote) == ("s@example.com", ["r1@example.net", "r2@example.net"])
    assert b"hello from swaks" in content


def test_log_format_puts_time_and_peer_on_session_lines(relay):
    r = relay("--log-format", "address,port", "--log-time", "-v")
    with smtplib.SMTP("127.0.0.1", r.port) as s:
        s.noop()
        port = s.sock.getsockname()[1]
    r.wait_for(rf"^emailrelay: \d{{8}}\.\d{{6}}\.\d{{3}}: info: 127\.0\.0\.1;{port}: smtp connection from 127\.0\.0\.1:{port}$")
    r.wait_for(rf"^emailrelay: \S+: info: 127\.0\.0\.1;{port}: rx<<: \"noop\"$")
    r.wait_for(rf"^emailrelay: \S+: info: 127\.0\.0\.1;{port}: tx>>: \"250 noop\"$")


def test_unknown_server_smtp_config_item_is_logged(relay):
    r = relay("--server-smtp-config", "frobnicate")
    r.wait_for(r"^emailrelay: warning: .*unknown smtp-config item \[frobnicate\]")


def test_debug_logs_every_state_change(relay):
    r = relay("--debug")
    with smtplib.SMTP("127.0.0.1", r.port) as s:
        s.sendmail("a@b", ["c@d"], b"Subject: x\r\n\r\ny\r\n")
    for change in ("start -> idle", "idle -> got-mail", "got-mail -> got-rcpt", "got-rcpt -> data", "data -> idle"):
        r.wait_for(rf"^emailrelay: debug: smtp state: {change}$")


def test_interface_names_are_resolved_at_start_up(spool):
    from .conftest import Relay, command

    r = Relay([command("emailrelay"), "--log", "--no-daemon", "--port", "0", "--interface", "lo-ipv4,nosuchif9",
               "--spool-dir", str(spool)], spool)
    try:
        r.started()
        r.wait_for('warning: no addresses bound to named network interface "nosuchif9"')
        assert r.count(r"smtp server on ") == 1
        with smtplib.SMTP("127.0.0.1", r.port) as s:
            assert s.noop()[0] == 250
    finally:
        r.stop()


def test_named_instances_are_served_by_one_process(tmp_path):
    """OPTIONS.md section 5: --<unit>-<option>, one process, each instance its own spool and port."""
    import smtplib as _smtplib

    from .conftest import Relay, as_user, command, daemon_dir

    spools = {name: daemon_dir(tmp_path / name) for name in ("in", "out")}
    r = Relay([command("emailrelay"), "--log", "--no-daemon", *as_user([]),
               "--in-spool-dir", str(spools["in"]), "--in-port", "0", "--in-interface", "127.0.0.1",
               "--out-spool-dir", str(spools["out"]), "--out-port", "0", "--out-interface", "127.0.0.1",
               "--out-log-format", "unit"], spools["in"])
    try:
        ports = {name: int(r.wait_for(rf"\[{name}\] smtp server on 127\.0\.0\.1:(\d+)").group(1)) for name in ("in", "out")}
        for name, port in ports.items():
            with _smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                smtp.sendmail("a@example.com", [f"{name}@example.net"], f"Subject: {name}\r\n\r\nx\r\n")
        for name, spool in spools.items():
            (envelope,) = spool.glob("*.envelope")
            assert f"X-MailRelay-To-Remote: {name}@example.net" in envelope.read_text()
        r.wait_for(r"^emailrelay: info: \[out\] smtp connection from")  # the unit's own --log-format
        assert r.count(r"^emailrelay: info: \[in\] smtp connection from") == 0
    finally:
        assert r.stop() == 143
