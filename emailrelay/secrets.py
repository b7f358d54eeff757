"""Secrets files: parse them, watch them, and answer the questions AUTH asks.

One job: turn a ``--client-auth`` / ``--server-auth`` / ``--pop-auth`` secrets
file (SPEC.md 5.1, section 0 "older secrets-file forms") or the inline
``plain:<b64 id>:<b64 pwd>`` value into lookups: the client account for a
selector and the mechanisms to try with it (SPEC 5.4), the server secret for a
mechanism and id and the mechanisms to offer (SPEC 5.3, OPTIONS 3.7), and
whether a peer address is trusted (``server none`` lines, SPEC 5.2). No
networking and no SASL arithmetic here (``sasl.py`` does that).

States: a :class:`Secrets` holds one parsed, immutable snapshot of the file.
Every lookup first calls :meth:`Secrets.refresh`, which at most once a second
stats the file and re-reads it when its mtime (or size or inode) changed.

Failure behaviour:

* :meth:`Secrets.load` raises :class:`SecretsError` with one line naming the
  file and line (``/etc/emailrelay.auth:3: too few fields``), or ``cannot read
  secrets file: <path>``; :meth:`Secrets.inline` raises ``invalid client
  account details``. Warnings (more than 5 fields, the old ``<type> <side>``
  field order, legacy ``login``/``apop``/``cram-md5`` secrets read as plain,
  trust ranges that can never match) go to ``Secrets.warnings``, each naming
  file and line; the caller logs them.
* A re-read that fails keeps the previous contents and sets ``Secrets.error``
  (cleared by the next good re-read); it never raises into a live session.
* :meth:`Secrets.client_account` raises :class:`UnknownSelectorError`
  (``no client authentication account: selector [x]``) for a non-empty
  selector that no client line names.

Decisions (where 2.6 differs or SPEC leaves a choice):

* Lines may use the old field order ``<type> <side> ...`` (turned round, with
  a warning). ``login`` is ``plain`` (with a warning that it is a legacy
  type); an ``apop``/``cram-md5`` secret in a hash form (dotted, or base64 of
  32 bytes) is a masked MD5 key as in 2.6, anything else is taken as a plain
  xtext secret, with a warning.
* Types, xtext, base64 and masked-key lengths are checked when the file is
  read: an unknown type, ``oauth`` on a server line, ``none`` on a client line,
  bad xtext or base64, or a masked key of the wrong size is an error naming
  the line, not a failure at authentication time.
* Duplicates (server: same type and id; client: same type and selector; trust:
  same address range) are errors; so is a selector that has both the
  ``client plain:b = = <sel>`` "do not authenticate" line and secrets.
  A 5th field on a server line is ignored; further fields that start with
  ``#`` are a comment and do not warn.
* Trust (SPEC 5.2 quirk): the ``/21`` candidate uses the ``/21`` mask (2.6
  used the ``/22`` one, so ``a.b.c.0/21`` lines could miss). IPv4-mapped IPv6
  peers are looked up as their IPv4 address. A ``server none`` range that no
  candidate string can ever equal (``10.1.2.3/8`` with host bits set,
  ``10.*.0.*``, ``fe80:0::/64`` not in canonical form...) gets a warning.
* ``--client-auth-config``: ``a:``/``d:`` work on the client as documented,
  when the caller says the session is encrypted (2.6 read only ``m``/``x``);
  without ``a:``/``d:`` the result is 2.6's. Server mechanism names from EHLO
  are compared case-insensitively.
* Ids are ``str`` (xtext or base64 decoded, UTF-8 with surrogateescape for
  other bytes), compared exactly; passwords, masked keys and oauth tokens are
  ``bytes``. Selectors, trust ranges and trust keywords are taken as written.
  Base64 fields must be strict base64 except that missing ``=`` padding is
  allowed.
* Re-reading also notices a changed size or inode, not only the mtime.
* CRAM hashes with a plain secret are what Python's ``hmac`` can do, in
  OpenSSL order: ``SHA512 SHA256 SHA1 MD5`` (``sasl.CRAM_HASHES``).

Not responsible for: the SASL exchanges and masked keys (``sasl.py``), PAM,
logging, reply codes.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from emailrelay.envelope import xtext_decode, xtext_valid
from emailrelay.sasl import CRAM_HASHES, MASKED_HASHES, from_dotted, is_dotted, masked_length

__all__ = [
    "ClientAccount",
    "Secret",
    "Secrets",
    "SecretsError",
    "UnknownSelectorError",
    "client_mechanisms",
    "parse_auth_config",
    "trust_candidates",
]

_ENC = "utf-8"
_ERRORS = "surrogateescape"

#: Seconds between two checks of the file's mtime.
REFRESH_INTERVAL = 1.0


class SecretsError(Exception):
    """A secrets file or inline account that cannot be used; the message is one line."""


class UnknownSelectorError(SecretsError):
    """An envelope's client account selector that no client line names."""


@dataclass(frozen=True)
class Secret:
    """One secret: ``kind`` is ``plain``, ``md5``, ``sha1``, ``sha256`` or ``oauth``.

    ``value`` is the password (plain), the masked key (md5/sha1/sha256) or the
    complete XOAUTH2 initial response (oauth). ``line`` is 0 for an inline account.
    """

    kind: str
    id: str
    value: bytes
    line: int = 0


_CLIENT_ID_ORDER = ("plain", "md5", "sha1", "sha256", "oauth")


@dataclass(frozen=True)
class ClientAccount:
    """The client secrets for one selector, by kind (each with its own id)."""

    selector: str
    secrets: Mapping[str, Secret]

    @property
    def id(self) -> str:
        """The account id: the plain secret's, else the first masked one's, else the oauth one's."""
        return self.secrets[next(k for k in _CLIENT_ID_ORDER if k in self.secrets)].id

    def id_for(self, kind: str) -> str:
        """The id written on the line whose secret of ``kind`` is used."""
        secret = self.secrets.get(kind)
        return secret.id if secret is not None else self.id

    @property
    def plain(self) -> bytes | None:
        """The plain password, if there is one."""
        secret = self.secrets.get("plain")
        return secret.value if secret is not None else None

    @property
    def masked(self) -> dict[str, bytes]:
        """Masked keys by hash name (``md5``, ``sha1``, ``sha256``)."""
        return {k: s.value for k, s in self.secrets.items() if k in MASKED_HASHES}

    @property
    def oauth(self) -> bytes | None:
        """The XOAUTH2 initial response, if there is one."""
        secret = self.secrets.get("oauth")
        return secret.value if secret is not None else None


@dataclass
class _Contents:
    """One parsed snapshot of a secrets file."""

    server: dict[tuple[str, str], Secret] = field(default_factory=dict)
    client: dict[str, dict[str, Secret]] = field(default_factory=dict)
    no_auth: dict[str, int] = field(default_factory=dict)  # selector -> line
    trust: dict[str, tuple[str, int]] = field(default_factory=dict)  # range -> (keyword, line)
    warnings: list[str] = field(default_factory=list)

    def server_kinds(self) -> set[str]:
        return {kind for kind, _ in self.server}


# --------------------------------------------------------------------------
# parsing

_SIDES = ("server", "client")
_TYPES = ("plain", "login", "plain:b", "md5", "cram-md5", "apop", "sha1", "sha256", "oauth", "none")
_FIELD_NAMES = ("first", "second", "third", "fourth", "fifth")
_SPLIT = re.compile(r"[ \t]+")


class _LineError(Exception):
    pass


def _xtext(text: str, index: int) -> str:
    if not xtext_valid(text):
        raise _LineError(f"invalid xtext encoding in {_FIELD_NAMES[index]} field")
    return xtext_decode(text)


def _b64(text: str, index: int) -> bytes:
    try:
        if not text.isascii():
            raise ValueError
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (ValueError, binascii.Error):
        raise _LineError(f"invalid base64 encoding in {_FIELD_NAMES[index]} field") from None


def _masked(text: str, hash_name: str) -> bytes | None:
    """The masked key written as ``text`` (base64, or dotted for md5), or None."""
    if hash_name == "md5" and is_dotted(text):
        return from_dotted(text)
    try:
        key = _b64(text, 3)
    except _LineError:
        return None
    return key if len(key) == masked_length(hash_name) else None


def _str(data: bytes) -> str:
    return data.decode(_ENC, _ERRORS)


def _bytes(text: str) -> bytes:
    return text.encode(_ENC, _ERRORS)


def _check_trust_range(text: str) -> bool:
    """True if some peer address expands to exactly ``text`` (SPEC 5.2)."""
    wild = re.fullmatch(r"(\d{1,3}(?:\.\d{1,3})*)((?:\.\*)+)|\*\.\*\.\*\.\*", text)
    if wild:
        if text == "*.*.*.*":
            return True
        octets = wild.group(1).split(".")
        return len(octets) + wild.group(2).count("*") == 4 and all(
            str(int(o)) == o and int(o) < 256 for o in octets
        )
    try:
        if "/" in text:
            return str(ipaddress.ip_network(text, strict=True)) == text
        return ipaddress.ip_address(text).compressed == text
    except ValueError:
        return False


def _parse(text: str, source: str) -> _Contents:
    contents = _Contents()
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip(" \t\r\n")
        if not line or line.startswith("#"):
            continue
        try:
            _parse_line(contents, _SPLIT.split(line), number, lambda m, n=number: f"{source}:{n}: {m}")
        except _LineError as exc:
            raise SecretsError(f"{source}:{number}: {exc}") from None
    return contents


def _parse_line(c: _Contents, fields: list[str], number: int, where: Callable[[str], str]) -> None:
    if len(fields) < 4:
        raise _LineError("too few fields")
    extra = fields[4:]
    if extra and extra[0].startswith("#"):
        extra = []
    elif len(extra) > 1 and not extra[1].startswith("#"):
        c.warnings.append(where(f"more than 5 fields: field 6 onwards ignored ({len(fields)} fields)"))
    side, kind = fields[0].lower(), fields[1].lower()
    if side not in _SIDES and kind in _SIDES and side in _TYPES:
        c.warnings.append(
            where(f'old field order "{fields[0]} {fields[1]}": read as "{fields[1]} {fields[0]}"')
        )
        side, kind = kind, side
    if side not in _SIDES:
        raise _LineError("invalid value in first field")
    if kind not in _TYPES:
        raise _LineError(f"invalid value in second field: [{fields[1]}]")
    selector = extra[0] if extra else ""
    id_text, secret_text = fields[2], fields[3]

    if kind == "none":
        if side != "server":
            raise _LineError('type "none" is for server lines only')
        if id_text in c.trust:
            raise _LineError(
                f"duplicate trust address range [{id_text}] (first on line {c.trust[id_text][1]})"
            )
        if not _check_trust_range(id_text):
            c.warnings.append(where(f"trust address range [{id_text}] can never match a peer address"))
        c.trust[id_text] = (secret_text, number)
        return
    if kind == "oauth" and side != "client":
        raise _LineError('type "oauth" is for client lines only')

    if side == "client" and kind == "plain:b" and id_text == "=" and secret_text == "=":
        if selector in c.no_auth:
            raise _LineError(
                f"duplicate client plain secret for selector [{selector}] (first on line {c.no_auth[selector]})"
            )
        if selector in c.client:
            raise _LineError(f"selector [{selector}] has both secrets and a do-not-authenticate line")
        c.no_auth[selector] = number
        return

    secret = _secret(c, kind, id_text, secret_text, number, where)
    if side == "server":
        key = (secret.kind, secret.id)
        if key in c.server:
            raise _LineError(
                f"duplicate server {secret.kind} secret for [{secret.id}] (first on line {c.server[key].line})"
            )
        c.server[key] = secret
        return
    if selector in c.no_auth:
        raise _LineError(f"selector [{selector}] has both secrets and a do-not-authenticate line")
    account = c.client.setdefault(selector, {})
    if secret.kind in account:
        raise _LineError(
            f"duplicate client {secret.kind} secret for selector [{selector}] "
            f"(first on line {account[secret.kind].line})"
        )
    account[secret.kind] = secret


def _secret(
    c: _Contents, kind: str, id_text: str, secret_text: str, number: int, where: Callable[[str], str]
) -> Secret:
    if kind == "plain:b":
        return Secret("plain", _str(_b64(id_text, 2)), _b64(secret_text, 3), number)
    user = _xtext(id_text, 2)
    if kind in ("plain", "login"):
        if kind == "login":
            c.warnings.append(where('legacy type "login": secret taken as a plain secret'))
        return Secret("plain", user, _bytes(_xtext(secret_text, 3)), number)
    if kind == "oauth":
        return Secret("oauth", user, _b64(secret_text, 3), number)
    if kind in ("cram-md5", "apop"):
        key = _masked(secret_text, "md5")
        if key is not None:  # the 2.6 alias of md5: no warning
            return Secret("md5", user, key, number)
        c.warnings.append(where(f'legacy type "{kind}" without a masked key: secret taken as a plain secret'))
        return Secret("plain", user, _bytes(_xtext(secret_text, 3)), number)
    key = _masked(secret_text, kind)
    if key is None:
        forms = "base64 or dotted" if kind == "md5" else "base64"
        raise _LineError(f"invalid {kind} secret in fourth field: expected a {forms} masked key")
    return Secret(kind, user, key, number)


# --------------------------------------------------------------------------
# trust


def trust_candidates(ip: str) -> list[str]:
    """The strings a peer address is looked up as in the trust map, most specific first (SPEC 5.2).

    IPv4 ``a.b.c.d``: ``a.b.c.d``, ``a.b.c.d/32`` ... ``a.b.c.0/24``, ``a.b.c.*``,
    ``/23`` ... ``/16``, ``a.b.*.*``, ... ``0.0.0.0/0``, ``*.*.*.*``, each prefix
    with its own mask. IPv6: the canonical text, then ``<network>/<len>`` for
    128 down to 0. IPv4-mapped IPv6 is treated as IPv4. Unparsable text: ``[]``.
    """
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0] if ":" in ip else ip)
    except ValueError:
        return []
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    out = [addr.compressed]
    if isinstance(addr, ipaddress.IPv4Address):
        octets = addr.compressed.split(".")
        for bits in range(32, -1, -1):
            out.append(str(ipaddress.IPv4Network((addr, bits), strict=False)))
            if bits % 8 == 0 and bits < 32:
                keep = bits // 8
                out.append(".".join(octets[:keep] + ["*"] * (4 - keep)))
    else:
        for bits in range(128, -1, -1):
            out.append(str(ipaddress.IPv6Network((addr, bits), strict=False)))
    return out


# --------------------------------------------------------------------------
# mechanism configuration


def parse_auth_config(config: str) -> dict[str, list[str]]:
    """Parse ``--server-auth-config`` / ``--client-auth-config`` (OPTIONS 3.7).

    ``;``-separated ``<key>:<a,b,...>`` items; keys ``m``, ``x``, ``a``, ``d``
    (case-insensitive); a bare list is an ``m`` list. Returns upper-case
    mechanism names by key; a key that is present with an empty list maps to
    ``[]`` (allow nothing), an absent key is missing. Unknown keys are ignored.
    """
    out: dict[str, list[str]] = {}
    for item in config.split(";"):
        item = item.strip()
        if not item:
            continue
        key, colon, rest = item.partition(":")
        if not colon:
            key, rest = "m", item
        key = key.strip().lower()
        if key not in ("m", "x", "a", "d"):
            continue
        names = out.setdefault(key, [])
        for name in rest.split(","):
            name = name.strip().upper()
            if name and name not in names:
                names.append(name)
    return out


def _allow_deny(config: str, secure: bool) -> tuple[list[str] | None, list[str]]:
    items = parse_auth_config(config)
    if secure and ("a" in items or "d" in items):
        return items.get("a"), items.get("d", [])
    return items.get("m"), items.get("x", [])


def _cram_names(hashes: Iterable[str]) -> list[str]:
    return [f"CRAM-{h.upper()}" for h in hashes]


def client_mechanisms(
    account: ClientAccount, config: str, server_mechs: Iterable[str], *, secure: bool = False
) -> list[str]:
    """The mechanisms to try with ``account``, in order (SPEC 5.4).

    Our list (CRAM-* for every hash we can do with a plain secret, else only
    those with a masked key; ``XOAUTH2`` with an oauth secret; ``PLAIN``,
    ``LOGIN`` with a plain one), filtered by ``config`` (``m:`` allow,
    ``x:`` deny, bare list = allow; ``a:``/``d:`` instead when ``secure`` and
    present), then intersected with ``server_mechs``, keeping our order.
    """
    if account.plain is not None:
        ours = _cram_names(CRAM_HASHES)
    else:
        ours = _cram_names(h for h in CRAM_HASHES if h in account.masked)
    if account.oauth is not None:
        ours.append("XOAUTH2")
    if account.plain is not None:
        ours += ["PLAIN", "LOGIN"]
    allow, deny = _allow_deny(config, secure)
    offered = {m.strip().upper() for m in server_mechs}
    return [m for m in ours if (allow is None or m in allow) and m not in deny and m in offered]


# --------------------------------------------------------------------------
# the secrets object


def _stamp(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _read(path: str) -> tuple[_Contents, tuple[int, int, int]]:
    try:
        stamp = _stamp(path)
        data = Path(path).read_bytes()
    except OSError:
        raise SecretsError(f"cannot read secrets file: {path}") from None
    return _parse(data.decode(_ENC, _ERRORS), path), stamp


class Secrets:
    """A secrets file (or an inline client account), re-read when it changes.

    Attributes:
        path: the file, or None for inline and parsed text.
        error: the last re-read failure (one line), None after a good read.
        generation: incremented on every successful re-read.
    """

    def __init__(
        self,
        contents: _Contents,
        path: str | None = None,
        stamp: tuple[int, int, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._contents = contents
        self.path = path
        self._stamp = stamp
        self._clock = clock
        self._checked = clock()
        self.error: str | None = None
        self.generation = 0

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.monotonic) -> Secrets:
        """Read and check a secrets file.

        Args:
            path: the file.
            clock: monotonic seconds, for the once-a-second check (tests pass their own).

        Raises:
            SecretsError: unreadable file, or the first bad line (``<path>:<n>: <reason>``).
        """
        text_path = os.fspath(path)
        contents, stamp = _read(text_path)
        return cls(contents, text_path, stamp, clock)

    @classmethod
    def parse(cls, text: str, source: str = "<secrets>") -> Secrets:
        """Secrets from text (never re-read); ``source`` names it in messages."""
        return cls(_parse(text, source))

    @classmethod
    def inline(cls, spec: str) -> Secrets:
        """The ``--client-auth plain:<base64 id>:<base64 password>`` account.

        Raises:
            SecretsError: ``invalid client account details``.
        """
        kind, _, rest = spec.partition(":")
        parts = rest.split(":")
        try:
            if kind.lower() != "plain" or len(parts) != 2:
                raise _LineError
            user, password = _b64(parts[0], 2), _b64(parts[1], 3)
        except _LineError:
            raise SecretsError("invalid client account details") from None
        if not user:
            raise SecretsError("invalid client account details")
        contents = _Contents()
        contents.client[""] = {"plain": Secret("plain", _str(user), password)}
        return cls(contents)

    # -- re-reading

    @property
    def warnings(self) -> list[str]:
        """Warnings of the current contents, each naming file and line."""
        return self._contents.warnings

    def refresh(self, now: float | None = None) -> bool:
        """Re-read the file if it changed; checks at most once per :data:`REFRESH_INTERVAL`.

        Args:
            now: the clock's time (default: read the clock).

        Returns:
            True if new contents were loaded. A failed re-read keeps the old
            contents, sets :attr:`error` and returns False.
        """
        if self.path is None:
            return False
        now = self._clock() if now is None else now
        if now - self._checked < REFRESH_INTERVAL:
            return False
        self._checked = now
        try:
            stamp = _stamp(self.path)
        except OSError:
            self.error = f"cannot read secrets file: {self.path}"
            return False
        if stamp == self._stamp:
            return False
        try:
            contents, stamp = _read(self.path)
        except SecretsError as exc:
            self.error = str(exc)
            self._stamp = stamp  # do not re-parse the same broken file every second
            return False
        self._contents, self._stamp, self.error = contents, stamp, None
        self.generation += 1
        return True

    def _current(self) -> _Contents:
        self.refresh()
        return self._contents

    # -- client side

    def client_account(self, selector: str = "") -> ClientAccount | None:
        """The account for an envelope's ``ClientAccountSelector``.

        Returns:
            None when there is nothing to authenticate with: no client secret for
            the empty selector, or the selector's "do not authenticate" line.

        Raises:
            UnknownSelectorError: a non-empty selector that no client line names.
        """
        c = self._current()
        if selector in c.no_auth:
            return None
        secrets = c.client.get(selector)
        if secrets is None:
            if selector:
                raise UnknownSelectorError(f"no client authentication account: selector [{selector}]")
            return None
        return ClientAccount(selector, dict(secrets))

    # -- server side

    @property
    def has_server_secrets(self) -> bool:
        """True if any ``server`` secret (not counting trust lines) is present."""
        return bool(self._current().server)

    def server_secret(self, kind: str, user: str) -> Secret | None:
        """The server secret of ``kind`` (``plain``, ``md5``, ``sha1``, ``sha256``) for ``user``."""
        return self._current().server.get((kind.lower(), user))

    def server_mechanisms(self, secure: bool, config: str = "", pop: bool = False) -> list[str]:
        """Mechanisms to advertise for a plain (``secure`` False) or TLS session (SPEC 5.3).

        Base list: with any server plain secret, CRAM-* for every hash we can
        do, then ``PLAIN``, ``LOGIN``; else the CRAM-* with masked keys. If
        that is empty a TLS session gets ``PLAIN``. POP appends ``APOP``.
        ``config`` then applies (``m:``/``x:``, or ``a:``/``d:`` when
        ``secure`` and present); an ``m:``/``a:`` list gives the order.
        """
        kinds = self._current().server_kinds()
        if "plain" in kinds:
            base = _cram_names(CRAM_HASHES) + ["PLAIN", "LOGIN"]
        else:
            base = _cram_names(h for h in CRAM_HASHES if h in kinds)
        if not base and secure:
            base = ["PLAIN"]
        if pop:
            base.append("APOP")
        allow, deny = _allow_deny(config, secure)
        if allow is not None:
            base = [m for m in allow if m in base]
        return [m for m in base if m not in deny]

    def trusted(self, ip: str) -> str | None:
        """The keyword of the first ``server none`` range matching peer ``ip``, or None."""
        trust = self._current().trust
        if not trust:
            return None
        for candidate in trust_candidates(ip):
            hit = trust.get(candidate)
            if hit is not None:
                return hit[0]
        return None
