"""The envelope file format (``<id>.envelope``): parse and write, pure.

One job: turn envelope bytes into an :class:`Envelope` and back, byte-compatible
with E-MailRelay 2.6 (SPEC.md section 2). No file I/O happens here: callers
(``spool.py``, filters, the forwarder) read and write the files.

Reading accepts every format version from ``#2821.3`` to ``#2821.8`` with LF or
CRLF line ends; writing always produces ``#2821.8`` with CRLF, keys in the fixed
order, a trailing space after empty values, then the extra lines that followed
``X-MailRelay-End`` (Reason, ReasonCode, SplitGroup...), re-terminated CRLF.

Failure behaviour: :func:`parse` raises :class:`EnvelopeError` with the reader's
one-line messages (``expected "X-MailRelay-<Key>:"``, ``unknown format id``, ...).
Bytes are decoded as UTF-8 with ``surrogateescape`` so that any byte sequence
survives ``serialise(parse(data))`` unchanged in the raw fields.

Decisions where SPEC.md leaves a choice (documented here, tested in
tests/unit/test_envelope.py):

* Continuation lines (leading space or TAB) are unfolded for every key, not
  only ``ClientCertificate``; the writer folds any LF inside any value the same
  way, so a value that was read always writes back identically.
* xtext validity is liberal: printable ASCII ``!``..``~`` with every ``+``
  followed by two hex digits (either case). ``=`` is accepted when reading
  (RFC 3461 would refuse it) since E-MailRelay may accept what filters wrote.
  Encoding is RFC 3461 canonical: uppercase hex, ``+`` and ``=`` escaped.
* ``MailFromAuthIn``/``Out`` value ``+`` is accepted (SPEC 2.3) and written back
  as ``+`` (not re-encoded).

Not responsible for: file names and states (``spool.py``), durability
(``durable.py``), deciding the values (the SMTP server, filters, submit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "CURRENT_FORMAT",
    "FORMATS",
    "Envelope",
    "EnvelopeError",
    "needs_utf8_mailbox_names",
    "parse",
    "printable",
    "printable_ascii",
    "reason_lines",
    "serialise",
    "xtext_decode",
    "xtext_encode",
    "xtext_valid",
]

PREFIX = "X-MailRelay-"
CURRENT_FORMAT = "#2821.8"
CONTENT_TYPES = ("7bit", "8bit", "binarymime", "unknown")

#: Fields between ``Client`` and ``End`` for each readable format id (SPEC 2.2).
FORMATS: dict[str, tuple[str, ...]] = {
    "#2821.3": (),
    "#2821.4": ("ClientName", "ClientCertificate"),
    "#2821.5": ("ClientCertificate", "MailFromAuthIn", "MailFromAuthOut"),
    "#2821.6": ("ClientCertificate", "MailFromAuthIn", "MailFromAuthOut", "ForwardTo", "ForwardToAddress"),
    "#2821.7": (
        "ClientCertificate",
        "MailFromAuthIn",
        "MailFromAuthOut",
        "ForwardTo",
        "ForwardToAddress",
        "Utf8MailboxNames",
    ),
    "#2821.8": (
        "ClientCertificate",
        "MailFromAuthIn",
        "MailFromAuthOut",
        "ForwardTo",
        "ForwardToAddress",
        "ClientAccountSelector",
        "Utf8MailboxNames",
    ),
}

_TRIM = " \t\r\n"
_ENC = "utf-8"
_ERRORS = "surrogateescape"


class EnvelopeError(Exception):
    """The envelope bytes do not follow the format; the message is one line."""


@dataclass
class Envelope:
    """The fields of one envelope file, as E-MailRelay 2.6 defines them.

    ``authentication`` is the decoded id (written as xtext). ``mail_from_auth_in``,
    ``mail_from_auth_out`` and ``forward_to`` keep their xtext wire form.
    ``client_certificate`` is PEM text with LF line ends. ``extra_lines`` are the
    lines after ``X-MailRelay-End`` without terminators; ``crlf`` is whether the
    Format line ended CRLF (used when appending Reason lines to the file).
    """

    content: str = "unknown"
    from_address: str = ""
    to_local: list[str] = field(default_factory=list)
    to_remote: list[str] = field(default_factory=list)
    authentication: str = ""
    client: str = ""
    client_certificate: str = ""
    mail_from_auth_in: str = ""
    mail_from_auth_out: str = ""
    forward_to: str = ""
    forward_to_address: str = ""
    client_account_selector: str = ""
    utf8_mailbox_names: bool = False
    extra_lines: list[str] = field(default_factory=list)
    crlf: bool = True
    format: str = CURRENT_FORMAT

    @property
    def recipients(self) -> list[str]:
        """All recipients, local mailbox names first (the file's order)."""
        return [*self.to_local, *self.to_remote]

    def extra_values(self, key: str) -> list[str]:
        """Values of the extra lines ``X-MailRelay-<key>:``, in file order (trimmed)."""
        head = f"{PREFIX}{key}:"
        return [line[len(head) :].strip(_TRIM) for line in self.extra_lines if line.startswith(head)]

    @property
    def reasons(self) -> list[str]:
        """The (printable-ASCII encoded) texts of the ``X-MailRelay-Reason`` lines."""
        return self.extra_values("Reason")

    @property
    def reason_count(self) -> int:
        """How many times the message has failed: the resubmit retry counter.

        Counts extra lines containing ``MailRelay-Reason:`` exactly as the
        resubmit scripts do (SPEC 10.4); ``ReasonCode`` lines do not match.
        """
        return sum(1 for line in self.extra_lines if "MailRelay-Reason:" in line)


# --------------------------------------------------------------------------
# xtext (RFC 3461) and printable escaping


def _to_bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode(_ENC, _ERRORS)


def xtext_encode(text: str | bytes) -> str:
    """RFC 3461 xtext of ``text`` (UTF-8): ``!``..``~`` except ``+``/``=`` kept, others ``+XX``."""
    out: list[str] = []
    for b in _to_bytes(text):
        if 0x21 <= b <= 0x7E and b not in (0x2B, 0x3D):
            out.append(chr(b))
        else:
            out.append(f"+{b:02X}")
    return "".join(out)


_HEX = "0123456789abcdefABCDEF"


def xtext_valid(text: str) -> bool:
    """True if ``text`` is xtext: printable ASCII, each ``+`` followed by two hex digits.

    The empty string is valid. Lowercase hex and ``=`` are accepted (liberal reader).
    """
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if not ("!" <= c <= "~"):
            return False
        if c == "+":
            if i + 3 > n or text[i + 1] not in _HEX or text[i + 2] not in _HEX:
                return False
            i += 3
            continue
        i += 1
    return True


_XTEXT_HEX = re.compile(r"\+([0-9A-Fa-f]{2})")


def xtext_decode(text: str) -> str:
    """Decode xtext to text (UTF-8, surrogateescape for bytes that are not UTF-8).

    Lenient: a ``+`` not followed by two hex digits, and any other character, is
    kept as it is.
    """
    out = bytearray()
    pos = 0
    for m in _XTEXT_HEX.finditer(text):
        out += text[pos : m.start()].encode(_ENC, _ERRORS)
        out.append(int(m.group(1), 16))
        pos = m.end()
    out += text[pos:].encode(_ENC, _ERRORS)
    return out.decode(_ENC, _ERRORS)


def _escape_byte(b: int) -> str:
    if b == 0x5C:
        return "\\\\"
    if b == 0x0A:
        return "\\n"
    if b == 0x0D:
        return "\\r"
    if b == 0x09:
        return "\\t"
    if b == 0x00:
        return "\\0"
    return f"\\x{b:02x}"


def printable_ascii(text: str | bytes) -> str:
    """SPEC 2.4 Reason encoding: bytes 0x20-0x7E kept (``\\`` doubled), LF/CR/TAB/NUL
    as ``\\n``/``\\r``/``\\t``/``\\0``, every other byte ``\\xhh`` (lowercase)."""
    out: list[str] = []
    for b in _to_bytes(text):
        if 0x20 <= b <= 0x7E and b != 0x5C:
            out.append(chr(b))
        else:
            out.append(_escape_byte(b))
    return "".join(out)


def printable(text: str | bytes) -> str:
    """Appendix B escaping for replies and logs: like :func:`printable_ascii` but
    non-ASCII text is kept, so UTF-8 passes through. Bytes that are not valid
    UTF-8 (surrogateescape code points in ``str`` input) become ``\\xhh``.
    """
    decoded = text.decode(_ENC, _ERRORS) if isinstance(text, bytes) else text
    out: list[str] = []
    for c in decoded:
        o = ord(c)
        if 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x20 or o == 0x7F or c == "\\":
            out.append(_escape_byte(o))
        else:
            out.append(c)
    return "".join(out)


def needs_utf8_mailbox_names(from_address: str, to_remote: list[str]) -> bool:
    """The ``Utf8MailboxNames`` rule: the sender or any remote recipient has a
    non-ASCII local part (the part before the last ``@``)."""

    def local_part_non_ascii(address: str) -> bool:
        local = address.rpartition("@")[0] if "@" in address else address
        return not local.isascii()

    return local_part_non_ascii(from_address) or any(local_part_non_ascii(a) for a in to_remote)


# --------------------------------------------------------------------------
# reading


class _Lines:
    """Physical lines (terminator and one trailing CR removed) with a cursor."""

    def __init__(self, text: str) -> None:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the final terminator does not start another line
        self.crlf = bool(lines) and lines[0].endswith("\r")
        self.raw = [line[:-1] if line.endswith("\r") else line for line in lines]
        self.pos = 0

    def peek(self) -> str | None:
        return self.raw[self.pos] if self.pos < len(self.raw) else None

    def take(self) -> str:
        line = self.raw[self.pos]
        self.pos += 1
        return line

    def continuation(self) -> str:
        """Unfold the continuation lines that follow: each leading SP/TAB becomes LF."""
        parts: list[str] = []
        while self.pos < len(self.raw):
            line = self.raw[self.pos]
            if not line or line[0] not in " \t":
                break
            parts.append("\n" + line[1:])
            self.pos += 1
        return "".join(parts)


def _expected(key: str) -> EnvelopeError:
    return EnvelopeError(f'expected "{PREFIX}{key}:"')


def _read_value(lines: _Lines, key: str) -> str:
    """Read the line ``X-MailRelay-<key>: <value>`` (plus continuations)."""
    line = lines.peek()
    head = f"{PREFIX}{key}:"
    if line is None or not (line == head or line.startswith(head + " ")):
        raise _expected(key)
    lines.take()
    value = line[len(head) :] + lines.continuation()
    return value.strip(_TRIM)


def _read_auth_xtext(lines: _Lines, key: str) -> str:
    value = _read_value(lines, key)
    if value not in ("", "+") and not xtext_valid(value):
        raise EnvelopeError(f'invalid xtext in "{PREFIX}{key}:"')
    return value


_TO_LOCAL = PREFIX + "To-Local: "
_TO_REMOTE = PREFIX + "To-Remote: "


def parse(data: bytes) -> Envelope:
    """Parse envelope file bytes of any format ``#2821.3`` .. ``#2821.8`` (SPEC 2.3).

    Raises:
        EnvelopeError: the first structural problem found, e.g.
            ``expected "X-MailRelay-Client:"`` or ``unknown format id``.
    """
    lines = _Lines(data.decode(_ENC, _ERRORS))
    env = Envelope()
    env.crlf = lines.crlf
    fmt = _read_value(lines, "Format")
    if fmt not in FORMATS:
        raise EnvelopeError("unknown format id")
    env.format = fmt
    content = _read_value(lines, "Content")
    env.content = content if content in CONTENT_TYPES else "unknown"
    env.from_address = _read_value(lines, "From")
    count_text = _read_value(lines, "ToCount")
    if not count_text.isascii() or not count_text.isdigit():
        raise EnvelopeError(f'invalid "{PREFIX}ToCount:" value')
    for _ in range(int(count_text)):
        line = lines.peek()
        if line is not None and line.startswith(_TO_LOCAL):
            lines.take()
            env.to_local.append((line[len(_TO_LOCAL) :] + lines.continuation()).strip(_TRIM))
        elif line is not None and line.startswith(_TO_REMOTE):
            lines.take()
            env.to_remote.append((line[len(_TO_REMOTE) :] + lines.continuation()).strip(_TRIM))
        else:
            raise EnvelopeError(f'expected "{PREFIX}To-Local:" or "{PREFIX}To-Remote:"')
    env.authentication = xtext_decode(_read_value(lines, "Authentication"))
    env.client = _read_value(lines, "Client")
    for key in FORMATS[fmt]:
        if key == "ClientName":
            _read_value(lines, key)  # xtext, read and discarded
        elif key == "ClientCertificate":
            env.client_certificate = _read_value(lines, key)
        elif key == "MailFromAuthIn":
            env.mail_from_auth_in = _read_auth_xtext(lines, key)
        elif key == "MailFromAuthOut":
            env.mail_from_auth_out = _read_auth_xtext(lines, key)
        elif key == "ForwardTo":
            env.forward_to = _read_value(lines, key)
        elif key == "ForwardToAddress":
            env.forward_to_address = _read_value(lines, key)
        elif key == "ClientAccountSelector":
            env.client_account_selector = _read_value(lines, key)
        elif key == "Utf8MailboxNames":
            env.utf8_mailbox_names = _read_value(lines, key) == "1"
    end = lines.peek()
    if end is None or not end.startswith(PREFIX + "End"):
        raise _expected("End")
    lines.take()
    env.extra_lines = [lines.take().rstrip(_TRIM) for _ in range(len(lines.raw) - lines.pos)]
    return env


# --------------------------------------------------------------------------
# writing


def _canonical_xtext(value: str) -> str:
    """``xtext(unxtext(v))``; ``<>`` and ``+`` are kept as they are."""
    if value in ("", "<>", "+"):
        return value
    return xtext_encode(xtext_decode(value))


def _fold(value: str) -> str:
    """RFC 2822 folding: each LF becomes CRLF plus one space."""
    return value.replace("\n", "\r\n ")


def _certificate(pem: str) -> str:
    """Trimmed, CR removed; folded by :func:`_fold` like every value."""
    return pem.strip(_TRIM).replace("\r", "")


def serialise(env: Envelope) -> bytes:
    """The envelope in the current format ``#2821.8`` (SPEC 2.1), CRLF, then the extra lines.

    Raises:
        UnicodeEncodeError: a field holds a lone surrogate that did not come from
            surrogateescape decoding (a programming error).
    """
    content = env.content if env.content in CONTENT_TYPES else "unknown"
    fields: list[tuple[str, str]] = [
        ("Format", CURRENT_FORMAT),
        ("Content", content),
        ("From", env.from_address),
        ("ToCount", str(len(env.to_local) + len(env.to_remote))),
    ]
    fields += [("To-Local", to) for to in env.to_local]
    fields += [("To-Remote", to) for to in env.to_remote]
    fields += [
        ("Authentication", xtext_encode(env.authentication)),
        ("Client", env.client),
        ("ClientCertificate", _certificate(env.client_certificate)),
        ("MailFromAuthIn", _canonical_xtext(env.mail_from_auth_in)),
        ("MailFromAuthOut", _canonical_xtext(env.mail_from_auth_out)),
        ("ForwardTo", _canonical_xtext(env.forward_to)),
        ("ForwardToAddress", env.forward_to_address),
        ("ClientAccountSelector", env.client_account_selector),
        ("Utf8MailboxNames", "1" if env.utf8_mailbox_names else "0"),
        ("End", "1"),
    ]
    text = "".join(f"{PREFIX}{key}: {_fold(value)}\r\n" for key, value in fields)
    text += "".join(line.rstrip(_TRIM).replace("\n", " ") + "\r\n" for line in env.extra_lines)
    return text.encode(_ENC, _ERRORS)


def reason_lines(reason: str | bytes, code: int, crlf: bool = True) -> bytes:
    """The ``X-MailRelay-Reason``/``ReasonCode`` pair appended on failure (SPEC 2.4).

    ``ReasonCode`` has no trailing space when ``code`` is 0.
    """
    eol = "\r\n" if crlf else "\n"
    code_text = f" {code}" if code else ""
    text = f"{PREFIX}Reason: {printable_ascii(reason)}{eol}{PREFIX}ReasonCode:{code_text}{eol}"
    return text.encode("ascii")
