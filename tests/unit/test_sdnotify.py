"""sd_notify (emailrelay/sdnotify.py) against a real AF_UNIX datagram socket
standing in for systemd's, bound in a temporary directory or under an
abstract name; and config/emailrelay.service checked by systemd-analyze
verify when it is installed."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from emailrelay import sdnotify

UNIT = Path(__file__).resolve().parents[2] / "config" / "emailrelay.service"


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket at a path, named by $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def received(sock: socket.socket) -> bytes:
    data = sock.recv(65536)
    sock.setblocking(False)
    try:
        extra = sock.recv(65536)
    except BlockingIOError:
        extra = None
    finally:
        sock.settimeout(5)
    assert extra is None, "one call sends exactly one datagram"
    return data


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (sdnotify.ready, b"READY=1"),
        (sdnotify.stopping, b"STOPPING=1"),
        (sdnotify.watchdog, b"WATCHDOG=1"),
        (
            lambda: sdnotify.status("2 workers running, 0 in backoff"),
            b"STATUS=2 workers running, 0 in backoff",
        ),
        (lambda: sdnotify.notify("READY=1", "STATUS=up", "MAINPID=7"), b"READY=1\nSTATUS=up\nMAINPID=7"),
    ],
)
def test_datagrams(listener: socket.socket, call, expected: bytes) -> None:
    assert call() is True
    assert received(listener) == expected


def test_reloading_carries_monotonic_usec(listener: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    match = re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=(\d+)", received(listener))
    assert match is not None
    assert before <= int(match[1]) <= after


def test_non_ascii_status_is_utf8(listener: socket.socket) -> None:
    assert sdnotify.status("queue: 3 messages → smarthost")
    assert received(listener) == "STATUS=queue: 3 messages → smarthost".encode()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux-only")
def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"emailrelay-test-sdnotify-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready() is True
        assert received(sock) == b"READY=1"


@pytest.mark.parametrize("value", [None, ""])
def test_unset_variable_does_nothing(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False
    assert sdnotify.status("x") is False
    assert sdnotify.reloading() is False
    assert sdnotify.stopping() is False
    assert sdnotify.watchdog() is False


def test_newline_in_a_field_is_refused(listener: socket.socket) -> None:
    with pytest.raises(ValueError, match="newline"):
        sdnotify.status("one\nREADY=1")
    with pytest.raises(ValueError, match="no fields"):
        sdnotify.notify()
    assert sdnotify.stopping()
    assert received(listener) == b"STOPPING=1", "nothing was sent by the refused calls"


def test_missing_socket_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "absent"))
    with pytest.raises(OSError):
        sdnotify.ready()


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 30.0),
        ("1500000", None, 1.5),
        ("250", None, 0.00025),
        ("30000000", "self", 30.0),
        ("30000000", "other", None),
        ("30000000", "garbage", None),
        ("0", None, None),
        ("", None, None),
        ("-5", None, None),
        (" 5", None, None),
        ("1_000", None, None),
        ("30s", None, None),
        (None, "self", None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            value = {"self": str(os.getpid()), "other": str(os.getppid())}.get(value, value)
            monkeypatch.setenv(name, value)
    assert sdnotify.watchdog_interval() == expected


def test_environment_names() -> None:
    assert sdnotify.ENVIRONMENT == ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_file_settings() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["ExecStart"] == ["/usr/bin/emailrelay supervise /etc/emailrelay.conf"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Restart"] == ["on-failure"]
    assert s["RuntimeDirectory"] == ["emailrelay"]
    assert s["ReadWritePaths"] == ["-/var/spool/emailrelay"]
    assert s["ProtectSystem"] == ["strict"]
    assert s["ProtectHome"] == ["true"]
    assert s["PrivateTmp"] == ["true"]
    assert s["NoNewPrivileges"] == ["true"]
    assert set(s["CapabilityBoundingSet"][0].split()) >= {
        "CAP_NET_BIND_SERVICE",
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_CHOWN",
    }
    assert set(s["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    assert s["After"] == ["network-online.target"]
    assert s["WantedBy"] == ["multi-user.target"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_file_verifies(tmp_path: Path) -> None:
    # verify insists that ExecStart= names an existing executable: point it at
    # this environment's emailrelay (or any executable) and check the rest as is.
    program = Path(sys.executable).parent / "emailrelay"
    if not program.exists():
        program = Path(sys.executable)
    text = UNIT.read_text()
    assert "ExecStart=/usr/bin/emailrelay " in text
    unit = tmp_path / "emailrelay.service"
    unit.write_text(text.replace("ExecStart=/usr/bin/emailrelay ", f"ExecStart={program} "))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 for unknown keys and unparsable values, and only warns.
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == ""
