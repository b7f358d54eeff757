#!/usr/bin/env python3
"""Benchmark of emailrelay-tui against a real ``emailrelay supervise``: first screen, CPU under load, a 100,000-message spool.

The TUI (``emailrelay.tui.app.EmailRelayApp``) runs headless in this process
with Textual's ``App.run_test(size=(120, 40))``; each supervisor runs in a
temporary directory as ``emailrelay supervise --spool-dir D --port 0
--interface 127.0.0.1 --admin-socket A --forward-to 127.0.0.1:<closed port>
--poll 3600``, so every message stays in the spool.

1. First screen: app start to the first ``status`` shown
   (``first_status_at - started_at``) and wall time until ``connected and
   status``, --repeats fresh apps on an empty spool.
2. CPU of this process while a load generator (another process: smtplib,
   --sessions sessions paced to --rate messages/s of --size bytes) keeps the
   relay storing: idle dashboard, dashboard under load, spool tab under load,
   --window seconds each; CPU % of one core from ``os.times()`` of this
   process (the generator is not in it), store rate from the spool.  Then,
   unless --no-pty, the same two windows for ``emailrelay-tui`` in a real
   pseudo-terminal (a child process, measured with psutil), for the
   terminal-output cost that a headless app skips.
3. A spool pre-filled with --spool-messages (100,000) messages through the
   library (``Spool(dir, fsync=False)``) before its supervisor starts: the
   supervisor's ``list`` (500 rows) and ``status`` call times alone
   (``AdminClient``); in the TUI the first screen with the admin calls made
   until then, key "3" until the spool table has the page it asked for, and
   PageDown (then "n" if PageDown brought no page) until the next page.

Prints a report; exits 0 after it, 1 if the run broke.  A crash of the app
after a phase had its figures (as it stops) is reported as a note and does
not fail the run.  bench/README.md has the details and figures.

Run:  .venv/bin/python bench/tui.py [--quick] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import fcntl
import os
import platform
import pty
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from emailrelay.admin_client import AdminClient, Unreachable
from emailrelay.admin_protocol import AdminError
from emailrelay.envelope import Envelope
from emailrelay.spool import Spool
from emailrelay.tui.app import EmailRelayApp
from emailrelay.tui.connection import AdminConnection

SIZE = (120, 40)
POLL = 0.005  # seconds between checks of the app's state while timing
PAGE = 500  # rows per spool page, as emailrelay/tui/spool.py asks for
_LISTENING = re.compile(r"\[supervisor\] smtp listening on 127\.0\.0\.1:(\d+)")
LOADGEN = r"""
import smtplib, sys, threading, time
port, rate, sessions, size = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
head = b"From: load@example.com\r\nTo: tui@example.com\r\nSubject: tui benchmark\r\n\r\n"
body = (head + b"x" * 78 + b"\r\n" * (1 + size // 80))[: max(size - 2, len(head))] + b"\r\n"
stop, sent, errors = threading.Event(), [0] * sessions, []
def session(i):
    interval = sessions / rate  # seconds between one session's messages
    due = time.monotonic() + i / rate
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
            while not stop.is_set():
                wait = due - time.monotonic()
                if wait > 0:
                    stop.wait(wait)
                    continue
                s.sendmail("load@example.com", ["tui@example.com"], body)
                sent[i] += 1
                due = max(due + interval, time.monotonic() - 1.0)  # catch up by at most 1 s
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(sessions)]
start = time.monotonic()
for t in threads:
    t.start()
print("started", flush=True)
sys.stdin.readline()  # until the benchmark says stop (or goes away)
stop.set()
for t in threads:
    t.join(60)
print(sum(sent), round(time.monotonic() - start, 3), len(errors), *errors[:3], flush=True)
"""


# -- processes and files ----------------------------------------------------------------


def closed_port() -> int:
    """A 127.0.0.1 port that nothing listens on (the forward address that never answers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def envelopes(spool: Path) -> int:
    with os.scandir(spool) as it:
        return sum(1 for e in it if ".envelope" in e.name)


def fill_part(spool_dir: str, count: int) -> int:
    """Commit `count` small messages with the library, no fsync (one pool process's share)."""
    spool = Spool(spool_dir, fsync=False)
    content = (b"From: fill@example.com\r\nTo: tui@example.com\r\nSubject: spool view benchmark\r\n\r\n"
               + b"0123456789" * 20 + b"\r\n")
    for i in range(count):
        msg = spool.create()
        msg.write(content)
        spool.commit_sync(msg, Envelope(from_address=f"fill{i % 97}@example.com",
                                        to_remote=["tui@example.com"], client="127.0.0.1"))
    return count


def fill(spool: Path, count: int, procs: int) -> float:
    start = time.perf_counter()
    shares = [count // procs + (i < count % procs) for i in range(procs)]
    with ProcessPoolExecutor(procs) as pool:  # before any thread or loop of ours exists
        done = sum(pool.map(fill_part, [str(spool)] * procs, shares))
    if done != count or envelopes(spool) != count:
        raise RuntimeError(f"spool fill: {envelopes(spool)} envelopes, not {count}")
    return time.perf_counter() - start


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"pid {proc.pid} still running {timeout:g}s after SIGTERM: killed", flush=True)
            proc.kill()
            proc.wait()


class Relay:
    """One ``emailrelay supervise`` in the work directory, forwarding to a closed port."""

    def __init__(self, exe: str, work: Path, name: str, spool: Path) -> None:
        self.sock, self.log_path, self.spool = work / f"{name}.sock", work / f"{name}.log", spool
        self.workers: list[tuple[str, psutil.Process]] = []
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [exe, "supervise", "--spool-dir", str(spool), "--port", "0", "--interface", "127.0.0.1",
                 "--admin-socket", str(self.sock), "--forward-to", f"127.0.0.1:{closed_port()}", "--poll", "3600"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        self.started = time.perf_counter()
        self.port = 0

    def wait_running(self, timeout: float) -> float:
        """Seconds from the start until the SMTP port is logged and every worker is RUNNING."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"emailrelay supervise exited with status {self.proc.returncode}")
            if not self.port and (m := _LISTENING.search(self.log_path.read_text(errors="replace"))):
                self.port = int(m.group(1))
            if self.port and self.sock.exists():
                try:
                    with AdminClient(str(self.sock), timeout=30) as c:
                        workers = c.call("status")["workers"]
                except (Unreachable, AdminError):
                    workers = []
                if workers and all(w["state"] == "RUNNING" for w in workers):
                    self.workers = [(w["name"], psutil.Process(w["pid"])) for w in workers]
                    return time.perf_counter() - self.started
            time.sleep(0.05)
        raise RuntimeError(f"supervisor not running with all workers within {timeout:g}s")

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user+system) of the supervisor and each worker."""
        out = {}
        for name, p in [("supervisor", psutil.Process(self.proc.pid)), *self.workers]:
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            out[name] = t.user + t.system
        return out

    def stop(self) -> None:
        stop_process(self.proc, 30)
        for _, p in self.workers:  # orphans, if the supervisor had to be killed
            try:
                p.kill()
            except psutil.Error:
                pass

    def problems(self) -> list[str]:
        text = self.log_path.read_text(errors="replace").splitlines()
        return [ln for ln in text if re.search(r": (warning|error): ", ln) and "forwarding: " not in ln]


class LoadGen:
    """The SMTP load in a process of its own (LOADGEN)."""

    def __init__(self, port: int, rate: float, sessions: int, size: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", LOADGEN, str(port), str(rate), str(sessions), str(size)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if (self.proc.stdout.readline() or "").strip() != "started":  # type: ignore[union-attr]
            self.kill()
            raise RuntimeError("the load generator did not start")
        self.ps = psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def finish(self) -> tuple[int, float, list[str]]:
        """Stop it: (messages sent, its seconds, errors)."""
        out, _ = self.proc.communicate("stop\n", timeout=120)
        fields = out.split(maxsplit=3)
        sent, seconds, nerr = int(fields[0]), float(fields[1]), int(fields[2])
        return sent, seconds, ([fields[3]] if nerr else [])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# -- measuring the app ---------------------------------------------------------------------


async def until(predicate: Any, timeout: float, what: str) -> float:
    """Seconds until predicate() is true, checked every POLL s (no forced redraws)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(POLL)
    return time.monotonic() - start


class Window:
    """CPU of this process, of the relay's processes and of the load generator, and the store rate, over a span."""

    def __init__(self, relay: Relay, load: LoadGen | None) -> None:
        self.relay, self.load = relay, load

    def __enter__(self) -> Window:
        self.n0 = envelopes(self.relay.spool)
        self.others0 = self.relay.cpu() | ({"load generator": self.load.cpu()} if self.load else {})
        self.t0, self.times0 = time.monotonic(), os.times()
        return self

    def __exit__(self, *exc: object) -> None:
        times1, t1 = os.times(), time.monotonic()
        self.wall = t1 - self.t0
        self.user, self.sys = times1.user - self.times0.user, times1.system - self.times0.system
        others1 = self.relay.cpu() | ({"load generator": self.load.cpu()} if self.load else {})
        self.others = {k: (others1[k] - v) / self.wall * 100 for k, v in self.others0.items() if k in others1}
        self.stored = envelopes(self.relay.spool) - self.n0

    def row(self, what: str) -> str:
        others = ", ".join(f"{k} {v:.0f}%" for k, v in self.others.items())
        return (f"{what:<26} {self.wall:6.1f} {(self.user + self.sys) / self.wall * 100:6.1f} "
                f"{self.user / self.wall * 100:6.1f} {self.sys / self.wall * 100:6.1f} "
                f"{self.stored / self.wall:8.0f}   {others}")


async def first_screen(sock: Path, timeout: float, result: dict[str, Any]) -> None:
    """result["first"]: first_status_at - started_at; result["wall"]: from before EmailRelayApp() until
    connected and status; then half a second for the views to take the first batch of log lines."""
    start = time.monotonic()
    app = EmailRelayApp(str(sock))
    async with app.run_test(size=SIZE):
        await until(lambda: app.connected and app.status, timeout, "first screen")
        result["wall"] = time.monotonic() - start
        result["first"] = (app.first_status_at or 0) - app.started_at
        await asyncio.sleep(0.5)
        result["done"] = True


async def cpu_app(args: argparse.Namespace, relay: Relay, info: dict[str, Any]) -> None:
    """The in-process app: idle, then under load on the dashboard and on the spool tab (info["lines"])."""
    lines, load = info.setdefault("lines", []), None
    app = EmailRelayApp(str(relay.sock))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: app.connected and app.status, args.timeout, "connected")
            await asyncio.sleep(1.0)
            with Window(relay, None) as idle:
                await asyncio.sleep(args.idle)
            lines.append(idle.row("idle, dashboard"))
            load = LoadGen(relay.port, args.rate, args.sessions, args.size)
            await asyncio.sleep(args.warmup)
            with Window(relay, load) as dash:
                await asyncio.sleep(args.window)
            lines.append(dash.row("load, dashboard"))
            view = app.query_one("#spool-view")
            before = view.rows
            info["switch"], info["switch_press"] = await press_until(
                pilot, "3", lambda: view.rows is not before and view.rows, args.timeout)
            info["switch_loaded_at"], info["switch_total"] = view.loaded_at, view.total
            await asyncio.sleep(1.0)
            with Window(relay, load) as spool_tab:
                await asyncio.sleep(args.window)
            lines.append(spool_tab.row("load, spool tab"))
            info["dashboard_messages"] = len(app.query_one("#dashboard-view").messages)
            info["spool_counts"] = dict(view.counts)
            info["load"] = await asyncio.to_thread(load.finish)  # before the app stops
            await asyncio.sleep(0.5)
            info["done"] = True
    finally:
        if load is not None:
            load.kill()


def run_app(phase: Any, *args: Any, errors: Path) -> tuple[dict[str, Any], str | None]:
    """Run one app phase: (its info, the app's error if it crashed after the phase had its figures).

    What the app prints when it crashes (Textual's traceback) goes to the file `errors`, not the report."""
    info: dict[str, Any] = {}
    try:
        with open(errors, "a") as f, contextlib.redirect_stderr(f), contextlib.redirect_stdout(f):
            asyncio.run(phase(*args, info))
    except Exception as e:
        if not info.get("done"):
            raise
        return info, describe(e)
    return info, None


def pty_phase(args: argparse.Namespace, relay: Relay) -> tuple[list[str], tuple[int, float, list[str]], str | None]:
    """``emailrelay-tui`` in a 120x40 pseudo-terminal under load, its output read and dropped; CPU with psutil.

    Returns the two window rows, the load generator's figures and, if the app did not exit cleanly on "q",
    what it printed."""
    exe = shutil.which("emailrelay-tui", path=str(Path(sys.executable).parent)) or "emailrelay-tui"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(SIZE[0]), "LINES": str(SIZE[1])}
    proc = subprocess.Popen([exe, "--admin-socket", str(relay.sock)], stdin=slave, stdout=slave, stderr=slave,
                            env=env, start_new_session=True)
    os.close(slave)
    out = bytearray()
    count = [0]

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            count[0] += len(data)
            if len(out) < 1 << 20:
                out.extend(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    lines, load, crash = [], None, None
    try:
        deadline = time.monotonic() + args.timeout
        while b"connected to" not in out:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("emailrelay-tui in a pty did not connect")
            time.sleep(0.05)
        load = LoadGen(relay.port, args.rate, args.sessions, args.size)
        time.sleep(args.warmup)
        ps = psutil.Process(proc.pid)
        for what, key in (("pty, load, dashboard", None), ("pty, load, spool tab", b"3")):
            if key:
                os.write(master, key)
                time.sleep(2.0)
            with Window(relay, load) as w:
                c0, b0 = ps.cpu_times(), count[0]
                time.sleep(args.window)
                c1, b1 = ps.cpu_times(), count[0]
            w.user, w.sys = c1.user - c0.user, c1.system - c0.system
            lines.append(w.row(what) + f", terminal output {(b1 - b0) / w.wall / 1024:.0f} KiB/s")
        mark = len(out)
        os.write(master, b"q")  # under load, as an operator would
        proc.wait(10)
        reader.join(5)
        if proc.returncode or b"Traceback" in out[mark:]:
            text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0e-\x1f]", b"", bytes(out[mark:]))
            errors = re.findall(rb"\w+(?:Error|Exception|NoMatches)\b:[^\r\n]*", text)
            crash = f"exit status {proc.returncode}: " + (errors[-1].decode(errors="replace") if errors else "")
        info = load.finish()
    finally:
        if load is not None:
            load.kill()
        if proc.poll() is None:
            stop_process(proc, 5)
        os.close(master)
        reader.join(5)
    return lines, info, crash


async def press_until(pilot: Any, key: str, predicate: Any, timeout: float) -> tuple[float, float]:
    """(seconds until predicate() after the key, seconds until Pilot.press returned), timed from the key.

    The predicate is checked while the press is still being processed: Pilot.press waits for the app to be
    idle, which under a steady event stream can come well after the screen has what we wait for."""
    t0 = time.monotonic()
    done: list[float] = []
    press = asyncio.ensure_future(pilot.press(key))
    press.add_done_callback(lambda _: done.append(time.monotonic() - t0))
    try:
        seconds = await until(predicate, timeout, f"key {key}")
        await press
    finally:
        press.cancel()
    return seconds, done[0]


class CallTrace:
    """Every admin request of the app's connection (AdminConnection.call, wrapped for the span): start and
    end, seconds after the app's start."""

    def __init__(self, app: EmailRelayApp) -> None:
        self.app, self.calls = app, []

    def __enter__(self) -> CallTrace:
        self.original = original = AdminConnection.call
        trace = self

        async def call(connection: AdminConnection, op: str, timeout: float = 60.0, **kw: Any) -> Any:
            start = time.monotonic() - trace.app.started_at
            try:
                return await original(connection, op, timeout, **kw)
            finally:
                what = op + (f" {kw['state']}" if "state" in kw else "")
                trace.calls.append((start, time.monotonic() - trace.app.started_at, what))

        AdminConnection.call = call  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        AdminConnection.call = self.original  # type: ignore[method-assign]


async def spool_phase(args: argparse.Namespace, relay: Relay, info: dict[str, Any]) -> None:
    app = EmailRelayApp(str(relay.sock))
    with CallTrace(app) as trace:
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: app.connected and app.status, args.timeout, "connected")
            info["first_screen"] = (app.first_status_at or 0) - app.started_at
            info["connect_calls"] = [c for c in trace.calls if c[0] <= info["first_screen"]]
            view = app.query_one("#spool-view")
            table = view.query_one("DataTable")
            # the view lists a page as soon as it is connected, hidden or not
            await until(lambda: view.rows, args.timeout, "rows at connect")
            info["connect_rows"] = time.monotonic() - app.started_at
            info["connect_loaded_at"] = view.loaded_at
            await asyncio.sleep(1.0)
            before = view.rows
            t0 = time.monotonic()
            info["open"], info["open_press"] = await press_until(
                pilot, "3", lambda: view.rows is not before and view.rows and table.row_count, args.timeout)
            await pilot.pause()  # until the app is idle: the new rows laid out and rendered
            info["open_idle"], info["open_loaded_at"] = time.monotonic() - t0, view.loaded_at
            info["rows"], info["total"], info["first_id"] = table.row_count, view.total, view.rows[0]["id"]
            await asyncio.sleep(1.0)
            for key in ("pagedown", "n"):
                before, cursor = view.rows, table.cursor_row
                t0 = time.monotonic()
                try:
                    seconds, pressed = await press_until(
                        pilot, key, lambda b=before: view.rows is not b and view.rows and table.row_count, 5.0)
                except RuntimeError:
                    info[key] = None
                    info[f"{key}_cursor"] = (cursor, table.cursor_row)
                    continue
                await pilot.pause()
                info[key] = (seconds, time.monotonic() - t0, view.loaded_at, view.start, view.rows[0]["id"])
                break
            info["done"] = True


def admin_times(sock: Path, repeats: int) -> dict[str, list[float]]:
    """Seconds per admin call alone, on one AdminClient connection."""
    calls = {"list offset 0": ("list", {"state": "all", "offset": 0, "limit": PAGE}),
             "list offset 500": ("list", {"state": "all", "offset": PAGE, "limit": PAGE}),
             "list last page": ("list", {"state": "all", "offset": -1, "limit": PAGE}),
             "status": ("status", {})}
    out: dict[str, list[float]] = {}
    with AdminClient(str(sock), timeout=120) as c:
        total = c.call("list", state="all", offset=0, limit=0)["total"]
        for name, (op, kw) in calls.items():
            if kw.get("offset") == -1:
                kw["offset"] = max(0, total - PAGE)
            for _ in range(repeats):
                t0 = time.perf_counter()
                result = c.call(op, **kw)
                out.setdefault(name, []).append(time.perf_counter() - t0)
            if op == "list" and len(result["messages"]) != min(PAGE, total):
                raise RuntimeError(f"{name}: {len(result['messages'])} rows, not {PAGE}")
    return out


# -- the run -------------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def run(args: argparse.Namespace, work: Path, exe: str) -> int:
    big = work / "spool-big"
    big.mkdir()
    print(f"filling {big} with {args.spool_messages} messages ...", flush=True)
    fill_seconds = fill(big, args.spool_messages, args.fill_procs)
    print(f"filled in {fill_seconds:.1f}s ({args.spool_messages / fill_seconds:.0f} msg/s, "
          f"{args.fill_procs} processes, no fsync)", flush=True)

    # 1 and 2: an empty spool
    small = work / "spool"
    small.mkdir()
    problems: list[str] = []  # the run broke: exit 1
    notes: list[str] = []  # the app's errors when it stopped, the relays' warnings: shown, exit 0
    app_errors = work / "app-errors.txt"
    relay = Relay(exe, work, "empty", small)
    try:
        up = relay.wait_running(args.timeout)
        print(f"\n## 1. first screen (empty spool; supervisor up in {up:.2f}s)", flush=True)
        runs = []
        for i in range(1, args.repeats + 1):
            result, crash = run_app(first_screen, relay.sock, args.timeout, errors=app_errors)
            if crash:
                notes.append(f"first screen run {i}: the app crashed as it stopped: {crash}")
            runs.append((result["first"], result["wall"]))
            print(f"run {i}: first_status_at - started_at {ms(result['first'])}, "
                  f"wall until connected and status {ms(result['wall'])}")
        if len(runs) > 1:
            print(f"median of runs 2-{len(runs)}: {ms(statistics.median(r[0] for r in runs[1:]))} / "
                  f"{ms(statistics.median(r[1] for r in runs[1:]))} (run 1 also imports the views)")

        print(f"\n## 2. CPU of the TUI, load target {args.rate:g} msg/s of {args.size} bytes over {args.sessions} "
              f"SMTP sessions (another process)", flush=True)
        print(f"{'window':<26} {'s':>6} {'CPU %':>6} {'user':>6} {'sys':>6} {'stored/s':>8}   other processes "
              "(% of one core)")
        info, crash = run_app(cpu_app, args, relay, errors=app_errors)
        if crash:
            notes.append(f"the app crashed as it stopped after the CPU windows: {crash}")
        for line in info["lines"]:
            print(line)
        pty_load = None
        if not args.no_pty:
            lines, pty_load, crash = pty_phase(args, relay)
            for line in lines:
                print(line)
            if crash:
                notes.append(f"emailrelay-tui in the pty, quit with q under load: {crash}")
        sent, seconds, errors = info["load"]
        if pty_load:
            sent, seconds, errors = sent + pty_load[0], seconds + pty_load[1], errors + pty_load[2]
        print(f"switch to the spool tab under load: {ms(info['switch'])} until its page was in the table "
              f"(loaded_at {ms(info['switch_loaded_at'])}, {info['switch_total']} messages; Pilot.press returned "
              f"after {ms(info['switch_press'])})")
        print(f"load generator ({'2 runs' if pty_load else '1 run'}): {sent} messages in {seconds:.1f}s ({sent / max(seconds, 1e-9):.0f} msg/s), "
              f"{len(errors)} errors {' '.join(errors)}; spool now {envelopes(small)}; dashboard showed "
              f"{info['dashboard_messages']} recent messages, spool tab counts {info['spool_counts']}")
        notes += [f"empty-spool relay: {p}" for p in relay.problems()]
        if errors:
            problems.append(f"load generator: {errors}")
    finally:
        relay.stop()
    shutil.rmtree(small, ignore_errors=True)

    # 3: the full spool
    relay = Relay(exe, work, "big", big)
    try:
        up = relay.wait_running(args.timeout)
        print(f"\n## 3. spool view with {args.spool_messages} messages (supervisor up in {up:.2f}s)", flush=True)
        for name, times in admin_times(relay.sock, args.repeats).items():
            print(f"AdminClient {name:<16} " + " / ".join(ms(t) for t in times))
        info, crash = run_app(spool_phase, args, relay, errors=app_errors)
        if crash:
            notes.append(f"the app crashed as it stopped after the spool view: {crash}")
        print(f"first screen: first_status_at - started_at {ms(info['first_screen'])}; the app's admin calls "
              "until then (start-end after the app's start):")
        for start, end, what in sorted(info["connect_calls"]):
            print(f"  {what:<14} {start * 1000:6.0f}-{end * 1000:.0f} ms ({ms(end - start)})")
        print(f"app start to first page loaded (the hidden spool view lists at connect): {ms(info['connect_rows'])}, "
              f"loaded_at {ms(info['connect_loaded_at'])}")
        print(f"key 3 until the table has the page it asked for: {ms(info['open'])}, until the app is idle "
              f"again {ms(info['open_idle'])} (loaded_at {ms(info['open_loaded_at'])}); {info['rows']} rows of "
              f"{info['total']}, first {info['first_id']}")
        for key in ("pagedown", "n"):
            if key not in info:
                continue
            if info[key] is None:
                before, after = info[f"{key}_cursor"]
                print(f"key {key}: no new page within 5 s (table cursor row {before} -> {after})")
            else:
                wall, idle, loaded, start, first = info[key]
                print(f"key {key} until the table has the next page: {ms(wall)}, until idle {ms(idle)} "
                      f"(loaded_at {ms(loaded)}); rows {start + 1}-{start + PAGE}, first {first}")
        if info["total"] != args.spool_messages:
            problems.append(f"spool view total {info['total']}, not {args.spool_messages}")
        notes += [f"full-spool relay: {p}" for p in relay.problems()]
    finally:
        relay.stop()
    for n in notes[:10]:
        print(f"note: {n}")
    if app_errors.exists() and app_errors.stat().st_size:
        print(f"note: the app's own output (tracebacks) is in {app_errors}" + ("" if args.keep else ", removed: use --keep"))
    for p in problems[:10]:
        print(f"problem: {p}")
    return 1 if problems else 0


def describe(e: BaseException) -> str:
    """One line for an error; for a crash of the app, also where in emailrelay it happened."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "/emailrelay/" in f.filename]
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name})" if frames else ""
    return f"{type(e).__name__}: {e}{where}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="first-screen runs and admin calls per kind (5)")
    p.add_argument("--rate", type=float, default=500.0, help="load target, messages/s (500)")
    p.add_argument("--sessions", type=int, default=10, help="SMTP sessions of the load generator (10)")
    p.add_argument("--size", type=int, default=1024, help="message size in bytes (1024)")
    p.add_argument("--window", type=float, help="seconds per CPU window (10; --quick 3)")
    p.add_argument("--idle", type=float, default=5.0, help="seconds of the idle window (5)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before the first window (3)")
    p.add_argument("--spool-messages", type=int, help="messages in the pre-filled spool (100000; --quick 10000)")
    p.add_argument("--fill-procs", type=int, default=os.cpu_count() or 2, help="processes filling it (cpus)")
    p.add_argument("--no-pty", action="store_true", help="skip the emailrelay-tui-in-a-pty windows")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds allowed for any one wait (120)")
    p.add_argument("--quick", action="store_true", help="short windows and a 10,000-message spool")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (spools, logs)")
    p.add_argument("--tmp-dir", metavar="DIR", help="where the temporary directory is made")
    args = p.parse_args()
    args.window = args.window or (3.0 if args.quick else 10.0)
    args.spool_messages = args.spool_messages or (10_000 if args.quick else 100_000)
    if args.quick:
        args.idle, args.warmup, args.repeats = min(args.idle, 2.0), min(args.warmup, 1.0), min(args.repeats, 3)
    exe = shutil.which("emailrelay", path=str(Path(sys.executable).parent)) or "emailrelay"
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up as for Ctrl-C
    work = Path(tempfile.mkdtemp(prefix="emailrelay-tui-", dir=args.tmp_dir))
    print(f"# emailrelay-tui benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}, "
          f"{os.cpu_count()} cpus, Linux {platform.release()}, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f}; work dir {work}", flush=True)
    try:
        return run(args, work, exe)
    except Exception as e:  # noqa: BLE001 - a crash of the app under test too: report it, clean up
        print(f"tui.py: error: {describe(e)}", file=sys.stderr)
        for log in sorted(work.glob("*.log")):
            for line in log.read_text(errors="replace").splitlines()[-5:]:
                print(f"  {log.name}: {line}", file=sys.stderr)
        return 1
    finally:
        print(f"kept {work}") if args.keep else shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("tui.py: interrupted; every process it started has been stopped")
