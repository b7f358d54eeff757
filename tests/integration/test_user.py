"""--user: the identity of spool files and of filter programs when started as root (OPTIONS.md 7.3)."""

from __future__ import annotations

import os
import pwd
import smtplib
import subprocess
import tempfile
from pathlib import Path

import pytest

from .conftest import Relay

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def public_dir():
    """A directory that the nobody user can reach (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="emailrelay-user-"))
    os.chmod(path, 0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def send(relay: Relay) -> None:
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as smtp:
        smtp.sendmail("a@example.com", ["b@example.net"], b"Subject: x\r\n\r\nbody\r\n")


def test_spool_files_get_the_users_group_and_the_process_drops_its_groups(relay, spool):
    r = relay("--user", "nobody")
    send(r)
    (envelope,) = spool.glob("*.envelope")
    info = envelope.stat()
    assert (info.st_uid, info.st_gid) == (0, NOBODY.pw_gid)
    assert oct(info.st_mode & 0o777) == "0o660"
    status = dict(line.split(":", 1) for line in Path(f"/proc/{r.proc.pid}/status").read_text().splitlines())
    assert status["Groups"].split() == []
    assert status["Gid"].split()[1] == str(NOBODY.pw_gid)  # the effective gid


def test_user_root_switches_nothing(relay, spool):
    r = relay("--user", "root")
    send(r)
    (envelope,) = spool.glob("*.envelope")
    assert (envelope.stat().st_uid, envelope.stat().st_gid) == (0, 0)


@pytest.mark.parametrize("user, ids", [("nobody", f"{NOBODY.pw_uid} {NOBODY.pw_gid} {NOBODY.pw_gid}"), ("root", "0 0")])
def test_filters_run_as_the_user(relay, public_dir, user, ids):
    script = public_dir / "ids.sh"
    script.write_text('#!/bin/sh\necho "<<$(id -u) $(id -g) $(id -G)>>"\nexit 1\n')
    script.chmod(0o755)
    r = relay("--user", user, "--filter", str(script))
    with pytest.raises(smtplib.SMTPDataError) as failure:
        send(r)
    assert failure.value.smtp_error.decode().startswith(ids)
