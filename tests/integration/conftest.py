"""Fixtures that start real emailrelay processes on 127.0.0.1.

`relay(*args)` starts ``emailrelay --log --no-daemon --port 0 --interface
127.0.0.1 --spool-dir <tmp>`` plus the given arguments, waits for its
``smtp server on`` log line (which also gives the ephemeral port) and stops
it at the end of the test.  Its stderr lines are collected so a test can
wait for a log line instead of sleeping.
"""

from __future__ import annotations

import grp
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def command(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} is not installed: pip install -e .[test]"
    return found


class Relay:
    """A running emailrelay process and what it has logged."""

    def __init__(self, args: list[str], spool: Path, env: dict[str, str] | None = None) -> None:
        self.spool = spool
        self.args = args
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = 0

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<eof>")
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match[str]:
        """Wait until a log line matches pattern; returns the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                while index < len(self.lines):
                    m = regex.search(self.lines[index])
                    index += 1
                    if m:
                        return m
                    if self.lines[index - 1] == "<eof>":
                        raise AssertionError(f"process ended before {pattern!r}:\n" + "\n".join(self.lines))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {pattern!r}:\n" + "\n".join(self.lines))
                self._cond.wait(left)

    def count(self, pattern: str) -> int:
        with self._cond:
            return sum(1 for line in self.lines if re.search(pattern, line))

    def started(self) -> Relay:
        m = self.wait_for(r"smtp server on 127\.0\.0\.1:(\d+)")
        self.port = int(m.group(1))
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()
        if self.proc.stderr:
            self.proc.stderr.close()
        return self.proc.returncode

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=5)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for mount")


@pytest.fixture
def tiny_spool(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs to fill up."""
    path = tmp_path / "tiny"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def readonly_spool(tmp_path: Path) -> Iterator[Path]:
    source = tmp_path / "ro-source"
    source.mkdir()
    path = tmp_path / "ro"
    path.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(autouse=True)
def _reachable_tmp_path(tmp_path: Path) -> None:
    """Started as root, emailrelay runs filters as --user daemon (OPTIONS.md 7.3), as E-MailRelay does:
    let that user reach the test's files, as it reaches /etc and /usr/local on a real system."""
    for path in (tmp_path.parent, tmp_path.parent.parent):
        if path.owner() == "root":
            os.chmod(path, 0o755)
    os.chmod(tmp_path, 0o777)  # filters and verifiers leave their records here


def as_user(args: tuple[str, ...] | list[str]) -> list[str]:
    """`args`, with ``--user root`` unless they choose a user.

    Started as root, emailrelay runs filter programs as --user (daemon by
    default).  On these machines the Python that runs our Python filters
    (emailrelay-filter-copy, test scripts) lives under /root, which that user
    cannot enter, so the tests of everything else keep the root identity;
    tests/integration/test_user.py tests the switch itself."""
    return [*args] if any(a == "--user" or a.startswith(("--user=", "-u")) for a in args) else [*args, "--user", "root"]


def daemon_dir(path: Path) -> Path:
    """Make `path` (if missing) a directory that the --user (daemon) group may write, as a spool
    directory and its POP mailboxes are on an E-MailRelay install."""
    path.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        os.chown(path, 0, grp.getgrnam("daemon").gr_gid)
        os.chmod(path, 0o775)
    return path


def reachable(path: Path) -> Path:
    """Let the --user identity of filters reach and write `path` (a tmp_path_factory directory)."""
    os.chmod(path, 0o777)
    return path


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return daemon_dir(tmp_path / "spool")


@pytest.fixture
def relay(spool: Path) -> Iterator:
    """Start emailrelay storage servers; each is stopped after the test."""
    started: list[Relay] = []

    def start(*args: str, spool_dir: Path | None = None, wait: bool = True) -> Relay:
        argv = [
            command("emailrelay"),
            "--log",
            "--no-daemon",
            "--port",
            "0",
            "--interface",
            "127.0.0.1",
            "--spool-dir",
            str(spool_dir or spool),
            *as_user(args),
        ]
        r = Relay(argv, spool_dir or spool)
        started.append(r)
        return r.started() if wait else r

    yield start
    for r in started:
        r.stop()


def spool_files(spool: Path) -> list[str]:
    return sorted(p.name for p in spool.iterdir() if p.is_file())


def run(*args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(args), input=input, capture_output=True, timeout=60, env=env or dict(os.environ))
