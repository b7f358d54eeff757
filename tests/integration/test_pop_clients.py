"""Independent POP3 clients (curl, fetchmail) collecting mail that came in over SMTP."""

from __future__ import annotations

import shutil
import smtplib
import subprocess
from pathlib import Path

import pytest

from .conftest import daemon_dir
from .test_pop import pop, secrets  # noqa: F401 - fixtures


def deliver(smtp_port: int, subject: str, to: str = "alice@example.com") -> None:
    with smtplib.SMTP("127.0.0.1", smtp_port) as s:
        s.sendmail("sender@example.org", [to], f"Subject: {subject}\r\n\r\nhello {subject}\r\n".encode())


def user_and_password(secrets_text: str) -> tuple[str, str]:
    for line in secrets_text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "server" and fields[1] == "plain" and "/" not in fields[2] and "." not in fields[2]:
            return fields[2], fields[3]
    raise AssertionError("no plain server account in the test secrets")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is installed by .ci/run")
def test_curl_lists_and_retrieves_over_pop3(pop, secrets, spool):  # noqa: F811
    user, password = user_and_password(Path(secrets).read_text())
    r, port = pop("--filter", "copy:pop", "--pop-by-name")
    daemon_dir(spool / user)
    deliver(r.port, "via-curl")
    listing = subprocess.run(
        ["curl", "-s", "--max-time", "20", "-u", f"{user}:{password}", f"pop3://127.0.0.1:{port}/"],
        capture_output=True, timeout=30,
    )
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.decode().split()[0] == "1"
    message = subprocess.run(
        ["curl", "-s", "--max-time", "20", "-u", f"{user}:{password}", f"pop3://127.0.0.1:{port}/1"],
        capture_output=True, timeout=30,
    )
    assert message.returncode == 0, message.stderr
    assert b"Subject: via-curl" in message.stdout and b"hello via-curl" in message.stdout


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail is installed by .ci/run")
@pytest.mark.parametrize("feeder", ["copy:pop", "emailrelay-filter-copy"])
def test_fetchmail_collects_and_deletes(pop, secrets, spool, tmp_path, feeder):  # noqa: F811
    from .conftest import command

    user, password = user_and_password(Path(secrets).read_text())
    spec = feeder if feeder == "copy:pop" else command("emailrelay-filter-copy")
    r, port = pop("--filter", spec, "--pop-by-name")
    daemon_dir(spool / user)
    for n in range(3):
        deliver(r.port, f"fetch-{n}")
    out = tmp_path / "mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f'poll 127.0.0.1 protocol POP3 port {port} user "{user}" password "{password}" '
        f'is root here mda "/bin/sh -c \'cat >> {out}\'" no keep sslproto ""\n'
    )
    rc.chmod(0o600)
    result = subprocess.run(
        ["fetchmail", "-f", str(rc), "--nosyslog", "--nodetach", "-i", str(tmp_path / "ids"), "--timeout", "20"],
        capture_output=True, timeout=60, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = out.read_text()
    assert all(f"Subject: fetch-{n}" in text for n in range(3))
    assert list((spool / user).glob("*.envelope")) == []  # deleted at QUIT
