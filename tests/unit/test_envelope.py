"""Envelope format: golden files (every version, invalid files, writer bytes),
round-trip properties, xtext and printable escaping."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emailrelay.envelope import (
    Envelope,
    EnvelopeError,
    needs_utf8_mailbox_names,
    parse,
    printable,
    printable_ascii,
    reason_lines,
    serialise,
    xtext_decode,
    xtext_encode,
    xtext_valid,
)

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "envelopes"

CERT_V4 = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUZ\n\tTAB+continued\n\n-----END CERTIFICATE-----"

# Expected field values of each valid golden file (only fields that differ from
# Envelope() defaults are listed).
VALID: dict[str, dict[str, object]] = {
    "emailrelay.4123.1718012345.1.envelope.bad": dict(
        format="#2821.8",
        content="8bit",
        from_address="alice@example.com",
        to_local=["bob"],
        to_remote=["carol@example.net"],
        authentication="alice",
        client="192.168.1.10",
        mail_from_auth_in="<>",
        extra_lines=[
            "X-MailRelay-Reason: 5.1.1 <carol@example.net>: Recipient address rejected",
            "X-MailRelay-ReasonCode: 550",
        ],
    ),
    "v3-lf.envelope": dict(
        format="#2821.3",
        crlf=False,
        content="7bit",
        from_address="<old@example.org>",
        to_local=["postmaster"],
        to_remote=["first@example.net"],
        authentication="joe bloggs+x",
        client="10.0.0.1",
    ),
    "v3-odd-bytes.envelope": dict(
        format="#2821.3",
        crlf=False,
        content="8bit",
        from_address=b"\xff\xfe@example.com".decode("utf-8", "surrogateescape"),
        to_remote=[b"caf\xe9@example.com".decode("utf-8", "surrogateescape")],
        authentication="\udcff",
        client="127.0.0.1",
        extra_lines=[
            b"X-MailRelay-Reason: \x80 raw".decode("utf-8", "surrogateescape"),
            "",
            "last line without newline",
        ],
    ),
    "v4-crlf.envelope": dict(
        format="#2821.4",
        content="unknown",
        from_address="me@example.com",
        to_remote=["you@example.com"],
        client="192.0.2.7",
        client_certificate=CERT_V4,
    ),
    "v5-lf.envelope": dict(
        format="#2821.5",
        crlf=False,
        content="8bit",
        to_local=["alice", "bob"],
        client="::1",
        mail_from_auth_in="sender+2Bsales@example.com",
        mail_from_auth_out="<>",
    ),
    "v6-crlf.envelope": dict(
        format="#2821.6",
        content="7bit",
        from_address="padded@example.com",
        to_remote=["r@example.com"],
        authentication="user",
        client="127.0.0.1",
        mail_from_auth_out="+",
        forward_to="mx+2Eexample.com:25",
        forward_to_address="192.0.2.25:2525",
        extra_lines=[
            "X-MailRelay-SplitGroupCount: 2",
            "X-MailRelay-SplitGroup: emailrelay.100.1700000000.1",
            "X-MailRelay-SplitGroup: emailrelay.100.1700000000.2",
        ],
    ),
    "v7-lf.envelope": dict(
        format="#2821.7",
        crlf=False,
        content="binarymime",
        from_address="jürgen@example.de",
        to_remote=["zoë@example.fr"],
        authentication="jürgen",
        client="198.51.100.4",
        mail_from_auth_in="j+C3+BCrgen@example.de",
        utf8_mailbox_names=True,
    ),
    "v8-crlf.envelope": dict(
        format="#2821.8",
        content="unknown",
        from_address="a@example.com",
        to_local=["box1"],
        to_remote=["b@example.com", "c@example.com"],
        authentication="a@example.com",
        client="203.0.113.9",
        mail_from_auth_in="a+40example.com",
        mail_from_auth_out="other",
        forward_to="smarthost",
        forward_to_address="smtp.example.com:587",
        client_account_selector="work",
        extra_lines=[
            "X-MailRelay-Reason: connection refused",
            "X-MailRelay-ReasonCode:",
            "X-MailRelay-Reason: 4.2.2 mailbox full\\x21",
            "X-MailRelay-ReasonCode: 452",
        ],
    ),
}

# What the writer must produce (golden bytes hand-written in writer-*.envelope).
WRITER: dict[str, Envelope] = {
    "writer-default.envelope": Envelope(),
    "writer-full.envelope": Envelope(
        content="8bit",
        from_address="alice@example.com",
        to_local=["bob"],
        to_remote=["carol@example.net", "dave@example.org"],
        authentication="alice smith",
        client="192.0.2.1",
        client_certificate="-----BEGIN CERTIFICATE-----\r\nMIIB\nAAAA\n-----END CERTIFICATE-----\n",
        mail_from_auth_in="alice+2bx@example.com",
        mail_from_auth_out="<>",
        forward_to="mx+2eexample.com:25",
        forward_to_address="192.0.2.25:25",
        client_account_selector="sel",
        utf8_mailbox_names=True,
        extra_lines=["X-MailRelay-Reason: timeout  ", "X-MailRelay-ReasonCode:"],
        crlf=False,
        format="#2821.3",
    ),
}


def golden(name: str) -> bytes:
    return (GOLDEN / name).read_bytes()


def test_every_golden_file_is_covered() -> None:
    names = {p.name for p in GOLDEN.iterdir() if ".envelope" in p.name}
    bad = {n for n in names if n.startswith("bad-")}
    assert names - bad == set(VALID) | set(WRITER)
    assert {f"#2821.{v}" for v in range(3, 9)} <= {str(f["format"]) for f in VALID.values()}


@pytest.mark.parametrize("name", sorted(VALID))
def test_reader_golden(name: str) -> None:
    assert parse(golden(name)) == Envelope(**VALID[name])  # type: ignore[arg-type]


# Values the writer canonicalises (xtext(unxtext(v))) when a file is rewritten.
CANONICAL: dict[str, dict[str, str]] = {
    "v6-crlf.envelope": dict(forward_to="mx.example.com:25"),
    "v8-crlf.envelope": dict(mail_from_auth_in="a@example.com"),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_rewrite_keeps_every_field(name: str) -> None:
    """write(parse(x)) never crashes, keeps every field, and is a fixed point."""
    written = serialise(parse(golden(name)))
    fields = {**VALID[name], **CANONICAL.get(name, {}), "format": "#2821.8", "crlf": True}
    assert parse(written) == Envelope(**fields)  # type: ignore[arg-type]
    assert serialise(parse(written)) == written


def test_spec_example_round_trips_byte_for_byte() -> None:
    data = golden("emailrelay.4123.1718012345.1.envelope.bad")
    assert serialise(parse(data)) == data


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("bad-*.envelope")))
def test_reader_errors(name: str) -> None:
    expected = (GOLDEN / name).with_suffix(".error").read_text().strip()
    with pytest.raises(EnvelopeError) as info:
        parse(golden(name))
    assert str(info.value) == expected


@pytest.mark.parametrize("name", sorted(WRITER))
def test_writer_golden(name: str) -> None:
    assert serialise(WRITER[name]) == golden(name)


def test_writer_golden_reads_back() -> None:
    env = parse(golden("writer-full.envelope"))
    assert env.client_certificate == "-----BEGIN CERTIFICATE-----\nMIIB\nAAAA\n-----END CERTIFICATE-----"
    assert env.authentication == "alice smith"
    assert env.mail_from_auth_in == "alice+2Bx@example.com"
    assert env.forward_to == "mx.example.com:25"
    assert env.reasons == ["timeout"] and env.reason_count == 1


def test_crlf_taken_from_format_line_only() -> None:
    lf_then_crlf = golden("v3-lf.envelope").replace(b"#2821.3\n", b"#2821.3\r\n")
    assert parse(lf_then_crlf).crlf
    crlf_then_lf = golden("v8-crlf.envelope").replace(b"#2821.8\r\n", b"#2821.8\n")
    assert not parse(crlf_then_lf).crlf


def test_end_line_value_not_checked_and_nothing_after_end_parsed() -> None:
    data = golden("v3-lf.envelope").replace(b"X-MailRelay-End: 1\n", b"X-MailRelay-Endless\n garbage\n")
    env = parse(data)
    assert env.extra_lines == [" garbage"]


def test_unrecognised_content_reads_unknown_and_writes_unknown() -> None:
    assert parse(golden("v4-crlf.envelope")).content == "unknown"
    assert b"X-MailRelay-Content: unknown\r\n" in serialise(Envelope(content="base64"))


def test_reason_count_counts_lines_like_resubmit() -> None:
    env = parse(golden("v8-crlf.envelope"))
    assert env.reason_count == 2
    assert env.reasons == ["connection refused", "4.2.2 mailbox full\\x21"]
    assert env.extra_values("ReasonCode") == ["", "452"]
    assert parse(golden("v6-crlf.envelope")).extra_values("SplitGroup") == [
        "emailrelay.100.1700000000.1",
        "emailrelay.100.1700000000.2",
    ]


def test_appending_reason_lines_keeps_file_valid() -> None:
    for name, crlf in (("v3-lf.envelope", False), ("v8-crlf.envelope", True)):
        data = golden(name)
        env = parse(data + reason_lines("550 no\r\nsuch user", 550, parse(data).crlf))
        assert env.crlf is crlf
        assert env.extra_lines[-2:] == [
            "X-MailRelay-Reason: 550 no\\r\\nsuch user",
            "X-MailRelay-ReasonCode: 550",
        ]


# --------------------------------------------------------------------------
# reason lines and escaping


def test_reason_lines() -> None:
    assert reason_lines("connection refused", 0, True) == (
        b"X-MailRelay-Reason: connection refused\r\nX-MailRelay-ReasonCode:\r\n"
    )
    assert reason_lines("5.1.1 rejected", 550, False) == (
        b"X-MailRelay-Reason: 5.1.1 rejected\nX-MailRelay-ReasonCode: 550\n"
    )
    assert reason_lines("", 0, True) == b"X-MailRelay-Reason: \r\nX-MailRelay-ReasonCode:\r\n"


def test_printable_ascii() -> None:
    assert printable_ascii("a\\b\n\r\t\0\x01\x7f") == "a\\\\b\\n\\r\\t\\0\\x01\\x7f"
    assert printable_ascii("é") == "\\xc3\\xa9"
    assert printable_ascii(b"\xff ~") == "\\xff ~"


def test_printable_keeps_utf8() -> None:
    assert printable("zoë\\x\n\x1b\x7f") == "zoë\\\\x\\n\\x1b\\x7f"
    assert printable(b"caf\xc3\xa9 \xff") == "café \\xff"
    assert printable(b"\xe9".decode("utf-8", "surrogateescape")) == "\\xe9"


def test_xtext() -> None:
    assert xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext_encode("é") == "+C3+A9"
    assert xtext_encode("<>") == "<>"
    assert xtext_decode("a+2Bb+3dc") == "a+b=c"
    assert xtext_decode("+C3+A9") == "é"
    assert xtext_decode("bad+zz+") == "bad+zz+"
    assert xtext_decode("+FF") == "\udcff"
    assert xtext_encode(xtext_decode("+FF")) == "+FF"
    for good in ("", "abc", "a+2B", "+c3+a9", "<>", "a=b"):
        assert xtext_valid(good), good
    for bad in ("a b", "+", "+2", "+2G", "é", "a\tb", "\x7f"):
        assert not xtext_valid(bad), bad


def test_needs_utf8_mailbox_names() -> None:
    assert not needs_utf8_mailbox_names("a@exämple.com", ["b@exämple.com"])
    assert needs_utf8_mailbox_names("jürgen@example.de", [])
    assert needs_utf8_mailbox_names("", ["a@x", "zoë@example.fr"])


# --------------------------------------------------------------------------
# properties

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
_value = _text.map(lambda s: s.strip(" \t\r\n"))
_address = st.text(st.characters(exclude_categories=("Cs", "Cc", "Zs")), max_size=30)
_wire_xtext = st.one_of(st.just(""), st.just("<>"), st.just("+"), _text.map(xtext_encode))


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    return Envelope(
        content=draw(st.sampled_from(["7bit", "8bit", "binarymime", "unknown"])),
        from_address=draw(_value),
        to_local=draw(st.lists(_value, max_size=3)),
        to_remote=draw(st.lists(_value, max_size=3)),
        authentication=draw(_text),
        client=draw(_value),
        client_certificate=draw(_text).replace("\r", "").strip(" \t\r\n"),
        mail_from_auth_in=draw(_wire_xtext),
        mail_from_auth_out=draw(_wire_xtext),
        forward_to=draw(_wire_xtext),
        forward_to_address=draw(_value),
        client_account_selector=draw(_value),
        utf8_mailbox_names=draw(st.booleans()),
        extra_lines=draw(st.lists(_address.map(lambda s: s.rstrip(" \t\r\n")), max_size=3)),
    )


@settings(max_examples=300)
@given(envelopes())
def test_round_trip(env: Envelope) -> None:
    assert parse(serialise(env)) == env


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_rewrite_never_crashes_on_odd_bytes(tail: bytes) -> None:
    base = golden("v7-lf.envelope")
    for data in (base + tail, base.replace(b"zo\xc3\xab", tail.replace(b"\n", b"")[:20])):
        try:
            env = parse(data)
        except EnvelopeError:
            continue
        written = serialise(env)
        assert serialise(parse(written)) == written


@given(_text)
def test_xtext_round_trip(text: str) -> None:
    encoded = xtext_encode(text)
    assert xtext_valid(encoded)
    assert xtext_decode(encoded) == text
