"""SASL mechanisms and masked HMAC keys, pure: bytes in, bytes out, no sockets.

One job: the arithmetic and the little state machines of SMTP/POP
authentication (SPEC.md 5.3, 5.4 and 5.6), so that the SMTP client, the SMTP
server and the POP server only move lines.

Masked keys (SPEC 5.6). ``mask_key`` returns the hash's chaining state after
one compressed block of ``K xor ipad`` followed by the state after ``K xor
opad`` (each state word serialised little-endian, as E-MailRelay writes it);
``hmac_from_masked`` resumes both states and gives exactly
``hmac.new(password, message, hash).digest()``. hashlib does not expose
chaining states, so MD5, SHA-1 and SHA-256 compression functions are written
out here (RFC 1321, FIPS 180-4). They are slow but only ever see a challenge.

Client side: :class:`ClientMechanism` (PLAIN, LOGIN, XOAUTH2, CRAM-<hash>).
``initial_response()`` gives the bytes to send with ``AUTH <mech>`` (``None``:
send none, wait for a 334), ``respond(challenge)`` answers each 334. Both
work on *decoded* bytes: the caller base64-encodes what it sends and decodes
the 334 text it receives. An unanswerable challenge raises :class:`SaslError`;
the caller then sends ``*`` (SPEC 5.4).

Server side: :class:`ServerMechanism` (PLAIN, LOGIN, CRAM-<hash>, APOP).
States: waiting for the first response (LOGIN: for the user name, then for
the password), then finished. ``respond(data)`` returns ``("continue",
challenge)``, ``("ok", id)`` or ``("fail", reason)``; once finished every
further call fails. Again the data is decoded bytes. Secrets are compared with
``hmac.compare_digest``; PLAIN with a NUL in the password fails (RFC 4616).
The reason text is for the log only (it may name the account); the client
only ever sees the reply code.

Not responsible for: reading secrets files and choosing mechanisms
(``secrets.py``), base64 on the wire, reply codes, logging, delaying after
failures (the SMTP and POP sessions).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from emailrelay.secrets import ClientAccount, Secrets

__all__ = [
    "CRAM_HASHES",
    "MASKED_HASHES",
    "MAX_INITIAL_RESPONSE",
    "ClientMechanism",
    "SaslError",
    "ServerMechanism",
    "cram_challenge",
    "cram_response",
    "from_dotted",
    "hmac_from_masked",
    "is_dotted",
    "mask_key",
    "masked_length",
    "to_dotted",
]


class SaslError(Exception):
    """A mechanism cannot go on: bad masked key, unknown mechanism, unanswerable challenge."""


# --------------------------------------------------------------------------
# compression functions

_M32 = 0xFFFFFFFF


def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & _M32


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & _M32


# MD5 (RFC 1321): per-round shift amounts and the sine-derived constants.
_MD5_S = [7, 12, 17, 22] * 4 + [5, 9, 14, 20] * 4 + [4, 11, 16, 23] * 4 + [6, 10, 15, 21] * 4
_MD5_K = [int(abs(math.sin(i + 1)) * 2**32) & _M32 for i in range(64)]
_MD5_IV = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)


def _md5_compress(state: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    x = struct.unpack("<16I", block)
    a, b, c, d = state
    for i in range(64):
        if i < 16:
            f = (b & c) | (~b & d)
            g = i
        elif i < 32:
            f = (d & b) | (~d & c)
            g = (5 * i + 1) % 16
        elif i < 48:
            f = b ^ c ^ d
            g = (3 * i + 5) % 16
        else:
            f = c ^ (b | (~d & _M32))
            g = (7 * i) % 16
        f = (f + a + _MD5_K[i] + x[g]) & _M32
        a, d, c = d, c, b
        b = (b + _rotl(f, _MD5_S[i])) & _M32
    return tuple((s + v) & _M32 for s, v in zip(state, (a, b, c, d), strict=True))


_SHA1_IV = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0)


def _sha1_compress(state: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    w = list(struct.unpack(">16I", block))
    for t in range(16, 80):
        w.append(_rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1))
    a, b, c, d, e = state
    for t in range(80):
        if t < 20:
            f, k = (b & c) | (~b & d), 0x5A827999
        elif t < 40:
            f, k = b ^ c ^ d, 0x6ED9EBA1
        elif t < 60:
            f, k = (b & c) | (b & d) | (c & d), 0x8F1BBCDC
        else:
            f, k = b ^ c ^ d, 0xCA62C1D6
        a, b, c, d, e = (_rotl(a, 5) + (f & _M32) + e + k + w[t]) & _M32, a, _rotl(b, 30), c, d
    return tuple((s + v) & _M32 for s, v in zip(state, (a, b, c, d, e), strict=True))


def _primes(n: int) -> list[int]:
    found: list[int] = []
    p = 2
    while len(found) < n:
        if all(p % q for q in found if q * q <= p):
            found.append(p)
        p += 1
    return found


def _frac_root(p: int, k: int) -> int:
    """First 32 bits of the fractional part of the k-th root of p (float guess, exact correction)."""
    target = p << (32 * k)
    r = int(p ** (1 / k) * 2**32)
    while r**k > target:  # want the largest r with r**k <= p * 2**(32k), i.e. floor(root * 2**32)
        r -= 1
    while (r + 1) ** k <= target:
        r += 1
    return r & _M32


_SHA256_K = [_frac_root(p, 3) for p in _primes(64)]
_SHA256_IV = tuple(_frac_root(p, 2) for p in _primes(8))


def _sha256_compress(state: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    w = list(struct.unpack(">16I", block))
    for t in range(16, 64):
        s0 = _rotr(w[t - 15], 7) ^ _rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
        s1 = _rotr(w[t - 2], 17) ^ _rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
        w.append((w[t - 16] + s0 + w[t - 7] + s1) & _M32)
    a, b, c, d, e, f, g, h = state
    for t in range(64):
        t1 = (
            h + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + ((e & f) ^ (~e & g)) + _SHA256_K[t] + w[t]
        ) & _M32
        t2 = ((_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) & _M32
        a, b, c, d, e, f, g, h = (t1 + t2) & _M32, a, b, c, (d + t1) & _M32, e, f, g
    return tuple((s + v) & _M32 for s, v in zip(state, (a, b, c, d, e, f, g, h), strict=True))


class _Hash:
    """One Merkle-Damgard hash: IV, compression, and byte orders for lengths and digests."""

    def __init__(
        self,
        iv: tuple[int, ...],
        compress: Callable[[tuple[int, ...], bytes], tuple[int, ...]],
        big_endian: bool,
    ) -> None:
        self.iv = iv
        self.compress = compress
        self.words = len(iv)
        self.order = ">" if big_endian else "<"

    def resume(self, state: tuple[int, ...], counted: int, data: bytes) -> bytes:
        """Finish the hash from ``state`` (``counted`` bytes already in it) over ``data``."""
        total = counted + len(data)
        data = data + b"\x80" + b"\0" * ((55 - total) % 64) + struct.pack(self.order + "Q", total * 8)
        for i in range(0, len(data), 64):
            state = self.compress(state, data[i : i + 64])
        return struct.pack(f"{self.order}{self.words}I", *state)


_HASHES: dict[str, _Hash] = {
    "md5": _Hash(_MD5_IV, _md5_compress, big_endian=False),
    "sha1": _Hash(_SHA1_IV, _sha1_compress, big_endian=True),
    "sha256": _Hash(_SHA256_IV, _sha256_compress, big_endian=True),
}

#: Hashes whose masked keys we can make and use (SPEC 5.1 "state-capable").
MASKED_HASHES: tuple[str, ...] = ("md5", "sha1", "sha256")


def _available(name: str) -> bool:
    try:
        hmac.new(b"k", b"m", name).digest()
    except (ValueError, TypeError):  # e.g. MD5 refused by a FIPS-mode OpenSSL
        return False
    return True


#: CRAM hashes usable with a plain secret, in OpenSSL order (SPEC 5.3).
CRAM_HASHES: tuple[str, ...] = tuple(h for h in ("sha512", "sha256", "sha1", "md5") if _available(h))

#: An initial response longer than this (base64 characters) is not sent (SPEC 5.4).
MAX_INITIAL_RESPONSE = 450


def _hash(name: str) -> _Hash:
    h = _HASHES.get(name.lower())
    if h is None:
        raise SaslError(f"no masked keys for hash function [{name}]")
    return h


def masked_length(hash_name: str) -> int:
    """Length in bytes of a masked key for ``hash_name`` (32, 40 or 64)."""
    return 8 * _hash(hash_name).words


def mask_key(password: bytes, hash_name: str = "md5") -> bytes:
    """The masked HMAC key of ``password`` (SPEC 5.6): inner state then outer state.

    Raises:
        SaslError: ``hash_name`` is not md5, sha1 or sha256.
    """
    h = _hash(hash_name)
    key = password
    if len(key) > 64:
        key = hashlib.new(hash_name.lower(), key).digest()
    key = key.ljust(64, b"\0")
    inner = h.compress(h.iv, bytes(b ^ 0x36 for b in key))
    outer = h.compress(h.iv, bytes(b ^ 0x5C for b in key))
    return struct.pack(f"<{2 * h.words}I", *inner, *outer)


def hmac_from_masked(masked: bytes, hash_name: str, message: bytes) -> bytes:
    """HMAC of ``message`` keyed by the password that ``masked`` was made from.

    Raises:
        SaslError: unknown hash, or ``masked`` has the wrong length.
    """
    h = _hash(hash_name)
    if len(masked) != 8 * h.words:
        raise SaslError(
            f"invalid masked {hash_name.lower()} key: {len(masked)} bytes, expected {8 * h.words}"
        )
    words = struct.unpack(f"<{2 * h.words}I", masked)
    inner = h.resume(words[: h.words], 64, message)
    return h.resume(words[h.words :], 64, inner)


def to_dotted(masked: bytes) -> str:
    """The legacy dotted form of a masked key: its little-endian words in decimal, joined by ``.``."""
    if len(masked) % 4:
        raise SaslError("invalid masked key length")
    return ".".join(str(w) for w in struct.unpack(f"<{len(masked) // 4}I", masked))


def is_dotted(text: str) -> bool:
    """True for the legacy dotted MD5 form: 8 ``.``-separated decimals, at least 15 characters."""
    parts = text.split(".")
    return (
        len(text) >= 15
        and len(parts) == 8
        and all(p.isascii() and p.isdigit() and int(p) <= _M32 for p in parts)
    )


def from_dotted(text: str) -> bytes:
    """The 32-byte masked MD5 key written in dotted form (see :func:`is_dotted`)."""
    if not is_dotted(text):
        raise SaslError("invalid dotted masked key")
    return struct.pack("<8I", *(int(p) for p in text.split(".")))


# --------------------------------------------------------------------------
# CRAM and APOP arithmetic


def cram_challenge(domain: str, *, now: float | None = None, rand: int | None = None) -> bytes:
    """A CRAM/APOP challenge ``<R.T@domain>``: R random unsigned 32-bit, T Unix seconds."""
    r = int.from_bytes(os.urandom(4), "big") if rand is None else rand
    t = int(time.time() if now is None else now)
    return f"<{r}.{t}@{domain}>".encode("utf-8", "surrogateescape")


def _cram_digest(hash_name: str, kind: str, secret: bytes, challenge: bytes) -> str:
    if kind == "plain":
        return hmac.new(secret, challenge, hash_name).hexdigest()
    return hmac_from_masked(secret, hash_name, challenge).hex()


def cram_response(user: str, hash_name: str, kind: str, secret: bytes, challenge: bytes) -> bytes:
    """``<id> <lowercase hex HMAC>`` for a CRAM challenge.

    Args:
        user: the account id.
        hash_name: ``md5``, ``sha1``, ``sha256`` or ``sha512``.
        kind: ``plain`` (``secret`` is the password) or the masked hash name
            (``secret`` is a masked key of that hash).
    """
    digest = _cram_digest(hash_name, kind, secret, challenge)
    return _enc(user) + b" " + digest.encode("ascii")


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _dec(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _cram_hash(name: str) -> str | None:
    """``CRAM-SHA256`` -> ``sha256``; None if ``name`` is not a CRAM mechanism."""
    upper = name.upper()
    if upper.startswith("CRAM-"):
        return upper[5:].lower()
    return None


# --------------------------------------------------------------------------
# client side


class ClientMechanism:
    """The client half of one AUTH exchange for ``name`` with ``account``.

    Mechanisms: ``PLAIN``, ``LOGIN``, ``XOAUTH2`` and ``CRAM-<hash>``. ``id``
    is the account id this exchange authenticates as (the id written on the
    secrets line whose secret is used), for ``MAIL FROM ... AUTH=``.

    Raises:
        SaslError: (constructor) the mechanism is unknown or the account has no
            secret for it.
    """

    def __init__(self, name: str, account: ClientAccount) -> None:
        self.name = name.upper()
        self.account = account
        self._step = 0
        self._sent_id = False
        self._sent_password = False
        hash_name = _cram_hash(self.name)
        self._hash = hash_name
        if hash_name is not None:
            if hash_name in MASKED_HASHES and account.masked.get(hash_name) is not None:
                self._kind = hash_name
                self._secret = account.masked[hash_name]
            elif account.plain is not None and hash_name in CRAM_HASHES:
                self._kind = "plain"
                self._secret = account.plain
            else:
                raise SaslError(f"no secret for mechanism [{self.name}]")
        elif self.name in ("PLAIN", "LOGIN"):
            if account.plain is None:
                raise SaslError(f"no plain secret for mechanism [{self.name}]")
            self._kind = "plain"
            self._secret = account.plain
        elif self.name == "XOAUTH2":
            if account.oauth is None:
                raise SaslError("no oauth secret for mechanism [XOAUTH2]")
            self._kind = "oauth"
            self._secret = account.oauth
        else:
            raise SaslError(f"unsupported mechanism [{self.name}]")
        self.id: str = account.id_for(self._kind)

    @property
    def secret_kind(self) -> str:
        """``plain``, ``oauth`` or a masked hash name: which secret this exchange uses (for messages)."""
        return self._kind

    def _full_initial(self) -> bytes | None:
        if self.name == "PLAIN":
            return b"\0" + _enc(self.id) + b"\0" + self._secret
        if self.name == "LOGIN":
            return _enc(self.id)
        if self.name == "XOAUTH2":
            return self._secret
        return None

    def initial_response(self) -> bytes | None:
        """What to send after ``AUTH <name>`` (decoded), or None to send nothing.

        CRAM never has one; any other is dropped when its base64 would be over
        450 characters, and then comes as the answer to the first 334.
        """
        data = self._full_initial()
        if data is None or len(base64.b64encode(data)) > MAX_INITIAL_RESPONSE:
            return None
        self._step = 1
        self._sent_id = self.name == "LOGIN"
        return data

    def respond(self, challenge: bytes) -> bytes:
        """The answer (decoded) to one 334 challenge (decoded).

        Raises:
            SaslError: the challenge cannot be answered; the caller sends ``*``.
        """
        step = self._step
        self._step += 1
        if self._hash is not None:
            if step != 0:
                raise SaslError(f"unexpected second challenge for {self.name}")
            return cram_response(self.id, self._hash, self._kind, self._secret, challenge)
        if self.name == "PLAIN":
            if step != 0:
                raise SaslError("unexpected challenge for PLAIN")
            return b"\0" + _enc(self.id) + b"\0" + self._secret
        if self.name == "XOAUTH2":
            if step == 0:
                return self._secret
            return b""  # a 334 after the token carries an error text: answer empty (Google XOAUTH2)
        # LOGIN: answer the prompt by its text, an unknown prompt by position; each answer once
        prompt = challenge.strip().rstrip(b":").replace(b" ", b"").lower()
        if prompt == b"username" and not self._sent_id:
            return self._login_id()
        if prompt == b"password" and not self._sent_password:
            return self._login_password()
        if prompt not in (b"username", b"password"):
            if not self._sent_id:
                return self._login_id()
            if not self._sent_password:
                return self._login_password()
        raise SaslError(f"unexpected LOGIN challenge [{_dec(challenge)}]")

    def _login_id(self) -> bytes:
        self._sent_id = True
        return _enc(self.id)

    def _login_password(self) -> bytes:
        self._sent_password = True
        return self._secret


# --------------------------------------------------------------------------
# server side

Result = tuple[Literal["continue", "ok", "fail"], bytes | str]


class ServerMechanism:
    """The server half of one exchange: ``PLAIN``, ``LOGIN``, ``CRAM-<hash>`` or ``APOP``.

    Usage (the caller base64-decodes client lines and encodes 334 texts)::

        mech = ServerMechanism("CRAM-MD5", secrets, domain)
        if initial is not None:            # AUTH <mech> <initial response>
            result = mech.respond(initial)
        else:
            send 334 mech.challenge(); result = mech.respond(reply) ...

    ``challenge()`` is the first server challenge: empty for PLAIN,
    ``Username:`` for LOGIN, ``<R.T@domain>`` for CRAM and APOP (the POP
    greeting carries the APOP one; ``respond`` then gets ``name digest``).
    PLAIN and LOGIN accept an initial response; CRAM and APOP fail on one
    unless their challenge was issued (or given as ``challenge=``, as the POP
    server does with the timestamp of its greeting).
    ``id`` is the account id once the client has named one (also after a
    failure, for the log).

    Raises:
        SaslError: (constructor) unknown mechanism or unsupported hash.
    """

    def __init__(self, name: str, secrets: Secrets, domain: str, *, challenge: bytes | None = None) -> None:
        self.name = name.upper()
        self.secrets = secrets
        self.domain = domain
        self.id: str | None = None
        self._hash = _cram_hash(self.name)
        if self.name == "APOP":
            self._hash = "md5"
        elif self._hash is not None:
            if self._hash not in CRAM_HASHES:
                raise SaslError(f"unsupported mechanism [{self.name}]")
        elif self.name not in ("PLAIN", "LOGIN"):
            raise SaslError(f"unsupported mechanism [{self.name}]")
        self._challenge: bytes | None = challenge if self._hash is not None else None
        self._step = 0
        self._done = False

    def challenge(self) -> bytes:
        """The first challenge (decoded); the same value on every call."""
        if self._challenge is None:
            if self.name == "PLAIN":
                self._challenge = b""
            elif self.name == "LOGIN":
                self._challenge = b"Username:"
            else:
                self._challenge = cram_challenge(self.domain)
        return self._challenge

    def respond(self, data: bytes) -> Result:
        """Take one client response (decoded); say whether to continue, or the outcome."""
        if self._done:
            return ("fail", "exchange already finished")
        if self.name == "LOGIN" and self._step == 0:
            self._step = 1
            self.id = _dec(data)
            return ("continue", b"Password:")
        self._done = True
        if self.name == "LOGIN":
            return self._check_plain(self.id or "", data)
        if self.name == "PLAIN":
            parts = data.split(b"\0")
            if len(parts) != 3:
                return ("fail", "invalid PLAIN response")
            self.id = _dec(parts[1])
            return self._check_plain(self.id, parts[2])
        if self._challenge is None:
            return ("fail", f"unexpected initial response for {self.name}")
        user, sep, digest = data.rpartition(b" ")
        if not sep or not user:
            return ("fail", f"invalid {self.name} response")
        self.id = _dec(user)
        return self._check_digest(self.id, _dec(digest).lower())

    def _check_plain(self, user: str, password: bytes) -> Result:
        secret = self.secrets.server_secret("plain", user)
        if secret is None:
            return ("fail", f"no plain secret for [{user}]")
        if not hmac.compare_digest(secret.value, password):
            return ("fail", f"wrong password for [{user}]")
        return ("ok", user)

    def _check_digest(self, user: str, digest: str) -> Result:
        assert self._hash is not None and self._challenge is not None
        if self.name == "APOP":
            secret = self.secrets.server_secret("plain", user)
            if secret is None:
                return ("fail", f"no plain secret for [{user}]")
            expected = hashlib.md5(self._challenge + secret.value).hexdigest()
        else:
            secret = None
            if self._hash in MASKED_HASHES:
                secret = self.secrets.server_secret(self._hash, user)
            if secret is None:
                secret = self.secrets.server_secret("plain", user)
            if secret is None:
                return ("fail", f"no {self._hash} or plain secret for [{user}]")
            expected = _cram_digest(self._hash, secret.kind, secret.value, self._challenge)
        if not hmac.compare_digest(expected.encode(), digest.encode("utf-8", "surrogateescape")):
            return ("fail", f"wrong {self.name} digest for [{user}]")
        return ("ok", user)


def initial_response(mechanism: str, words: list[str]) -> bytes | None:
    """The decoded initial response of ``AUTH <mechanism> [<response>]`` (SMTP and POP).

    ``words`` are the command's arguments after AUTH.  Returns None when
    there is none, b"" for ``=``.

    Raises:
        SaslError: a CRAM mechanism given an initial response, or a response
            that is not base64.
    """
    if len(words) < 2:
        return None
    if mechanism.upper().startswith("CRAM-"):
        raise SaslError("initial response not allowed")
    if words[1] == "=":
        return b""
    try:
        return base64.b64decode(words[1], validate=True)
    except (binascii.Error, ValueError):
        raise SaslError("initial response is not base64") from None
