#!/usr/bin/env python3
"""Memory benchmark for ``emailrelay supervise``: the supervisor and all its workers, idle and under load.

Runs ``emailrelay supervise <config>`` (SMTP storage on 127.0.0.1 port 0,
--forward-to an aiosmtpd sink in a separate process, --poll 1,
--forward-on-disconnect, --pop on port 0, --admin-socket, --log; all in a
temporary directory).  Idle: 2 s after ``emailrelay ctl status --json`` shows
every worker RUNNING.  Load: --sessions smtplib threads send --messages
messages of --size bytes each while --pop-sessions poplib threads log in and
RETR (no DELE) until the spool has drained.  Every --interval seconds psutil
samples the supervisor and its ``children(recursive=True)``: RSS per process
and summed, PSS summed.  Targets (printed, not asserted): whole set peak RSS
< 150 MB, supervisor < 40 MB; MB is 2**20 bytes.  Exits 1 only if the run
broke or a message was lost.  ``--json PATH`` also writes the figures to a
JSON file (bench/run reads it).  bench/README.md has the details and figures.

Run:  .venv/bin/python bench/supervise.py [--quick] [--keep] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import poplib
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

MB = 2**20
TOTAL_TARGET_MB, SUPERVISOR_TARGET_MB = 150.0, 40.0
SETTLE = 2.0  # seconds between all workers RUNNING and the idle sample
_LISTENING = re.compile(r"\[supervisor\] (smtp|pop) listening on 127\.0\.0\.1:(\d+)")
_EXPECTED = ("mailbox locked by another session", "pop: cannot read message")  # races with the forwarder
SINK = r"""
import asyncio, sys
from aiosmtpd.smtp import SMTP
f = open(sys.argv[1], "ab", buffering=0)  # one byte per message received
class Count:
    async def handle_DATA(self, server, session, envelope): f.write(b"."); return "250 OK"
async def main():
    srv = await asyncio.get_running_loop().create_server(lambda: SMTP(Count(), data_size_limit=0), "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def wait_for(what: str, check, timeout: float, proc: subprocess.Popen):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: emailrelay supervise exited with status {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not within {timeout:g}s")


def ctl_status(exe: str, sock: Path) -> dict | None:
    r = subprocess.run([exe, "ctl", "--admin-socket", str(sock), "status", "--json"], capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else None


def all_running(exe: str, sock: Path) -> dict | None:
    status = ctl_status(exe, sock)
    return status if status and status["workers"] and all(w["state"] == "RUNNING" for w in status["workers"]) else None


def listening(log_path: Path) -> dict[str, str] | None:
    ports = dict(_LISTENING.findall(log_path.read_text(errors="replace")))
    return ports if len(ports) == 2 else None


def envelopes(spool: Path) -> int:
    return sum(1 for name in os.listdir(spool) if ".envelope" in name)


def vmhwm(pid: int) -> int:
    match = re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) * 1024 if match else 0


class Sampler(threading.Thread):
    """The supervisor and its descendants every `interval` seconds: peak RSS per process, peak sums, spool backlog."""

    def __init__(self, pid: int, interval: float, spool: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.interval, self.spool, self.stop = psutil.Process(pid), interval, spool, threading.Event()
        self.peak: dict[int, int] = {}  # pid: peak RSS
        self.peak_rss = self.peak_pss = self.samples = self.backlog = 0

    def sample(self) -> tuple[dict[int, int], int]:
        rss, pss = {}, 0
        try:
            children = self.root.children(recursive=True)
        except psutil.Error:  # the supervisor has gone
            children = []
        for p in [self.root, *children]:
            try:
                full = p.memory_full_info()
            except psutil.Error:
                continue
            rss[p.pid], pss = full.rss, pss + full.pss
        return rss, pss

    def run(self) -> None:
        while not self.stop.is_set():
            rss, pss = self.sample()
            for pid, n in rss.items():
                self.peak[pid] = max(self.peak.get(pid, 0), n)
            self.peak_rss, self.peak_pss = max(self.peak_rss, sum(rss.values())), max(self.peak_pss, pss)
            self.backlog, self.samples = max(self.backlog, envelopes(self.spool)), self.samples + 1
            self.stop.wait(self.interval)


def smtp_session(port: int, count: int, body: bytes, sent: list[int], errors: list[str]) -> None:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as s:
            for _ in range(count):
                s.sendmail("bench@example.com", ["sink@example.com"], body)
                sent.append(1)
    except (OSError, smtplib.SMTPException) as e:
        errors.append(f"smtp: {e!r}")


def pop_session(port: int, done: threading.Event, stats: dict[str, int], errors: list[str]) -> None:
    while not done.is_set():
        p = None
        try:
            p = poplib.POP3("127.0.0.1", port, timeout=60)
            p.user("alice")
            p.pass_("secret")
            stats["logins"] += 1
            for n in range(1, min(p.stat()[0], 50) + 1):
                try:
                    stats["octets"] += len(b"\n".join(p.retr(n)[1]))
                    stats["retrieved"] += 1
                except poplib.error_proto:  # forwarded and deleted since the login
                    stats["gone"] += 1
            p.quit()
        except poplib.error_proto as e:
            stats["locked"] += b"IN-USE" in e.args[0]
            if b"IN-USE" not in e.args[0]:
                errors.append(f"pop: {e!r}")
            time.sleep(0.05)
        except OSError as e:
            errors.append(f"pop: {e!r}")
            time.sleep(0.2)
        finally:
            if p is not None:
                p.close()


def stop(proc: subprocess.Popen, timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"pid {proc.pid} still running {timeout:g}s after SIGTERM: killed", flush=True)
            proc.kill()
            proc.wait()


def run(args: argparse.Namespace, work: Path, exe: str) -> int:
    spool, sock, log_path, count_file = work / "spool", work / "admin.sock", work / "supervise.log", work / "sink.count"
    spool.mkdir()
    (work / "pop.auth").write_text("server plain alice secret\n")
    count_file.touch()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(count_file)], stdout=subprocess.PIPE, text=True)
    supervisor, workers = None, []
    try:
        sink_port = int(sink.stdout.readline() or 0)  # type: ignore[union-attr]
        if not sink_port:
            raise RuntimeError("the aiosmtpd sink did not start")
        (work / "emailrelay.conf").write_text(
            f"log\nspool-dir {spool}\ninterface 127.0.0.1\nport 0\nforward-to 127.0.0.1:{sink_port}\npoll 1\n"
            f"forward-on-disconnect\npop\npop-port 0\npop-auth {work / 'pop.auth'}\nadmin-socket {sock}\n")
        with open(log_path, "wb") as log:
            supervisor = subprocess.Popen([exe, "supervise", str(work / "emailrelay.conf")], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log, start_new_session=True)
        ports = wait_for("smtp and pop listening", lambda: listening(log_path), 30, supervisor)
        status = wait_for("all workers RUNNING", lambda: all_running(exe, sock), 60, supervisor)
        names = {supervisor.pid: "supervisor"} | {w["pid"]: w["name"] for w in status["workers"]}
        time.sleep(SETTLE)
        sampler = Sampler(supervisor.pid, args.interval, spool)
        workers = sampler.root.children(recursive=True)
        idle, idle_pss = sampler.sample()

        line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef\r\n"
        body = (b"Subject: supervise benchmark\r\n\r\n" + line * (args.size // 80 + 1))[: args.size - 2]
        sent, errors, done = [], [], threading.Event()
        stats = [dict.fromkeys(("logins", "locked", "retrieved", "gone", "octets"), 0) for _ in range(args.pop_sessions)]
        pops = [threading.Thread(target=pop_session, args=(int(ports["pop"]), done, s, errors), daemon=True) for s in stats]
        smtps = [threading.Thread(target=smtp_session, args=(int(ports["smtp"]), args.messages, body + b"\r\n",
                                                             sent, errors), daemon=True) for _ in range(args.sessions)]
        sampler.start()
        start = time.perf_counter()
        for t in pops + smtps:
            t.start()
        for t in smtps:
            t.join()
        smtp_seconds, total = time.perf_counter() - start, len(sent)
        try:
            wait_for("drain", lambda: count_file.stat().st_size >= total and not envelopes(spool), args.timeout, supervisor)
        except RuntimeError as e:
            errors.append(str(e))
        e2e_seconds = time.perf_counter() - start
        done.set()
        for t in pops:
            t.join()
        sampler.stop.set()
        sampler.join()
        after, after_pss = sampler.sample()  # once drained and every POP session has ended
        hwm = {p.pid: vmhwm(p.pid) for p in [sampler.root, *sampler.root.children(recursive=True)]}
        restarts = {w["name"]: w["restarts"] for w in (ctl_status(exe, sock) or {"workers": []})["workers"] if w["restarts"]}
    finally:
        if supervisor is not None:
            stop(supervisor, 30)
        for p in workers:  # orphans, if the supervisor had to be killed
            if p.is_running():
                p.kill()
        stop(sink, 5)

    mb = lambda n: f"{n / MB:.1f}"  # noqa: E731
    print(f"\n{'process':<12} {'pid':>7} {'idle RSS':>9} {'peak RSS':>9} {'VmHWM':>7} {'after':>7}")
    for pid in idle:
        print(f"{names.get(pid, 'other'):<12} {pid:>7} {mb(idle[pid]):>9} {mb(sampler.peak.get(pid, 0)):>9} "
              f"{mb(hwm.get(pid, 0)):>7} {mb(after.get(pid, 0)):>7}")
    for pid in set(sampler.peak) - set(idle):
        print(f"{'new':<12} {pid:>7} {'-':>9} {mb(sampler.peak[pid]):>9}")
    print(f"{'total':<12} {'':>7} {mb(sum(idle.values())):>9} {mb(sampler.peak_rss):>9} {mb(sum(hwm.values())):>7} "
          f"{mb(sum(after.values())):>7}")
    print(f"{'total PSS':<12} {'':>7} {mb(idle_pss):>9} {mb(sampler.peak_pss):>9} {'':>7} {mb(after_pss):>7}")
    pop = {k: sum(s[k] for s in stats) for k in ("logins", "locked", "retrieved", "gone", "octets")}
    print(f"\n{total} of {args.sessions * args.messages} messages of {args.size} bytes in {smtp_seconds:.2f}s: "
          f"{total / smtp_seconds:.0f} msg/s at the SMTP clients, {total / e2e_seconds:.0f} msg/s end-to-end "
          f"({e2e_seconds:.2f}s, sink has {count_file.stat().st_size}); spool backlog peak {sampler.backlog}; "
          f"{sampler.samples} samples every {args.interval * 1000:.0f} ms")
    print(f"POP: {pop['logins']} logins, {pop['retrieved']} RETR ({pop['octets'] / MB:.1f} MB), {pop['gone']} gone "
          f"since login, {pop['locked']} logins refused as mailbox locked")
    if restarts:
        print(f"worker restarts during the run: {restarts}")
    sup = max(sampler.peak.get(supervisor.pid, 0), idle[supervisor.pid]) / MB
    for what, peak, target in (("whole set", sampler.peak_rss / MB, TOTAL_TARGET_MB),
                               ("supervisor", sup, SUPERVISOR_TARGET_MB)):
        print(f"target: {what} peak RSS {peak:.1f} MB < {target:.0f} MB: {'PASS' if peak < target else 'FAIL'}")
    problems = [ln for ln in log_path.read_text(errors="replace").splitlines() if re.search(r": (warning|error): ", ln)]
    unexpected = [ln for ln in problems if not any(e in ln for e in _EXPECTED)]
    print(f"log: {len(unexpected)} warning/error lines, {len(problems) - len(unexpected)} expected POP ones "
          "(mailbox locked; cannot read a message forwarded since login)")
    for line in unexpected[:5]:
        print(f"log: {line}")
    for e in errors[:5]:
        print(f"ERROR: {e}")
    lost = count_file.stat().st_size != total or envelopes(spool)
    rc = 1 if lost or any(not e.startswith("pop:") for e in errors) else 0
    if args.json:
        r = lambda n: round(n / MB, 2)  # noqa: E731
        processes = [
            {"name": names.get(pid, "other"), "pid": pid, "idle_rss_mb": r(idle[pid]),
             "peak_rss_mb": r(sampler.peak.get(pid, 0)), "vmhwm_mb": r(hwm.get(pid, 0)),
             "after_rss_mb": r(after.get(pid, 0))}
            for pid in idle
        ] + [{"name": "new", "pid": pid, "peak_rss_mb": r(sampler.peak[pid])} for pid in set(sampler.peak) - set(idle)]
        data = {
            "script": "supervise.py",
            "date": args.started,
            "params": {"sessions": args.sessions, "messages": args.messages, "size": args.size,
                       "pop_sessions": args.pop_sessions, "interval": args.interval},
            "processes": processes,
            "totals": {"idle_rss_mb": r(sum(idle.values())), "peak_rss_mb": r(sampler.peak_rss),
                       "vmhwm_sum_mb": r(sum(hwm.values())), "after_rss_mb": r(sum(after.values())),
                       "idle_pss_mb": r(idle_pss), "peak_pss_mb": r(sampler.peak_pss), "after_pss_mb": r(after_pss)},
            "supervisor_peak_rss_mb": round(sup, 2),
            "targets_mb": {"whole_set": TOTAL_TARGET_MB, "supervisor": SUPERVISOR_TARGET_MB},
            "load": {"messages": total, "smtp_seconds": round(smtp_seconds, 3),
                     "msgs_per_s": round(total / smtp_seconds, 1), "e2e_seconds": round(e2e_seconds, 3),
                     "e2e_msgs_per_s": round(total / e2e_seconds, 1), "sink_count": count_file.stat().st_size,
                     "backlog_peak": sampler.backlog, "samples": sampler.samples},
            "pop": pop,
            "restarts": restarts,
            "log_problems": {"unexpected": len(unexpected), "expected": len(problems) - len(unexpected)},
            "errors": errors,
            "ok": rc == 0,
        }
        tmp = Path(args.json + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(args.json)
    return rc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=20, help="concurrent SMTP sessions (20)")
    p.add_argument("--messages", type=int, help="messages per SMTP session (200; --quick 20)")
    p.add_argument("--size", type=int, default=10240, help="message size in bytes (10240)")
    p.add_argument("--pop-sessions", type=int, default=2, help="concurrent POP sessions (2)")
    p.add_argument("--interval", type=float, default=0.05, help="seconds between samples (0.05)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds allowed for the drain (300)")
    p.add_argument("--quick", action="store_true", help="20 messages per session, for a smoke run")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (spool, log, config)")
    p.add_argument("--tmp-dir", metavar="DIR", help="where the temporary directory is made")
    p.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = p.parse_args()
    args.started = datetime.datetime.now().isoformat(timespec="seconds")
    args.messages = args.messages or (20 if args.quick else 200)
    exe = shutil.which("emailrelay", path=str(Path(sys.executable).parent)) or "emailrelay"
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up as for Ctrl-C
    work = Path(tempfile.mkdtemp(prefix="emailrelay-supervise-", dir=args.tmp_dir))
    print(f"# emailrelay supervise memory benchmark, {args.started}, "
          f"{os.cpu_count()} cpus, Linux {platform.release()}, Python {platform.python_version()}\n"
          f"# {args.sessions} SMTP sessions x {args.messages} messages of {args.size} bytes, "
          f"{args.pop_sessions} POP sessions; work dir {work}", flush=True)
    try:
        return run(args, work, exe)
    except (RuntimeError, OSError) as e:
        log = work / "supervise.log"
        tail = log.read_text(errors="replace").splitlines()[-10:] if log.exists() else []
        print("supervise.py: error: " + str(e) + "".join(f"\n  {ln}" for ln in tail), file=sys.stderr)
        return 1
    finally:
        print(f"kept {work}") if args.keep else shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("supervise.py: interrupted; every process it started has been stopped")
