"""emailrelay-passwd as a real process (SPEC.md 5.6)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import sys
from pathlib import Path

import pytest

PASSWD = Path(sys.executable).parent / "emailrelay-passwd"

pytestmark = pytest.mark.skipif(
    not PASSWD.exists(), reason="pip install -e . to get the emailrelay-passwd script"
)

PROG = "emailrelay-passwd"

VECTORS = [  # SPEC.md 5.6, from the upstream documentation
    ("password123", "9N2IRYVXqu7SkOW1Xat+wpR9NbA2R6fb61XlmqW+46E="),
    ("e=mc2", "v1HOpuLIbbvgoJjhueeoqwfvtIp2C+gMA285ke+xxow="),
    ("my password", "x6UJKQF9f7HfhS1M+PW4s8rXIoT+L+WoqLz+rBwSKbw="),
    ("password", "gNYiNPCsyQUbUnJD1B4nQJGG2FXhHrpSenpSyoKzE+E="),
]
DOTTED = "874698368.97103088.1131565595.1076305620.1440253585.1387929313.3394402938.3776164738"


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(PASSWD), *args], input=stdin, capture_output=True, timeout=30)


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert (result.returncode, result.stderr) == (0, b""), result.stderr
    assert result.stdout.endswith(b"\n") and result.stdout.count(b"\n") == 1
    return result.stdout.decode()[:-1]


def error(result: subprocess.CompletedProcess[bytes]) -> str:
    assert (result.returncode, result.stdout) == (1, b"")
    assert b"Traceback" not in result.stderr
    return result.stderr.decode()


@pytest.mark.parametrize("password, key", VECTORS)
def test_vectors_from_standard_input(password: str, key: str) -> None:
    assert ok(run(stdin=password.encode() + b"\n")) == key


@pytest.mark.parametrize("password, key", VECTORS)
def test_vectors_from_the_command_line(password: str, key: str) -> None:
    assert ok(run("--password", password)) == key
    assert ok(run(f"--password={password}", "--hash=MD5")) == key
    assert ok(run("-p", password, "-H", "md5")) == key


def test_only_the_first_line_is_read_and_trimmed() -> None:
    for stdin in (b"password", b"  password \t\r\nsecond line\n", b"\tpassword\r\n\r\n"):
        assert ok(run(stdin=stdin)) == VECTORS[3][1]
    assert ok(run(stdin=b"my password\n")) == VECTORS[2][1]  # inner spaces are kept


def test_a_command_line_password_is_taken_as_it_is() -> None:
    assert ok(run("-p", " password")) != VECTORS[3][1]


def test_dotted() -> None:
    assert ok(run("--dotted", stdin=b"password\n")) == DOTTED
    assert ok(run("-d", "-p", "password", "-H", "MD5")) == DOTTED


def test_long_passwords_are_hashed_first() -> None:
    long = b"x" * 65
    digest = hashlib.md5(long).digest()
    assert ok(run(stdin=long + b"\n")) == ok(run("--base64", "-p", base64.b64encode(digest).decode()))
    assert ok(run(stdin=long + b"\n")) != ok(run(stdin=long[:64] + b"\n"))


@pytest.mark.parametrize("name", ["NONE", "none", "None"])
def test_hash_none_gives_xtext(name: str) -> None:
    assert ok(run("--hash", name, stdin=b"a b+c=d\xff~!\n")) == "a+20b+2Bc+3Dd+FF~!"
    assert ok(run("-H", name, "-p", "password")) == "password"


def test_base64() -> None:
    assert ok(run("--base64", "-p", "cGFzc3dvcmQ=")) == VECTORS[3][1]
    assert ok(run("-b", "-p", "cGFzc3dvcmQ")) == VECTORS[3][1]  # padding is optional
    assert ok(run("-b", stdin=b" cGFzc3dvcmQ=\r\n")) == VECTORS[3][1]
    assert ok(run("-b", "-H", "NONE", "-p", "AP8gKw==")) == "+00+FF+20+2B"


@pytest.mark.parametrize(
    "text", ["cGFzc3dvcmQ*", "c", "cGFzc3dvcmR", "cGFzc3dvcmQ==", "cGFz c3dvcmQ=", "=", "cG=="]
)
def test_bad_base64(text: str) -> None:
    assert error(run("-b", "-p", text)) == f"{PROG}: exception: base64 encoding error\n"


@pytest.mark.parametrize("hash_name, size", [("SHA1", 40), ("sha256", 64)])
def test_sha_masked_keys(hash_name: str, size: int) -> None:
    key = base64.b64decode(ok(run("--hash", hash_name, "-p", "password")), validate=True)
    assert len(key) == size
    from emailrelay import sasl

    challenge = b"<1896.697170952@postoffice.example.net>"
    expected = hmac.new(b"password", challenge, hash_name.lower()).digest()
    assert sasl.hmac_from_masked(key, hash_name.lower(), challenge) == expected


def test_the_md5_key_gives_hmac_md5() -> None:
    from emailrelay import sasl

    key = base64.b64decode(ok(run("-p", "tanstaaftanstaaf")))
    challenge = b"<1896.697170952@postoffice.reston.mci.net>"  # RFC 2195
    assert sasl.hmac_from_masked(key, "md5", challenge).hex() == "b913a602c7eda7a495b4e6e7334d3890"


@pytest.mark.parametrize("stdin", [b"", b"\n", b" \t\r\n", b"\nsecond line\n"])
def test_empty_password_from_standard_input(stdin: bytes) -> None:
    assert error(run(stdin=stdin)) == f"{PROG}: invalid password\n"


def test_empty_password_on_the_command_line() -> None:
    assert error(run("--password=")) == f"{PROG}: invalid password\n"
    assert error(run("-H", "NONE", "--password=")) == f"{PROG}: invalid password\n"
    assert error(run("-b", "--password=")) == f"{PROG}: invalid password\n"


@pytest.mark.parametrize("name", ["SHA512", "foo", "", "md4"])
def test_bad_hash(name: str) -> None:
    assert error(run(f"--hash={name}", stdin=b"password\n")) == f"{PROG}: exception: invalid hash function\n"
    # checked before the password, as in 2.6
    assert error(run(f"--hash={name}", "--password=")) == f"{PROG}: exception: invalid hash function\n"


@pytest.mark.parametrize("name", ["SHA1", "SHA256", "NONE"])
def test_dotted_only_for_md5(name: str) -> None:
    assert error(run("-d", "-H", name, "-p", "x")) == f"{PROG}: exception: --dotted only works for md5\n"


def test_usage_errors() -> None:
    assert error(run("password")) == (
        f"{PROG}: too many command-line arguments (the password is read from the standard input)\n"
    )
    assert error(run("--bogus")) == f'{PROG}: error: invalid option: "--bogus"\n'
    assert error(run("-H")) == f"{PROG}: error: no value supplied for -H\n"


def test_undocumented_tls_options_are_accepted() -> None:
    assert ok(run("-t", "-T", "mbedtls", "-v", "-p", "password")) == VECTORS[3][1]
    assert ok(run("--tls", "--tls-config=x", "-H", "sha1", "-p", "password"))


def test_help_and_version() -> None:
    for args in (["--help"], ["-h", "-v"], ["--version"]):
        result = run(*args)
        assert (result.returncode, result.stderr) == (0, b"")
        assert result.stdout.decode().startswith(f"{PROG} 0.1.0 (E-MailRelay 2.6 compatible)\n")
    text = run("--help").stdout.decode()
    for option in ("--hash", "--password", "--base64", "--dotted", "--help"):
        assert option in text
    assert "--tls" not in text
    assert "--verbose" in run("-h", "-v").stdout.decode()
