"""No open relay: a non-local client is refused unless --remote-clients.

The non-local client lives in a network namespace joined to this host by a
veth pair: host 192.0.2.1, client 192.0.2.2 (TEST-NET-1, not a local range).
Needs root and iproute2; everything is removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from .conftest import Relay, command

NS = f"er-test-{os.getpid()}"
HOST_IF = f"erh{os.getpid() % 100000}"
PEER_IF = f"erp{os.getpid() % 100000}"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def namespace() -> Iterator[str]:
    ip("netns", "add", NS)
    try:
        ip("link", "add", HOST_IF, "type", "veth", "peer", "name", PEER_IF)
        ip("link", "set", PEER_IF, "netns", NS)
        ip("addr", "add", "192.0.2.1/24", "dev", HOST_IF)
        ip("link", "set", HOST_IF, "up")
        ip("netns", "exec", NS, "ip", "addr", "add", "192.0.2.2/24", "dev", PEER_IF)
        ip("netns", "exec", NS, "ip", "link", "set", PEER_IF, "up")
        ip("netns", "exec", NS, "ip", "link", "set", "lo", "up")
        yield NS
    finally:
        subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


CLIENT = """
import socket, sys
s = socket.create_connection(("192.0.2.1", int(sys.argv[1])), timeout=10)
data = b""
try:
    while True:
        chunk = s.recv(1000)
        if not chunk or b"\\r\\n" in data + chunk:
            data += chunk
            break
        data += chunk
except ConnectionResetError:
    pass
print(repr(data))
"""


def greeting_from_namespace(port: int) -> str:
    result = subprocess.run(
        ["ip", "netns", "exec", NS, sys.executable, "-c", CLIENT, str(port)],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def start(spool, *extra: str) -> Relay:
    argv = [
        command("emailrelay"), "--log", "--no-daemon", "--port", "0", "--interface", "192.0.2.1",
        "--spool-dir", str(spool), *extra,
    ]
    r = Relay(argv, spool)
    m = r.wait_for(r"smtp server on 192\.0\.2\.1:(\d+)")
    r.port = int(m.group(1))
    return r


def test_non_local_client_is_refused_by_default(namespace, spool):
    r = start(spool)
    try:
        assert greeting_from_namespace(r.port) == "b''"
        r.wait_for(r"smtp connection from 192\.0\.2\.2:\d+ refused: not a local address")
    finally:
        r.stop()


def test_remote_clients_option_lets_them_in(namespace, spool):
    r = start(spool, "--remote-clients")
    try:
        assert greeting_from_namespace(r.port).startswith("b'220 ")
    finally:
        r.stop()
