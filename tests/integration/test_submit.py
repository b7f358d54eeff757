"""emailrelay-submit as a real process writing into a temporary spool directory."""

from __future__ import annotations

import base64
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emailrelay.envelope import parse

from .conftest import needs_root

SUBMIT = Path(sys.executable).parent / "emailrelay-submit"

pytestmark = pytest.mark.skipif(
    not SUBMIT.exists(), reason="pip install -e . to get the emailrelay-submit script"
)

NAME_RE = re.compile(r"emailrelay\.(\d+)\.(\d+)\.(\d+)\.(content|envelope)\Z")


def submit(
    spool: Path | str | None, *args: str, stdin: bytes = b"", umask: int = 0o022
) -> subprocess.CompletedProcess[bytes]:
    argv = [str(SUBMIT)] + (["--spool-dir", str(spool)] if spool is not None else []) + list(args)
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=30, umask=umask)


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file())


def envelope_bytes(
    sender: str, recipients: list[str], *, auth_in: str = "", auth_out: str = "", utf8: str = "0"
) -> bytes:
    """The envelope submit must write, spelled out line by line (SPEC 2.1, 10.1)."""
    lines = [
        "X-MailRelay-Format: #2821.8",
        "X-MailRelay-Content: unknown",
        f"X-MailRelay-From: {sender}",
        f"X-MailRelay-ToCount: {len(recipients)}",
        *(f"X-MailRelay-To-Remote: {r}" for r in recipients),
        "X-MailRelay-Authentication: ",
        "X-MailRelay-Client: 127.0.0.1",
        "X-MailRelay-ClientCertificate: ",
        f"X-MailRelay-MailFromAuthIn: {auth_in}",
        f"X-MailRelay-MailFromAuthOut: {auth_out}",
        "X-MailRelay-ForwardTo: ",
        "X-MailRelay-ForwardToAddress: ",
        "X-MailRelay-ClientAccountSelector: ",
        f"X-MailRelay-Utf8MailboxNames: {utf8}",
        "X-MailRelay-End: 1",
    ]
    return "".join(line + "\r\n" for line in lines).encode()


def only_message(spool: Path) -> tuple[str, bytes, bytes]:
    """The id, content and envelope of the single message in the spool."""
    names = files(spool)
    assert len(names) == 2, names
    msg_id = names[0].removesuffix(".content")
    assert names == [f"{msg_id}.content", f"{msg_id}.envelope"]
    return msg_id, (spool / names[0]).read_bytes(), (spool / names[1]).read_bytes()


MESSAGE = b"From: Alice <alice@example.com>\nTo: bob@example.net, Carol <carol@example.org>\nSubject: hi\n\nhello\nworld\n"


def test_headers_give_sender_and_recipients(tmp_path: Path) -> None:
    before = int(time.time())
    result = submit(tmp_path, stdin=MESSAGE, umask=0o077)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"" and result.stderr == b""
    msg_id, content, envelope = only_message(tmp_path)
    match = NAME_RE.match(msg_id + ".content")
    assert match is not None
    assert before <= int(match.group(2)) <= int(time.time()) and match.group(3) == "1"
    assert content == MESSAGE.replace(b"\n", b"\r\n")
    assert envelope == envelope_bytes("alice@example.com", ["bob@example.net", "carol@example.org"])
    env = parse(envelope)
    assert env.to_remote == ["bob@example.net", "carol@example.org"] and env.to_local == []
    for name in files(tmp_path):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o660, name


def test_explicit_addresses_and_output(tmp_path: Path) -> None:
    result = submit(
        tmp_path, "-v", "-f", "me@example.com", "--to", "a@example.com, b@example.com", "--to=c@example.com",
        "\\-d@example.com", "e@example.com", stdin=MESSAGE,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    msg_id, content, envelope = only_message(tmp_path)
    assert result.stdout.decode() == f"{tmp_path / msg_id}.content\n"
    expected = ["a@example.com", "b@example.com", "c@example.com", "-d@example.com", "e@example.com"]
    assert envelope == envelope_bytes("me@example.com", expected)
    assert content == MESSAGE.replace(b"\n", b"\r\n")


def test_filename_output(tmp_path: Path) -> None:
    result = submit(tmp_path, "-n", "x@example.com", stdin=b"Subject: s\n\nbody\n")
    assert result.returncode == 0, result.stderr
    msg_id, _, _ = only_message(tmp_path)
    assert result.stdout.decode() == f"{msg_id}.content\n"


def test_sender_rules(tmp_path: Path) -> None:
    cases = [
        (b"From: a@x.example, b@x.example\nSender: s@x.example\n\n", "s@x.example"),
        (b"From: a@x.example, b@x.example\n\n", "a@x.example"),
        (b"Sender: s@x.example\nFrom: f@x.example\n\n", "f@x.example"),
        (b"Sender: s@x.example, t@x.example\n\n", "s@x.example"),
        (b"Subject: none\n\n", "anonymous"),
        (b"FROM:\n  Folded <folded@x.example>\n\n", "folded@x.example"),
    ]
    for n, (headers, sender) in enumerate(cases):
        spool = tmp_path / str(n)
        spool.mkdir()
        result = submit(spool, "r@example.com", stdin=headers + b"body\n")
        assert result.returncode == 0, result.stderr
        assert parse(only_message(spool)[2]).from_address == sender, headers


def test_recipients_from_to_cc_bcc(tmp_path: Path) -> None:
    message = b"To: a@x.example\nCc: b@x.example, c@x.example\nbcc: d@x.example\nSubject: s\n\nbody\n"
    result = submit(tmp_path, "-f", "me@x.example", stdin=message)
    assert result.returncode == 0, result.stderr
    _, content, envelope = only_message(tmp_path)
    assert parse(envelope).to_remote == ["a@x.example", "b@x.example", "c@x.example", "d@x.example"]
    assert content == message.replace(b"\n", b"\r\n")  # a single Bcc is not split out


def test_blank_line_added_and_line_ends(tmp_path: Path) -> None:
    result = submit(tmp_path, "r@example.com", stdin=b"Subject: no body\r\nX-Other: y")
    assert result.returncode == 0, result.stderr
    assert only_message(tmp_path)[1] == b"Subject: no body\r\nX-Other: y\r\n\r\n"


def test_body_line_ends_streamed(tmp_path: Path) -> None:
    """A body bigger than the copy chunk, with LF, CRLF, CR-CR-LF and a CRLF split at 64 KiB."""
    pieces = [b"x" * 65535 + b"\r\n", b"line\n", b"dos\r\n", b"odd\r\r\n", b"bare\rcr\n"] * 3
    body = b"".join(pieces) + b"last line no newline\r"
    result = submit(tmp_path, "-B", "r@example.com", stdin=body)
    assert result.returncode == 0, result.stderr
    lines = body.split(b"\n")
    expected = b"".join((line[:-1] if line.endswith(b"\r") else line) + b"\r\n" for line in lines)
    assert only_message(tmp_path)[1] == b"\r\n" + expected


def test_body_option_and_inserted_headers(tmp_path: Path) -> None:
    result = submit(tmp_path, "-B", "-t", "-F", "-f", "me@x.example", "a@x.example", "b@x.example",
                    stdin=b"Subject: not a header\n\ntext\n")  # fmt: skip
    assert result.returncode == 0, result.stderr
    _, content, _ = only_message(tmp_path)
    assert (
        content
        == b"To: a@x.example,b@x.example\r\nFrom: me@x.example\r\n\r\nSubject: not a header\r\n\r\ntext\r\n"
    )


def test_content_from_and_to_replace_only_their_fields(tmp_path: Path) -> None:
    message = (
        b"Received: by somewhere\n"
        b"To: old@x.example,\n  other@x.example\n"
        b"Subject: keep me\n"
        b"Sender: s@x.example\n"
        b"Cc: c@x.example\n"
        b"From: f@x.example\n"
        b"X-Last: kept\n\nbody\n"
    )
    result = submit(tmp_path, "-t", "-F", "new@x.example", stdin=message)
    assert result.returncode == 0, result.stderr
    _, content, envelope = only_message(tmp_path)
    assert content == (
        b"To: new@x.example\r\nFrom: f@x.example\r\n"
        b"Received: by somewhere\r\nSubject: keep me\r\nX-Last: kept\r\n\r\nbody\r\n"
    )
    assert parse(envelope).from_address == "f@x.example"


def test_content_from_anonymous(tmp_path: Path) -> None:
    result = submit(tmp_path, "-F", "r@x.example", stdin=b"Subject: s\n\nbody\n")
    assert result.returncode == 0, result.stderr
    _, content, envelope = only_message(tmp_path)
    assert content == b"From: anonymous:;\r\nSubject: s\r\n\r\nbody\r\n"
    assert parse(envelope).from_address == "anonymous"


def test_date_and_message_id(tmp_path: Path) -> None:
    result = submit(
        tmp_path, "-d", "-I", "-t", "-F", "-f", "me@x.example", "r@x.example", stdin=b"Subject: s\n\nb\n"
    )
    assert result.returncode == 0, result.stderr
    lines = only_message(tmp_path)[1].split(b"\r\n")
    assert lines[:2] == [b"To: r@x.example", b"From: me@x.example"]
    assert re.fullmatch(rb"Message-ID: <\d+\.\d{6}\.\d+@local>", lines[2]), lines[2]
    assert re.fullmatch(rb"Date: \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}", lines[3]), lines[3]
    assert lines[4:] == [b"Subject: s", b"", b"b", b""]


def test_date_and_message_id_not_added_twice(tmp_path: Path) -> None:
    message = b"message-id: <x@y>\nDATE: Mon, 1 Jan 2024 00:00:00 +0000\n\nb\n"
    result = submit(tmp_path, "-d", "--content-message-id=example.com", "r@x.example", stdin=message)
    assert result.returncode == 0, result.stderr
    assert only_message(tmp_path)[1] == message.replace(b"\n", b"\r\n")
    spool = tmp_path / "other"
    spool.mkdir()
    result = submit(spool, "--content-message-id=example.com", "r@x.example", stdin=b"\nb\n")
    assert re.match(rb"Message-ID: <\d+\.\d{6}\.\d+@example\.com>\r\n\r\nb\r\n\Z", only_message(spool)[1])


def test_content_lines(tmp_path: Path) -> None:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    args = ["-N", "-C", b64("Subject: from -C"), "-C", "=", "-C", b64("body line"), "r@x.example"]
    result = submit(tmp_path, *args, stdin=b"ignored\n")
    assert result.returncode == 0, result.stderr
    assert only_message(tmp_path)[1] == b"Subject: from -C\r\n\r\nbody line\r\n"
    spool = tmp_path / "with-stdin"
    spool.mkdir()
    result = submit(spool, "-C", b64("Subject: first"), "r@x.example", stdin=b"X-Second: 2\n\nbody\n")
    assert result.returncode == 0, result.stderr
    assert only_message(spool)[1] == b"Subject: first\r\nX-Second: 2\r\n\r\nbody\r\n"


def test_input_file(tmp_path: Path) -> None:
    source = tmp_path / "message.txt"
    source.write_bytes(MESSAGE)
    spool = tmp_path / "spool"
    spool.mkdir()
    result = submit(spool, "-x", str(source), stdin=b"Subject: stdin is not read\n\n")
    assert result.returncode == 0, result.stderr
    assert only_message(spool)[1] == MESSAGE.replace(b"\n", b"\r\n")


def test_from_auth_in_and_out(tmp_path: Path) -> None:
    result = submit(tmp_path, "-i", "", "-o", "a b+c", "-f", "me@x.example", "r@x.example", stdin=b"\nb\n")
    assert result.returncode == 0, result.stderr
    envelope = only_message(tmp_path)[2]
    assert envelope == envelope_bytes("me@x.example", ["r@x.example"], auth_in="<>", auth_out="a+20b+2Bc")


def test_utf8_mailbox_names(tmp_path: Path) -> None:
    result = submit(tmp_path, "-f", "jürgen@example.de", "r@x.example", stdin=b"\nb\n")
    assert result.returncode == 0, result.stderr
    assert only_message(tmp_path)[2] == envelope_bytes("jürgen@example.de", ["r@x.example"], utf8="1")


def test_bcc_split(tmp_path: Path) -> None:
    message = b"To: a@x.example\nBcc: b1@x.example, b2@x.example\nCc: c@x.example\nSubject: s\n\nbody\n"
    result = submit(tmp_path, "-v", "-f", "me@x.example", "--bcc-split", stdin=message)
    assert result.returncode == 0, result.stderr
    names = files(tmp_path)
    ids = sorted(
        {n.split(".content")[0].split(".envelope")[0] for n in names}, key=lambda i: int(i.split(".")[3])
    )
    assert len(names) == 6 and [i.split(".")[3] for i in ids] == ["1", "2", "3"]
    assert result.stdout.decode().split() == [f"{tmp_path / i}.content" for i in ids]
    contents = [(tmp_path / f"{i}.content").read_bytes() for i in ids]
    envelopes = [parse((tmp_path / f"{i}.envelope").read_bytes()) for i in ids]
    assert [e.to_remote for e in envelopes] == [
        ["a@x.example", "c@x.example"],
        ["b1@x.example"],
        ["b2@x.example"],
    ]
    assert contents[0] == b"To: a@x.example\r\nCc: c@x.example\r\nSubject: s\r\n\r\nbody\r\n"
    assert (
        contents[1]
        == b"To: a@x.example\r\nbcc: b1@x.example\r\nCc: c@x.example\r\nSubject: s\r\n\r\nbody\r\n"
    )
    assert contents[2] == contents[1].replace(b"b1@", b"b2@")


def test_bcc_split_copies_a_large_body(tmp_path: Path) -> None:
    body = b"".join(b"%07d " % n + b"y" * 70 + b"\n" for n in range(5000))
    message = b"Bcc: b1@x.example, b2@x.example\n\n" + body
    result = submit(tmp_path, "-b", "-f", "me@x.example", stdin=message)
    assert result.returncode == 0, result.stderr
    contents = sorted(p.read_bytes() for p in tmp_path.glob("*.content"))
    assert len(contents) == 2  # no To/Cc recipients: only the two Bcc copies
    for address, content in zip((b"b1", b"b2"), contents, strict=True):
        assert content == b"bcc: " + address + b"@x.example\r\n\r\n" + body.replace(b"\n", b"\r\n")


def test_copy_into_subdirectories(tmp_path: Path) -> None:
    for name in ("alice", "bob", ".hidden", "postmaster"):
        (tmp_path / name).mkdir()
    result = submit(tmp_path, "--copy", "-n", "r@x.example", stdin=MESSAGE)
    assert result.returncode == 0, result.stderr
    content_name = result.stdout.decode().strip()
    msg_id = content_name.removesuffix(".content")
    assert files(tmp_path) == [content_name]  # the original envelope went once every copy succeeded
    expected = envelope_bytes("alice@example.com", ["r@x.example"])
    for name in ("alice", "bob"):
        assert files(tmp_path / name) == [f"{msg_id}.envelope"]
        assert (tmp_path / name / f"{msg_id}.envelope").read_bytes() == expected
    assert files(tmp_path / ".hidden") == [] and files(tmp_path / "postmaster") == []


def test_missing_spool_directory(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = submit(missing, "r@x.example", stdin=MESSAGE)
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode().startswith(f"emailrelay-submit: invalid spool directory: {missing}")
    assert not missing.exists()


@needs_root
def test_unwritable_spool_directory(readonly_spool: Path) -> None:
    result = submit(readonly_spool, "r@x.example", stdin=MESSAGE)
    assert result.returncode == 1
    assert result.stderr.decode() == (
        f"emailrelay-submit: spool directory is not writable: {readonly_spool}: read-only file system\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-f", "", "r@x.example"], "emailrelay-submit: invalid from address: []"),
        (["--to", "", "-f", "me@x.example"], "emailrelay-submit: invalid to address: []"),
        (["--to=a@x.example,,b@x.example"], "emailrelay-submit: invalid to address: []"),
        (["-f", "me@x.example", ""], "emailrelay-submit: invalid to address: []"),
        (["-f", "@x.example", "r@x.example"], "emailrelay-submit: invalid from address: [@x.example]"),
        (
            ["-f", "me\tyou@x.example", "r@x.example"],
            "emailrelay-submit: invalid from address: [me\\tyou@x.example]",
        ),
    ],
)
def test_invalid_addresses(tmp_path: Path, args: list[str], message: str) -> None:
    result = submit(tmp_path, *args, stdin=MESSAGE)
    assert (result.returncode, result.stderr.decode(), result.stdout) == (1, message + "\n", b"")
    assert files(tmp_path) == []


def test_invalid_header_address_and_no_recipients(tmp_path: Path) -> None:
    result = submit(tmp_path, stdin=b"Subject: nobody\n\nbody\n")
    assert (result.returncode, result.stderr) == (1, b"emailrelay-submit: no recipients\n")
    result = submit(tmp_path, "-f", "me@x.example", stdin=b"To: @x.example\n\nbody\n")
    assert (result.returncode, result.stderr) == (1, b"emailrelay-submit: invalid to address: [@x.example]\n")
    assert files(tmp_path) == []


def test_usage_errors_exit_1(tmp_path: Path) -> None:
    result = submit(tmp_path, "--bogus", "-P", "r@x.example")
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        'emailrelay-submit: error: invalid option: "--bogus"',
        'emailrelay-submit: error: invalid option: "-P"',
        '                   try "emailrelay-submit --help --verbose" for more information',
    ]
    result = submit(tmp_path, "-f")
    assert result.returncode == 1 and b"no value supplied for -f" in result.stderr
    assert files(tmp_path) == []


def test_missing_input_file(tmp_path: Path) -> None:
    result = submit(tmp_path, "-x", str(tmp_path / "nope"), "r@x.example")
    assert result.returncode == 1
    assert (
        result.stderr.decode()
        == f"emailrelay-submit: cannot open input file: {tmp_path / 'nope'}: no such file or directory\n"
    )
    assert files(tmp_path) == []


def test_help_and_version() -> None:
    result = submit(None, "--help")
    assert result.returncode == 0 and b"--spool-dir" in result.stdout and b"--bcc-split" not in result.stdout
    result = submit(None, "-h", "-v")
    assert result.returncode == 0 and b"--bcc-split" in result.stdout
    result = submit(None, "--version")
    assert result.returncode == 0 and result.stdout.startswith(b"emailrelay-submit ")


def test_debug_is_taken_out_before_parsing(tmp_path: Path) -> None:
    result = submit(tmp_path, "--debug", "-f", "me@x.example", "r@x.example", stdin=b"\nb\n")
    assert result.returncode == 0
    assert b"debug:" in result.stderr
    assert parse(only_message(tmp_path)[2]).to_remote == ["r@x.example"]


def test_spool_path_is_a_file(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")
    result = submit(not_a_dir, "r@x.example", stdin=MESSAGE)
    assert result.returncode == 1
    assert result.stderr.decode().startswith(f"emailrelay-submit: invalid spool directory: {not_a_dir}")


def test_no_stdin_at_all(tmp_path: Path) -> None:
    argv = [str(SUBMIT), "-s", str(tmp_path), "-n", "r@x.example"]
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert only_message(tmp_path)[1] == b"\r\n"
