#!/usr/bin/env python3
"""Start-up benchmark for emailrelay-submit: one small message, as sendmail callers use it.

Applications run ``emailrelay-submit`` once per message, so its wall time is
mostly interpreter start-up and imports.  The target (from the issue): the
wall time of submitting one small message is at most 2x that of
``python -c pass`` run by the same interpreter (``sys.executable``) on the
same machine.

Each run is one process, timed from ``subprocess.run`` to its exit with
``time.perf_counter``:

* submit: the installed console script found beside ``sys.executable``
  (``.venv/bin/emailrelay-submit``, which is what users run: the script's own
  imports and the editable-install finder count), as
  ``emailrelay-submit --spool-dir <tmp> --from bench@example.com
  rcpt@example.com`` with a 4-line message on its standard input;
* python -c pass: ``sys.executable -c pass``, given the same standard input.

Both run without ``PYTHONDONTWRITEBYTECODE`` (dropped from their
environment if set), so the warm-up runs write any missing or stale
``__pycache__`` files, as installing a package does; otherwise every run
would recompile the modules changed since the last cached compile, a cost
no installed copy has.  The two are interleaved (pass, submit, pass, submit ...) so that load and
cache effects hit both alike: 3 warm-up pairs, then N measured pairs (30,
``--quick`` 10).  The report is a table of median and minimum milliseconds
and the ratio of the medians, with the target shown as met or not.  Submit
keeps fsync on (it has no way to turn it off): the temporary directory lives
in the system's temporary directory (or ``--tmp-dir DIR``), so that file
system's fsync is part of the figure.

Checks: every submission must exit 0, and afterwards the spool must hold
exactly one ``*.envelope`` and one ``*.content`` file per submission and
nothing else.  The temporary directory is removed, also on Ctrl-C and
SIGTERM.  The script asserts nothing about speed; it exits 1 only if a
submission or a check failed (or it was interrupted).

Run:  .venv/bin/python bench/submit.py [--quick] [--runs N] [--json PATH] [--tmp-dir DIR]

``--json PATH`` writes ``{"submit_ms": <median>, "python_pass_ms": <median>,
"ratio": <submit/pass>, "runs": N}`` (other scripts rely on these keys).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 30
QUICK_RUNS = 10
WARMUP = 3
TARGET_RATIO = 2.0
FROM = "bench@example.com"
TO = "rcpt@example.com"
MESSAGE = (
    b"From: bench@example.com\n"
    b"To: rcpt@example.com\n"
    b"Subject: submit benchmark\n"
    b"\n"
    b"one small message\n"
)


def submit_program() -> str:
    """The emailrelay-submit console script beside sys.executable (else on $PATH)."""
    found = shutil.which("emailrelay-submit", path=str(Path(sys.executable).parent)) or shutil.which(
        "emailrelay-submit"
    )
    if found is None:
        raise RuntimeError("emailrelay-submit not found beside sys.executable or on $PATH")
    return found


def child_environment() -> dict[str, str]:
    """Our environment without PYTHONDONTWRITEBYTECODE, so that the warm-up runs leave fresh .pyc files."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(args: list[str], message: Path, env: dict[str, str]) -> tuple[float, int, str]:
    """(milliseconds, exit code, stderr) of one process run with `message` on its standard input."""
    with open(message, "rb") as stdin:
        started = time.perf_counter()
        proc = subprocess.run(args, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                              check=False)
        ms = (time.perf_counter() - started) * 1000
    return ms, proc.returncode, proc.stderr.decode(errors="replace").strip()


def spool_problems(spool_dir: Path, submissions: int) -> list[str]:
    """What is wrong with the spool after `submissions` successful submissions."""
    names = os.listdir(spool_dir)
    envelopes = [n for n in names if n.endswith(".envelope")]
    contents = [n for n in names if n.endswith(".content")]
    problems = []
    if len(envelopes) != submissions or len(contents) != submissions:
        problems.append(f"{len(envelopes)} envelopes and {len(contents)} contents for {submissions} submissions")
    if {n[: -len(".envelope")] for n in envelopes} != {n[: -len(".content")] for n in contents}:
        problems.append("envelope and content files do not pair up")
    others = sorted(set(names) - set(envelopes) - set(contents))
    if others:
        problems.append(f"unexpected files: {', '.join(others[:5])}")
    return problems


def measure(runs: int, work: Path) -> tuple[list[float], list[float], list[str]]:
    """(submit ms, pass ms, problems) for `runs` interleaved pairs after the warm-up pairs."""
    spool_dir = work / "spool"
    spool_dir.mkdir()
    message = work / "message.txt"
    message.write_bytes(MESSAGE)
    submit = [submit_program(), "--spool-dir", str(spool_dir), "--from", FROM, TO]
    python_pass = [sys.executable, "-c", "pass"]
    submit_ms: list[float] = []
    pass_ms: list[float] = []
    problems: list[str] = []
    env = child_environment()
    submissions = 0
    for n in range(WARMUP + runs):
        p_ms, p_rc, p_err = timed(python_pass, message, env)
        s_ms, s_rc, s_err = timed(submit, message, env)
        if p_rc != 0:
            problems.append(f"python -c pass exited {p_rc}: {p_err}")
        if s_rc == 0:
            submissions += 1
        else:
            problems.append(f"emailrelay-submit exited {s_rc}: {s_err}")
        if n >= WARMUP:
            pass_ms.append(p_ms)
            submit_ms.append(s_ms)
        if problems:
            break
    problems += spool_problems(spool_dir, submissions)
    return submit_ms, pass_ms, problems


def table(submit_ms: list[float], pass_ms: list[float]) -> str:
    lines = ["| command | runs | median ms | min ms |", "|---|---:|---:|---:|"]
    for name, values in (("emailrelay-submit (1 small message)", submit_ms), ("python -c pass", pass_ms)):
        lines.append(f"| {name} | {len(values)} | {statistics.median(values):.1f} | {min(values):.1f} |")
    return "\n".join(lines)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM: clean up, as for Ctrl-C


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RUNS} runs instead of {RUNS}")
    parser.add_argument("--runs", type=int, help=f"measured runs (default {RUNS}, --quick {QUICK_RUNS})")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    parser.add_argument("--tmp-dir", metavar="DIR", help="make the temporary directory (and spool) in DIR")
    args = parser.parse_args(argv)
    runs = args.runs or (QUICK_RUNS if args.quick else RUNS)
    if runs < 1:
        parser.error("--runs must be at least 1")
    signal.signal(signal.SIGTERM, _terminated)
    work = Path(tempfile.mkdtemp(prefix="emailrelay-bench-submit-", dir=args.tmp_dir))
    try:
        submit_ms, pass_ms, problems = measure(runs, work)
    except (RuntimeError, OSError) as e:
        print(f"bench/submit.py: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/submit.py: interrupted", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for problem in problems:
        print(f"bench/submit.py: {problem}", file=sys.stderr)
    if not submit_ms:
        return 1
    submit_median = statistics.median(submit_ms)
    pass_median = statistics.median(pass_ms)
    ratio = submit_median / pass_median
    print(f"emailrelay-submit start-up benchmark on {platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}); {len(MESSAGE)}-byte message, {len(submit_ms)} interleaved runs "
          f"after {WARMUP} warm-up runs")
    print()
    print(table(submit_ms, pass_ms))
    print(f"\nratio of medians: {ratio:.2f}; target (<= {TARGET_RATIO:.1f}): "
          f"{'met' if ratio <= TARGET_RATIO else 'missed'}")
    if args.json:
        figures = {"submit_ms": round(submit_median, 2), "python_pass_ms": round(pass_median, 2),
                   "ratio": round(ratio, 3), "runs": len(submit_ms)}
        Path(args.json).write_text(json.dumps(figures) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
