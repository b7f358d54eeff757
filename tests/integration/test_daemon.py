"""Daemon mode: the real emailrelay detaches, writes its pid file, serves, and stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import time
from pathlib import Path

from .conftest import command


def wait_until(predicate, timeout: float = 15.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_as_server_detaches_writes_its_pid_file_and_stops_on_sigterm(tmp_path, spool):
    pid_file = tmp_path / "run" / "emailrelay.pid"
    log_file = tmp_path / "emailrelay.log"
    result = subprocess.run(
        [command("emailrelay"), "--as-server", "--no-syslog", "--port", "0", "--interface", "127.0.0.1",
         "--spool-dir", str(spool), "--pid-file", str(pid_file), "--log-file", str(log_file)],
        capture_output=True, timeout=30,
    )
    assert result.returncode == 0 and result.stdout == b""
    assert pid_file.exists(), result.stderr
    assert oct(pid_file.stat().st_mode & 0o777) == "0o644"
    pid = int(pid_file.read_text())
    try:
        assert Path(f"/proc/{pid}").exists()
        assert os.getsid(pid) != os.getsid(0)  # in a session of its own: detached
        assert Path(f"/proc/{pid}/cwd").resolve() == Path("/")
        assert wait_until(lambda: "smtp server on" in log_file.read_text())
        port = int(re.search(r"smtp server on 127\.0\.0\.1:(\d+)", log_file.read_text()).group(1))
        with smtplib.SMTP("127.0.0.1", port) as s:
            s.sendmail("a@b.example", ["c@d.example"], b"Subject: daemon\r\n\r\nx\r\n")
        assert len(list(spool.glob("*.envelope"))) == 1
    finally:
        os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2])
    assert wait_until(lambda: not pid_file.exists())


def test_unwritable_pid_file_is_an_error(tmp_path, spool):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = subprocess.run(
        [command("emailrelay"), "--log", "--no-daemon", "--port", "0", "--interface", "127.0.0.1",
         "--spool-dir", str(spool), "--pid-file", str(blocker / "x.pid")],
        capture_output=True, timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.decode().splitlines()[-1].startswith(f"emailrelay: error: cannot create file: {blocker}/x.pid: ")
