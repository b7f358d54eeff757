"""Syslog: lines reach /dev/log, also from a syslog daemon that starts after emailrelay.

log.py looks for /dev/log once a second (syslog(3) would try to connect
for every line while nobody listens).  The test plays the syslog daemon: a
unix datagram socket bound at /dev/log, so it needs root and a machine
where nothing listens there yet (the test machines have no syslog daemon).
"""

from __future__ import annotations

import os
import smtplib
import socket
import time

import pytest

from .conftest import needs_root

pytestmark = [
    needs_root,
    pytest.mark.skipif(os.path.exists("/dev/log"), reason="a syslog daemon owns /dev/log on this machine"),
]


def test_lines_reach_a_syslog_daemon_that_starts_later(relay):
    r = relay()  # --log: stderr and syslog
    with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as s:
        s.sendmail("a@example.com", ["b@example.net"], b"Subject: before\r\n\r\nx\r\n")
    daemon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        daemon.bind("/dev/log")
        daemon.settimeout(0.2)
        received: list[str] = []
        deadline = time.monotonic() + 10
        while not any("stored message" in line for line in received) and time.monotonic() < deadline:
            with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as s:
                s.sendmail("a@example.com", ["b@example.net"], b"Subject: after\r\n\r\nx\r\n")
            try:
                while True:
                    received.append(daemon.recv(65536).decode("utf-8", "replace"))
            except TimeoutError:
                pass
        stored = [line for line in received if "stored message" in line]
        assert stored, received
        # <facility mail (2) * 8 + info (6)>, the program and its pid, then our line
        assert stored[0].startswith("<22>") and f"emailrelay[{r.proc.pid}]: emailrelay: info: stored message" in stored[0]
    finally:
        daemon.close()
        os.unlink("/dev/log")
