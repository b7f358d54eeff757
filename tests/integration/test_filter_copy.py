"""emailrelay-filter-copy: the program on its own, and as a --filter feeding --pop-by-name mailboxes."""

from __future__ import annotations

import poplib
import smtplib
from pathlib import Path

import pytest

from emailrelay.envelope import Envelope, parse
from emailrelay.spool import Spool

from .conftest import command, daemon_dir, run

PROG = "emailrelay-filter-copy"


def filter_copy(*args: str):
    return run(command(PROG), *args)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def new_message(spool: Path, state: str = ".envelope.new") -> tuple[str, Path, Path]:
    """A message as a server filter sees it: content plus an envelope in the given state."""
    s = Spool(spool, fsync=False)
    msg = s.create()
    msg.write(b"Subject: x\r\n\r\nbody\r\n")
    s.commit_sync(msg, Envelope(from_address="a@b.example", to_remote=["c@d.example"]))
    envelope = spool / f"{msg.id}.envelope"
    if state != ".envelope":
        envelope = envelope.rename(spool / f"{msg.id}{state}")
    return msg.id, spool / f"{msg.id}.content", envelope


def subdirs(spool: Path, *dirs: str) -> None:
    for name in dirs:
        daemon_dir(spool / name)


def test_filter_mode_copies_and_removes_the_original(spool):
    subdirs(spool, "alice", "bob", ".hidden", "postmaster")
    msg_id, content, envelope = new_message(spool)
    data = envelope.read_bytes()
    result = filter_copy(str(content), str(envelope))
    assert (result.returncode, result.stdout, result.stderr) == (100, b"", b"")
    for name in ("alice", "bob"):
        assert names(spool / name) == [f"{msg_id}.envelope"]
        assert (spool / name / f"{msg_id}.envelope").read_bytes() == data
    assert names(spool / ".hidden") == names(spool / "postmaster") == []
    assert names(spool) == sorted([".hidden", "alice", "bob", f"{msg_id}.content", "postmaster"])


@pytest.mark.parametrize("state", [".envelope.new", ".envelope"])
def test_envelope_derived_from_the_content_name(spool, state):
    subdirs(spool, "alice")
    msg_id, content, envelope = new_message(spool, state)
    result = filter_copy(str(content))
    assert result.returncode == 100
    assert names(spool / "alice") == [f"{msg_id}.envelope"]
    assert not envelope.exists()


def test_errors_in_filter_mode(spool):
    msg_id, content, envelope = new_message(spool)
    result = filter_copy(str(content), str(envelope))
    assert (result.returncode, result.stdout) == (1, b"<<filter failed>>\n<<no sub-directories to copy into>>\n")
    assert envelope.exists()
    result = filter_copy(str(spool / "emailrelay.1.2.3.content"))
    assert (result.returncode, result.stdout) == (1, b"<<filter failed>>\n<<no such file>>\n")
    other = spool / "notes.txt"
    other.write_text("x")
    assert filter_copy(str(other)).stdout == b"<<filter failed>>\n<<invalid filename>>\n"
    envelope.unlink()
    result = filter_copy(str(content))
    expected = f'<<filter failed>>\n<<no envelope file "{spool}/{msg_id}.envelope.new">>\n'
    assert (result.returncode, result.stdout.decode()) == (1, expected)
    result = filter_copy()
    assert result.returncode == 1
    assert result.stdout == (b"<<filter failed>>\n<<usage error: must be run by emailrelay with the full path "
                             b"of a message content file>>\n")


def test_a_failed_copy_is_rolled_back(spool):
    subdirs(spool, "a", "b")
    msg_id, content, envelope = new_message(spool)
    (spool / "b" / f"{msg_id}.envelope.new").mkdir()  # b cannot take a copy
    result = filter_copy(str(content), str(envelope))
    assert result.returncode == 1
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "<<filter failed>>" and lines[1].startswith("<<copy: ") and len(lines) == 2
    assert names(spool / "a") == []  # the copy made before the failure is gone again
    assert envelope.exists()


def test_spool_mode(spool):
    subdirs(spool, "alice", "bob")
    ids = [new_message(spool, ".envelope")[0] for _ in range(3)]
    result = filter_copy("--spool-dir", str(spool), "--verbose")
    assert (result.returncode, result.stderr) == (0, b"")  # 2.x exits 1 here
    assert result.stdout.decode().splitlines() == [f"copied: {spool}/{i}.envelope" for i in sorted(ids)]
    for name in ("alice", "bob"):
        assert names(spool / name) == sorted(f"{i}.envelope" for i in ids)
    assert names(spool) == sorted(["alice", "bob", *(f"{i}.content" for i in ids)])
    result = filter_copy("-d", str(spool))
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")  # nothing left to copy


def test_spool_mode_errors(spool, tmp_path):
    msg_id = new_message(spool, ".envelope")[0]
    result = filter_copy("--spool-dir", str(spool))
    assert result.returncode == 1
    assert result.stderr.decode() == f"{PROG}: error: {msg_id}: no sub-directories to copy into\n"
    result = filter_copy("--spool-dir", str(tmp_path / "missing"))
    assert result.returncode == 1
    assert result.stderr.decode().startswith(f"{PROG}: error: invalid spool directory: ")
    subdirs(spool, "a", "b")
    bad = new_message(spool, ".envelope")[0]
    (spool / "b" / f"{bad}.envelope.new").mkdir()
    result = filter_copy("--spool-dir", str(spool))
    assert result.returncode == 1
    assert result.stderr.decode().startswith(f"{PROG}: error: {bad}: copy: ")
    assert names(spool / "a") == [f"{msg_id}.envelope"]  # the other message was still copied


def test_help_and_version():
    result = filter_copy("--help")
    assert result.returncode == 0 and b"--spool-dir" in result.stdout
    result = filter_copy("--version")
    assert result.returncode == 0 and b"E-MailRelay 2.6 compatible" in result.stdout
    result = filter_copy("--bogus")
    assert result.returncode == 1 and result.stderr.startswith(f"{PROG}: error: ".encode())


def test_as_a_filter_feeding_pop_by_name_mailboxes(relay, spool, tmp_path):
    subdirs(spool, "alice", "bob")
    auth = tmp_path / "pop.auth"
    auth.write_text("server plain alice secret\nserver plain bob pw\nserver plain carol pw\n")
    r = relay("--filter", command(PROG), "--pop", "--pop-port", "0", "--pop-auth", str(auth), "--pop-by-name")
    port = int(r.wait_for(r"pop server on 127\.0\.0\.1:(\d+)").group(1))
    bodies = [b"Subject: first\r\n\r\nhello\r\n", b"Subject: second\r\n\r\n.dotted\r\n"]
    with smtplib.SMTP("127.0.0.1", r.port, timeout=30) as s:
        for body in bodies:
            assert s.sendmail("a@b.example", ["c@d.example"], body) == {}
    contents = sorted(spool.glob("*.content"))
    assert len(contents) == 2 and not list(spool.glob("*.envelope*"))  # the copies are the messages now
    ids = sorted(p.name[: -len(".content")] for p in contents)
    for user, password in (("alice", "secret"), ("bob", "pw")):
        assert names(spool / user) == [f"{i}.envelope" for i in ids]
        p = poplib.POP3("127.0.0.1", port, timeout=20)
        try:
            p.user(user)
            p.pass_(password)
            assert p.stat()[0] == 2
            got = [b"\r\n".join(p.retr(n)[1]) + b"\r\n" for n in (1, 2)]
            assert [g.split(b"\r\n", 1)[1] for g in got] == bodies  # after the Received line
            p.dele(1)
            p.dele(2)
            assert p.quit() == b"+OK signing off"
        finally:
            p.close()
        assert names(spool / user) == []
        if user == "alice":  # bob still has envelopes of both: the shared content stays
            assert sorted(spool.glob("*.content")) == contents
    assert names(spool) == ["alice", "bob"]
    p = poplib.POP3("127.0.0.1", port, timeout=20)
    try:
        p.user("carol")
        p.pass_("pw")
        assert p.stat() == (0, 0)  # her directory came after the mail
        p.quit()
    finally:
        p.close()
    assert names(spool) == ["alice", "bob", "carol"]


def test_same_result_as_the_builtin_copy_pop(relay, tmp_path):
    """The program and --filter=copy:pop leave the same files (they are the same code)."""
    results = []
    for name, spec in (("program", command(PROG)), ("builtin", "copy:pop")):
        directory = tmp_path / name
        directory.mkdir()
        subdirs(directory, "alice")
        r = relay("--filter", spec, spool_dir=directory)
        with smtplib.SMTP("127.0.0.1", r.port, timeout=30) as s:
            s.sendmail("a@b.example", ["c@d.example"], b"Subject: x\r\n\r\ny\r\n")
        r.stop()
        (content,) = directory.glob("*.content")
        msg_id = content.name[: -len(".content")]
        assert names(directory) == ["alice", content.name]
        assert names(directory / "alice") == [f"{msg_id}.envelope"]
        env = parse((directory / "alice" / f"{msg_id}.envelope").read_bytes())
        results.append((env.from_address, env.to_remote, env.client))
    assert results[0] == results[1] == ("a@b.example", ["c@d.example"], "127.0.0.1")
