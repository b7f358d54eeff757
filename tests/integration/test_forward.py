"""Forwarding, end to end: a real emailrelay process and real downstream servers."""

from __future__ import annotations

import re
import signal
import smtplib
import subprocess
import threading
from pathlib import Path

import pytest

from emailrelay.envelope import Envelope, parse
from emailrelay.spool import Spool

from .conftest import Relay, as_user, command
from .downstream import Received, Sink, Socks4Proxy, downstream_fixture

downstream = downstream_fixture()
GOLDEN = Path(__file__).parent.parent / "golden" / "envelopes"


def store(spool: Path, data: bytes = b"Subject: test\r\n\r\nhello\r\n", **fields: object) -> str:
    """Put one message into the spool with the library (as the server would)."""
    envelope = Envelope(**{"from_address": "a@example.com", "to_remote": ["b@example.net"], "client": "127.0.0.1", **fields})
    s = Spool(spool, fsync=False)
    msg = s.create()
    msg.write(data)
    s.commit_sync(msg, envelope)
    return msg.id


def as_client(spool: Path, address: str, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [command("emailrelay"), "--as-client", address, "--spool-dir", str(spool), *as_user(extra)],
        capture_output=True, timeout=timeout,
    )


def states(spool: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"ready": [], "busy": [], "bad": [], "content": []}
    for p in sorted(spool.iterdir()):
        for suffix, key in ((".envelope", "ready"), (".envelope.busy", "busy"), (".envelope.bad", "bad"), (".content", "content")):
            if p.name.endswith(suffix):
                out[key].append(p.name[: -len(suffix)])
    return out


def bad_envelope(spool: Path, msg_id: str) -> tuple[Envelope, list[str]]:
    env = parse((spool / f"{msg_id}.envelope.bad").read_bytes())
    return env, env.extra_lines


def test_as_client_forwards_everything_and_empties_the_spool(downstream, spool):
    sink = downstream(Sink)
    ids = [store(spool, f"Subject: {n}\r\n\r\nbody {n}\r\n".encode(), to_remote=[f"r{n}@example.net", "cc@example.org"]) for n in range(3)]
    result = as_client(spool, sink.address)
    assert result.returncode == 0, result.stderr
    assert sink.wait_for_messages(3) == [
        Received("a@example.com", [f"r{n}@example.net", "cc@example.org"], [], f"Subject: {n}\r\n\r\nbody {n}\r\n".encode())
        for n in range(3)
    ]
    assert states(spool) == {"ready": [], "busy": [], "bad": [], "content": []}
    assert len(sink.sessions) == 1  # one connection carries every message
    assert ids


def test_content_is_sent_with_crlf_and_dot_stuffing(downstream, spool):
    sink = downstream(Sink)
    store(spool, b"Subject: dots\n\n.one\r\n..two\rthree\n.\nlast line without newline")
    assert as_client(spool, sink.address).returncode == 0
    (message,) = sink.wait_for_messages(1)
    assert message.data == b"Subject: dots\r\n\r\n.one\r\n..two\r\nthree\r\n.\r\nlast line without newline\r\n"


def test_empty_spool_says_no_messages_to_send(spool):
    result = as_client(spool, "127.0.0.1:9")
    assert (result.returncode, result.stderr.decode().splitlines()[-1]) == (0, "emailrelay: no messages to send")


def test_unreachable_next_hop_leaves_the_message_ready_and_exits_1(downstream, spool):
    sink = downstream(Sink)
    port = sink.port
    sink.stop()
    msg_id = store(spool)
    before = (spool / f"{msg_id}.envelope").read_bytes()
    result = as_client(spool, f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert result.stderr.decode().splitlines()[-1] == (
        f"emailrelay: error: connect failure: cannot connect to 127.0.0.1:{port}: connection refused"
    )
    assert states(spool)["ready"] == [msg_id]
    assert (spool / f"{msg_id}.envelope").read_bytes() == before


def test_refused_recipient_fails_the_message_keeping_every_recipient(downstream, spool):
    sink = downstream(Sink, rcpt_replies={"no@example.net": (550, "5.1.1 no such user")})
    msg_id = store(spool, to_remote=["yes@example.net", "no@example.net"])
    assert as_client(spool, sink.address).returncode == 0
    assert sink.messages == []
    env, extra = bad_envelope(spool, msg_id)
    assert env.to_remote == ["yes@example.net", "no@example.net"]
    assert extra == [
        "X-MailRelay-Reason: one or more recipients rejected",
        "X-MailRelay-ReasonCode: 550",
        "X-MailRelay-ReasonKind: permanent",
    ]


def test_forward_to_some_sends_to_the_others_and_keeps_the_refused(downstream, spool):
    sink = downstream(Sink, rcpt_replies={"no@example.net": (450, "try later")})
    msg_id = store(spool, to_remote=["yes@example.net", "no@example.net"])
    assert as_client(spool, sink.address, "--forward-to-some").returncode == 0
    assert [m.rcpt_tos for m in sink.wait_for_messages(1)] == [["yes@example.net"]]
    env, extra = bad_envelope(spool, msg_id)
    assert env.to_remote == ["no@example.net"]
    assert extra[:2] == ["X-MailRelay-Reason: one or more recipients rejected", "X-MailRelay-ReasonCode: 450"]


@pytest.mark.parametrize(("code", "kind"), [(452, "temporary"), (554, "permanent")])
def test_rejected_content_goes_bad_with_reason_and_code(downstream, spool, code, kind):
    sink = downstream(Sink, data_reply=(code, "no thanks"))
    msg_id = store(spool)
    assert as_client(spool, sink.address).returncode == 0
    _, extra = bad_envelope(spool, msg_id)
    assert extra == ["X-MailRelay-Reason: no thanks", f"X-MailRelay-ReasonCode: {code}", f"X-MailRelay-ReasonKind: {kind}"]


def test_opt_in_retry_resends_temporary_failures_only(downstream, spool):
    sink = downstream(Sink, data_reply=lambda m: (452, "later") if b"temp" in m.data else (554, "never"))
    temp = store(spool, b"Subject: temp\r\n\r\nx\r\n")
    perm = store(spool, b"Subject: perm\r\n\r\nx\r\n")
    retry = ("--retry-limit", "2", "--retry-interval", "0")
    assert as_client(spool, sink.address, *retry).returncode == 0
    assert sorted(states(spool)["bad"]) == sorted([temp, perm])
    sink.configure(data_reply=lambda m: None if b"temp" in m.data else (554, "never"))
    assert as_client(spool, sink.address, *retry).returncode == 0
    assert [m.data for m in sink.messages] == [b"Subject: temp\r\n\r\nx\r\n"]
    assert states(spool)["bad"] == [perm]
    # without the option nothing comes back
    result = as_client(spool, sink.address)
    assert result.stderr.decode().splitlines()[-1] == "emailrelay: no messages to send"


def test_retry_stops_at_the_limit(downstream, spool):
    sink = downstream(Sink, data_reply=(451, "busy"))
    msg_id = store(spool)
    for _ in range(4):
        as_client(spool, sink.address, "--retry-limit", "2", "--retry-interval", "0")
    env, _ = bad_envelope(spool, msg_id)
    assert env.reason_count == 3  # the first failure and two retries
    assert len(sink.rejected) == 3


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ({"drop": "mid-data"}, r"smtp error: (connection closed by the server|connection reset by peer|broken pipe)"),
        ({"garbage": "mail"}, r"smtp error: invalid response: .+"),
        ({"stall": "mail"}, r"smtp error: response timeout after 1s"),
        ({"greeting": (421, "go away")}, r"smtp error: unexpected response: 421 go away"),
    ],
    ids=["drop", "garbage", "stall", "421"],
)
def test_a_broken_connection_fails_the_current_message_and_ends_the_run(downstream, spool, behaviour, reason):
    sink = downstream(Sink, **behaviour)
    first = store(spool, b"Subject: 1\r\n\r\n" + b"x" * 100_000 + b"\r\n")
    second = store(spool, b"Subject: 2\r\n\r\ny\r\n")
    result = as_client(spool, sink.address, "--response-timeout", "1")
    assert result.returncode == 1
    assert re.fullmatch(f"emailrelay: error: {reason}", result.stderr.decode().splitlines()[-1])
    assert states(spool)["bad"] == [first] and states(spool)["ready"] == [second]
    _, extra = bad_envelope(spool, first)
    assert re.fullmatch(f"X-MailRelay-Reason: {reason}", extra[0])
    assert extra[1:] == ["X-MailRelay-ReasonCode: 421" if "421" in reason else "X-MailRelay-ReasonCode:", "X-MailRelay-ReasonKind: temporary"]


def test_corrupt_envelope_and_missing_content_go_bad_and_the_rest_goes_on(downstream, spool):
    sink = downstream(Sink)
    corrupt = store(spool)
    (spool / f"{corrupt}.envelope").write_bytes(b"X-MailRelay-Format: #2821.8\r\nX-MailRelay-Nonsense: 1\r\n")
    orphan = store(spool)
    (spool / f"{orphan}.content").unlink()
    good = store(spool)
    local = store(spool, to_remote=[], to_local=["bob"])
    assert as_client(spool, sink.address).returncode == 0
    assert len(sink.wait_for_messages(1)) == 1
    assert sorted(states(spool)["bad"]) == sorted([corrupt, orphan, local])
    assert bad_envelope(spool, orphan)[1][0] == "X-MailRelay-Reason: content file missing"
    assert bad_envelope(spool, local)[1][0] == "X-MailRelay-Reason: no remote recipients"
    reason = (spool / f"{corrupt}.envelope.bad").read_bytes().decode()
    assert 'X-MailRelay-Reason: invalid envelope: expected "X-MailRelay-Content:"' in reason
    assert good not in states(spool)["ready"]


def test_spool_written_by_e_mailrelay_forwards(downstream, spool):
    """The hand-written golden envelopes of every format version (SPEC.md 2.2).

    Their ForwardToAddress values name hosts that do not exist here, so they
    are pointed at the sink; everything else is E-MailRelay's bytes.
    """
    sink = downstream(Sink)
    envelopes = {}
    for n, path in enumerate(sorted(GOLDEN.glob("v*.envelope"))):
        data = re.sub(rb"(X-MailRelay-ForwardToAddress:)[^\r\n]*", rb"\1 " + sink.address.encode(), path.read_bytes())
        msg_id = f"emailrelay.4242.1700000000.{n + 1}"
        (spool / f"{msg_id}.envelope").write_bytes(data)
        (spool / f"{msg_id}.content").write_bytes(f"Subject: golden {n}\r\n\r\nx\r\n".encode())
        envelopes[path.name] = (msg_id, parse(data))
    result = as_client(spool, sink.address, "--connection-timeout", "5")
    assert result.returncode == 0, result.stderr
    left = states(spool)
    assert left["ready"] == [] and left["busy"] == []
    delivered = {(m.mail_from, tuple(m.rcpt_tos)) for m in sink.messages}
    for name, (msg_id, env) in envelopes.items():
        if msg_id in left["bad"]:
            assert bad_envelope(spool, msg_id)[1][-3].startswith("X-MailRelay-Reason: "), name
        else:
            assert (env.from_address, tuple(env.to_remote)) in delivered, name
    for name in ("v4-crlf.envelope", "v6-crlf.envelope", "v8-crlf.envelope"):  # v7 is BINARYMIME
        assert envelopes[name][0] not in left["bad"], name
    assert bad_envelope(spool, envelopes["v5-lf.envelope"][0])[1][-3] == "X-MailRelay-Reason: no remote recipients"


def test_pipelining_off_still_works_and_8bitmime_is_declared(downstream, spool):
    sink = downstream(Sink)
    store(spool, b"Subject: 8\r\n\r\n\xe9\r\n", content="8bit")
    assert as_client(spool, sink.address, "--client-smtp-config=-pipelining").returncode == 0
    (m,) = sink.wait_for_messages(1)
    assert m.mail_options == ["BODY=8BITMIME"]


def test_binarymime_goes_by_bdat(downstream, spool):
    sink = downstream(Sink, ehlo_extensions=["8BITMIME", "PIPELINING", "CHUNKING", "BINARYMIME"])
    body = b"\x00binary\r\n.\r\n\xff"
    store(spool, body, content="binarymime")
    assert as_client(spool, sink.address).returncode == 0
    (m,) = sink.wait_for_messages(1)
    assert (m.command, m.data, m.mail_options) == ("BDAT", body, ["BODY=BINARYMIME"])


def test_binarymime_to_a_server_without_chunking_goes_bad(downstream, spool):
    sink = downstream(Sink)
    msg_id = store(spool, b"x", content="binarymime")
    assert as_client(spool, sink.address).returncode == 0
    assert bad_envelope(spool, msg_id)[1][0] == "X-MailRelay-Reason: cannot send binarymime message to a non-chunking server"


# -- authentication ---------------------------------------------------------------


def secrets_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "secrets.auth"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5", "CRAM-SHA256"])
def test_client_auth_with_each_mechanism(downstream, spool, tmp_path, mechanism):
    sink = downstream(Sink, auth={"alice": "secret"}, mechanisms=[mechanism], require_auth=True)
    store(spool)
    auth = secrets_file(tmp_path, "client plain alice secret\n")
    result = as_client(spool, sink.address, "--client-auth", auth)
    assert result.returncode == 0, result.stderr
    (m,) = sink.wait_for_messages(1)
    assert m.auth == "alice" and "AUTH=alice" in m.mail_options
    assert sink.sessions[0].auth == (mechanism, "alice")


def test_client_auth_with_a_hashed_cram_md5_secret(downstream, spool, tmp_path):
    sink = downstream(Sink, auth={"alice": "password"}, mechanisms=["CRAM-MD5", "PLAIN"], require_auth=True)
    store(spool)
    auth = secrets_file(tmp_path, "client md5 alice gNYiNPCsyQUbUnJD1B4nQJGG2FXhHrpSenpSyoKzE+E=\n")
    assert as_client(spool, sink.address, "--client-auth", auth).returncode == 0
    assert sink.sessions[0].auth == ("CRAM-MD5", "alice")


def test_wrong_password_fails_the_message_with_the_servers_reply(downstream, spool, tmp_path):
    sink = downstream(Sink, auth={"alice": "secret"}, mechanisms=["PLAIN"], require_auth=True)
    msg_id = store(spool)
    auth = secrets_file(tmp_path, "client plain alice wrong\n")
    result = as_client(spool, sink.address, "--client-auth", auth)
    assert result.returncode == 1
    reason = bad_envelope(spool, msg_id)[1][0]
    assert reason.startswith("X-MailRelay-Reason: authentication failed using mechanism [PLAIN] and plain secret for [alice]: [")


def test_broken_secrets_file_is_a_one_line_startup_error(spool, tmp_path):
    store(spool)
    auth = secrets_file(tmp_path, "client plain alice\n")
    result = as_client(spool, "127.0.0.1:9", "--client-auth", auth)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines()[-1] == f"emailrelay: error: {auth}:1: too few fields"


# -- TLS and SOCKS ------------------------------------------------------------------


def test_starttls_with_verification(downstream, spool):
    sink = downstream(Sink, tls="starttls", require_starttls=True)
    store(spool)
    result = as_client(spool, sink.address, "--client-tls", "--client-tls-verify", str(sink.ca_pem))
    assert result.returncode == 0, result.stderr
    (m,) = sink.wait_for_messages(1)
    assert m.tls


def test_implicit_tls_with_a_client_certificate(downstream, spool):
    sink = downstream(Sink, tls="implicit")
    store(spool)
    result = as_client(
        spool, sink.address, "--client-tls-connection", "--client-tls-verify", str(sink.ca_pem),
        "--client-tls-certificate", str(sink.client_pem),
    )
    assert result.returncode == 0, result.stderr
    assert sink.wait_for_messages(1)[0].tls
    assert sink.client_cert_presented


@pytest.mark.parametrize("cert", ["untrusted", "expired", "self-signed"])
def test_bad_server_certificate_fails_the_message(downstream, spool, cert):
    sink = downstream(Sink, tls="starttls", cert=cert)
    msg_id = store(spool)
    result = as_client(spool, sink.address, "--client-tls", "--client-tls-verify", str(sink.ca_pem))
    assert result.returncode == 1
    assert sink.messages == []
    assert bad_envelope(spool, msg_id)[1][0].startswith("X-MailRelay-Reason: tls error:")


def test_verify_name_mismatch_fails(downstream, spool):
    sink = downstream(Sink, tls="starttls")
    msg_id = store(spool)
    result = as_client(
        spool, sink.address, "--client-tls", "--client-tls-verify", str(sink.ca_pem),
        "--client-tls-verify-name", "other.example",
    )
    assert result.returncode == 1
    assert "certificate name mismatch" in bad_envelope(spool, msg_id)[1][0]


def test_tls_required_but_not_offered(downstream, spool):
    sink = downstream(Sink, ehlo_extensions=["8BITMIME", "PIPELINING"])
    msg_id = store(spool)
    result = as_client(spool, sink.address, "--client-tls", "--client-tls-required")
    assert result.returncode == 1
    assert bad_envelope(spool, msg_id)[1][0] == "X-MailRelay-Reason: tls is mandated but the server cannot do starttls"


def test_socks4a_proxy(downstream, spool):
    sink = downstream(Sink)
    proxy = downstream(Socks4Proxy, target=sink.port)
    store(spool)
    result = as_client(spool, f"smtp.example.com:25@127.0.0.1:{proxy.port}")
    assert result.returncode == 0, result.stderr
    assert len(sink.wait_for_messages(1)) == 1
    assert [(r.host, r.port, r.socks4a) for r in proxy.requests] == [("smtp.example.com", 25, True)]


# -- routing ------------------------------------------------------------------------


def test_forward_to_address_in_the_envelope_routes_the_message(downstream, spool):
    default = downstream(Sink)
    routed = downstream(Sink)
    store(spool, b"Subject: default\r\n\r\nx\r\n")
    store(spool, b"Subject: routed\r\n\r\nx\r\n", forward_to_address=routed.address)
    store(spool, b"Subject: default again\r\n\r\nx\r\n")
    assert as_client(spool, default.address).returncode == 0
    assert [m.data.split(b"\r\n")[0] for m in default.wait_for_messages(2)] == [b"Subject: default", b"Subject: default again"]
    assert [m.data.split(b"\r\n")[0] for m in routed.wait_for_messages(1)] == [b"Subject: routed"]


# -- server modes -------------------------------------------------------------------


def test_as_proxy_style_forward_on_disconnect(relay, downstream, spool):
    sink = downstream(Sink)
    r = relay("--forward-to", sink.address, "--forward-on-disconnect")
    with smtplib.SMTP("127.0.0.1", r.port) as s:
        s.sendmail("a@b.example", ["c@d.example"], b"Subject: proxied\r\n\r\nx\r\n")
    (m,) = sink.wait_for_messages(1)
    assert m.rcpt_tos == ["c@d.example"]
    r.wait_for("forwarding: done: 1 sent")
    assert states(spool)["ready"] == []


def test_poll_forwards_what_arrives_in_the_spool(relay, downstream, spool):
    sink = downstream(Sink)
    relay("--forward-to", sink.address, "--poll", "1")
    store(spool)
    assert len(sink.wait_for_messages(1, timeout=15)) == 1


def test_immediate_passes_the_downstream_reply_back(relay, downstream, spool):
    sink = downstream(Sink, rcpt_replies={"no@d.example": (550, "5.1.1 unknown user")})
    r = relay("--forward-to", sink.address, "--immediate")
    with smtplib.SMTP("127.0.0.1", r.port) as s:
        s.sendmail("a@b.example", ["yes@d.example"], b"Subject: one\r\n\r\nx\r\n")
        assert sink.messages and sink.messages[0].rcpt_tos == ["yes@d.example"]  # before our 250
        with pytest.raises(smtplib.SMTPDataError) as refused:
            s.sendmail("a@b.example", ["no@d.example"], b"Subject: two\r\n\r\nx\r\n")
    assert refused.value.smtp_code == 550
    assert b"one or more recipients rejected" in refused.value.smtp_error
    assert len(states(spool)["bad"]) == 1 and states(spool)["ready"] == []


# -- crashes and concurrency --------------------------------------------------------


def test_forwarder_killed_mid_transfer_loses_nothing(downstream, spool):
    sink = downstream(Sink, stall="end-of-data")
    msg_id = store(spool)
    proc = Relay([command("emailrelay"), "--as-client", sink.address, "--spool-dir", str(spool), "-v"], spool)
    sink.wait_for_event("stall:end-of-data")
    assert states(spool)["busy"] == [msg_id]
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait()
    proc.stop()
    sink.configure(stall=None)
    sink.unstall()
    result = as_client(spool, sink.address)
    assert result.returncode == 0, result.stderr
    assert "returned a message that a dead process was forwarding" in result.stderr.decode()
    assert states(spool) == {"ready": [], "busy": [], "bad": [], "content": []}
    assert sink.messages[-1].data == b"Subject: test\r\n\r\nhello\r\n"


def test_two_forwarders_never_send_a_message_twice(downstream, spool):
    sink = downstream(Sink)
    for n in range(150):
        store(spool, f"Subject: {n}\r\n\r\nx\r\n".encode())
    results: list[subprocess.CompletedProcess[bytes]] = []
    threads = [threading.Thread(target=lambda: results.append(as_client(spool, sink.address))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    subjects = [re.match(rb"Subject: (\d+)", m.data).group(1) for m in sink.wait_for_messages(150)]
    assert sorted(subjects) == sorted(str(n).encode() for n in range(150))
    assert states(spool) == {"ready": [], "busy": [], "bad": [], "content": []}


def test_relay_runs_in_the_foreground_logs_the_forward_target(relay, downstream):
    sink = downstream(Sink)
    r = relay("--forward-to", sink.address, "--forward", "-v")
    r.wait_for(f"forwarding to {re.escape(sink.address)}")
    r.wait_for("forwarding: startup")
