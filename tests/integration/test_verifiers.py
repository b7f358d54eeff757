"""--address-verifier: programs, net: servers and account:, over real SMTP sessions."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import smtplib
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from emailrelay.envelope import parse

from .smtpraw import RawSmtp
from .test_filters import script

VERIFIER = r"""
echo "$@" >> "{log}"
case "$1" in
  local@*) printf 'Local User\nlocalbox\n'; exit 0;;
  rewrite@*) printf '\nother@example.net\n'; exit 1;;
  later@*) printf 'try again later\n'; exit 3;;
  drop@*) exit 100;;
  slow@*) sleep 30;;
  *@example.net) printf '\n%s\n' "$1"; exit 1;;
  *) printf 'no such user here\nnot in the list\n'; exit 2;;
esac
"""


def test_program_verifier_outcomes(relay, spool, tmp_path):
    log = tmp_path / "args"
    v = script(tmp_path, "verify", VERIFIER.format(log=log))
    r = relay("--address-verifier", v, "--filter-timeout", "2", "--domain", "relay.example")
    with RawSmtp(r.port) as c:
        c.reply()
        c.cmd("EHLO me")
        c.cmd("MAIL FROM:<sender@example.org>")
        assert c.cmd("RCPT TO:<local@relay.example>") == "250 recipient <local@relay.example>  OK"
        assert c.cmd("RCPT TO:<rewrite@example.net>") == "250 recipient <rewrite@example.net> OK"
        assert c.cmd("RCPT TO:<plain@example.net>") == "250 recipient <plain@example.net> OK"
        assert c.cmd("RCPT TO:<later@example.org>") == "450 try again later"
        assert c.cmd("RCPT TO:<nobody@example.org>") == "550 no such user here"
        assert c.cmd("RCPT TO:<slow@example.org>") == "450 timeout"
        assert c.cmd("VRFY local@relay.example") == "250 Local User"
        assert c.cmd("VRFY plain@example.net") == "252 cannot verify but will accept: plain@example.net"
        assert c.cmd("VRFY nobody@example.org") == "550 no such user here"
        c.cmd("DATA")
        assert c.cmd("Subject: v\r\n\r\nx\r\n.") == "250 message processed"
        assert c.cmd("RCPT TO:<drop@example.org>") == "503 command out of sequence -- use RSET to resynchronise"
        c.cmd("MAIL FROM:<sender@example.org>")
        c.send(b"RCPT TO:<drop@example.org>\r\n")
        assert c.closed()
    (env,) = [parse(p.read_bytes()) for p in spool.glob("*.envelope")]
    assert env.to_local == ["localbox"]
    assert env.to_remote == ["other@example.net", "plain@example.net"]
    first = log.read_text().splitlines()[0].split(" ")
    assert first[0] == "local@relay.example" and first[1] == "sender@example.org"
    assert first[2].startswith("127.0.0.1:") and first[3:] == ["relay.example", "none", ""]


class NetVerifier:
    """A net: verifier server: answers by the recipient's local part."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                request = line.decode().rstrip("\n")
                self.requests.append(request)
                user = request.split("|")[0].split("@")[0]
                answer = {"box": "0|mailbox|Full Name", "ok": "1|", "temp": "3|busy|log", "perm": "2|gone"}.get(user, "junk")
                writer.write(answer.encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            sessions = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in sessions:  # emailrelay keeps its verifier connection open: end it here
                task.cancel()
            await asyncio.gather(*sessions, return_exceptions=True)
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def net_verifier() -> Iterator[NetVerifier]:
    v = NetVerifier()
    yield v
    v.stop()


def test_net_verifier(relay, net_verifier):
    r = relay("--address-verifier", f"net:127.0.0.1:{net_verifier.port}")
    with RawSmtp(r.port) as c:
        c.reply()
        c.cmd("EHLO me")
        c.cmd("MAIL FROM:<s@example.org>")
        assert c.cmd("RCPT TO:<box@x.example>") == "250 recipient <box@x.example>  OK"
        assert c.cmd("RCPT TO:<ok@x.example>") == "250 recipient <ok@x.example> OK"
        assert c.cmd("RCPT TO:<temp@x.example>") == "450 busy"
        assert c.cmd("RCPT TO:<perm@x.example>") == "550 gone"
        assert c.cmd("RCPT TO:<other@x.example>") == "550"
    assert net_verifier.requests[0].split("|")[:2] == ["box@x.example", "s@example.org"]


USER = "ertestacct"


@pytest.fixture
def account() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd")
    subprocess.run(["userdel", USER], capture_output=True)
    subprocess.run(["useradd", "--no-create-home", "--uid", "2345", "--comment", "Test Account", USER], check=True)
    try:
        yield USER
    finally:
        subprocess.run(["userdel", USER], capture_output=True)


def test_account_verifier(relay, account):
    r = relay("--address-verifier", "account:", "--domain", "relay.example")
    with RawSmtp(r.port) as c:
        c.reply()
        c.cmd("EHLO me")
        c.cmd("MAIL FROM:<s@example.org>")
        assert c.cmd(f"RCPT TO:<{account}@relay.example>") == f"250 recipient <{account}@relay.example>  OK"
        assert c.cmd(f"RCPT TO:<{account.upper()}@relay.example>") == f"250 recipient <{account.upper()}@relay.example>  OK"
        assert c.cmd("RCPT TO:<root@relay.example>") == "550 rejected"  # uid 0 is outside 1000-32767
        assert c.cmd(f"RCPT TO:<{account}@elsewhere.example>") == "550 rejected"
        assert c.cmd(f"VRFY {account}@relay.example") == "250 Test Account"
    assert pwd.getpwnam(account).pw_uid == 2345


def test_bad_verifier_specification_is_a_usage_error(tmp_path):
    from .conftest import command

    result = subprocess.run(
        [command("emailrelay"), "--log", "--no-daemon", "--spool-dir", str(tmp_path), "--address-verifier", "account:5-x"],
        capture_output=True, timeout=30,
    )
    assert (result.returncode, result.stderr.decode().strip()) == (
        1, "emailrelay: usage error: invalid verifier specification: not a valid numeric range"
    )


def test_verifier_sees_the_authenticated_id(relay, tmp_path):
    log = tmp_path / "args"
    v = script(tmp_path, "verify", f'echo "$5|$6" >> {log}\nprintf "\\n%s\\n" "$1"; exit 1')
    secrets = tmp_path / "s.auth"
    secrets.write_text("server plain alice pw\n")
    r = relay("--address-verifier", v, "--server-auth", str(secrets))
    with smtplib.SMTP("127.0.0.1", r.port) as s:
        s.login("alice", "pw")
        s.sendmail("a@b.example", ["c@d.example"], b"x")
    assert Path(log).read_text().strip() == "cram-md5|alice"  # smtplib prefers CRAM-MD5
