#!/usr/bin/env python3
"""POP3 retrieval throughput and memory benchmark for emailrelay.

Three runs, each printed as one row of a table:

1. 10 sessions: 1,000 messages of 10 KB (``--messages N``; ``--quick``
   100), put by the library into ten
   --pop-by-name mailboxes (100 each: ``<spool>/user0`` ... ``user9``), are
   retrieved (RETR) and deleted (DELE, then QUIT) by 10 parallel Python
   poplib sessions, one per mailbox, against
   ``emailrelay --log --no-daemon --port 0 --interface 127.0.0.1
   --spool-dir <dir> --pop --pop-port 0 --pop-auth <file> --pop-by-name``.
   (Without --pop-by-name every user shares the spool directory, and the
   mailbox lock lets one session in at a time.)  Timed from the first
   connection to the last ``+OK signing off``, so the durable deletions are
   inside it.  Afterwards every mailbox must be empty.
2. 1 session: the same number of messages in the spool directory itself,
   one poplib session, no --pop-by-name.
3. memory 100 MB: one 100 MB message (``--large-mb N``; ``--quick`` 20; written in 64 KB chunks, so this
   script stays small) retrieved by a raw socket client that counts and
   discards the bytes.  The figure is the emailrelay process's RSS growth:
   the highest ``VmRSS`` (``/proc/<pid>/status``, sampled every 5 ms during
   the transfer, and ``VmHWM`` when that rose) less ``VmRSS`` just before
   the RETR (after login and the RETR of a 10 KB message).  Target: under
   5 MB.

Messages are committed with ``Spool(dir, fsync=False)`` (``create``,
``write``, ``commit_sync``); their ids are allocated by one Spool, so they
are unique across mailboxes.  The POP port comes from the
``pop server on 127.0.0.1:<port>`` log line.  Units: MB is 2**20 bytes, KB
2**10; a 10 KB message is 10240 bytes of content.  The script asserts
nothing about speed; it exits 1 only if a run could not be carried out or a
check failed.  ``--json PATH`` also writes the figures to a JSON file
(bench/run reads it); ``--tmp-dir DIR`` puts the temporary directory there.

Run:  .venv/bin/python bench/pop.py [--quick] [--keep] [--messages N] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import poplib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from store import write_json  # bench/ is on sys.path when run as a script

from emailrelay.envelope import Envelope
from emailrelay.spool import Spool

MB = 2**20
KB = 2**10
SESSIONS = 10
MESSAGES = 1000
SMALL = 10 * KB
LARGE = 100 * MB
CHUNK = 64 * KB
MEMORY_TARGET_MB = 5.0
PASSWORD = "bench-password"

_POP_LINE = re.compile(r"pop server on 127\.0\.0\.1:(\d+)")


# ------------------------------------------------------------------ spools


def content(size: int) -> bytes:
    """A `size`-byte message: a header, a blank line and 80-byte CRLF lines (a dot-started one among them)."""
    head = b"Subject: pop benchmark\r\n\r\n"
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef\r\n"
    body = bytearray(b".a line that needs dot-stuffing, padded to eighty bytes......................\r\n")
    while len(head) + len(body) + len(line) <= size:
        body += line
    rest = size - len(head) - len(body)
    if rest >= 2:
        body += b"x" * (rest - 2) + b"\r\n"
    data = head + bytes(body)
    return data + b"\n" * (size - len(data))


def commit(spool: Spool, chunks: list[bytes] | tuple[bytes, ...]) -> str:
    msg = spool.create()
    for chunk in chunks:
        msg.write(chunk)
    spool.commit_sync(msg, Envelope(from_address="bench@example.com", to_remote=["pop@example.com"]))
    return msg.id


def fill(spool_dir: Path, mailboxes: list[str], per_box: int) -> None:
    """per_box 10 KB messages in each mailbox directory ("" = the spool directory)."""
    spool = Spool(spool_dir, fsync=False)
    data = content(SMALL)
    for box in mailboxes:
        target = spool_dir / box if box else spool_dir
        target.mkdir(exist_ok=True)
        for _ in range(per_box):
            msg_id = commit(spool, (data,))
            if box:
                for name in (f"{msg_id}.content", f"{msg_id}.envelope"):
                    os.rename(spool_dir / name, target / name)


def fill_large(spool_dir: Path, size: int) -> str:
    spool = Spool(spool_dir, fsync=False)
    head = b"Subject: big\r\n\r\n"
    block = (b"0123456789" * 8 + b"\r\n") * (CHUNK // 82)
    msg = spool.create()
    msg.write(head)
    while msg.size + len(block) <= size:
        msg.write(block)
    msg.write(b"y" * (size - msg.size - 2) + b"\r\n")
    spool.commit_sync(msg, Envelope(from_address="bench@example.com", to_remote=["pop@example.com"]))
    return msg.id


def leftovers(spool_dir: Path) -> list[str]:
    """Message files still in the spool directory or its sub-directories."""
    found = []
    for root, _dirs, files in os.walk(spool_dir):
        found += [os.path.join(root, f) for f in files if ".envelope" in f or f.endswith(".content")]
    return found


# --------------------------------------------------------------- the server


class Relay:
    def __init__(self, spool_dir: Path, auth: Path, log_path: Path, extra: list[str]) -> None:
        exe = shutil.which("emailrelay", path=str(Path(sys.executable).parent)) or "emailrelay"
        self.log_path = log_path
        self.log = open(log_path, "w+b")  # noqa: SIM115 - closed in stop()
        args = [exe, "--log", "--no-daemon", "--port", "0", "--interface", "127.0.0.1", "--spool-dir",
                str(spool_dir), "--pop", "--pop-port", "0", "--pop-auth", str(auth), *extra]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log)
        self.port = self._wait_port()

    def _wait_port(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = _POP_LINE.search(self.log_path.read_text(errors="replace"))
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError(f"emailrelay exited: {self.log_path.read_text(errors='replace')}")
            time.sleep(0.02)
        raise RuntimeError("emailrelay did not log its pop port")

    def status_kib(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ------------------------------------------------------------------ results


@dataclass
class Row:
    name: str
    messages: int = 0
    seconds: float = 0.0
    octets: int = 0
    growth_kib: int | None = None
    before_kib: int | None = None  # VmRSS just before the large RETR
    problems: list[str] = field(default_factory=list)

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.octets / MB / self.seconds if self.seconds else 0.0


def session(port: int, user: str, expected: int, errors: list[str]) -> int:
    """RETR and DELE every message of one mailbox, then QUIT; returns the octets received."""
    octets = 0
    try:
        p = poplib.POP3("127.0.0.1", port, timeout=60)
        try:
            p.user(user)
            p.pass_(PASSWORD)
            count, _size = p.stat()
            if count != expected:
                errors.append(f"{user}: {count} messages, expected {expected}")
            for n in range(1, count + 1):
                octets += p.retr(n)[2]
                p.dele(n)
            if p.quit() != b"+OK signing off":
                errors.append(f"{user}: unexpected QUIT reply")
        finally:
            p.close()
    except (OSError, poplib.error_proto) as e:
        errors.append(f"{user}: {e}")
    return octets


def run_retrieval(work: Path, auth: Path, name: str, sessions: int, messages: int) -> Row:
    row = Row(name)
    spool_dir = work / name.replace(" ", "-")
    spool_dir.mkdir()
    by_name = sessions > 1
    users = [f"user{i}" for i in range(sessions)]
    fill(spool_dir, users if by_name else [""], messages // sessions)
    relay = Relay(spool_dir, auth, work / f"{spool_dir.name}.log", ["--pop-by-name"] if by_name else [])
    errors: list[str] = []
    totals = [0] * sessions
    try:

        def worker(i: int) -> None:
            totals[i] = session(relay.port, users[i], messages // sessions, errors)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(sessions)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        row.seconds = time.monotonic() - started
    finally:
        relay.stop()
    row.messages = messages
    row.octets = sum(totals)
    row.problems += errors
    left = leftovers(spool_dir)
    if left:
        row.problems.append(f"{len(left)} message files left, e.g. {left[0]}")
    return row


def run_memory(work: Path, auth: Path, size: int) -> Row:
    row = Row(f"memory {size // MB} MB")
    spool_dir = work / "memory"
    spool_dir.mkdir()
    commit(Spool(spool_dir, fsync=False), (content(SMALL),))  # message 1: the warm-up
    fill_large(spool_dir, size)  # message 2
    relay = Relay(spool_dir, auth, work / "memory.log", [])
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=60) as sock:
            reader = sock.makefile("rb")

            def command(text: str) -> bytes:
                sock.sendall(text.encode() + b"\r\n")
                return reader.readline()

            reader.readline()
            command("USER user0")
            if not command(f"PASS {PASSWORD}").startswith(b"+OK"):
                raise RuntimeError("login failed")
            command("RETR 1")
            while reader.readline() != b".\r\n":
                pass
            before = relay.status_kib("VmRSS")
            hwm_before = relay.status_kib("VmHWM")
            peak = [before]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.005):
                    peak[0] = max(peak[0], relay.status_kib("VmRSS"))

            sampler = threading.Thread(target=sample)
            sampler.start()
            started = time.monotonic()
            reply = command("RETR 2")
            if not reply.startswith(f"+OK {size} octets".encode()):
                raise RuntimeError(f"RETR: {reply!r}")
            received = 0
            tail = b""
            while True:
                chunk = reader.read1(1 << 20)
                if not chunk:
                    raise RuntimeError("connection closed during RETR")
                received += len(chunk)
                tail = (tail + chunk)[-5:]
                if tail == b"\r\n.\r\n":
                    break
            row.seconds = time.monotonic() - started
            done.set()
            sampler.join()
            peak[0] = max(peak[0], relay.status_kib("VmRSS"))
            hwm = relay.status_kib("VmHWM")
            if hwm > hwm_before:
                peak[0] = max(peak[0], hwm)
            row.growth_kib = peak[0] - before
            row.before_kib = before
            command("QUIT")
        row.messages = 1
        row.octets = received - 3
        if row.octets < size:
            row.problems.append(f"received {row.octets} octets of {size}")
    finally:
        relay.stop()
    return row


# ------------------------------------------------------------------- output


def table(rows: list[Row]) -> str:
    lines = [
        "| run | messages | seconds | messages/s | MB/s | peak RSS growth |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        growth = f"{r.growth_kib / KB:.2f} MB" if r.growth_kib is not None else ""
        if r.problems:
            lines.append(f"| {r.name} | FAILED: {'; '.join(r.problems)} | | | | |")
            continue
        rate = f"{r.msgs_per_s:.0f}" if r.messages > 1 else ""
        lines.append(f"| {r.name} | {r.messages} | {r.seconds:.2f} | {rate} | {r.mb_per_s:.1f} | {growth} |")
    return "\n".join(lines)


def row_dict(r: Row) -> dict:
    """One row for --json."""
    return {
        "label": r.name,
        "messages": r.messages,
        "seconds": round(r.seconds, 4),
        "msgs_per_s": round(r.msgs_per_s, 2) if r.seconds and not r.problems else None,
        "mb_per_s": round(r.mb_per_s, 3) if r.seconds and not r.problems else None,
        "rss_growth_mb": round(r.growth_kib / KB, 3) if r.growth_kib is not None else None,
        "rss_before_mb": round(r.before_kib / KB, 2) if r.before_kib is not None else None,
        "problems": list(r.problems),
    }




def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM: stop the server and clean up, as for Ctrl-C


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="100 messages and a 20 MB message")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument(
        "--messages", type=int, help=f"messages per retrieval run (default {MESSAGES}; --quick 100)"
    )
    parser.add_argument("--large-mb", type=int, help="size of the large message in MB (default 100; --quick 20)")
    parser.add_argument("--tmp-dir", metavar="DIR", help="where the temporary directory is made")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    messages = args.messages or (100 if args.quick else MESSAGES)
    if messages < SESSIONS or messages % SESSIONS:
        parser.error(f"--messages must be a multiple of {SESSIONS}")
    large = (args.large_mb or (20 if args.quick else LARGE // MB)) * MB
    signal.signal(signal.SIGTERM, _terminated)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    work = Path(tempfile.mkdtemp(prefix="emailrelay-bench-pop-", dir=args.tmp_dir))
    auth = work / "pop.auth"
    auth.write_text("".join(f"server plain user{i} {PASSWORD}\n" for i in range(SESSIONS)))
    rows: list[Row] = []
    error = ""
    try:
        rows.append(run_retrieval(work, auth, f"{SESSIONS} sessions by name", SESSIONS, messages))
        rows.append(run_retrieval(work, auth, "1 session", 1, messages))
        rows.append(run_memory(work, auth, large))
    except RuntimeError as e:
        print(f"bench/pop.py: {e}", file=sys.stderr)
        error = str(e)
        return 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        if args.json:
            write_json(
                args.json,
                {
                    "script": "pop.py",
                    "date": started,
                    "params": {"messages": messages, "sessions": SESSIONS, "large_mb": large // MB},
                    "rows": [row_dict(r) for r in rows],
                    "error": error,
                    "ok": not error and not any(r.problems for r in rows),
                },
            )
    print(f"emailrelay POP3 benchmark on {platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}); 10 KB = {SMALL} bytes")
    print()
    print(table(rows))
    memory = rows[-1]
    if memory.growth_kib is not None:
        ok = memory.growth_kib / KB < MEMORY_TARGET_MB
        print(f"\nmemory target (< {MEMORY_TARGET_MB:.0f} MB growth for {large // MB} MB): "
              f"{'met' if ok else 'missed'}")
    return 1 if any(r.problems for r in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the server has been stopped by then
        sys.exit("pop.py: interrupted; the server it started has been stopped")
