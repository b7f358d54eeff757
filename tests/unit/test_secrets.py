"""Secrets files: golden files (valid with their warnings, broken with their
one-line errors), lookups, re-reading, inline accounts, trust candidates and
the mechanism lists of SPEC 5.3/5.4 and OPTIONS 3.7."""

from __future__ import annotations

import base64
import os
import time
from ipaddress import ip_network
from pathlib import Path

import pytest

from emailrelay.sasl import CRAM_HASHES, from_dotted, mask_key
from emailrelay.secrets import (
    ClientAccount,
    Secret,
    Secrets,
    SecretsError,
    UnknownSelectorError,
    client_mechanisms,
    parse_auth_config,
    trust_candidates,
)

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "secrets"
VALID = sorted(p.name for p in GOLDEN.glob("*.auth") if not p.name.startswith("bad-"))
BROKEN = sorted(p.name for p in GOLDEN.glob("bad-*.auth"))

ALL_CRAM = [f"CRAM-{h.upper()}" for h in CRAM_HASHES]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def relative(message: str) -> str:
    return message.replace(str(GOLDEN) + os.sep, "")


def load(name: str) -> Secrets:
    return Secrets.load(GOLDEN / name)


# --------------------------------------------------------------------------
# golden files


def test_golden_files_exist() -> None:
    assert {"server.auth", "client.auth", "overview.auth", "crlf.auth", "empty.auth"} <= set(VALID)
    assert len(BROKEN) >= 15


@pytest.mark.parametrize("name", VALID)
def test_golden_valid_warnings(name: str) -> None:
    expected = (GOLDEN / name).with_suffix(".warnings").read_text().splitlines()
    secrets = load(name)
    assert [relative(w) for w in secrets.warnings] == expected
    assert secrets.error is None


@pytest.mark.parametrize("name", BROKEN)
def test_golden_broken(name: str) -> None:
    expected = (GOLDEN / name).with_suffix(".error").read_text()
    with pytest.raises(SecretsError) as info:
        load(name)
    message = str(info.value)
    assert "\n" not in message
    assert relative(message) + "\n" == expected
    assert message.startswith(str(GOLDEN / name) + ":")


def test_golden_server() -> None:
    s = load("server.auth")

    def value(kind: str, user: str) -> bytes | None:
        secret = s.server_secret(kind, user)
        return None if secret is None else secret.value

    assert value("plain", "alice") == b"alice secret"
    assert value("PLAIN", "bob@home") == b"b0b=pw"
    assert value("plain", "dörte") == b"p\0w:d"
    assert value("md5", "carol") == mask_key(b"carol pw")
    assert value("md5", "dave") == mask_key(b"password")
    assert value("sha1", "erin") == mask_key(b"sha1 secret", "sha1")
    assert value("sha256", "erin") == mask_key(b"sha256 secret", "sha256")
    assert value("md5", "frank") == mask_key(b"e=mc2")  # legacy cram-md5 with a masked key
    assert value("plain", "grace") == b"apop+pw"  # legacy apop with a plain secret
    assert value("plain", "heidi") == b"heidi-pw"  # legacy login
    assert value("md5", "alice") == mask_key(b"password")
    assert value("plain", "ivan") == b"ivan-pw"
    assert value("plain", "carol") is None
    assert value("md5", "bob@home") is None
    assert s.server_secret("plain", "alice") == Secret("plain", "alice", b"alice secret", 4)
    assert s.has_server_secrets
    assert s.client_account() is None  # no client lines: nothing to authenticate with


def test_golden_server_trust() -> None:
    s = load("server.auth")
    assert s.trusted("127.0.0.1") == "localhost"
    assert s.trusted("192.168.1.77") == "lan"
    assert s.trusted("192.168.2.77") is None
    assert s.trusted("10.200.3.4") == "ten"
    assert s.trusted("172.16.7.255") == "office"  # /21 with the /21 mask
    assert s.trusted("172.16.8.1") is None
    assert s.trusted("::1") == "ipv6-localhost"
    assert s.trusted("fdab::1") == "ula"
    assert s.trusted("fe80::1") is None
    assert s.trusted("::ffff:127.0.0.1") == "localhost"
    assert s.trusted("not an address") is None


def test_golden_client() -> None:
    s = load("client.auth")
    default = s.client_account()
    assert default is not None
    assert default.id == "me@example.com"
    assert default.plain == b"my password"
    assert default.masked == {"md5": mask_key(b"password")}
    assert default.oauth is None
    other = s.client_account("other")
    assert other is not None and (other.id, other.plain) == ("other", b"other pw")
    hashed = s.client_account("hashonly")
    assert hashed is not None
    assert (hashed.id, hashed.plain, hashed.masked) == (
        "hashed",
        None,
        {"sha256": mask_key(b"sha256 secret", "sha256")},
    )
    oauth = s.client_account("oauth")
    assert oauth is not None
    assert oauth.oauth == b"user=x@example.com\x01auth=Bearer ya29.token\x01\x01"
    assert oauth.id == "me@example.com"
    assert s.client_account("noauth") is None
    turned = s.client_account("turned")
    assert turned is not None and (turned.id, turned.plain) == ("turned", b"round")
    six = s.client_account("sel")
    assert six is not None and (six.id, six.plain) == ("six", b"fields")
    with pytest.raises(UnknownSelectorError, match=r"^no client authentication account: selector \[nope\]$"):
        s.client_account("nope")
    assert not s.has_server_secrets
    assert s.trusted("127.0.0.1") is None


def test_golden_overview_forms() -> None:
    s = load("overview.auth")
    assert s.server_secret("plain", "user1") == Secret("plain", "user1", b"password1", 1)
    assert s.server_secret("plain", "user2") is not None
    assert s.trusted("192.168.1.9") == "localnet"
    gmail = s.client_account()
    assert gmail is not None and (gmail.id, gmail.plain) == ("myname@gmail.com", b"mypassword")


def test_golden_crlf() -> None:
    s = load("crlf.auth")
    account = s.client_account()
    assert account is not None and account.plain == b"pw"
    secret = s.server_secret("plain", "crlf")
    assert secret is not None and secret.value == b"pw" and secret.line == 4


# --------------------------------------------------------------------------
# more parsing rules


def test_cannot_read(tmp_path: Path) -> None:
    missing = tmp_path / "missing.auth"
    with pytest.raises(SecretsError, match=f"^cannot read secrets file: {missing}$"):
        Secrets.load(missing)
    with pytest.raises(SecretsError, match=f"^cannot read secrets file: {tmp_path}$"):
        Secrets.load(tmp_path)


def test_unreadable_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "secrets.auth"  # ENOTDIR, also for root
    with pytest.raises(SecretsError, match=f"^cannot read secrets file: {path}$"):
        Secrets.load(str(path))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("client plain a", "too few fields"),
        ("Client", "too few fields"),
        ("pop plain a b", "invalid value in first field"),
        ("#x\nserver plain a b\nserver plain a c", "duplicate server plain secret for [a] (first on line 2)"),
        (
            "server plain a b\nserver plain:b YQ== Yw==",
            "duplicate server plain secret for [a] (first on line 1)",
        ),
        (
            "server md5 a " + b64(mask_key(b"x")) + "\nserver apop a " + b64(mask_key(b"y")),
            "duplicate server md5",
        ),
        ("client plain a b s\nclient plain c d s", "duplicate client plain secret for selector [s]"),
        ("client plain:b = = s\nclient plain:b = = s", "duplicate client plain secret for selector [s]"),
        (
            "client plain a b s\nclient plain:b = = s",
            "selector [s] has both secrets and a do-not-authenticate line",
        ),
        ("server plain:b = = s", "invalid base64 encoding in third field"),
        ("client plain:b YQ== %%%%", "invalid base64 encoding in fourth field"),
        ("client oauth a not-base64!", "invalid base64 encoding in fourth field"),
        ("server md5 a 1.2.3.4.5.6.7", "invalid md5 secret in fourth field"),
        ("server sha256 a " + b64(mask_key(b"x", "sha1")), "invalid sha256 secret in fourth field"),
        ("server sha512 a b", "invalid value in second field: [sha512]"),
    ],
)
def test_parse_errors(text: str, error: str) -> None:
    with pytest.raises(SecretsError) as info:
        Secrets.parse(text, "f")
    assert str(info.value).startswith("f:")
    assert error in str(info.value)


def test_parse_accepts() -> None:
    s = Secrets.parse(
        "  server plain a b  \n"
        "\tclient plain a b\t\r\n"
        "   # indented comment\n"
        "client md5 a " + b64(mask_key(b"b")) + "\n"  # plain and md5 for one selector: not duplicates
        "server plain:b Yg Yw\n"  # base64 without padding
        "server none 10.0.0.0/8 a\nserver none 10.0.0.0/16 a\n"
    )
    assert s.warnings == []
    assert s.server_secret("plain", "a") is not None
    assert s.server_secret("plain", "b") == Secret("plain", "b", b"c", 5)
    with pytest.raises(SecretsError, match="duplicate server plain"):
        Secrets.parse("server plain a b\nserver plain:b YQ Yg\n")


def test_warnings_name_file_and_line() -> None:
    s = Secrets.parse(
        "client plain a b sel # comment words\n"
        "client plain a b # comment words\n"
        "client plain c d sel2 x y\n"
        "CRAM-MD5 server a b\n"
        "apop server c " + b64(mask_key(b"pw")) + "\n"
        "server none 10.1.2.3/8 bad-range\n"
        "server none 10.*.0.* bad-wildcard\n"
        "server none fe80:0::/64 not-canonical\n",
        "f",
    )
    assert s.warnings == [
        "f:3: more than 5 fields: field 6 onwards ignored (7 fields)",
        'f:4: old field order "CRAM-MD5 server": read as "server CRAM-MD5"',
        'f:4: legacy type "cram-md5" without a masked key: secret taken as a plain secret',
        'f:5: old field order "apop server": read as "server apop"',
        "f:6: trust address range [10.1.2.3/8] can never match a peer address",
        "f:7: trust address range [10.*.0.*] can never match a peer address",
        "f:8: trust address range [fe80:0::/64] can never match a peer address",
    ]
    assert s.server_secret("md5", "c") is not None


def test_dotted_md5_needs_eight_decimals() -> None:
    dotted = "874698368.97103088.1131565595.1076305620.1440253585.1387929313.3394402938.3776164738"
    s = Secrets.parse(f"server md5 a {dotted}\nserver cram-md5 b {dotted}\n")
    assert s.server_secret("md5", "a") == Secret("md5", "a", from_dotted(dotted), 1)
    assert s.server_secret("md5", "b") is not None


def test_xtext_ids_and_selectors_are_kept_apart() -> None:
    s = Secrets.parse("client plain a+2Bb p+3D selector+20x\n")
    assert s.client_account() is None
    account = s.client_account("selector+20x")  # selectors are not xtext
    assert account is not None and (account.id, account.plain) == ("a+b", b"p=")


# --------------------------------------------------------------------------
# inline accounts


def test_inline() -> None:
    s = Secrets.inline(f"plain:{b64(b'me@example.com')}:{b64(b'pass word')}")
    account = s.client_account()
    assert account is not None and (account.id, account.plain) == ("me@example.com", b"pass word")
    assert s.warnings == [] and s.path is None and not s.refresh(now=time.monotonic() + 5)
    with pytest.raises(UnknownSelectorError):
        s.client_account("x")
    assert s.server_mechanisms(secure=True) == ["PLAIN"]


@pytest.mark.parametrize(
    "spec",
    [
        "plain:!!!:cHc=",
        "plain:dXNlcg==:***",
        "plain:dXNlcg==",
        "plain::cHc=",
        "md5:dXNlcg==:cHc=",
        "plain:a:b:c",
    ],
)
def test_inline_invalid(spec: str) -> None:
    with pytest.raises(SecretsError, match="^invalid client account details$"):
        Secrets.inline(spec)


# --------------------------------------------------------------------------
# re-reading


def test_refresh(tmp_path: Path) -> None:
    now = [100.0]
    path = tmp_path / "s.auth"
    path.write_text("server plain alice one\n")
    s = Secrets.load(path, clock=lambda: now[0])
    path.write_text("server plain alice two\nclient plain x y\n")
    os.utime(path, ns=(0, 1_000_000_000))
    now[0] = 100.5
    assert not s.refresh()  # under a second since loading: not even a stat
    now[0] = 101.5
    assert s.refresh()
    assert s.generation == 1
    assert s.server_secret("plain", "alice") == Secret("plain", "alice", b"two", 1)
    now[0] = 102.0
    assert not s.refresh()  # checked under a second ago
    now[0] = 103.0
    assert not s.refresh()  # unchanged

    path.write_text("server plain alice\n")  # broken: keep the old contents
    os.utime(path, ns=(0, 2_000_000_000))
    now[0] = 104.5
    assert s.server_secret("plain", "alice") == Secret("plain", "alice", b"two", 1)  # lookups refresh
    assert s.error == f"{path}:1: too few fields"
    assert not s.refresh(now=106.0)  # the same broken file is not parsed again
    assert s.error == f"{path}:1: too few fields"

    path.unlink()
    assert not s.refresh(now=107.5)
    assert s.error == f"cannot read secrets file: {path}"

    path.write_text("server plain alice three\nserver plain alice+20x z\nserver oauth a b\n")
    assert not s.refresh(now=109.0)
    assert s.error == f'{path}:3: type "oauth" is for client lines only'
    path.write_text("server plain alice three\nlogin server bob b\n")
    os.utime(path, ns=(0, 3_000_000_000))
    now[0] = 110.5
    account = s.server_secret("plain", "bob")
    assert account is not None and account.value == b"b"
    assert s.error is None
    assert s.generation == 2
    assert [w.split(": ", 1)[1] for w in s.warnings] == [
        'old field order "login server": read as "server login"',
        'legacy type "login": secret taken as a plain secret',
    ]


def test_lookups_refresh(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "s.auth"
    path.write_text("client plain a b\nserver none 127.0.0.1 x\n")
    s = Secrets.load(path, clock=lambda: now[0])
    path.write_text("client plain c d\nserver plain e f\nserver none 127.0.0.1 y\n")
    os.utime(path, ns=(0, 1_000_000_000))
    now[0] = 2.0
    account = s.client_account()
    assert account is not None and account.id == "c"
    path.write_text("server none 127.0.0.1 z\n")
    os.utime(path, ns=(0, 2_000_000_000))
    now[0] = 4.0
    assert s.trusted("127.0.0.1") == "z"
    path.write_text("server plain g h\n")
    os.utime(path, ns=(0, 3_000_000_000))
    now[0] = 6.0
    assert s.server_mechanisms(False) == [*ALL_CRAM, "PLAIN", "LOGIN"]
    assert s.has_server_secrets


# --------------------------------------------------------------------------
# trust candidates (SPEC 5.2)


def test_trust_candidates_ipv4() -> None:
    got = trust_candidates("10.1.15.7")
    assert got[:3] == ["10.1.15.7", "10.1.15.7/32", "10.1.15.6/31"]
    assert got[9:12] == ["10.1.15.0/24", "10.1.15.*", "10.1.14.0/23"]
    assert "10.1.8.0/21" in got and "10.1.12.0/21" not in got  # the /21 quirk fixed
    assert got[got.index("10.1.0.0/16") + 1] == "10.1.*.*"
    assert got[got.index("10.0.0.0/8") + 1] == "10.*.*.*"
    assert got[-3:] == ["0.0.0.0/1", "0.0.0.0/0", "*.*.*.*"]
    assert len(got) == 1 + 33 + 4
    assert [c for c in got if "/" in c] == [
        str(ip_network(f"10.1.15.7/{n}", strict=False)) for n in range(32, -1, -1)
    ]


def test_trust_candidates_ipv6() -> None:
    got = trust_candidates("2001:DB8:0:0:1::7")
    assert got[:3] == ["2001:db8::1:0:0:7", "2001:db8::1:0:0:7/128", "2001:db8::1:0:0:6/127"]
    assert "2001:db8::/32" in got
    assert got[-1] == "::/0"
    assert len(got) == 1 + 129
    assert trust_candidates("fe80::1%eth0")[0] == "fe80::1"
    assert trust_candidates("::ffff:192.0.2.1")[:2] == ["192.0.2.1", "192.0.2.1/32"]
    assert trust_candidates("192.0.2") == []


def test_trusted_first_match_wins() -> None:
    s = Secrets.parse(
        "server none 192.168.0.0/16 wide\nserver none 192.168.1.* narrow\nserver none *.*.*.* any\n"
    )
    assert s.trusted("192.168.1.1") == "narrow"
    assert s.trusted("192.168.2.1") == "wide"
    assert s.trusted("8.8.8.8") == "any"
    assert s.trusted("::1") is None


# --------------------------------------------------------------------------
# mechanism configuration


def test_parse_auth_config() -> None:
    assert parse_auth_config("") == {}
    assert parse_auth_config("m:cram-sha256, cram-sha1;X:plain,login") == {
        "m": ["CRAM-SHA256", "CRAM-SHA1"],
        "x": ["PLAIN", "LOGIN"],
    }
    assert parse_auth_config("m:;a:plain") == {"m": [], "a": ["PLAIN"]}
    assert parse_auth_config("plain,login") == {"m": ["PLAIN", "LOGIN"]}
    assert parse_auth_config(" ; q:zz ; d:Login ") == {"d": ["LOGIN"]}


SERVER_PLAIN = Secrets.parse("server plain a b\n")
SERVER_MASKED = Secrets.parse(
    f"server md5 a {b64(mask_key(b'p'))}\nserver sha256 a {b64(mask_key(b'p', 'sha256'))}\nserver none 127.0.0.1 x\n"
)
SERVER_NONE = Secrets.parse("server none 127.0.0.1 x\nclient plain a b\n")


@pytest.mark.parametrize(
    ("secrets", "secure", "config", "pop", "expected"),
    [
        (SERVER_PLAIN, False, "", False, [*ALL_CRAM, "PLAIN", "LOGIN"]),
        (SERVER_PLAIN, True, "", True, [*ALL_CRAM, "PLAIN", "LOGIN", "APOP"]),
        (SERVER_MASKED, False, "", False, ["CRAM-SHA256", "CRAM-MD5"]),
        (SERVER_MASKED, True, "", True, ["CRAM-SHA256", "CRAM-MD5", "APOP"]),
        (SERVER_NONE, False, "", False, []),
        (SERVER_NONE, True, "", False, ["PLAIN"]),
        (SERVER_NONE, False, "", True, ["APOP"]),
        (SERVER_PLAIN, False, "m:login,plain,cram-md5,xoauth2", False, ["LOGIN", "PLAIN", "CRAM-MD5"]),
        (SERVER_PLAIN, True, "x:plain,login,cram-md5", False, ALL_CRAM[:-1]),
        (SERVER_PLAIN, False, "m:;a:plain", False, []),
        (SERVER_PLAIN, True, "m:;a:plain", False, ["PLAIN"]),
        (SERVER_PLAIN, False, "m:", False, []),
        (SERVER_PLAIN, True, "m:", False, []),
        (SERVER_PLAIN, True, "d:cram-md5", False, [*ALL_CRAM[:-1], "PLAIN", "LOGIN"]),
        (SERVER_PLAIN, False, "d:cram-md5;x:plain", False, [*ALL_CRAM, "LOGIN"]),
        (SERVER_PLAIN, False, "M:Plain", True, ["PLAIN"]),
        (SERVER_PLAIN, False, "plain", False, ["PLAIN"]),
    ],
)
def test_server_mechanisms(
    secrets: Secrets, secure: bool, config: str, pop: bool, expected: list[str]
) -> None:
    assert secrets.server_mechanisms(secure, config, pop=pop) == expected


def account(**kinds: bytes) -> ClientAccount:
    return ClientAccount("", {kind: Secret(kind, "me", value) for kind, value in kinds.items()})


EVERYTHING = ["CRAM-SHA512", "CRAM-SHA256", "CRAM-SHA1", "CRAM-MD5", "XOAUTH2", "PLAIN", "LOGIN", "GSSAPI"]


@pytest.mark.parametrize(
    ("acct", "config", "server", "expected"),
    [
        (account(plain=b"p"), "", EVERYTHING, [*ALL_CRAM, "PLAIN", "LOGIN"]),
        (account(plain=b"p", oauth=b"t"), "", EVERYTHING, [*ALL_CRAM, "XOAUTH2", "PLAIN", "LOGIN"]),
        (account(oauth=b"t"), "", EVERYTHING, ["XOAUTH2"]),
        (account(md5=mask_key(b"p")), "", EVERYTHING, ["CRAM-MD5"]),
        (account(sha1=mask_key(b"p", "sha1"), md5=mask_key(b"p")), "", EVERYTHING, ["CRAM-SHA1", "CRAM-MD5"]),
        (account(plain=b"p"), "", ["login", "Plain"], ["PLAIN", "LOGIN"]),
        (account(plain=b"p"), "", ["XOAUTH2"], []),
        (account(plain=b"p"), "m:login,plain", EVERYTHING, ["PLAIN", "LOGIN"]),  # our order kept
        (account(plain=b"p"), "login,cram-md5", EVERYTHING, ["CRAM-MD5", "LOGIN"]),
        (account(plain=b"p"), "x:plain,login", EVERYTHING, ALL_CRAM),
        (account(plain=b"p"), "m:plain,cram-md5;x:cram-md5", EVERYTHING, ["PLAIN"]),
        (account(plain=b"p"), "m:", EVERYTHING, []),
        (account(plain=b"p"), "a:plain", ["PLAIN", "LOGIN"], ["PLAIN", "LOGIN"]),  # a: only with secure
    ],
)
def test_client_mechanisms(acct: ClientAccount, config: str, server: list[str], expected: list[str]) -> None:
    assert client_mechanisms(acct, config, server) == expected


def test_client_mechanisms_when_encrypted() -> None:
    acct = account(plain=b"p")
    assert client_mechanisms(acct, "m:cram-md5;a:plain", EVERYTHING, secure=True) == ["PLAIN"]
    assert client_mechanisms(acct, "m:cram-md5;a:plain", EVERYTHING, secure=False) == ["CRAM-MD5"]
    assert client_mechanisms(acct, "x:plain", EVERYTHING, secure=True) == [*ALL_CRAM, "LOGIN"]


def test_client_account_ids_per_kind() -> None:
    s = Secrets.parse("client md5 hashid " + b64(mask_key(b"p")) + "\nclient plain plainid p\n")
    acct = s.client_account()
    assert acct is not None
    assert acct.id == "plainid"
    assert acct.id_for("md5") == "hashid"
    assert acct.id_for("oauth") == "plainid"
