#!/usr/bin/env python3
"""Forwarding throughput and memory benchmark for emailrelay.

Nine runs, each printed as one row of a table, in this order (the store-only
reference first, before anything has been deleted):

1. store only: Postfix's ``smtp-source`` (20 sessions, 3,000 messages of
   10 KB, one connection per message) into ``emailrelay --log --no-daemon
   --port 0 --interface 127.0.0.1 --spool-dir <dir>`` (no forwarding;
   bench/store.py's emailrelay run), the reference for the proxy rows.
2. proxy: the same smtp-source load into the same server with
   ``--forward-to 127.0.0.1:<sink> --forward-on-disconnect``, forwarding to
   Postfix's ``smtp-sink``; messages/s are measured at smtp-source, then the
   benchmark waits (with a deadline) until the spool directory is empty and
   smtp-sink has counted every message.  Target: proxy / store only >= 0.8.
3. proxy --immediate: row 2 with ``--immediate`` added (each message is
   forwarded before its 250 reply).
4. store only (supervised): the same load into ``emailrelay supervise --log
   --no-daemon --port 0 --interface 127.0.0.1 --spool-dir <dir>
   --admin-socket <dir>/admin-<row>.sock`` (the supervisor and one ``storage``
   worker); the port comes from its ``[supervisor] smtp listening on``
   line, the load starts once ``emailrelay ctl status --json`` shows every
   worker RUNNING.
5. proxy (supervise --as-proxy): row 4 with ``--as-proxy 127.0.0.1:<sink>``
   added: the ``proxy`` worker (role storage) stores, the ``forward`` worker
   forwards after each session in a process of its own; drained as row 2.
   Target: end-to-end msg/s / store only (row 1) >= 0.8; also shown over
   row 4.  For rows 4 and 5: the CPU time of the supervisor and of each
   worker during the load (psutil), and the sum of their VmHWMs as the peak
   RSS; stopped with SIGTERM, SIGKILL after 30 s, then any worker left is
   killed.
6. forward: a fresh spool is filled with 5,000 messages of 10 KB through
   the library (``Spool(dir, fsync=False)``, no SMTP), then the whole
   ``emailrelay --as-client 127.0.0.1:<sink> --spool-dir <dir>`` command is
   timed while it forwards them to smtp-sink.  Afterwards the spool must be
   empty and smtp-sink must have counted every message.  Target: at least
   1,000 messages/s.
7. forward, 4 connections: row 6 with ``--forward-connections 4`` added
   (``--connections N``; 0 skips the row).  Target: faster than row 6.
8. memory 10 KB: one 10 KB message forwarded with ``--as-client``;
9. memory 100 MB: one 100 MB message (written in 64 KB chunks, so the
   benchmark itself stays small) forwarded with ``--as-client``.
   Target: the forwarder's peak RSS grows by less than 5 MB over row 8.

Peak RSS of an ``--as-client`` forwarder is ``VmHWM`` from
``/proc/<pid>/status`` polled every 10 ms until the process exits (VmHWM
only grows, so the last sample misses at most the final 10 ms), cross-checked
with ``ru_maxrss`` from ``wait4()`` on the exited process (exact, but
never lower than this benchmark's own peak RSS when it started the child,
because the child's exec replaces a copy of this process).  For the servers
it is ``VmHWM`` read just before they are stopped, as in bench/store.py.

Units: MB is 2**20 bytes, KB 2**10; a 10 KB message is 10240 bytes of
content (headers included) in the spool, and smtp-source's ``-l 10240``.
MB/s counts those bytes only.

Needs /usr/sbin/smtp-source and /usr/sbin/smtp-sink (Debian package
``postfix``, installed by bench/store.py's helper unless ``--no-install``).
Every process the script starts is stopped before it exits and its
temporary directory is removed (unless ``--keep``).  It asserts nothing
about speed; it exits 1 only if a run could not be carried out or a check
(spool empty, smtp-sink count, exit code) failed.  ``--json PATH`` also
writes every figure to a JSON file (bench/run reads it).

Run:  .venv/bin/python bench/forward.py [--quick] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from store import (
    _PROBLEM_LINE,
    MB,
    SMALL,
    SMTP_SINK,
    START_TIMEOUT,
    Processes,
    Result,
    Server,
    cpu_seconds,
    emailrelay_command,
    ensure_postfix,
    ext4_without_journal,
    filesystem_of,
    free_port,
    git_commit,
    mb,
    mb_or_none,
    proc_status_kib,
    run_emailrelay,
    run_source,
    size_label,
    spool_counts,
    wait_listening,
    workdir,
    write_json,
)
from supervise import _LISTENING, all_running, ctl_status, wait_for

from emailrelay.envelope import Envelope
from emailrelay.spool import Spool

SENDER = "bench@example.com"
RECIPIENT = "sink@example.com"

#: Forwarding target (messages/s of the --as-client row).
FORWARD_TARGET = 1000.0
#: Proxy target (proxy msg/s over store-only msg/s).
RATIO_TARGET = 0.8
#: Memory target (MB of peak RSS, 100 MB message over 10 KB message).
MEMORY_TARGET = 5.0

#: How often the forwarder's /proc/<pid>/status is sampled.
SAMPLE_INTERVAL = 0.01
#: Content is written to the spool in chunks of this size.
CHUNK = 64 * 1024
#: Seconds a supervisor may take to exit after SIGTERM before it (and any worker left) is killed.
SUPERVISOR_STOP_TIMEOUT = 30.0

_SINK_COUNT = re.compile(rb"mesg=(\d+)")
_DONE_LINE = re.compile(r"forwarding: done: (\d+) sent, (\d+) failed")


# ------------------------------------------------------------------ results


@dataclass
class Row(Result):
    """One table row: store.Result plus the forwarding figures."""

    e2e_seconds: float = 0.0  # until the spool was empty and smtp-sink had every message
    target: str = ""
    problems: list[str] = dataclasses.field(default_factory=list)
    processes: list[dict] = dataclasses.field(default_factory=list)  # supervised rows: one per process

    @property
    def e2e_msgs_per_s(self) -> float:
        return self.sent / self.e2e_seconds if self.ok and self.e2e_seconds > 0 else 0.0

    def fail(self, why: str) -> None:
        self.error = f"{self.error}; {why}" if self.error else why


# ------------------------------------------------------------------- spools


def content_chunks(size: int) -> list[tuple[bytes, int]]:
    """The content of a `size`-byte message as (chunk, repeat) pairs.

    Headers (the Subject padded so that the body is whole lines), then
    80-byte lines; the same 64 KB chunk object is written over and over, so
    a 100 MB message costs the benchmark 64 KB.
    """
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef\r\n"
    date = datetime.datetime.now(datetime.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")

    def headers(pad: int) -> bytes:
        return (
            f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\n"
            f"Subject: emailrelay forwarding benchmark {'.' * pad}\r\n"
            f"Date: {date}\r\nMessage-ID: <bench@example.com>\r\n\r\n"
        ).encode()

    head = headers((size - len(headers(0))) % len(line))
    body = size - len(head)
    if body < 0:
        raise ValueError(f"message size {size} too small")
    chunk = line * (CHUNK // len(line))
    full, rest = divmod(body, len(chunk))
    pieces = [(head, 1), (chunk, full), (line * (rest // len(line)), 1)]
    assert sum(len(c) * n for c, n in pieces) == size
    return pieces


def fill_spool(spool_dir: Path, count: int, size: int) -> float:
    """Commit `count` messages of `size` bytes with the library, no fsync; returns seconds."""
    spool = Spool(spool_dir, fsync=False)
    pieces = content_chunks(size)
    start = time.perf_counter()
    for _ in range(count):
        msg = spool.create()
        for chunk, repeat in pieces:
            for _ in range(repeat):
                msg.write(chunk)
        spool.commit_sync(msg, Envelope(from_address=SENDER, to_remote=[RECIPIENT], client="127.0.0.1"))
    return time.perf_counter() - start


def spool_entries(spool_dir: Path) -> list[str]:
    return sorted(os.listdir(spool_dir))


def describe_entries(names: list[str]) -> str:
    kinds: dict[str, int] = {}
    for name in names:
        kind = name.split(".", 3)[-1] if name.startswith("emailrelay.") else name
        kind = re.sub(r"^\d+\.", "", kind)
        kinds[kind] = kinds.get(kind, 0) + 1
    return ", ".join(f"{n} *.{k}" for k, n in sorted(kinds.items()))


# -------------------------------------------------------------------- sink


class Sink:
    """smtp-sink on a free port, its ``-c`` counters written to a file."""

    def __init__(self, procs: Processes, out: Path) -> None:
        self.procs = procs
        self.out = out
        self.port = free_port()
        args = [SMTP_SINK]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]  # smtp-sink refuses to run as root without -u
        args += ["-c", f"127.0.0.1:{self.port}", "1000"]
        with open(out, "wb") as f:
            self.proc = procs.start(args, stdout=f, stderr=subprocess.STDOUT)
        wait_listening(self.port, self.proc)

    def count(self) -> int:
        """Messages smtp-sink has received (its running ``mesg=`` counter)."""
        try:
            data = self.out.read_bytes()
        except OSError:
            return 0
        counts = _SINK_COUNT.findall(data[-200:])
        return int(counts[-1]) if counts else 0

    def wait_count(self, expected: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            n = self.count()
            if n >= expected or time.monotonic() > deadline:
                return n
            time.sleep(0.02)

    def stop(self) -> None:
        self.procs.stop(self.proc)


# --------------------------------------------------------------- forwarder


@dataclass
class Sampled:
    seconds: float = 0.0
    returncode: int | None = None
    hwm_kib: int | None = None  # max polled VmHWM
    samples: int = 0
    maxrss_kib: int | None = None  # ru_maxrss from wait4
    own_maxrss_kib: int = 0  # this benchmark's ru_maxrss when it started the child
    cpu: tuple[float, float] = (0.0, 0.0)
    timed_out: bool = False


def run_sampled(procs: Processes, args: list[str], log_path: Path, timeout: float) -> Sampled:
    """Run a command to completion, polling its VmHWM every SAMPLE_INTERVAL."""
    out = Sampled(own_maxrss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    with open(log_path, "ab") as log:
        start = time.perf_counter()
        proc = procs.start(args, stdout=log, stderr=log)
    deadline = start + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        hwm = proc_status_kib(proc.pid, "VmHWM")
        if hwm is not None:
            out.hwm_kib = max(out.hwm_kib or 0, hwm)
            out.samples += 1
        if time.perf_counter() > deadline:
            out.timed_out = True
            out.seconds = time.perf_counter() - start
            out.returncode = procs.stop(proc)
            return out
        time.sleep(SAMPLE_INTERVAL)
    out.seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
    procs.stop(proc)  # only forgets it
    out.returncode = proc.returncode
    out.maxrss_kib = usage.ru_maxrss
    out.cpu = (usage.ru_utime, usage.ru_stime)
    return out


def log_problems(log_path: Path) -> list[str]:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if _PROBLEM_LINE.search(line)]


def run_client(
    procs: Processes,
    exe: str,
    work: Path,
    label: str,
    tag: str,
    count: int,
    size: int,
    timeout: float,
    extra: list[str] | None = None,
) -> tuple[Row, Sampled | None]:
    """Fill a spool, then time ``emailrelay --as-client`` forwarding it to smtp-sink."""
    row = Row(label, size, count, 1)
    spool_dir = work / f"spool-{tag}"
    spool_dir.mkdir()
    log_path = work / f"emailrelay-{tag}.log"
    fill = fill_spool(spool_dir, count, size)
    row.notes.append(
        f"spool filled with {count} x {size_label(size)} in {fill:.2f}s ({count / fill:.0f} msg/s, no fsync)"
    )
    try:
        sink = Sink(procs, work / f"smtp-sink-{tag}.out")
    except RuntimeError as e:
        row.fail(f"smtp-sink: {e}")
        return row, None
    try:
        args = [exe, "--as-client", f"127.0.0.1:{sink.port}", "--spool-dir", str(spool_dir), *(extra or [])]
        sampled = run_sampled(procs, args, log_path, timeout)
        row.seconds = sampled.seconds
        row.peak_rss_kib = sampled.hwm_kib
        if sampled.timed_out:
            row.fail(f"emailrelay --as-client still running after {timeout:.0f}s; stopped")
        elif sampled.returncode != 0:
            row.fail(f"emailrelay --as-client exit {sampled.returncode}")
        received = sink.wait_count(count, 5.0)
    finally:
        sink.stop()
    user, system = sampled.cpu
    if sampled.maxrss_kib is not None and sampled.returncode == 0:
        row.notes.append(
            f"forwarder CPU {user:.2f}s user + {system:.2f}s sys; peak RSS polled {mb(sampled.hwm_kib)} MB "
            f"({sampled.samples} samples), wait4 ru_maxrss {mb(sampled.maxrss_kib)} MB "
            f"(this benchmark's own peak then {mb(sampled.own_maxrss_kib)} MB)"
        )
    log_lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    done = [m for m in map(_DONE_LINE.search, log_lines) if m]
    if done:
        sent, failed = int(done[-1].group(1)), int(done[-1].group(2))
        row.notes.append(f"forwarder log: {sent} sent, {failed} failed")
        if failed:
            row.fail(f"the forwarder failed {failed} message(s)")
    elif not row.error:
        row.fail("no 'forwarding: done' line in the forwarder's log")
    row.problems = log_problems(log_path)
    left = spool_entries(spool_dir)
    row.sent = min(received, count)
    if left:
        row.fail(f"spool not empty afterwards: {describe_entries(left)}")
    if received != count:
        row.fail(f"smtp-sink counted {received} of {count} messages")
    else:
        row.notes.append(f"check: spool empty, smtp-sink counted {received}")
    row.e2e_seconds = row.seconds
    return row, sampled


# -------------------------------------------------------------------- proxy


class ForwardingServer(Server):
    """store.Server with forwarding options added to its command line."""

    def __init__(self, procs: Processes, exe: str, spool: Path, log_path: Path, extra: list[str]) -> None:
        super().__init__(procs, exe, spool, log_path)
        self.extra = extra

    def command(self, port: int) -> list[str]:
        return super().command(port) + self.extra


def run_proxy(
    procs: Processes,
    exe: str,
    work: Path,
    label: str,
    tag: str,
    extra: list[str],
    messages: int,
    sessions: int,
    timeout: float,
) -> Row:
    row = Row(label, SMALL, messages, sessions)
    spool_dir = work / f"spool-{tag}"
    spool_dir.mkdir()
    log_path = work / f"emailrelay-{tag}.log"
    try:
        sink = Sink(procs, work / f"smtp-sink-{tag}.out")
    except RuntimeError as e:
        row.fail(f"smtp-sink: {e}")
        return row
    forward = ["--forward-to", f"127.0.0.1:{sink.port}", "--forward-on-disconnect", *extra]
    server = ForwardingServer(procs, exe, spool_dir, log_path, forward)
    code = None
    left: list[str] = []
    received = 0
    try:
        server.start()
        assert server.proc is not None
        result = Result(label, SMALL, messages, sessions)
        run_source(server.port, messages, sessions, SMALL, timeout, result)
        row.sent, row.seconds, row.error, row.notes = result.sent, result.seconds, result.error, result.notes
        left, received, drain = wait_drained(spool_dir, sink, row.sent, messages, server.proc)
        row.e2e_seconds = row.seconds + drain
        row.peak_rss_kib = server.peak_rss_kib()
        cpu = cpu_seconds(server.proc.pid)
        if cpu is not None:
            row.notes.append(f"server CPU {cpu[0]:.2f}s user + {cpu[1]:.2f}s sys over {row.e2e_seconds:.2f}s")
        received = check_drained(row, sink, left, received, drain)
    except RuntimeError as e:
        row.fail(str(e))
    finally:
        code = server.stop()
        sink.stop()
        row.notes += server.notes
    if code not in (None, 0, 128 + signal.SIGTERM, -signal.SIGTERM):
        row.notes.append(f"emailrelay exit code {code} after SIGTERM")
    if not left and received != row.sent:
        row.fail(f"smtp-sink counted {received} messages for {row.sent} sent by smtp-source")
    elif not row.error:
        row.notes.append(f"check: spool empty, smtp-sink counted {received}")
    row.problems = log_problems(log_path)
    return row


# --------------------------------------------------------------- supervised


def _process_figures(procs: list[psutil.Process], names: dict[int, str]) -> dict[int, dict]:
    """CPU times and VmHWM of each process still there, by pid."""
    out: dict[int, dict] = {}
    for p in procs:
        try:
            cpu = p.cpu_times()
        except psutil.Error:
            continue
        out[p.pid] = {
            "name": names.get(p.pid, "other"),
            "user": cpu.user,
            "system": cpu.system,
            "hwm_kib": proc_status_kib(p.pid, "VmHWM"),
        }
    return out


def stop_supervisor(
    procs: Processes, proc: subprocess.Popen[bytes], workers: list[psutil.Process]
) -> tuple[int | None, list[str]]:
    """SIGTERM; SIGKILL after SUPERVISOR_STOP_TIMEOUT; then SIGKILL any worker left behind."""
    notes: list[str] = []
    if proc.poll() is None:
        with contextlib.suppress(psutil.Error):  # those started since (or before workers were known)
            known = {w.pid for w in workers}
            workers = workers + [
                c for c in psutil.Process(proc.pid).children(recursive=True) if c.pid not in known
            ]
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(SUPERVISOR_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            notes.append(f"supervisor still running {SUPERVISOR_STOP_TIMEOUT:.0f}s after SIGTERM: killed")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    procs.stop(proc)  # exited: only forgets it
    for w in workers:
        try:
            if w.is_running() and w.status() != psutil.STATUS_ZOMBIE:
                w.kill()
                notes.append(f"worker pid {w.pid} still running after the supervisor had exited: killed")
        except psutil.Error:
            pass
    return proc.returncode, notes


def run_supervised(
    procs: Processes,
    exe: str,
    work: Path,
    label: str,
    tag: str,
    proxy: bool,
    messages: int,
    sessions: int,
    timeout: float,
) -> Row:
    """smtp-source into ``emailrelay supervise`` storing, or with ``--as-proxy`` to smtp-sink."""
    row = Row(label, SMALL, messages, sessions)
    spool_dir = work / f"spool-{tag}"
    spool_dir.mkdir()
    log_path = work / f"emailrelay-{tag}.log"
    sock = work / f"admin-{tag}.sock"
    sink: Sink | None = None
    if proxy:
        try:
            sink = Sink(procs, work / f"smtp-sink-{tag}.out")
        except RuntimeError as e:
            row.fail(f"smtp-sink: {e}")
            return row
    args = [
        exe, "supervise", "--log", "--no-daemon",
        "--port", "0",
        "--interface", "127.0.0.1",
        "--spool-dir", str(spool_dir),
        "--admin-socket", str(sock),
    ]  # fmt: skip
    if sink is not None:
        args += ["--as-proxy", f"127.0.0.1:{sink.port}"]
    supervisor: subprocess.Popen[bytes] | None = None
    workers: list[psutil.Process] = []
    code = None
    left: list[str] = []
    received = 0
    try:
        with open(log_path, "ab") as log:
            supervisor = procs.start(args, stdout=log, stderr=log)

        def smtp_port() -> int | None:
            ports = dict(_LISTENING.findall(log_path.read_text(errors="replace")))
            return int(ports["smtp"]) if "smtp" in ports else None

        port = wait_for("smtp listening", smtp_port, START_TIMEOUT, supervisor)
        status = wait_for("all workers RUNNING", lambda: all_running(exe, sock), 60, supervisor)
        names = {supervisor.pid: "supervisor"} | {w["pid"]: w["name"] for w in status["workers"]}
        root = psutil.Process(supervisor.pid)
        workers = root.children(recursive=True)
        before = _process_figures([root, *workers], names)

        result = Result(label, SMALL, messages, sessions)
        run_source(port, messages, sessions, SMALL, timeout, result)
        row.sent, row.seconds, row.error, row.notes = result.sent, result.seconds, result.error, result.notes
        drain = 0.0
        if sink is not None:
            left, received, drain = wait_drained(spool_dir, sink, row.sent, messages, supervisor)
            row.e2e_seconds = row.seconds + drain
        # the CPU and memory of every process, read before the supervisor is stopped
        after = _process_figures([root, *root.children(recursive=True)], names)
        elapsed = row.e2e_seconds or row.seconds
        parts = []
        total = 0.0
        for pid, fig in after.items():
            user = fig["user"] - before.get(pid, {}).get("user", 0.0)
            system = fig["system"] - before.get(pid, {}).get("system", 0.0)
            total += user + system
            row.processes.append({
                "name": fig["name"],
                "pid": pid,
                "cpu_user_s": round(user, 3),
                "cpu_system_s": round(system, 3),
                "peak_rss_mb": mb_or_none(fig["hwm_kib"]),
            })  # fmt: skip
            parts.append(
                f"{fig['name']} {user:.2f}s user + {system:.2f}s sys"
                + (f" = {(user + system) / elapsed:.0%}" if elapsed > 0 else "")
            )
        if parts:
            row.notes.append(
                f"CPU during the load ({elapsed:.2f}s, % of one core): "
                + "; ".join(parts)
                + (f"; all {total / elapsed:.0%}" if elapsed > 0 else "")
            )
        hwms = [fig["hwm_kib"] for fig in after.values() if fig["hwm_kib"] is not None]
        if hwms:
            row.peak_rss_kib = sum(hwms)
            row.notes.append(
                "peak RSS (VmHWM) "
                + ", ".join(f"{fig['name']} {mb(fig['hwm_kib'])} MB" for fig in after.values())
                + f"; the peak RSS column is their sum, {mb(row.peak_rss_kib)} MB"
            )
        final = ctl_status(exe, sock) or {"workers": []}
        restarts = {w["name"]: w["restarts"] for w in final["workers"] if w.get("restarts")}
        if restarts:
            row.notes.append(f"worker restarts during the run: {restarts}")
        if sink is not None:
            received = check_drained(row, sink, left, received, drain)
    except RuntimeError as e:
        row.fail(str(e))
    finally:
        if supervisor is not None:
            code, notes = stop_supervisor(procs, supervisor, workers)
            row.notes += notes
        if sink is not None:
            sink.stop()
    if code not in (None, 0, 128 + signal.SIGTERM, -signal.SIGTERM):
        row.notes.append(f"emailrelay supervise exit code {code} after SIGTERM")
    if sink is not None:
        if not left and received != row.sent:
            row.fail(f"smtp-sink counted {received} messages for {row.sent} sent by smtp-source")
        elif not row.error:
            row.notes.append(f"check: spool empty, smtp-sink counted {received}")
    else:
        counts = spool_counts(spool_dir)
        if counts["envelope"] != row.sent or counts["content"] != row.sent:
            row.fail(
                f"spool holds {counts['envelope']} *.envelope and {counts['content']} *.content "
                f"for {row.sent} messages sent"
            )
        elif not row.error:
            row.notes.append(
                f"check: spool holds {counts['envelope']} *.envelope + {counts['content']} *.content"
            )
    row.problems = log_problems(log_path)
    return row


# ------------------------------------------------------------------- report


def table(rows: list[Row]) -> str:
    header = ["run", "messages", "seconds", "msg/s", "MB/s", "end-to-end msg/s", "peak RSS MB", "target"]
    lines = [header]
    for r in rows:
        lines.append([
            r.label + ("" if not r.error else " (FAILED)"),
            f"{r.sent}/{r.requested}" if r.sent != r.requested else str(r.sent),
            f"{r.seconds:.2f}",
            f"{r.msgs_per_s:.0f}" if r.ok else "-",
            f"{r.mb_per_s:.1f}" if r.ok else "-",
            f"{r.e2e_msgs_per_s:.0f}" if r.ok and r.e2e_seconds else "-",
            mb(r.peak_rss_kib),
            r.target,
        ])  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(w) for cell, w in zip(line[1:-1], widths[1:-1], strict=True)]
        cells.append(line[-1])
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


# --------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--messages", type=int, help="messages in the --as-client run (default 5000; --quick 500)")
    p.add_argument(
        "--proxy-messages",
        type=int,
        help="smtp-source messages per proxy/store run (default 3000; --quick 300)",
    )
    p.add_argument("--sessions", type=int, help="smtp-source sessions (default 20)")
    p.add_argument("--large-mb", type=int, help="size of the large message in MB (default 100; --quick 10)")
    p.add_argument(
        "--connections",
        type=int,
        default=4,
        help="--forward-connections of the second --as-client row (default 4; 0 skips the row)",
    )
    p.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    p.add_argument("--keep", action="store_true", help="keep the spool directories and logs")
    p.add_argument(
        "--no-install", action="store_true", help="do not apt-get install postfix if it is missing"
    )
    p.add_argument(
        "--emailrelay", metavar="PATH", help="the emailrelay command (default: the one beside python)"
    )
    p.add_argument(
        "--tmp-dir", metavar="DIR", help="where the spool directories are made (default: $TMPDIR or /tmp)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds allowed for one smtp-source or forwarder run (600)",
    )
    p.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    args = p.parse_args(argv)
    args.messages = args.messages or (500 if args.quick else 5000)
    args.proxy_messages = args.proxy_messages or (300 if args.quick else 3000)
    args.sessions = args.sessions or 20
    args.large_mb = args.large_mb or (10 if args.quick else 100)
    for name in ("messages", "proxy_messages", "sessions", "large_mb"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.connections < 0:
        p.error("--connections must not be negative")
    return args


def wait_drained(
    spool_dir: Path, sink: Sink, sent: int, messages: int, proc: subprocess.Popen[bytes]
) -> tuple[list[str], int, float]:
    """Wait until the spool is empty and smtp-sink has every message (or a deadline, or the process died).

    Returns what is left in the spool, smtp-sink's count and the seconds waited.
    """
    deadline = 60.0 + messages / 50
    start = time.perf_counter()
    while True:
        left = spool_entries(spool_dir)
        received = sink.count()
        if (not left and received >= sent) or time.perf_counter() - start > deadline or proc.poll() is not None:
            return left, received, time.perf_counter() - start
        time.sleep(0.01)


def check_drained(row: Row, sink: Sink, left: list[str], received: int, drain: float) -> int:
    """Note the drain, fail the row if something stayed behind; returns smtp-sink's final count."""
    row.notes.append(f"drained {drain:.2f}s after smtp-source finished")
    if left:
        row.fail(
            f"after {drain:.0f}s the spool still holds {describe_entries(left)}; "
            f"smtp-sink counted {received} of {row.sent}"
        )
    return sink.wait_count(row.sent + 1, 0.2)  # a duplicate would show here


def row_dict(r: Row) -> dict:
    """One row for --json."""
    return {
        "label": r.label,
        "size_bytes": r.size,
        "messages_requested": r.requested,
        "sessions": r.sessions,
        "messages": r.sent,
        "seconds": round(r.seconds, 4),
        "msgs_per_s": round(r.msgs_per_s, 2) if r.ok else None,
        "mb_per_s": round(r.mb_per_s, 3) if r.ok else None,
        "e2e_seconds": round(r.e2e_seconds, 4) if r.e2e_seconds else None,
        "e2e_msgs_per_s": round(r.e2e_msgs_per_s, 2) if r.ok and r.e2e_seconds else None,
        "peak_rss_mb": mb_or_none(r.peak_rss_kib),
        "target": r.target,
        "error": r.error,
        "notes": list(r.notes),
        "log_problems": list(r.problems),
    } | ({"processes": list(r.processes)} if r.processes else {})


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM: stop everything and clean up, as for Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    ensure_postfix(install=not args.no_install)
    exe = emailrelay_command(args.emailrelay)
    procs = Processes()
    rows: list[Row] = []
    large = args.large_mb * MB
    no_journal = False
    started = datetime.datetime.now().isoformat(timespec="seconds")
    spool_fs = "?"
    figures: dict[str, float | None] = {}
    try:
        with workdir(args.tmp_dir, args.keep) as work:
            no_journal = ext4_without_journal(work)
            spool_fs = filesystem_of(work) + (" (no journal)" if no_journal else "")
            print(
                f"# emailrelay forwarding benchmark, {started}\n"
                f"# {platform.node()}: {os.cpu_count()} cpus, Linux {platform.release()}, "
                f"Python {platform.python_version()}, spool on {filesystem_of(work)}"
                f"{' (no journal)' if no_journal else ''}, "
                f"emailrelay at {git_commit()}\n"
                f"# --as-client: {args.messages} x 10 KB; smtp-source: {args.proxy_messages} x 10 KB, "
                f"{args.sessions} sessions, one connection per message; large message {args.large_mb} MB",
                flush=True,
            )

            print("  running store only ...", flush=True)
            stored = run_emailrelay(procs, exe, work, SMALL, args.proxy_messages, args.sessions, args.timeout)
            store_row = Row(**{f.name: getattr(stored, f.name) for f in dataclasses.fields(Result)})
            store_row.label = "store only"
            store_row.target = "(reference)"
            rows.append(store_row)

            for label, tag, extra in (
                ("proxy --forward-on-disconnect", "proxy", []),
                ("proxy --immediate", "immediate", ["--immediate"]),
            ):
                print(f"  running {label} ...", flush=True)
                row = run_proxy(
                    procs, exe, work, label, tag, extra, args.proxy_messages, args.sessions, args.timeout
                )
                if row.ok and store_row.ok:
                    ratio = row.msgs_per_s / store_row.msgs_per_s
                    figures[f"{tag}_over_store"] = round(ratio, 4)
                    figures[f"{tag}_e2e_over_store"] = round(row.e2e_msgs_per_s / store_row.msgs_per_s, 4)
                    row.target = f"/store {ratio:.2f}, >= {RATIO_TARGET}: {verdict(ratio >= RATIO_TARGET)}"
                rows.append(row)

            print("  running store only (supervised) ...", flush=True)
            sup_store = run_supervised(
                procs, exe, work, "store only (supervised)", "supervised-store", False,
                args.proxy_messages, args.sessions, args.timeout,
            )  # fmt: skip
            if sup_store.ok and store_row.ok:
                ratio = sup_store.msgs_per_s / store_row.msgs_per_s
                figures["supervised_store_over_store"] = round(ratio, 4)
                sup_store.target = f"(reference) /store {ratio:.2f}"
            else:
                sup_store.target = "(reference)"
            rows.append(sup_store)

            print("  running proxy (supervise --as-proxy) ...", flush=True)
            sup_proxy = run_supervised(
                procs, exe, work, "proxy (supervise --as-proxy)", "supervised-proxy", True,
                args.proxy_messages, args.sessions, args.timeout,
            )  # fmt: skip
            if sup_proxy.ok:
                targets = []
                for key, ref, what in (
                    ("store", store_row, "store"),
                    ("supervised_store", sup_store, "supervised store"),
                ):
                    if not ref.ok:
                        continue
                    e2e = sup_proxy.e2e_msgs_per_s / ref.msgs_per_s
                    at_source = sup_proxy.msgs_per_s / ref.msgs_per_s
                    figures[f"supervised_proxy_over_{key}"] = round(at_source, 4)
                    figures[f"supervised_proxy_e2e_over_{key}"] = round(e2e, 4)
                    if key == "store":
                        targets.append(
                            f"e2e/store {e2e:.2f}, >= {RATIO_TARGET}: {verdict(e2e >= RATIO_TARGET)}"
                        )
                    else:
                        targets.append(f"e2e/{what} {e2e:.2f}")
                    sup_proxy.notes.append(
                        f"over {what} only: {at_source:.2f} at smtp-source, {e2e:.2f} end to end"
                    )
                sup_proxy.target = "; ".join(targets)
            rows.append(sup_proxy)

            print("  running forward (--as-client) ...", flush=True)
            forward, _ = run_client(
                procs, exe, work, "forward (--as-client)", "forward", args.messages, SMALL, args.timeout
            )
            if forward.ok:
                forward.target = (
                    f">= {FORWARD_TARGET:.0f} msg/s: {verdict(forward.msgs_per_s >= FORWARD_TARGET)}"
                )
            rows.append(forward)

            if args.connections:
                label = f"forward (--as-client, {args.connections} connections)"
                print(f"  running {label} ...", flush=True)
                parallel, _ = run_client(
                    procs,
                    exe,
                    work,
                    label,
                    "forward-parallel",
                    args.messages,
                    SMALL,
                    args.timeout,
                    ["--forward-connections", str(args.connections)],
                )
                if parallel.ok and forward.ok:
                    gain = parallel.msgs_per_s / forward.msgs_per_s
                    figures["parallel_over_one_connection"] = round(gain, 4)
                    parallel.target = f"/1 connection {gain:.2f}, > 1: {verdict(gain > 1.0)}"
                rows.append(parallel)

            print("  running memory 10 KB ...", flush=True)
            small, _ = run_client(procs, exe, work, "memory 10 KB", "mem-small", 1, SMALL, args.timeout)
            small.target = "(reference)"
            rows.append(small)
            print(f"  running memory {args.large_mb} MB ...", flush=True)
            big, _ = run_client(
                procs, exe, work, f"memory {args.large_mb} MB", "mem-large", 1, large, args.timeout
            )
            if small.ok and big.ok and small.peak_rss_kib and big.peak_rss_kib:
                growth = (big.peak_rss_kib - small.peak_rss_kib) / 1024
                big.target = f"{growth:+.1f} MB, < {MEMORY_TARGET:.0f} MB: {verdict(growth < MEMORY_TARGET)}"
                figures["memory_growth_mb"] = round(growth, 2)
            rows.append(big)
    finally:
        procs.stop_all()

    print()
    print(table(rows))
    print()
    print(
        "msg/s: --as-client rows over the whole command's wall time; server rows at smtp-source. "
        "end-to-end: until the spool was empty and smtp-sink had every message."
    )
    if no_journal:
        print(
            "note: the spool is on an ext4 without a journal, which avoids reusing inodes deleted in the last\n"
            "  60-360 s: every file creation then reads past each recently deleted inode (the kernel's\n"
            "  recently_deleted()), so storing slows down while (and for minutes after) messages are\n"
            "  forwarded and deleted -- the proxy rows, and any run soon after another; compare with\n"
            "  --tmp-dir on a journaled file system"
        )
    failed = False
    for r in rows:
        for note in r.notes:
            print(f"  {r.label}: {note}")
        for line in r.problems[:5]:
            print(f"  {r.label}: emailrelay log: {line}")
        if len(r.problems) > 5:
            print(f"  {r.label}: ... {len(r.problems) - 5} more warning/error line(s)")
        if r.error:
            failed = True
            print(f"  {r.label}: ERROR: {r.error}")
    if args.json:
        write_json(
            args.json,
            {
                "script": "forward.py",
                "date": started,
                "spool_filesystem": spool_fs,
                "emailrelay_commit": git_commit(),
                "params": {
                    "messages": args.messages,
                    "proxy_messages": args.proxy_messages,
                    "sessions": args.sessions,
                    "large_mb": args.large_mb,
                    "connections": args.connections,
                },
                "rows": [row_dict(r) for r in rows],
                "figures": figures,
                "ok": not failed,
            },
        )
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # everything started has been stopped by then
        sys.exit("forward.py: interrupted; every process it started has been stopped")
