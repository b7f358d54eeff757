"""No open relay: a non-local client is refused unless --remote-clients.

The non-local client lives in a network namespace joined to this host by a
veth pair, with TEST-NET-1 addresses (192.0.2.x, not a local range).  The
machine itself may already use 192.0.2.0/24 (the CI machines do), so the
pair gets two unused /32 addresses with host routes, which never disturb
the machine's own routes.  Needs root and iproute2; everything is removed
afterwards.
"""

from __future__ import annotations

import os
import re
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


def unused_pair() -> tuple[str, str]:
    used = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    used += subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    for n in range(200, 250, 2):
        host, peer = f"192.0.2.{n}", f"192.0.2.{n + 1}"
        if not re.search(rf"\b({re.escape(host)}|{re.escape(peer)})\b", used):
            return host, peer
    pytest.skip("no free 192.0.2.x addresses")


@pytest.fixture
def namespace() -> Iterator[tuple[str, str]]:
    """(host address, client address) of a fresh namespace and veth pair."""
    host_ip, peer_ip = unused_pair()
    ip("netns", "add", NS)
    try:
        ip("link", "add", HOST_IF, "type", "veth", "peer", "name", PEER_IF)
        ip("link", "set", PEER_IF, "netns", NS)
        ip("addr", "add", f"{host_ip}/32", "dev", HOST_IF)
        ip("link", "set", HOST_IF, "up")
        ip("route", "add", f"{peer_ip}/32", "dev", HOST_IF)
        ip("netns", "exec", NS, "ip", "addr", "add", f"{peer_ip}/32", "dev", PEER_IF)
        ip("netns", "exec", NS, "ip", "link", "set", PEER_IF, "up")
        ip("netns", "exec", NS, "ip", "link", "set", "lo", "up")
        ip("netns", "exec", NS, "ip", "route", "add", f"{host_ip}/32", "dev", PEER_IF)
        yield host_ip, peer_ip
    finally:
        subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[2], int(sys.argv[1])), timeout=10)
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


def greeting_from_namespace(host_ip: str, port: int) -> str:
    result = subprocess.run(
        ["ip", "netns", "exec", NS, sys.executable, "-c", CLIENT, str(port), host_ip],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def start(spool, host_ip: str, *extra: str) -> Relay:
    argv = [
        command("emailrelay"), "--log", "--no-daemon", "--port", "0", "--interface", host_ip,
        "--spool-dir", str(spool), *extra,
    ]
    r = Relay(argv, spool)
    m = r.wait_for(rf"smtp server on {re.escape(host_ip)}:(\d+)")
    r.port = int(m.group(1))
    return r


def test_non_local_client_is_refused_by_default(namespace, spool):
    host_ip, peer_ip = namespace
    r = start(spool, host_ip)
    try:
        assert greeting_from_namespace(host_ip, r.port) == "b''"
        r.wait_for(rf"smtp connection from {re.escape(peer_ip)}:\d+ refused: not a local address")
    finally:
        r.stop()


def test_remote_clients_option_lets_them_in(namespace, spool):
    host_ip, _ = namespace
    r = start(spool, host_ip, "--remote-clients")
    try:
        assert greeting_from_namespace(host_ip, r.port).startswith("b'220 ")
    finally:
        r.stop()


def test_dnsbl_blocks_a_listed_client(namespace, spool):
    from .dnsserver import DnsServer

    host_ip, peer_ip = namespace
    listed = ".".join(reversed(peer_ip.split("."))) + ".bl.test A 127.0.0.2"
    with DnsServer([listed]) as dns:
        r = start(spool, host_ip, "--remote-clients", "--dnsbl", f"bl.test,other.test,1,2000,{dns.address}")
        try:
            assert greeting_from_namespace(host_ip, r.port) == "b''"
            r.wait_for(rf"dnsbl: {re.escape(peer_ip)}: listed by bl\.test: connection refused")
        finally:
            r.stop()
        r = start(spool, host_ip, "--remote-clients", "--dnsbl", f"other.test,1,2000,{dns.address}")
        try:
            assert greeting_from_namespace(host_ip, r.port).startswith("b'220 ")
        finally:
            r.stop()
        r = start(spool, host_ip, "--remote-clients", "--dnsbl", f"bl.test,0,2000,{dns.address}")  # log only
        try:
            assert greeting_from_namespace(host_ip, r.port).startswith("b'220 ")
            r.wait_for(rf"dnsbl: {re.escape(peer_ip)}: listed by bl\.test$")
        finally:
            r.stop()
