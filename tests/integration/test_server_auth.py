"""Server policy over real sockets: SMTP AUTH from secrets files and PAM, trusted addresses, TLS."""

from __future__ import annotations

import base64
import hmac
import os
import pwd
import shutil
import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from emailrelay.envelope import parse

from .conftest import command
from .downstream import Certificates
from .smtpraw import RawSmtp

SECRETS = """
# server accounts
server plain alice secret
server md5 carol gNYiNPCsyQUbUnJD1B4nQJGG2FXhHrpSenpSyoKzE+E=
"""


@pytest.fixture
def secrets(tmp_path: Path) -> str:
    path = tmp_path / "server.auth"
    path.write_text(SECRETS)
    return str(path)


@pytest.fixture(scope="module")
def certs() -> Certificates:
    return Certificates.shared()


def stored(spool: Path) -> list:
    return [parse(p.read_bytes()) for p in sorted(spool.glob("*.envelope"))]


def test_auth_is_required_and_recorded(relay, spool, secrets):
    r = relay("--server-auth", secrets)
    with smtplib.SMTP("127.0.0.1", r.port) as s:
        s.ehlo("me")
        assert s.esmtp_features["auth"].split()[-2:] == ["PLAIN", "LOGIN"]
        assert s.mail("a@b.example") == (530, b"authentication required")
        assert s.login("alice", "secret")[0] == 235
        s.sendmail("a@b.example", ["c@d.example"], b"Subject: x\r\n\r\ny\r\n")
    (env,) = stored(spool)
    assert env.authentication == "alice"
    (content,) = spool.glob("*.content")
    assert b" with ESMTPA ;" in content.read_bytes().split(b"\r\n")[0]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_each_mechanism(relay, spool, secrets, mechanism):
    r = relay("--server-auth", secrets)
    with smtplib.SMTP("127.0.0.1", r.port) as s:
        s.ehlo("me")
        s.user, s.password = "alice", "secret"
        method = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login, "CRAM-MD5": s.auth_cram_md5}[mechanism]
        assert s.auth(mechanism, method, initial_response_ok=mechanism != "CRAM-MD5")[0] == 235


def test_hashed_cram_md5_secret(relay, spool, secrets):
    r = relay("--server-auth", secrets)
    with RawSmtp(r.port) as c:
        c.reply()
        c.cmd("EHLO me")
        challenge = base64.b64decode(c.cmd("AUTH CRAM-MD5")[4:])
        digest = hmac.new(b"password", challenge, "md5").hexdigest()
        assert c.cmd(base64.b64encode(f"carol {digest}".encode()).decode()) == "235 authentication successful"
        assert c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==") == "503 command out of sequence -- use RSET to resynchronise"


def test_failures_are_refused_logged_and_slowed(relay, secrets):
    r = relay("--server-auth", secrets)
    with RawSmtp(r.port) as c:
        c.reply()
        c.cmd("EHLO me")
        bad = base64.b64encode(b"\0alice\0wrong").decode()
        assert c.cmd(f"AUTH PLAIN {bad}") == "535 authentication failed"
        assert c.cmd("AUTH PLAIN !!") == "501 invalid argument"
        assert c.cmd("AUTH CRAM-MD5 abc") == "501 invalid argument"
        assert c.cmd("AUTH FOO") == "504 unsupported authentication mechanism"
        assert c.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
        assert c.cmd("*") == "501 authentication cancelled"
        assert c.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
        assert c.cmd("not base64!") == "535 authentication failed"
        assert c.cmd(f"AUTH PLAIN {bad}") == "535 authentication failed"  # answered after a delay
        assert c.cmd("MAIL FROM:<a@b>") == "530 authentication required"
    r.wait_for(r"^emailrelay: warning: authentication failed: client 127\.0\.0\.1: mechanism PLAIN: user \[alice\]: wrong password for \[alice\]$")


def test_trusted_address_needs_no_auth(relay, spool, tmp_path):
    path = tmp_path / "trust.auth"
    path.write_text("server plain alice secret\nserver none 127.0.0.0/8 localnet\n")
    r = relay("--server-auth", str(path))
    with smtplib.SMTP("127.0.0.1", r.port) as s:
        s.sendmail("a@b.example", ["c@d.example"], b"Subject: x\r\n\r\ny\r\n")
    (env,) = stored(spool)
    assert env.authentication == "localnet"


def test_broken_secrets_file_is_a_one_line_error(spool, tmp_path):
    path = tmp_path / "broken.auth"
    path.write_text("server plain alice secret\nserver plain bob\n")
    result = subprocess.run(
        [command("emailrelay"), "--log", "--no-daemon", "--port", "0", "--spool-dir", str(spool), "--server-auth", str(path)],
        capture_output=True, timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.decode().splitlines()[-1] == f"emailrelay: error: {path}:2: too few fields"


def test_starttls_then_auth_only_after_tls(relay, spool, secrets, certs):
    r = relay(
        "--server-auth", secrets, "--server-auth-config", "m:;a:plain", "--server-tls",
        "--server-tls-certificate", str(certs.paths["good"]), "--server-tls-required",
    )
    with RawSmtp(r.port) as c:
        c.reply()
        ehlo = c.cmd("EHLO me").split("\n")
        assert "250-STARTTLS" in ehlo and not any("AUTH" in line for line in ehlo)
        assert c.cmd("MAIL FROM:<a@b>") == "530 must issue a STARTTLS command first"
        assert c.cmd("AUTH PLAIN") == "530 must issue a STARTTLS command first"
    with smtplib.SMTP("127.0.0.1", r.port) as s:
        s.starttls(context=certs.client_context())
        s.ehlo("me")
        assert s.esmtp_features["auth"].strip() == "PLAIN" and "starttls" not in s.esmtp_features
        s.login("alice", "secret")
        s.sendmail("a@b.example", ["c@d.example"], b"Subject: x\r\n\r\ny\r\n")
    (content,) = spool.glob("*.content")
    assert b" with ESMTPSA tls TLS_" in content.read_bytes().split(b"\r\n")[0]


def test_starttls_discards_pipelined_plaintext(relay, certs):
    r = relay("--server-tls", "--server-tls-certificate", str(certs.paths["good"]))
    with RawSmtp(r.port) as c:
        c.reply()
        c.cmd("EHLO me")
        c.send(b"STARTTLS\r\nNOOP injected\r\n")
        assert c.reply() == "220 ready to start tls"
        tls = certs.client_context().wrap_socket(c.sock, server_hostname="localhost")
        tls.sendall(b"NOOP\r\n")
        assert tls.recv(1000) == b"250 noop\r\n"  # one reply: the injected NOOP was dropped
        tls.close()


def test_implicit_tls_with_client_certificate(relay, spool, certs):
    r = relay(
        "--server-tls-connection", "--server-tls-certificate", str(certs.paths["good"]),
        "--server-tls-verify", str(certs.ca_pem),
    )
    context = certs.client_context(client_cert=True)
    with smtplib.SMTP_SSL("127.0.0.1", r.port, context=context) as s:
        s.sendmail("a@b.example", ["c@d.example"], b"Subject: x\r\n\r\ny\r\n")
    (env,) = stored(spool)
    assert env.client_certificate.startswith("-----BEGIN CERTIFICATE-----\n")
    raw = next(spool.glob("*.envelope")).read_bytes()
    assert b"X-MailRelay-ClientCertificate: -----BEGIN CERTIFICATE-----\r\n " in raw
    with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
        with smtplib.SMTP_SSL("127.0.0.1", r.port, context=certs.client_context(), timeout=10) as s:
            s.noop()


def test_unusable_certificate_file_is_a_one_line_error(spool, tmp_path):
    missing = tmp_path / "missing.pem"
    result = subprocess.run(
        [command("emailrelay"), "--log", "--no-daemon", "--port", "0", "--spool-dir", str(spool),
         "--server-tls", "--server-tls-certificate", str(missing)],
        capture_output=True, timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.decode().splitlines()[-1].startswith("emailrelay: error: cannot use the tls certificate files: ")


# -- PAM --------------------------------------------------------------------------


USER = "ertestpam"


@pytest.fixture
def pam_account() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("chpasswd") is None:
        pytest.skip("needs root, useradd and chpasswd")
    try:
        pwd.getpwnam(USER)
        subprocess.run(["userdel", "-r", USER], capture_output=True)
    except KeyError:
        pass
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{USER}:Pam-Test-1\n".encode(), check=True)
        yield USER
    finally:
        subprocess.run(["userdel", USER], capture_output=True)


def test_pam_authentication_against_a_real_account(relay, spool, pam_account):
    r = relay("--server-auth", "pam:")
    with smtplib.SMTP("127.0.0.1", r.port) as s:
        s.ehlo("me")
        assert s.esmtp_features["auth"].strip() == "PLAIN"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login(pam_account, "wrong")
    with smtplib.SMTP("127.0.0.1", r.port) as s:
        s.login(pam_account, "Pam-Test-1")
        s.sendmail("a@b.example", ["c@d.example"], b"Subject: x\r\n\r\ny\r\n")
    (env,) = stored(spool)
    assert env.authentication == pam_account
