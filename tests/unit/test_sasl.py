"""SASL: masked keys (SPEC 5.6 vectors, hmac equivalence), client and server
mechanisms (SPEC 5.3, 5.4), RFC 2195 and RFC 1939 examples, and interop with
Python's smtplib (its AUTH encodings, and a real smtplib login against our
server mechanisms over loopback)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import smtplib
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emailrelay.sasl import (
    CRAM_HASHES,
    MASKED_HASHES,
    ClientMechanism,
    SaslError,
    ServerMechanism,
    cram_challenge,
    cram_response,
    from_dotted,
    hmac_from_masked,
    is_dotted,
    mask_key,
    masked_length,
    to_dotted,
)
from emailrelay.secrets import ClientAccount, Secret, Secrets

SPEC_VECTORS = [
    (b"password123", "9N2IRYVXqu7SkOW1Xat+wpR9NbA2R6fb61XlmqW+46E="),
    (b"e=mc2", "v1HOpuLIbbvgoJjhueeoqwfvtIp2C+gMA285ke+xxow="),
    (b"my password", "x6UJKQF9f7HfhS1M+PW4s8rXIoT+L+WoqLz+rBwSKbw="),
    (b"password", "gNYiNPCsyQUbUnJD1B4nQJGG2FXhHrpSenpSyoKzE+E="),
]
SPEC_DOTTED = "874698368.97103088.1131565595.1076305620.1440253585.1387929313.3394402938.3776164738"

RFC2195_CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"
RFC2195_RESPONSE = b"tim b913a602c7eda7a495b4e6e7334d3890"


def account(**kinds: bytes | tuple[str, bytes]) -> ClientAccount:
    """A client account: kind=secret (id ``user``) or kind=(id, secret)."""
    secrets = {}
    for kind, value in kinds.items():
        user, secret = value if isinstance(value, tuple) else ("user", value)
        secrets[kind] = Secret(kind, user, secret)
    return ClientAccount("", secrets)


# --------------------------------------------------------------------------
# masked keys


@pytest.mark.parametrize(("password", "expected"), SPEC_VECTORS)
def test_spec_md5_vectors(password: bytes, expected: str) -> None:
    assert base64.b64encode(mask_key(password, "md5")).decode() == expected
    assert base64.b64encode(mask_key(password)).decode() == expected


def test_spec_dotted_form() -> None:
    masked = mask_key(b"password", "md5")
    assert to_dotted(masked) == SPEC_DOTTED
    assert is_dotted("1.2.3.4.5.6.7.8")  # the shortest: 15 characters
    assert is_dotted(SPEC_DOTTED)
    assert from_dotted(SPEC_DOTTED) == masked


@pytest.mark.parametrize(
    "text",
    ["1.2.3.4.5.6.7", "1.2.3.4.5.6.7.4294967296", "a.2.3.4.5.6.7.8000000", "1.2.3.4.5.6.7.8.9"],
)
def test_not_dotted(text: str) -> None:
    assert not is_dotted(text)
    with pytest.raises(SaslError):
        from_dotted(text)


def test_masked_lengths() -> None:
    assert [masked_length(h) for h in MASKED_HASHES] == [32, 40, 64]
    for h in MASKED_HASHES:
        assert len(mask_key(b"x", h)) == masked_length(h)


def test_mask_key_long_password_is_hashed_first() -> None:
    long = b"x" * 65
    assert mask_key(long, "sha256") == mask_key(hashlib.sha256(long).digest(), "sha256")
    assert mask_key(b"y" * 64, "md5") != mask_key(hashlib.md5(b"y" * 64).digest(), "md5")


def test_masked_errors() -> None:
    with pytest.raises(SaslError, match="no masked keys"):
        mask_key(b"pw", "sha512")
    with pytest.raises(SaslError, match="32 bytes, expected 40"):
        hmac_from_masked(mask_key(b"pw", "md5"), "sha1", b"msg")


@settings(max_examples=60, deadline=None)
@given(
    password=st.binary(max_size=150),
    message=st.binary(max_size=200),
    hash_name=st.sampled_from(MASKED_HASHES),
)
def test_hmac_from_masked_equals_hmac(password: bytes, message: bytes, hash_name: str) -> None:
    masked = mask_key(password, hash_name)
    assert hmac_from_masked(masked, hash_name, message) == hmac.new(password, message, hash_name).digest()


@pytest.mark.parametrize("hash_name", MASKED_HASHES)
@pytest.mark.parametrize("size", [0, 55, 56, 63, 64, 65, 119, 120, 128, 1000])
def test_hmac_from_masked_padding_boundaries(hash_name: str, size: int) -> None:
    message = bytes(range(256)) * 4
    masked = mask_key(b"key", hash_name)
    assert (
        hmac_from_masked(masked, hash_name, message[:size])
        == hmac.new(b"key", message[:size], hash_name).digest()
    )


# --------------------------------------------------------------------------
# CRAM and APOP arithmetic


def test_rfc2195_example() -> None:
    tim = account(plain=("tim", b"tanstaaftanstaaf"))
    mech = ClientMechanism("CRAM-MD5", tim)
    assert mech.initial_response() is None
    assert mech.respond(RFC2195_CHALLENGE) == RFC2195_RESPONSE
    assert mech.id == "tim"


def test_rfc2195_example_with_masked_secret() -> None:
    tim = account(md5=("tim", mask_key(b"tanstaaftanstaaf")))
    assert ClientMechanism("cram-md5", tim).respond(RFC2195_CHALLENGE) == RFC2195_RESPONSE
    assert (
        cram_response("tim", "md5", "md5", mask_key(b"tanstaaftanstaaf"), RFC2195_CHALLENGE)
        == RFC2195_RESPONSE
    )


def test_rfc2195_example_on_the_server() -> None:
    secrets = Secrets.parse("server plain tim tanstaaftanstaaf\n")
    mech = ServerMechanism("CRAM-MD5", secrets, "postoffice.reston.mci.net", challenge=RFC2195_CHALLENGE)
    assert mech.challenge() == RFC2195_CHALLENGE
    assert mech.respond(RFC2195_RESPONSE) == ("ok", "tim")


def test_rfc1939_apop_example() -> None:
    secrets = Secrets.parse("server plain mrose tanstaaf\n")
    challenge = b"<1896.697170952@dbc.mtview.ca.us>"
    mech = ServerMechanism("APOP", secrets, "dbc.mtview.ca.us", challenge=challenge)
    assert mech.respond(b"mrose c4c9334bac560ecc979e58001b3e22fb") == ("ok", "mrose")


def test_apop_needs_a_plain_secret() -> None:
    secrets = Secrets.parse(f"server md5 mrose {base64.b64encode(mask_key(b'tanstaaf')).decode()}\n")
    challenge = b"<1896.697170952@dbc.mtview.ca.us>"
    mech = ServerMechanism("APOP", secrets, "x", challenge=challenge)
    assert mech.respond(b"mrose c4c9334bac560ecc979e58001b3e22fb") == ("fail", "no plain secret for [mrose]")


def test_cram_challenge_format() -> None:
    before = int(time.time())
    text = cram_challenge("relay.example.com").decode()
    m = re.fullmatch(r"<(\d+)\.(\d+)@relay\.example\.com>", text)
    assert m
    assert int(m.group(1)) < 2**32
    assert before <= int(m.group(2)) <= int(time.time())
    assert cram_challenge("d", now=12.9, rand=7) == b"<7.12@d>"
    mech = ServerMechanism("CRAM-SHA256", Secrets.parse(""), "relay.example.com")
    assert re.fullmatch(rb"<\d+\.\d+@relay\.example\.com>", mech.challenge())
    assert mech.challenge() == mech.challenge()


# --------------------------------------------------------------------------
# client mechanisms


def test_client_plain() -> None:
    mech = ClientMechanism("PLAIN", account(plain=("me@example.com", b"secret")))
    assert mech.initial_response() == b"\0me@example.com\0secret"
    with pytest.raises(SaslError):
        mech.respond(b"")


def test_client_login() -> None:
    mech = ClientMechanism("LOGIN", account(plain=("me", b"pw")))
    assert mech.initial_response() == b"me"
    assert mech.respond(b"Password:") == b"pw"
    with pytest.raises(SaslError):
        mech.respond(b"Password:")


def test_client_login_without_initial_response() -> None:
    mech = ClientMechanism("LOGIN", account(plain=("me", b"pw")))
    assert mech.respond(b"Username:") == b"me"
    assert mech.respond(b"Password:") == b"pw"
    odd = ClientMechanism("LOGIN", account(plain=("me", b"pw")))
    assert odd.respond(b"User Name\0") == b"me"
    assert odd.respond(b"Passcode") == b"pw"
    with pytest.raises(SaslError):
        odd.respond(b"more?")


def test_client_xoauth2() -> None:
    token = b"user=me@example.com\x01auth=Bearer ya29.token\x01\x01"
    mech = ClientMechanism("XOAUTH2", account(oauth=("me@example.com", token)))
    assert mech.initial_response() == token
    assert mech.respond(b'{"status":"401"}') == b""


def test_client_initial_response_limit() -> None:
    # 450 base64 characters = 336 bytes: sent; one byte more: not sent, then the answer to the 334
    fits = ClientMechanism("PLAIN", account(plain=("u", b"p" * (336 - 3))))
    assert fits.initial_response() == b"\0u\0" + b"p" * 333
    big = ClientMechanism("PLAIN", account(plain=("u", b"p" * (337 - 3))))
    assert big.initial_response() is None
    assert big.respond(b"") == b"\0u\0" + b"p" * 334
    token = b"t" * 400
    oauth = ClientMechanism("XOAUTH2", account(oauth=token))
    assert oauth.initial_response() is None
    assert oauth.respond(b"") == token


@pytest.mark.parametrize("hash_name", CRAM_HASHES)
def test_client_cram_with_plain_secret(hash_name: str) -> None:
    mech = ClientMechanism(f"CRAM-{hash_name.upper()}", account(plain=("id with space", b"pw")))
    assert mech.initial_response() is None
    expected = hmac.new(b"pw", b"<1.2@d>", hash_name).hexdigest()
    assert mech.respond(b"<1.2@d>") == b"id with space " + expected.encode()
    assert mech.secret_kind == "plain"
    with pytest.raises(SaslError):
        mech.respond(b"<1.2@d>")


@pytest.mark.parametrize("hash_name", MASKED_HASHES)
def test_client_cram_prefers_masked_secret_and_its_id(hash_name: str) -> None:
    acct = account(plain=("plainid", b"other"), **{hash_name: ("maskedid", mask_key(b"pw", hash_name))})
    mech = ClientMechanism(f"CRAM-{hash_name.upper()}", acct)
    assert mech.secret_kind == hash_name
    assert mech.id == "maskedid"
    assert mech.respond(b"c") == b"maskedid " + hmac.new(b"pw", b"c", hash_name).hexdigest().encode()


def test_client_mechanism_needs_a_secret() -> None:
    masked_only = account(md5=mask_key(b"pw"))
    for name in ("PLAIN", "LOGIN", "XOAUTH2", "CRAM-SHA1", "CRAM-SHA512"):
        with pytest.raises(SaslError):
            ClientMechanism(name, masked_only)
    with pytest.raises(SaslError, match="unsupported mechanism"):
        ClientMechanism("GSSAPI", account(plain=b"pw"))


# --------------------------------------------------------------------------
# server mechanisms

SERVER = Secrets.parse(
    "server plain alice alice+20pw\n"
    f"server md5 bob {base64.b64encode(mask_key(b'bob pw', 'md5')).decode()}\n"
    f"server sha1 carol {base64.b64encode(mask_key(b'carol pw', 'sha1')).decode()}\n"
    f"server sha256 carol {base64.b64encode(mask_key(b'carol pw', 'sha256')).decode()}\n"
    "server plain carol not-the-cram-one\n"
)


def run(client: ClientMechanism, server: ServerMechanism) -> tuple[str, bytes | str]:
    """Drive both halves to the end, as an SMTP session would (without the base64)."""
    initial = client.initial_response()
    result = server.respond(initial) if initial is not None else ("continue", server.challenge())
    while result[0] == "continue":
        assert isinstance(result[1], bytes)
        result = server.respond(client.respond(result[1]))
    return result


@pytest.mark.parametrize(
    ("mech", "user", "secret", "ok"),
    [
        ("PLAIN", "alice", b"alice pw", True),
        ("LOGIN", "alice", b"alice pw", True),
        ("PLAIN", "alice", b"alice pwx", False),
        ("LOGIN", "nobody", b"alice pw", False),
        ("CRAM-MD5", "alice", b"alice pw", True),
        ("CRAM-SHA1", "alice", b"alice pw", True),
        ("CRAM-SHA256", "alice", b"alice pw", True),
        ("CRAM-SHA512", "alice", b"alice pw", True),
        ("CRAM-MD5", "bob", b"bob pw", True),
        ("CRAM-SHA1", "bob", b"bob pw", False),  # bob has only an md5 key
        ("CRAM-SHA1", "carol", b"carol pw", True),  # the masked key wins over the plain one
        ("CRAM-SHA256", "carol", b"carol pw", True),
        ("CRAM-MD5", "carol", b"not-the-cram-one", True),
        ("PLAIN", "carol", b"carol pw", False),
    ],
)
def test_client_against_server(mech: str, user: str, secret: bytes, ok: bool) -> None:
    result = run(ClientMechanism(mech, account(plain=(user, secret))), ServerMechanism(mech, SERVER, "d"))
    assert result[0] == ("ok" if ok else "fail")
    if ok:
        assert result[1] == user


@pytest.mark.parametrize("hash_name", MASKED_HASHES)
def test_masked_client_against_plain_server(hash_name: str) -> None:
    client = ClientMechanism(
        f"CRAM-{hash_name.upper()}", account(**{hash_name: ("alice", mask_key(b"alice pw", hash_name))})
    )
    assert run(client, ServerMechanism(client.name, SERVER, "d")) == ("ok", "alice")


@settings(max_examples=25, deadline=None)
@given(
    user=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20),
    password=st.binary(min_size=1, max_size=80).filter(lambda p: b"\0" not in p),  # RFC 4616: no NUL
    mech=st.sampled_from(["PLAIN", "LOGIN", *(f"CRAM-{h.upper()}" for h in CRAM_HASHES)]),
)
def test_any_account_round_trips(user: str, password: bytes, mech: str) -> None:
    secrets = Secrets.parse(
        f"server plain:b {base64.b64encode(user.encode()).decode()} {base64.b64encode(password).decode()}\n"
    )
    assert run(
        ClientMechanism(mech, account(plain=(user, password))), ServerMechanism(mech, secrets, "d")
    ) == ("ok", user)


def test_server_plain_details() -> None:
    mech = ServerMechanism("PLAIN", SERVER, "d")
    assert mech.challenge() == b""
    assert mech.respond(b"authz\0alice\0alice pw") == ("ok", "alice")  # authzid ignored
    assert mech.respond(b"\0alice\0alice pw") == ("fail", "exchange already finished")
    assert ServerMechanism("PLAIN", SERVER, "d").respond(b"alice\0alice pw") == (
        "fail",
        "invalid PLAIN response",
    )


def test_server_login_details() -> None:
    mech = ServerMechanism("LOGIN", SERVER, "d")
    assert mech.challenge() == b"Username:"
    assert mech.respond(b"alice") == ("continue", b"Password:")
    assert mech.id == "alice"
    assert mech.respond(b"wrong") == ("fail", "wrong password for [alice]")


def test_server_cram_details() -> None:
    early = ServerMechanism("CRAM-MD5", SERVER, "d")
    assert early.respond(b"alice 00") == ("fail", "unexpected initial response for CRAM-MD5")
    for bad in (b"nospace", b" 00"):
        mech = ServerMechanism("CRAM-MD5", SERVER, "d")
        mech.challenge()
        assert mech.respond(bad) == ("fail", "invalid CRAM-MD5 response")
    mech = ServerMechanism("CRAM-MD5", SERVER, "d", challenge=b"<1.2@d>")
    digest = hmac.new(b"alice pw", b"<1.2@d>", "md5").hexdigest().upper()
    assert mech.respond(b"alice " + digest.encode()) == ("ok", "alice")  # hex case does not matter
    unknown = ServerMechanism("CRAM-SHA1", SERVER, "d", challenge=b"c")
    assert unknown.respond(b"zed 00") == ("fail", "no sha1 or plain secret for [zed]")
    assert unknown.id == "zed"


def test_server_unknown_mechanism() -> None:
    for name in ("XOAUTH2", "GSSAPI", "CRAM-SHA3"):
        with pytest.raises(SaslError):
            ServerMechanism(name, SERVER, "d")


# --------------------------------------------------------------------------
# smtplib interop


@pytest.mark.parametrize(
    ("mech", "method"), [("PLAIN", "auth_plain"), ("LOGIN", "auth_login"), ("CRAM-MD5", "auth_cram_md5")]
)
def test_same_answers_as_smtplib(mech: str, method: str) -> None:
    smtp = smtplib.SMTP()
    smtp.user, smtp.password = "me@example.com", "pass word"
    ours = ClientMechanism(mech, account(plain=("me@example.com", b"pass word")))
    authobject = getattr(smtp, method)
    theirs = authobject()
    assert ours.initial_response() == (theirs.encode() if theirs is not None else None)
    if mech == "LOGIN":
        smtp._auth_challenge_count = 2  # what smtplib.SMTP.auth sets before the second answer
        assert ours.respond(b"Password:") == authobject(b"Password:").encode()
    elif mech == "CRAM-MD5":
        assert ours.respond(RFC2195_CHALLENGE) == authobject(RFC2195_CHALLENGE).encode()
    smtp.close()


class _AuthServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, secrets: Secrets, mechanisms: list[str]) -> None:
        super().__init__(("127.0.0.1", 0), _AuthHandler)
        self.secrets = secrets
        self.mechanisms = mechanisms
        self.results: list[tuple[str, bytes | str]] = []


class _AuthHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib.login(): EHLO, AUTH with our ServerMechanism, QUIT."""

    server: _AuthServer

    def send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self.send("220 test")
        for raw in self.rfile:
            words = raw.decode().strip().split()
            verb = words[0].upper() if words else ""
            if verb == "EHLO":
                self.send("250-test")
                self.send("250 AUTH " + " ".join(self.server.mechanisms))
            elif verb == "AUTH":
                mech = ServerMechanism(words[1], self.server.secrets, "test.example")
                if len(words) > 2:
                    result = mech.respond(base64.b64decode(words[2]))
                else:
                    result = ("continue", mech.challenge())
                while result[0] == "continue":
                    assert isinstance(result[1], bytes)
                    self.send("334 " + base64.b64encode(result[1]).decode())
                    result = mech.respond(base64.b64decode(self.rfile.readline().strip()))
                self.server.results.append(result)
                self.send("235 ok" if result[0] == "ok" else "535 authentication failed")
            elif verb == "QUIT":
                self.send("221 bye")
                return
            else:
                self.send("500 no")


@pytest.fixture
def auth_server() -> Iterator[_AuthServer]:
    secrets = Secrets.parse("server plain me@example.com pass+20word\n")
    server = _AuthServer(secrets, [])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("mech", ["CRAM-MD5", "PLAIN", "LOGIN"])
@pytest.mark.parametrize("initial_response_ok", [True, False])
def test_smtplib_logs_in_to_our_server_mechanisms(
    auth_server: _AuthServer, mech: str, initial_response_ok: bool
) -> None:
    auth_server.mechanisms = [mech]
    with smtplib.SMTP(*auth_server.server_address, timeout=10) as smtp:
        smtp.login("me@example.com", "pass word", initial_response_ok=initial_response_ok)
    assert auth_server.results == [("ok", "me@example.com")]


@pytest.mark.parametrize("mech", ["CRAM-MD5", "PLAIN", "LOGIN"])
def test_smtplib_wrong_password_is_refused(auth_server: _AuthServer, mech: str) -> None:
    auth_server.mechanisms = [mech]
    with smtplib.SMTP(*auth_server.server_address, timeout=10) as smtp:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login("me@example.com", "pass-word")
    assert [r[0] for r in auth_server.results] == ["fail"]
