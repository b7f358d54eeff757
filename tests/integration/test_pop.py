"""The POP3 server over real sockets: a real emailrelay, Python's poplib, and raw sockets for exact replies.

Each test starts ``emailrelay ... --pop --pop-port 0 --pop-auth <file>`` (the
``relay`` fixture) and reads the POP port from its ``pop server on`` line.
Messages arrive by SMTP, or are put in the spool with the library (spool.py)
when a test needs files in particular places (--pop-by-name mailboxes,
content shared with the main spool directory).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import poplib
import pwd
import shutil
import smtplib
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from emailrelay.envelope import Envelope
from emailrelay.spool import Spool

from .conftest import Relay, command
from .downstream import Certificates

SECRETS = """
server plain alice secret
server plain bob pw
server md5 carol gNYiNPCsyQUbUnJD1B4nQJGG2FXhHrpSenpSyoKzE+E=
server plain ../evil x
server plain .hidden x
server plain a..b x
"""


@pytest.fixture
def secrets(tmp_path: Path) -> str:
    path = tmp_path / "pop.auth"
    path.write_text(SECRETS)
    return str(path)


@pytest.fixture(scope="module")
def certs() -> Certificates:
    return Certificates.shared()


@pytest.fixture
def pop(relay, secrets):
    """Start emailrelay with POP; returns (relay, pop port)."""

    def start(*args: str, auth: str | None = None) -> tuple[Relay, int]:
        r = relay("--pop", "--pop-port", "0", "--pop-auth", auth or secrets, *args)
        port = int(r.wait_for(r"pop server on 127\.0\.0\.1:(\d+)").group(1))
        return r, port

    return start


class RawPop:
    """A POP3 client that sends exactly what it is given and reads lines."""

    def __init__(self, port: int, timeout: float = 20.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def line(self) -> str:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by server")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "surrogateescape")

    def cmd(self, text: str | bytes) -> str:
        self.sock.sendall((text if isinstance(text, bytes) else text.encode()) + b"\r\n")
        return self.line()

    def multi(self) -> list[str]:
        lines = []
        while (line := self.line()) != ".":
            lines.append(line)
        return lines

    def login(self, user: str = "alice", password: str = "secret") -> None:
        assert self.cmd(f"USER {user}") == f"+OK user: {user}"
        assert self.cmd(f"PASS {password}") == "+OK"

    def closed(self) -> bool:
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawPop:
        try:
            self.greeting = self.line()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send(port: int, body: bytes, to: str = "c@d.example") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail("a@b.example", [to], body)


def store(spool_dir: Path, content: bytes, into: Path | None = None) -> str:
    """Commit a message with the library; optionally move both its files into a mailbox directory."""
    spool = Spool(spool_dir, fsync=False)
    msg = spool.create()
    msg.write(content)
    spool.commit_sync(msg, Envelope(from_address="a@b.example", to_remote=["c@d.example"]))
    if into is not None:
        for name in (f"{msg.id}.content", f"{msg.id}.envelope"):
            os.rename(spool_dir / name, into / name)
    return msg.id


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


_clients: list[poplib.POP3] = []


def client(port: int) -> poplib.POP3:
    """A poplib client, closed at the end of the test (see `close_clients`)."""
    p = poplib.POP3("127.0.0.1", port, timeout=20)
    _clients.append(p)
    return p


@pytest.fixture(autouse=True)
def close_clients():
    yield
    while _clients:
        _clients.pop().close()


# -- the whole session with poplib -------------------------------------------------


def test_smtp_in_pop_out(pop, spool):
    r, port = pop()
    send(r.port, b"Subject: one\r\n\r\n.starts with a dot\r\nline\r\n")
    send(r.port, b"Subject: two\r\n\r\nsecond\r\n")
    ids = sorted(p.name[: -len(".envelope")] for p in spool.glob("*.envelope"))
    contents = [(spool / f"{i}.content").read_bytes() for i in ids]
    p = client(port)
    assert p.getwelcome().startswith(b"+OK POP3 server ready <")
    p.user("alice")
    p.pass_("secret")
    assert p.stat() == (2, sum(len(c) for c in contents))
    assert p.list() == (b"+OK 2 message(s)", [f"{n} {len(c)}".encode() for n, c in enumerate(contents, 1)],
                        len(f"1 {len(contents[0])}\r\n2 {len(contents[1])}\r\n"))
    assert p.uidl()[1] == [f"{n} {i}.content".encode() for n, i in enumerate(ids, 1)]
    response, lines, octets = p.retr(1)
    assert response == f"+OK {len(contents[0])} octets".encode()
    assert b"\r\n".join(lines) + b"\r\n" == contents[0] and octets == len(contents[0])
    assert lines[3] == b".starts with a dot"  # unstuffed by poplib
    assert p.top(2, 0)[1] == contents[1].split(b"\r\n")[:2] + [b""]
    assert p.dele(1) == b"+OK"
    assert p.quit() == b"+OK signing off"
    assert names(spool) == [f"{ids[1]}.content", f"{ids[1]}.envelope"]
    r.wait_for(r"pop: 1 message\(s\) deleted for alice")


def test_exact_replies(pop, spool):
    r, port = pop()
    send(r.port, b"Subject: x\r\n\r\ny\r\n")
    with RawPop(port) as c:
        assert c.greeting.startswith("+OK POP3 server ready <") and c.greeting.endswith(">")
        stamp = c.greeting.rsplit(" ", 1)[1]
        assert stamp[1:-1].split("@")[0].replace(".", "").isdigit()
        assert c.cmd("CAPA") == "+OK capability list follows"
        assert c.multi() == ["USER", "CAPA", "TOP", "UIDL", "RESP-CODES",
                             "SASL CRAM-SHA512 CRAM-SHA256 CRAM-SHA1 CRAM-MD5 PLAIN LOGIN"]
        assert c.cmd("AUTH") == "+OK"
        assert c.multi() == ["CRAM-SHA512", "CRAM-SHA256", "CRAM-SHA1", "CRAM-MD5", "PLAIN", "LOGIN"]
        assert c.cmd("STAT") == "-ERR"
        assert c.cmd("STLS") == "-ERR"  # no --server-tls
        assert c.cmd("NONSENSE") == "-ERR"
        assert c.cmd("AUTH FOO") == "-ERR invalid mechanism"
        assert c.cmd("AUTH CRAM-MD5 AAAA") == "-ERR invalid initial response"
        assert c.cmd("AUTH LOGIN") == "+ VXNlcm5hbWU6"
        assert c.cmd("*") == "-ERR"
        assert c.cmd("PASS secret") == "-ERR"
        assert c.cmd(b"X" * 5000) == "-ERR line too long"
        assert c.cmd("user alice") == "+OK user: alice"
        assert c.cmd("pass secret") == "+OK"
        assert c.cmd("USER bob") == "-ERR"
        assert c.cmd("LIST 2") == "-ERR invalid id"
        size = (next(spool.glob("*.content"))).stat().st_size
        assert c.cmd("LIST 1") == f"+OK 1 {size}"
        assert c.cmd("STAT") == f"+OK 1 {size}"
        assert c.cmd("TOP 1 x") == "-ERR"
        assert c.cmd("RETR 0") == "-ERR"
        assert c.cmd("NOOP") == "+OK"
        assert c.cmd("DELE 1") == "+OK"
        assert c.cmd("DELE 1") == "-ERR"
        assert c.cmd("RSET") == "+OK"
        assert c.cmd("QUIT") == "+OK signing off"
        assert c.closed()
    assert len(list(spool.glob("*.envelope"))) == 1


def test_apop(pop, spool):
    r, port = pop()
    p = client(port)
    p.apop("alice", "secret")
    assert p.stat() == (0, 0)
    p.quit()
    p = client(port)
    with pytest.raises(poplib.error_proto, match="-ERR"):
        p.apop("alice", "wrong")
    p.quit()
    r.wait_for(r"authentication failed: client 127\.0\.0\.1: mechanism APOP: user \[alice\]: wrong APOP digest")


def test_auth_plain_and_cram_md5(pop, spool):
    r, port = pop()
    with RawPop(port) as c:
        assert c.cmd("AUTH PLAIN") == "+ "
        assert c.cmd(base64.b64encode(b"\0bob\0pw").decode()) == "+OK"
        assert c.cmd("QUIT") == "+OK signing off"
    with RawPop(port) as c:
        assert c.cmd("AUTH PLAIN " + base64.b64encode(b"\0alice\0secret").decode()) == "+OK"
    with RawPop(port) as c:  # a hashed (masked) CRAM-MD5 secret
        challenge = base64.b64decode(c.cmd("AUTH CRAM-MD5")[2:])
        assert challenge.startswith(b"<") and challenge.endswith(b">")
        digest = hmac.new(b"password", challenge, "md5").hexdigest()
        assert c.cmd(base64.b64encode(f"carol {digest}".encode()).decode()) == "+OK"
        assert c.cmd("STAT") == "+OK 0 0"


def test_user_pass_needs_plain(pop, tmp_path):
    path = tmp_path / "md5.auth"
    path.write_text("server md5 carol gNYiNPCsyQUbUnJD1B4nQJGG2FXhHrpSenpSyoKzE+E=\n")
    r, port = pop(auth=str(path))
    with RawPop(port) as c:
        assert c.cmd("USER carol") == "-ERR no SASL PLAIN mechanism to do USER/PASS authentication"
        assert c.cmd("CAPA") == "+OK capability list follows"
        assert c.multi() == ["CAPA", "TOP", "UIDL", "RESP-CODES", "SASL CRAM-MD5"]


def test_failed_logins_are_logged_and_slowed(pop):
    r, port = pop()
    with RawPop(port) as c:
        assert c.cmd("USER alice") == "+OK user: alice"
        assert c.cmd("PASS wrong") == "-ERR"
        started = time.monotonic()
        assert c.cmd("PASS wrong again") == "-ERR"
        assert time.monotonic() - started >= 0.9
        assert c.cmd("PASS secret") == "+OK"
    r.wait_for(r"^emailrelay: warning: authentication failed: client 127\.0\.0\.1: mechanism USER: "
               r"user \[alice\]: wrong password for \[alice\]$")


def test_stls_with_poplib(pop, certs, spool):
    r, port = pop("--server-tls", "--server-tls-certificate", str(certs.paths["good"]))
    p = client(port)
    assert "STLS" in p.capa()
    p.stls(context=certs.client_context())
    assert isinstance(p.sock, ssl.SSLSocket)
    assert p.user("alice") == b"+OK user: alice"  # the reply to USER, not a second +OK after STLS
    assert "STLS" not in p.capa()
    p.pass_("secret")
    assert p.stat() == (0, 0)
    assert p.quit() == b"+OK signing off"
    r.wait_for(r"pop tls established: ")


def test_server_tls_required_applies_to_pop(pop, certs):
    r, port = pop("--server-tls", "--server-tls-required", "--server-tls-certificate", str(certs.paths["good"]))
    with RawPop(port) as c:
        assert c.greeting == "+OK POP3 server ready"  # no mechanism (and no APOP) before TLS
        assert c.cmd("USER alice") == "-ERR must use STLS before authentication"
        assert c.cmd("AUTH PLAIN") == "-ERR must use STLS before authentication"
        assert c.cmd("STLS") == "+OK"
        c.sock = certs.client_context().wrap_socket(c.sock, server_hostname="localhost")
        c.login()


def test_dropped_connection_deletes_nothing_and_quit_deletes(pop, spool):
    r, port = pop()
    send(r.port, b"Subject: x\r\n\r\ny\r\n")
    before = names(spool)
    with RawPop(port) as c:
        c.login()
        assert c.cmd("DELE 1") == "+OK"
    r.wait_for(r"pop connection closed: disconnected")
    assert names(spool) == before
    with RawPop(port) as c:
        c.login()
        assert c.cmd("DELE 1") == "+OK"
        assert c.cmd("QUIT") == "+OK signing off"
        assert names(spool) == []  # gone before the reply


def test_pipelined_commands(pop, spool):
    r, port = pop()
    send(r.port, b"Subject: x\r\n\r\n.y\r\n")
    size = next(spool.glob("*.content")).stat().st_size
    with RawPop(port) as c:
        c.sock.sendall(b"USER alice\r\nPASS secret\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n")
        assert [c.line() for _ in range(3)] == ["+OK user: alice", "+OK", f"+OK {size} octets"]
        assert c.multi()[-2:] == ["", "..y"]
        assert [c.line(), c.line()] == ["+OK", "+OK signing off"]
        assert c.closed()
    assert names(spool) == []


def test_a_failed_deletion_drops_the_connection(pop, spool):
    msg_id = store(spool, b"Subject: x\r\n\r\ny\r\n")
    envelope = spool / f"{msg_id}.envelope"
    envelope.unlink()
    envelope.mkdir()  # listed (the name ends .envelope), but unlink(2) fails on it
    r, port = pop()
    with RawPop(port) as c:
        c.login()
        assert c.cmd("DELE 1") == "+OK"
        c.sock.sendall(b"QUIT\r\n")
        assert c.closed() and c.buf == b""  # no +OK
    r.wait_for(r"pop connection closed: cannot delete messages: is a directory")
    assert names(spool) == sorted([f"{msg_id}.content", f"{msg_id}.envelope"])  # the content stays too


def test_pop_no_delete(pop, spool):
    r, port = pop("--pop-no-delete")
    send(r.port, b"Subject: x\r\n\r\ny\r\n")
    before = names(spool)
    p = client(port)
    p.user("alice")
    p.pass_("secret")
    assert p.dele(1) == b"+OK"
    assert p.quit() == b"+OK signing off"
    assert names(spool) == before
    r.wait_for(r"pop: 1 message\(s\) kept \(--pop-no-delete\) for alice")


def test_one_session_per_mailbox(pop, spool):
    r, port = pop()
    with RawPop(port) as first, RawPop(port) as second:
        first.login()
        assert second.cmd("USER bob") == "+OK user: bob"
        assert second.cmd("PASS pw") == "-ERR [IN-USE] mailbox locked"  # all users share the spool
        assert first.cmd("QUIT") == "+OK signing off"
        assert first.closed()
        r.wait_for(r"pop connection closed: quit")
        assert second.cmd("PASS pw") == "+OK"
    r.wait_for(r"pop login of \[bob\] refused: mailbox locked by another session")


def test_one_session_per_mailbox_by_name(pop, spool):
    r, port = pop("--pop-by-name")
    with RawPop(port) as a1, RawPop(port) as a2, RawPop(port) as b:
        a1.login()
        b.login("bob", "pw")  # another mailbox: fine
        assert a2.cmd("USER alice") == "+OK user: alice"
        assert a2.cmd("PASS secret") == "-ERR [IN-USE] mailbox locked"
        a1.close()  # a dropped connection releases the mailbox too
        r.wait_for(r"pop connection closed: disconnected")
        assert a2.cmd("PASS secret") == "+OK"


def test_pop_by_name_mailboxes_and_shared_content(pop, spool):
    alice, bob = spool / "alice", spool / "bob"
    alice.mkdir()
    bob.mkdir()
    main = Spool(spool, fsync=False)
    shared = store(spool, b"Subject: shared\r\n\r\nfor both\r\n")
    assert main.copy_to_subdirectories(shared) == 2  # envelope copies; the content stays in the spool
    queued = store(spool, b"Subject: queued\r\n\r\nstill forwarding\r\n")
    (alice / f"{queued}.envelope").write_bytes((spool / f"{queued}.envelope").read_bytes())
    own = store(spool, b"Subject: own\r\n\r\nonly alice\r\n", into=alice)
    r, port = pop("--pop-by-name")
    p = client(port)
    p.user("alice")
    p.pass_("secret")
    expected = sorted([shared, queued, own])
    assert [line.split()[1].decode() for line in p.uidl()[1]] == [f"{i}.content" for i in expected]
    n = expected.index(shared) + 1
    assert b"for both" in p.retr(n)[1]
    for i in range(1, 4):
        p.dele(i)
    assert p.quit() == b"+OK signing off"
    assert names(alice) == []
    # bob's envelope still uses the shared content; the queued message is still in the main spool
    assert names(spool) == sorted(["alice", "bob", f"{shared}.content", f"{queued}.content", f"{queued}.envelope"])
    p = client(port)
    p.user("bob")
    p.pass_("pw")
    assert p.stat()[0] == 1
    p.dele(1)
    p.quit()
    assert names(bob) == []
    assert names(spool) == sorted(["alice", "bob", f"{queued}.content", f"{queued}.envelope"])


def test_pop_by_name_creates_the_mailbox(pop, spool):
    r, port = pop("--pop-by-name")
    send(r.port, b"Subject: x\r\n\r\ny\r\n")  # stays in the main spool: not alice's
    with RawPop(port) as c:
        c.login()
        assert c.cmd("STAT") == "+OK 0 0"
    assert (spool / "alice").is_dir()
    assert stat.S_IMODE((spool / "alice").stat().st_mode) == 0o770


@pytest.mark.parametrize("user", ["../evil", ".hidden", "a..b"])
def test_bad_mailbox_names_are_refused(pop, spool, tmp_path, user):
    r, port = pop("--pop-by-name")
    with RawPop(port) as c:
        assert c.cmd(f"USER {user}") == f"+OK user: {user}"
        assert c.cmd("PASS x") == "-ERR [SYS/PERM] invalid mailbox name"
        assert c.cmd("STAT") == "-ERR"
    assert names(spool) == []
    assert not (tmp_path / "evil").exists()


PAM_USER = "ertestpoppam"


@pytest.fixture
def pam_account() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("chpasswd") is None:
        pytest.skip("needs root, useradd and chpasswd")
    try:
        pwd.getpwnam(PAM_USER)
        subprocess.run(["userdel", PAM_USER], capture_output=True)
    except KeyError:
        pass
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", PAM_USER], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{PAM_USER}:Pop-Pam-1\n".encode(), check=True)
        yield PAM_USER
    finally:
        subprocess.run(["userdel", PAM_USER], capture_output=True)


def test_pam_authentication(pop, pam_account):
    r, port = pop(auth="pam:")
    with RawPop(port) as c:
        assert c.greeting == "+OK POP3 server ready"  # no APOP timestamp: PAM cannot check APOP
        assert c.cmd("CAPA") == "+OK capability list follows"
        assert c.multi() == ["USER", "CAPA", "TOP", "UIDL", "RESP-CODES", "SASL PLAIN"]
        assert c.cmd(f"USER {pam_account}") == f"+OK user: {pam_account}"
        assert c.cmd("PASS wrong") == "-ERR"
        assert c.cmd("PASS Pop-Pam-1") == "+OK"
    with RawPop(port) as c:
        assert c.cmd("AUTH PLAIN " + base64.b64encode(f"\0{pam_account}\0Pop-Pam-1".encode()).decode()) == "+OK"
    r.wait_for(rf"authentication failed: client 127\.0\.0\.1: mechanism USER: user \[{pam_account}\]: pam refused")


def test_broken_pop_auth_file_is_a_one_line_error(spool, tmp_path):
    path = tmp_path / "broken.auth"
    path.write_text("server plain alice secret\nserver plain bob\n")
    result = subprocess.run(
        [command("emailrelay"), "--no-daemon", "--port", "0", "--interface", "127.0.0.1", "--spool-dir",
         str(spool), "--pop", "--pop-port", "0", "--pop-auth", str(path)],
        capture_output=True, timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.decode() == f"emailrelay: error: {path}:2: too few fields\n"


def test_idle_timeout(pop):
    r, port = pop("--idle-timeout", "1")
    with RawPop(port) as c:
        started = time.monotonic()
        assert c.closed()
        assert time.monotonic() - started < 10
    r.wait_for(r"pop connection closed: idle timeout")


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_100_mb_retr_streams(pop, spool):
    block = b"".join(
        (b"." if n % 7 == 0 else b"") + b"line %d " % n + b"x" * (n % 900) + b"\r\n" for n in range(2000)
    )
    total = 100 * 2**20
    expected = hashlib.sha256()
    main = Spool(spool, fsync=False)
    msg = main.create()
    msg.write(b"Subject: big\r\n\r\n")
    expected.update(b"Subject: big\r\n\r\n")
    while msg.size + len(block) <= total:
        msg.write(block)
        expected.update(block)
    filler = b"y" * (total - msg.size - 2) + b"\r\n"  # exactly 100 MB, ending with CRLF
    msg.write(filler)
    expected.update(filler)
    main.commit_sync(msg, Envelope(from_address="a@b.example", to_remote=["c@d.example"]))
    size = (spool / f"{msg.id}.content").stat().st_size
    r, port = pop()
    with RawPop(port, timeout=60) as c:
        c.login()
        before = vm_hwm_kib(r.proc.pid)
        assert c.cmd("RETR 1") == f"+OK {size} octets"
        got = hashlib.sha256()
        received = 0
        while True:
            line = c.line()
            if line == ".":
                break
            raw = line.encode("utf-8", "surrogateescape")
            raw = raw[1:] if raw.startswith(b".") else raw
            got.update(raw + b"\r\n")
            received += len(raw) + 2
        assert received == size
        assert got.hexdigest() == expected.hexdigest()
        growth = vm_hwm_kib(r.proc.pid) - before
        assert growth < 20 * 1024, f"peak RSS grew by {growth} KiB while sending 100 MB"
        assert c.cmd("QUIT") == "+OK signing off"
