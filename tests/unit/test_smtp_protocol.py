"""Pure tests of SMTP framing and address parsing (no sockets)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from emailrelay.smtp_protocol import (
    MAX_LINE,
    Data,
    DataEnd,
    Framer,
    Line,
    TooLong,
    parse_address_command,
    parse_mail_params,
)


def events(stream: bytes, cuts: list[int] = ()) -> list:
    """Feed a stream in pieces cut at the given offsets; DATA mode after each DATA line."""
    f = Framer()
    out: list = []
    last = 0
    for cut in [*sorted({c for c in cuts if 0 < c < len(stream)}), len(stream)]:
        f.feed(stream[last:cut])
        last = cut
        while (e := f.next_event()) is not None:
            out.append(e)
            if isinstance(e, Line) and e.text == b"DATA":
                f.start_data()
    return out


def merged(evs: list) -> list:
    """Join consecutive Data events (chunking is not observable)."""
    result: list = []
    for e in evs:
        if isinstance(e, Data) and result and isinstance(result[-1], Data):
            result[-1] = Data(result[-1].chunk + e.chunk)
        else:
            result.append(e)
    return result


def test_command_lines_end_only_at_crlf():
    evs = events(b"NOOP\nMAIL FROM:<a@b>\r\nQUIT\r\n", [])
    assert evs == [Line(b"NOOP\nMAIL FROM:<a@b>"), Line(b"QUIT")]


def test_too_long_line_is_reported_once_and_discarded():
    evs = events(b"X" * (MAX_LINE * 3) + b"\r\nNOOP\r\n", [100, 3000, 5000])
    assert evs == [TooLong(), Line(b"NOOP")]


def test_data_ends_only_at_crlf_dot_crlf():
    stream = b"DATA\r\na\n.\nb\r.\nc\r\n..d\r\n.\r\nQUIT\r\n"
    evs = merged(events(stream))
    assert evs == [Line(b"DATA"), Data(b"a\n.\nb\r.\nc\r\n.d\r\n"), DataEnd(), Line(b"QUIT")]


@given(st.lists(st.integers(min_value=0, max_value=200), max_size=30))
def test_framing_does_not_depend_on_how_bytes_arrive(cuts):
    stream = (
        b"DATA\r\n.first\r\nline two\r\n\r\n.\r.\n..\r\nx\r\r\n\r\n..\r\n.\r\nNOOP\r\n"
        b"DATA\r\n\r\n.\r\nQUIT\r\n"
    )
    reference = merged(events(stream))
    assert reference[1] == Data(b"first\r\nline two\r\n\r\n\r.\n..\r\nx\r\r\n\r\n.\r\n")
    assert merged(events(stream, cuts)) == reference


def test_chunk_mode_takes_exact_byte_counts():
    f = Framer()
    f.feed(b"abc\r\n.\r\nNOOP\r\n")
    f.start_chunk(8)
    assert f.next_event() == Data(b"abc\r\n.\r\n")
    assert type(f.next_event()).__name__ == "ChunkEnd"
    assert f.next_event() == Line(b"NOOP")


def test_address_parsing():
    ok = parse_address_command("MAIL FROM:<a@b> SIZE=10", allow_empty=True)
    assert (ok.error, ok.address, ok.tail) == ("", "a@b", " SIZE=10")
    assert parse_address_command("MAIL FROM: <a@b>", allow_empty=True).address == "a@b"
    assert parse_address_command("MAIL FROM:<>", allow_empty=True).address == ""
    assert parse_address_command("RCPT TO:<>", allow_empty=False).error == "invalid empty mailbox"
    assert parse_address_command("RCPT TO:<@x,@y:u@z>", allow_empty=False).address == "u@z"
    assert parse_address_command('RCPT TO:<"a\\"b>"@z>', allow_empty=False).address == '"a\\"b>"@z'
    assert parse_address_command("RCPT TO:u@z", allow_empty=False, strict=False).address == "u@z"
    assert parse_address_command("RCPT TO:u@z", allow_empty=False).error == "missing angle brackets in mailbox name"
    assert parse_address_command("RCPT TO:<u@z", allow_empty=False).error == "invalid angle brackets in mailbox name"
    assert parse_address_command("RCPT TO:<u@z>>", allow_empty=False).error == "invalid angle brackets"
    assert parse_address_command("RCPT TO:<u@>", allow_empty=False).error == "invalid character in mailbox name"


def test_mail_parameters():
    p = parse_mail_params(" size=123 body=8bitmime AUTH=a+2Bb XFOO=1 SMTPUTF8")
    assert (p.size, p.body, p.auth, p.smtputf8, p.error) == (123, "8BITMIME", "a+2Bb", True, "")
    assert parse_mail_params(" SMTPUTF8=yes").error == "invalid mail-from parameter"
    assert parse_mail_params(" AUTH=<>").auth == "<>"
