"""Never lose mail: crashes, full disks, unusable spool directories, recovery.

These tests need root (CI and sessions run as root): they mount a tiny tmpfs
and a read-only bind mount, and unmount them afterwards.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import threading
import time

import pytest

from emailrelay.envelope import parse

from .conftest import command, needs_root, run, spool_files
from .smtpraw import RawSmtp
from .test_storage import body_of, message, stored

SYNC_MODES = pytest.mark.parametrize("sync", ["filesystem", "file"])


@needs_root
@SYNC_MODES
def test_full_disk_gives_452_and_leaves_no_partial_message(relay, tiny_spool, sync):
    r = relay("--spool-sync", sync, spool_dir=tiny_spool)
    with RawSmtp(r.port) as c:
        c.start_data()
        c.send(b"Subject: too big for the disk\r\n\r\n" + (b"x" * 998 + b"\r\n") * 2000 + b".\r\n")
        reply = c.reply()
        assert reply.startswith("452 ") and "space" in reply, reply
        assert spool_files(tiny_spool) == []
        # the server goes on serving: a small message still fits
        c.cmd("MAIL FROM:<a@b>")
        c.cmd("RCPT TO:<c@d>")
        c.cmd("DATA")
        assert c.cmd("Subject: small\r\n\r\nfits\r\n.") == "250 message processed"
    assert len(stored(tiny_spool)) == 1


@needs_root
def test_read_only_spool_directory_is_a_one_line_error(readonly_spool):
    result = run(command("emailrelay"), "--log", "--no-daemon", "--port", "0", "--spool-dir", str(readonly_spool))
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert lines == [f"emailrelay: error: spool directory is not writable: {readonly_spool}: read-only file system"]


def test_missing_spool_directory_is_a_one_line_error(tmp_path):
    missing = tmp_path / "nope"
    result = run(command("emailrelay"), "--log", "--no-daemon", "--port", "0", "--spool-dir", str(missing))
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"emailrelay: error: invalid spool directory: {missing}: no such file or directory"
    ]


def test_port_in_use_exits_2(relay):
    r = relay()
    result = run(
        command("emailrelay"), "--log", "--no-daemon", "--interface", "127.0.0.1", "--port", str(r.port),
        "--spool-dir", str(r.spool),
    )
    assert result.returncode == 2
    assert result.stderr.decode().splitlines()[-1] == "emailrelay: error: socket bind error: address already in use"


def test_sigterm_drops_unfinished_messages_and_exits_143(relay, spool):
    r = relay()
    c = RawSmtp(r.port)
    c.start_data()
    c.send(b"Subject: half\r\n\r\nhalf a message")
    r.wait_for(r"rx<<|smtp connection from", timeout=5)
    assert r.stop(signal.SIGTERM) == 143
    c.close()
    assert spool_files(spool) == []


@SYNC_MODES
def test_crash_keeps_every_acknowledged_message(relay, spool, sync):
    """SIGKILL while many sessions send: every 250 is in the spool, complete and ready."""
    r = relay("--spool-sync", sync)
    acknowledged: dict[int, bytes] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def sender(t: int) -> None:
        n = t * 100000
        while not stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as s:
                    while not stop.is_set():
                        n += 1
                        data = message(n, size=20000 + (n % 7) * 3000)
                        s.sendmail(f"f{n}@example.com", [f"t{n}@example.com"], data)
                        with lock:
                            acknowledged[n] = data
            except (smtplib.SMTPException, OSError):
                return

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    r.proc.send_signal(signal.SIGKILL)
    r.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acknowledged) >= 300

    def check_ready_messages() -> set[int]:
        found = set()
        for msg_id, (env_bytes, content) in stored(spool).items():
            env = parse(env_bytes)  # a ready envelope is never half-written
            n = int(re.search(rb"X-Test-Id: (\d+)", content).group(1))
            assert env.from_address == f"f{n}@example.com", msg_id
            assert body_of(content) == message(n, size=20000 + (n % 7) * 3000), msg_id
            found.add(n)
        return found

    ready = check_ready_messages()
    missing = set(acknowledged) - ready
    assert not missing, f"{len(missing)} acknowledged messages lost"
    # a restarted server removes what the dead one left half-written
    r2 = relay()
    leftovers = [n for n in spool_files(spool) if n.endswith(".new")]
    ids_with_envelope = {n.rsplit(".envelope", 1)[0] for n in spool_files(spool) if ".envelope" in n}
    orphans = [n for n in spool_files(spool) if n.endswith(".content") and n[:-8] not in ids_with_envelope]
    assert leftovers == [] and orphans == [], r2.lines
    assert check_ready_messages() == ready


def test_recovery_removes_files_of_dead_writers_only(relay, spool):
    ended = subprocess.Popen(["true"])
    ended.wait()
    dead_pid = ended.pid  # a process that has certainly ended
    live = f"emailrelay.{os.getppid()}.{int(time.time()) + 5}.1.content"  # a live writer
    for name in (
        f"emailrelay.{dead_pid}.1700000000.1.content",
        f"emailrelay.{dead_pid}.1700000000.1.envelope.new",
        f"emailrelay.{dead_pid}.1700000000.2.content",
        f"emailrelay.{dead_pid}.1700000000.3.content",
        f"emailrelay.{dead_pid}.1700000000.3.envelope",
        f"emailrelay.{dead_pid}.1700000000.4.content",
        f"emailrelay.{dead_pid}.1700000000.4.envelope.bad",
        live,
        "someone-elses-file.content",
    ):
        (spool / name).write_bytes(b"x")
    r = relay()
    r.wait_for("smtp server on")
    assert spool_files(spool) == sorted(
        [
            f"emailrelay.{dead_pid}.1700000000.3.content",
            f"emailrelay.{dead_pid}.1700000000.3.envelope",
            f"emailrelay.{dead_pid}.1700000000.4.content",
            f"emailrelay.{dead_pid}.1700000000.4.envelope.bad",
            live,
            "someone-elses-file.content",
        ]
    )
    assert r.count("removed unfinished envelope of a dead process") == 1
    assert r.count("removed content without an envelope of a dead process") == 1


def test_recovery_keeps_content_that_sub_directory_copies_share(relay, spool):
    ended = subprocess.Popen(["true"])
    ended.wait()
    msg_id = f"emailrelay.{ended.pid}.1700000000.1"
    (spool / f"{msg_id}.content").write_bytes(b"shared")
    (spool / "alice").mkdir()
    (spool / "alice" / f"{msg_id}.envelope").write_bytes(b"x")  # as copy:pop and submit --copy leave it
    relay()
    assert (spool / f"{msg_id}.content").read_bytes() == b"shared"
