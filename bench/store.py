#!/usr/bin/env python3
"""Storage throughput and memory benchmark for the emailrelay SMTP server.

Four runs, each printed as one row of a table:

1. ceiling, 10 KB: Postfix's ``smtp-source`` straight into ``smtp-sink``
   (no storage at all: the reference rate of this client and sink here);
2. emailrelay, 10 KB: ``smtp-source`` into a real ``emailrelay --log
   --no-daemon --port 0 --interface 127.0.0.1 --spool-dir <tmp>`` server,
   with its normal fsync-on-commit durability;
3. ceiling, 1 MB;
4. emailrelay, 1 MB;
5. emailrelay, 100 MB: one message (``--huge-mb``; ``--quick`` 10 MB) from
   one smtp-source session, for the server's peak RSS only.

Each emailrelay run gets a fresh server process and a fresh spool
directory, so the peak RSS (``VmHWM`` in ``/proc/<pid>/status``, read just
before the server is stopped) belongs to that run alone.  After each run the
spool must hold exactly one ``*.envelope`` file per message that
smtp-source counted as sent.  The report ends with the peak-RSS difference
between the 1 MB and the 10 KB runs (acceptance: at most 5 MB) and between
the 100 MB and the 10 KB runs (acceptance: under 5 MB).  ``--json PATH``
also writes every figure to a JSON file (bench/run reads it).

Units: MB is 2**20 bytes (a "1 MB" message is ``-l 1048576``).  MB/s counts
the smtp-source payload (``-l`` bytes) only, not its ~130 bytes of headers
nor the SMTP dialogue.  smtp-source opens a new connection per message
(no ``-d``), to the ceiling and to emailrelay alike.

Needs /usr/sbin/smtp-source and /usr/sbin/smtp-sink (Debian package
``postfix``); the script installs it with apt-get unless ``--no-install``.
Postfix is installed with debconf's "No configuration" so that its own mail
system is neither configured nor started: only the two test binaries are
used.  Every process the script starts is stopped before it exits and its
temporary directories are removed (unless ``--keep``).  It asserts nothing
about speed; it exits 1 only if a run could not be carried out or the spool
check failed.

Run:  .venv/bin/python bench/store.py [--quick] [--messages N] [--sessions N]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"

SMALL = 10 * 1024
LARGE = 1024 * 1024
MB = 1024 * 1024

SENDER = "bench@example.com"
RECIPIENT = "sink@example.com"

#: How long a server may take to start listening.
START_TIMEOUT = 20.0
#: How long a server may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0

_SERVER_LINE = re.compile(r"smtp server on (\S+)[:.](\d+)\s*$")
_PROBLEM_LINE = re.compile(r"(: (warning|error): )|Traceback|Exception", re.IGNORECASE)


# --------------------------------------------------------------- processes


class Processes:
    """Every child process the benchmark starts, so that all are stopped."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], **kwargs) -> subprocess.Popen[bytes]:  # noqa: ANN003
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> int:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; returns the exit code."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        if proc in self._procs:
            self._procs.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in list(self._procs):
            self.stop(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s") from None
            time.sleep(0.05)


def proc_status_kib(pid: int, key: str) -> int | None:
    """A kB field of /proc/<pid>/status (VmHWM is the peak resident set)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds used so far by a process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # fields[0] is the state, field 3 of stat(5)
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def child_pids(pid: int) -> list[int]:
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            children.append(int(entry.name))
    return children


# ------------------------------------------------------------------ postfix


def ensure_postfix(install: bool) -> None:
    if os.access(SMTP_SOURCE, os.X_OK) and os.access(SMTP_SINK, os.X_OK):
        return
    if not install:
        sys.exit(f"store.py: {SMTP_SOURCE} or {SMTP_SINK} missing: install postfix, or drop --no-install")
    if os.geteuid() != 0:
        sys.exit("store.py: installing postfix needs root (or install it first and use --no-install)")
    print("installing postfix for smtp-source and smtp-sink ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # "No configuration": no main.cf, so the postfix mail system is not started.
    subprocess.run(
        ["debconf-set-selections"],
        input=b"postfix postfix/main_mailer_type select No configuration\n",
        check=False,
        env=env,
    )
    subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "postfix"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    if not (os.access(SMTP_SOURCE, os.X_OK) and os.access(SMTP_SINK, os.X_OK)):
        sys.exit(f"store.py: postfix installed but {SMTP_SOURCE} / {SMTP_SINK} still missing")


# ------------------------------------------------------------------ results


@dataclass
class Result:
    label: str
    size: int
    requested: int
    sessions: int
    sent: int = 0
    seconds: float = 0.0
    peak_rss_kib: int | None = None
    start_rss_kib: int | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error and self.sent > 0 and self.seconds > 0

    @property
    def msgs_per_s(self) -> float:
        return self.sent / self.seconds if self.ok else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.sent * self.size / MB / self.seconds if self.ok else 0.0


def run_source(port: int, messages: int, sessions: int, size: int, timeout: float, result: Result) -> None:
    """Drive 127.0.0.1:port with smtp-source; fills sent, seconds and error."""
    args = [
        SMTP_SOURCE,
        "-c",
        "-s", str(sessions),
        "-m", str(messages),
        "-l", str(size),
        "-f", SENDER,
        "-t", RECIPIENT,
        f"127.0.0.1:{port}",
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        result.seconds = time.perf_counter() - start
        result.sent = _last_count(e.stdout or b"")
        result.error = f"smtp-source timed out after {timeout:.0f}s"
        return
    result.seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # smtp-source is the only child reaped here
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    result.notes.append(
        f"smtp-source CPU {user:.2f}s user + {system:.2f}s sys = {(user + system) / result.seconds:.0%} of one core"
    )
    # -c prints "\r1\r2...\rN" as each DATA completes
    result.sent = _last_count(done.stdout)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        result.error = f"smtp-source exit {done.returncode}: " + " | ".join(tail)
    elif result.sent != messages:
        result.error = f"smtp-source counted {result.sent} of {messages} messages"


def _last_count(stdout: bytes) -> int:
    counts = re.findall(rb"\d+", stdout)
    return int(counts[-1]) if counts else 0


def run_ceiling(procs: Processes, size: int, messages: int, sessions: int, timeout: float) -> Result:
    result = Result(f"ceiling {size_label(size)}", size, messages, sessions)
    port = free_port()
    args = [SMTP_SINK]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]  # smtp-sink refuses to run as root without -u
    args += [f"127.0.0.1:{port}", "256"]
    sink = procs.start(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(port, sink)
        result.start_rss_kib = proc_status_kib(sink.pid, "VmRSS")
        run_source(port, messages, sessions, size, timeout, result)
        result.peak_rss_kib = proc_status_kib(sink.pid, "VmHWM")
        cpu = cpu_seconds(sink.pid)
        if cpu is not None and result.seconds > 0:
            result.notes.append(
                f"smtp-sink CPU {cpu[0]:.2f}s user + {cpu[1]:.2f}s sys "
                f"= {(cpu[0] + cpu[1]) / result.seconds:.0%} of one core"
            )
    except RuntimeError as e:
        result.error = str(e)
    finally:
        procs.stop(sink)
    return result


# --------------------------------------------------------------- emailrelay


def emailrelay_command(given: str | None) -> str:
    if given:
        return given
    beside = Path(sys.executable).parent / "emailrelay"
    if beside.exists():
        return str(beside)
    found = shutil.which("emailrelay")
    if not found:
        sys.exit("store.py: no emailrelay command: use the project venv's python or --emailrelay PATH")
    return found


class Server:
    """One emailrelay storage server on a fresh spool directory."""

    def __init__(self, procs: Processes, exe: str, spool: Path, log_path: Path) -> None:
        self.procs = procs
        self.exe = exe
        self.spool = spool
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.notes: list[str] = []

    def command(self, port: int) -> list[str]:
        return [
            self.exe, "--log", "--no-daemon",
            "--port", str(port),
            "--interface", "127.0.0.1",
            "--spool-dir", str(self.spool),
        ]  # fmt: skip

    def start(self) -> None:
        try:
            self._start(0)
        except RuntimeError as e:
            # an emailrelay without --port 0 support: pick the port ourselves
            self.notes.append(f"--port 0 did not work ({e}); used a free port instead")
            self._start(free_port())

    def _start(self, port: int) -> None:
        if self.proc is not None:
            self.procs.stop(self.proc)
        with open(self.log_path, "ab") as log:
            self.proc = self.procs.start(self.command(port), stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for line in self.log_lines():
                m = _SERVER_LINE.search(line)
                if m and (port == 0 or int(m.group(2)) == port):
                    self.port = int(m.group(2))  # it listens before it logs this
                    return
            if self.proc.poll() is not None:
                tail = " | ".join(self.log_lines()[-3:])
                raise RuntimeError(f"emailrelay exited with {self.proc.returncode}: {tail}")
            time.sleep(0.05)
        if port:
            # no recognisable log line, but we know the port
            wait_listening(port, self.proc)
            self.port = port
            self.notes.append("no 'smtp server on' log line seen")
            return
        raise RuntimeError(f"no 'smtp server on' log line within {START_TIMEOUT:.0f}s")

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def peak_rss_kib(self) -> int | None:
        return proc_status_kib(self.proc.pid, "VmHWM") if self.proc else None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            self.notes.append(f"emailrelay had exited by itself with {self.proc.returncode}")
            return None
        return self.procs.stop(self.proc)


def spool_counts(spool: Path) -> dict[str, int]:
    counts = {"envelope": 0, "content": 0, "other": 0}
    for entry in os.scandir(spool):
        if entry.name.endswith(".envelope"):
            counts["envelope"] += 1
        elif entry.name.endswith(".content"):
            counts["content"] += 1
        else:
            counts["other"] += 1
    return counts


def run_emailrelay(
    procs: Processes, exe: str, work: Path, size: int, messages: int, sessions: int, timeout: float
) -> Result:
    result = Result(f"emailrelay {size_label(size)}", size, messages, sessions)
    spool = work / f"spool-{size_label(size).replace(' ', '')}"
    spool.mkdir()
    log_path = work / f"emailrelay-{size_label(size).replace(' ', '')}.log"
    server = Server(procs, exe, spool, log_path)
    try:
        server.start()
        assert server.proc is not None
        result.start_rss_kib = proc_status_kib(server.proc.pid, "VmRSS")
        run_source(server.port, messages, sessions, size, timeout, result)
        result.peak_rss_kib = server.peak_rss_kib()
        cpu = cpu_seconds(server.proc.pid)
        if cpu is not None and result.seconds > 0:
            result.notes.append(
                f"server CPU {cpu[0]:.2f}s user + {cpu[1]:.2f}s sys "
                f"= {(cpu[0] + cpu[1]) / result.seconds:.0%} of one core"
            )
        children = child_pids(server.proc.pid)
        if children:
            peaks = [proc_status_kib(c, "VmHWM") or 0 for c in children]
            result.notes.append(
                f"{len(children)} child process(es) of the server, peak RSS "
                + ", ".join(f"{p / 1024:.1f} MB" for p in peaks)
            )
    except RuntimeError as e:
        result.error = str(e)
    finally:
        code = server.stop()
        result.notes += server.notes
    # emailrelay exits 128 + signal number after a clean SIGTERM shutdown
    if code not in (None, 0, 128 + signal.SIGTERM, -signal.SIGTERM):
        result.notes.append(f"emailrelay exit code {code} after SIGTERM")
    problems = [line for line in server.log_lines() if _PROBLEM_LINE.search(line)]
    if problems:
        result.notes.append(
            f"{len(problems)} warning/error line(s) in the emailrelay log, first: {problems[0]}"
        )
    counts = spool_counts(spool)
    if counts["envelope"] != result.sent or counts["content"] != result.sent:
        mismatch = (
            f"spool holds {counts['envelope']} *.envelope and {counts['content']} *.content "
            f"for {result.sent} messages sent"
        )
        result.error = f"{result.error}; {mismatch}" if result.error else mismatch
    if counts["other"]:
        result.notes.append(f"spool holds {counts['other']} other file(s) (e.g. *.envelope.new)")
    elif not result.error:
        result.notes.append(
            f"spool check: {counts['envelope']} *.envelope + {counts['content']} *.content, ok"
        )
    return result


def fsync_reference(work: Path, size: int, count: int = 300) -> float:
    """Messages/s of a bare serial commit loop, the disk's floor cost per message.

    Per message: write+fsync a content file, write+fsync an envelope, rename
    it, fsync the directory -- what a durable store must do, with no SMTP,
    no concurrency and no group commit.
    """
    d = work / "fsync-reference"
    d.mkdir()
    content, envelope = b"x" * size, b"e" * 300
    start = time.perf_counter()
    for i in range(count):
        for name, data in ((f"{i}.content", content), (f"{i}.envelope.new", envelope)):
            fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        os.rename(d / f"{i}.envelope.new", d / f"{i}.envelope")
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    rate = count / (time.perf_counter() - start)
    shutil.rmtree(d, ignore_errors=True)
    return rate


# ------------------------------------------------------------------- report


def size_label(size: int) -> str:
    if size % MB == 0:
        return f"{size // MB} MB"
    if size % 1024 == 0:
        return f"{size // 1024} KB"
    return f"{size} B"


def mb(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def table(rows: list[Result], ceilings: dict[int, Result]) -> str:
    header = ["run", "messages", "seconds", "msg/s", "MB/s", "ratio to ceiling", "peak RSS MB"]
    lines = [header]
    for r in rows:
        ceiling = ceilings.get(r.size)
        if r.ok and ceiling is not None and ceiling.ok:
            ratio = f"{r.mb_per_s / ceiling.mb_per_s:.3f}"
        else:
            ratio = "-"
        lines.append([
            r.label + ("" if not r.error else " (FAILED)"),
            f"{r.sent}/{r.requested}" if r.sent != r.requested else str(r.sent),
            f"{r.seconds:.2f}",
            f"{r.msgs_per_s:.0f}" if r.ok else "-",
            f"{r.mb_per_s:.1f}" if r.ok else "-",
            ratio,
            mb(r.peak_rss_kib),
        ])  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [
            cell.rjust(w) for cell, w in zip(line[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def ext4_without_journal(path: Path) -> bool:
    """Whether path is on an ext4 file system that has no journal.

    Such an ext4 avoids reusing an inode freed in the last 60 seconds (360
    while its inode-table block is unwritten): each file creation reads past
    every recently deleted inode of the group (the kernel's
    ``recently_deleted()``), so a spool that deletes forwarded messages
    while it stores new ones pays more per stored message the more it has
    deleted in the last minutes.
    """
    mount = path.resolve()
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    device = ""
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == str(mount):
                device = parts[0] if parts[2] == "ext4" else ""
        task = Path(f"/sys/fs/ext4/{Path(os.path.realpath(device)).name}/journal_task")
        return bool(device) and task.read_text().strip() == "<none>"
    except OSError:
        return False


def git_commit() -> str:
    """Short HEAD commit of this repository, and whether emailrelay/ has uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "../emailrelay"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + (" + uncommitted changes in emailrelay/" if dirty else "")


def mb_or_none(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 2)


def result_dict(r: Result, ceiling: Result | None = None) -> dict:
    """One row for --json: the figures of the table, unrounded where it matters."""
    ratio = r.mb_per_s / ceiling.mb_per_s if r.ok and ceiling is not None and ceiling.ok else None
    return {
        "label": r.label,
        "size_bytes": r.size,
        "messages_requested": r.requested,
        "sessions": r.sessions,
        "messages": r.sent,
        "seconds": round(r.seconds, 4),
        "msgs_per_s": round(r.msgs_per_s, 2) if r.ok else None,
        "mb_per_s": round(r.mb_per_s, 3) if r.ok else None,
        "ratio_to_ceiling": round(ratio, 4) if ratio is not None else None,
        "peak_rss_mb": mb_or_none(r.peak_rss_kib),
        "start_rss_mb": mb_or_none(r.start_rss_kib),
        "error": r.error,
        "notes": list(r.notes),
    }


def write_json(path: str, data: dict) -> None:
    """Write `data` to `path` (atomically: a temporary file renamed into place)."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(target)


def filesystem_of(path: Path) -> str:
    mount = path.resolve()
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    fstype = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == str(mount):
                fstype = parts[2]  # the last mount on a point is the visible one
    return f"{fstype} on {mount}"


# --------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--messages", type=int, help="messages in the 10 KB runs (default 5000; --quick 500)")
    p.add_argument("--sessions", type=int, help="smtp-source sessions in the 10 KB runs (default 20)")
    p.add_argument("--large-messages", type=int, help="messages in the 1 MB runs (default 200; --quick 20)")
    p.add_argument("--large-sessions", type=int, help="smtp-source sessions in the 1 MB runs (default 4)")
    p.add_argument(
        "--huge-mb",
        type=int,
        help="size in MB of the one-message memory run (default 100; --quick 10; 0 skips it)",
    )
    p.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    p.add_argument("--keep", action="store_true", help="keep the spool directories and server logs")
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
        "--timeout", type=float, default=600.0, help="seconds allowed for one smtp-source run (600)"
    )
    p.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    args = p.parse_args(argv)
    args.messages = args.messages or (500 if args.quick else 5000)
    args.sessions = args.sessions or 20
    args.large_messages = args.large_messages or (20 if args.quick else 200)
    args.large_sessions = args.large_sessions or 4
    if args.huge_mb is None:
        args.huge_mb = 10 if args.quick else 100
    if args.huge_mb < 0:
        p.error("--huge-mb must not be negative")
    for name in ("messages", "sessions", "large_messages", "large_sessions"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


@contextlib.contextmanager
def workdir(parent: str | None, keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="emailrelay-bench-", dir=parent))
    try:
        yield path
    finally:
        if keep:
            print(f"kept: {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM: stop everything and clean up, as for Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    ensure_postfix(install=not args.no_install)
    exe = emailrelay_command(args.emailrelay)
    procs = Processes()
    rows: list[Result] = []
    started = datetime.datetime.now().isoformat(timespec="seconds")
    spool_fs = "?"
    try:
        with workdir(args.tmp_dir, args.keep) as work:
            spool_fs = filesystem_of(work) + (" (no journal)" if ext4_without_journal(work) else "")
            huge = f"; {args.huge_mb} MB: 1 message, 1 session" if args.huge_mb else ""
            print(
                f"# emailrelay storage benchmark, {started}\n"
                f"# {platform.node()}: {os.cpu_count()} cpus, Linux {platform.release()}, "
                f"Python {platform.python_version()}, spool on {filesystem_of(work)}\n"
                f"# 10 KB: {args.messages} messages, {args.sessions} sessions; "
                f"1 MB: {args.large_messages} messages, {args.large_sessions} sessions{huge}; "
                "one connection per message",
                flush=True,
            )
            plan = [
                ("ceiling", SMALL, args.messages, args.sessions),
                ("emailrelay", SMALL, args.messages, args.sessions),
                ("ceiling", LARGE, args.large_messages, args.large_sessions),
                ("emailrelay", LARGE, args.large_messages, args.large_sessions),
            ]
            if args.huge_mb:
                plan.append(("emailrelay", args.huge_mb * MB, 1, 1))
            reference = fsync_reference(work, SMALL)
            for kind, size, messages, sessions in plan:
                print(f"  running {kind} {size_label(size)} ...", flush=True)
                if kind == "ceiling":
                    rows.append(run_ceiling(procs, size, messages, sessions, args.timeout))
                else:
                    rows.append(run_emailrelay(procs, exe, work, size, messages, sessions, args.timeout))
    finally:
        procs.stop_all()

    ceilings = {r.size: r for r in rows if r.label.startswith("ceiling")}
    print()
    print(table(rows, ceilings))
    print()
    small = next((r for r in rows if r.label == f"emailrelay {size_label(SMALL)}"), None)
    large = next((r for r in rows if r.label == f"emailrelay {size_label(LARGE)}"), None)
    growth: dict[str, float | None] = {}
    if small and large and small.peak_rss_kib and large.peak_rss_kib:
        diff = (large.peak_rss_kib - small.peak_rss_kib) / 1024
        growth[large.label] = round(diff, 2)
        verdict = "met" if diff <= 5.0 else "NOT met"
        print(
            f"peak RSS, emailrelay 1 MB - 10 KB: {diff:+.1f} MB "
            f"({mb(large.peak_rss_kib)} - {mb(small.peak_rss_kib)}; "
            f"start RSS {mb(small.start_rss_kib)} / {mb(large.start_rss_kib)}); "
            f"criterion <= 5 MB: {verdict}"
        )
    else:
        print("peak RSS difference: not measured")
    huge = next((r for r in rows if args.huge_mb and r.size == args.huge_mb * MB), None)
    if huge is not None:
        if small and small.peak_rss_kib and huge.peak_rss_kib and not huge.error:
            diff = (huge.peak_rss_kib - small.peak_rss_kib) / 1024
            growth[huge.label] = round(diff, 2)
            print(
                f"peak RSS, emailrelay {size_label(huge.size)} (one message) - 10 KB: {diff:+.1f} MB "
                f"({mb(huge.peak_rss_kib)} - {mb(small.peak_rss_kib)}; start RSS {mb(huge.start_rss_kib)}); "
                f"criterion < 5 MB: {'met' if diff < 5.0 else 'NOT met'}"
            )
        else:
            print(f"peak RSS difference, emailrelay {size_label(huge.size)}: not measured")
    print(
        f"fsync reference: a bare serial loop of 10 KB commits (2 file fsyncs, rename, directory fsync) "
        f"does {reference:.0f} msg/s on this spool's disk"
    )
    failed = False
    for r in rows:
        for note in r.notes:
            print(f"  {r.label}: {note}")
        if r.error:
            failed = True
            print(f"  {r.label}: ERROR: {r.error}")
    if args.json:
        write_json(
            args.json,
            {
                "script": "store.py",
                "date": started,
                "spool_filesystem": spool_fs,
                "emailrelay_commit": git_commit(),
                "params": {
                    "messages": args.messages,
                    "sessions": args.sessions,
                    "large_messages": args.large_messages,
                    "large_sessions": args.large_sessions,
                    "huge_mb": args.huge_mb,
                },
                "rows": [result_dict(r, ceilings.get(r.size)) for r in rows],
                "peak_rss_growth_mb": growth,
                "fsync_reference_msgs_per_s": round(reference, 1),
                "ok": not failed,
            },
        )
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # everything started has been stopped by then
        sys.exit("store.py: interrupted")
