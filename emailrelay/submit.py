"""The ``emailrelay-submit`` console script: put one message into a spool directory.

One job: read a message (standard input, ``--input-file`` and ``--content``
lines), work out its envelope sender and recipients (from the options, else
from the ``From:``/``Sender:`` and ``To:``/``Cc:``/``Bcc:`` headers), apply
the ``--content-*`` header edits, and commit it to the spool through
:mod:`emailrelay.spool` (content fsynced, envelope written and renamed, the
directory fsynced), as E-MailRelay 2.6b's ``emailrelay-submit`` does
(SPEC.md 10.1). Applications run it once per message, like sendmail, so it
imports only what it needs and streams the body: the header block is parsed,
the body is copied through in chunks with every line ending made CRLF.

Content rules: header lines are read up to the first empty line (one
trailing CR stripped per line); every stored line ends CRLF; exactly one
blank line separates the headers from the body (added if the input had
none). Headers we insert go on top in the order To, From, Message-ID, Date.

Exit codes and output: 0 on success (with ``-v`` the full content path of
each stored message, with ``-n`` its file name, on stdout); 1 on any error,
with ``emailrelay-submit: <error>`` on stderr, and no partial files left in
the spool. Command-line usage errors are ``emailrelay-submit: error: <msg>``
plus a "try" line, and exit 1.

Where we differ from 2.6 (for the man page's COMPATIBILITY section):

* usage errors exit 1 (2.6 printed them and exited 0);
* empty addresses are refused, as in 2.6b (``invalid from address: []``);
* ``--content-to``/``--content-from`` remove only the To/Cc/Bcc or From/Sender
  header fields (with their continuation lines); 2.6 deleted everything from
  the first matching header to the end of the header block;
* the spool directory must be writable (checked before any input is read),
  and the default follows SPEC.md section 0.

Choices where SPEC.md is silent: ``--content`` lines come before the input
(so they may be headers that the input continues); ``--input-file`` is read
even with ``--no-stdin``; ``--to`` items are split at commas and trimmed,
trailing arguments are not split; with ``--bcc-split`` each Bcc copy gets
``bcc: <address>`` where the first Bcc field was, and ``--content-to`` lists
only the non-Bcc recipients; an input without any blank line is all header.

Start-up (bench/submit.py measures it; tests/unit/test_submit_imports.py
guards it): the classes here are plain classes, not dataclasses, and typing
is not imported, since importing either costs milliseconds (see
:mod:`emailrelay.options`); the spool, base64 (``--content``) and
email.utils (addresses taken from headers) are imported where they are used.

Not responsible for: option syntax (:mod:`emailrelay.options`), file names,
states and durability (:mod:`emailrelay.spool`), the envelope format
(:mod:`emailrelay.envelope`).
"""

from __future__ import annotations

import os
import sys
import time

from emailrelay import entry, options

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import BinaryIO

    from emailrelay.spool import NewMessage, Spool

#: Body bytes are copied in chunks of this size.
CHUNK = 64 * 1024

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class SubmitError(Exception):
    """A one-line error for ``emailrelay-submit: <error>`` and exit 1."""


class Request:
    """What the command line asks for, independent of the option parser."""

    def __init__(
        self,
        *,
        spool_dir: str | None = None,
        from_address: str | None = None,
        to: list[str] | None = None,
        input_file: str | None = None,
        no_stdin: bool = False,
        body_only: bool = False,
        content_lines: list[bytes] | None = None,
        content_to: bool = False,
        content_from: bool = False,
        content_date: bool = False,
        message_id_domain: str | None = None,
        bcc_split: bool = False,
        copy: bool = False,
        verbose: bool = False,
        filename: bool = False,
        from_auth_in: str | None = None,
        from_auth_out: str | None = None,
        debug: bool = False,
    ) -> None:
        self.spool_dir = spool_dir
        self.from_address = from_address
        self.to: list[str] = [] if to is None else to
        self.input_file = input_file
        self.no_stdin = no_stdin
        self.body_only = body_only
        self.content_lines: list[bytes] = [] if content_lines is None else content_lines
        self.content_to = content_to
        self.content_from = content_from
        self.content_date = content_date
        self.message_id_domain = message_id_domain
        self.bcc_split = bcc_split
        self.copy = copy
        self.verbose = verbose
        self.filename = filename
        self.from_auth_in = from_auth_in
        self.from_auth_out = from_auth_out
        self.debug = debug


# --------------------------------------------------------------------------
# command line


def _decode_content(value: str) -> list[bytes]:
    """One ``--content`` value: base64 text, or a blank line when 0 or 1 characters."""
    if len(value) <= 1:
        return [b""]
    import base64
    import binascii

    text = value.strip()
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SubmitError(f"invalid base64 content: [{value}]") from None
    if data.endswith(b"\n"):
        data = data[:-1]
    return [_strip_cr(line) for line in data.split(b"\n")]


def _request(parsed: options.Parsed) -> Request:
    to: list[str] = []
    joined = parsed.value("to")
    if joined is not None:
        to += [item.strip(" \t") for item in joined.split(",")]
    to += [arg[1:] if arg.startswith("\\") else arg for arg in parsed.arguments]
    message_id = parsed.value("content-message-id")
    spool_dir = parsed.value("spool-dir")
    content: list[bytes] = []
    if parsed.has("content"):
        for value in (parsed.value("content") or "").split(","):
            content += _decode_content(value)
    return Request(
        spool_dir=None if spool_dir is None else options.expand_app(spool_dir),
        from_address=parsed.value("from"),
        to=to,
        input_file=parsed.value("input-file"),
        no_stdin=parsed.flag("no-stdin"),
        body_only=parsed.flag("body"),
        content_lines=content,
        content_to=parsed.flag("content-to"),
        content_from=parsed.flag("content-from"),
        content_date=parsed.flag("content-date"),
        message_id_domain=None if message_id is None else (message_id or "local"),
        bcc_split=parsed.flag("bcc-split"),
        copy=parsed.flag("copy"),
        verbose=parsed.flag("verbose"),
        filename=parsed.flag("filename"),
        from_auth_in=parsed.value("from-auth-in"),
        from_auth_out=parsed.value("from-auth-out"),
        debug=parsed.flag("debug"),
    )


# --------------------------------------------------------------------------
# addresses and headers


def _check_address(kind: str, address: str) -> str:
    """Refuse empty, unprintable, non-UTF-8 or ``@``-edged addresses (SPEC 6.4, 2.6b)."""
    bad = (
        not address
        or address.startswith("@")
        or address.endswith("@")
        or any(ord(c) < 0x20 or ord(c) == 0x7F or 0xDC80 <= ord(c) <= 0xDCFF for c in address)
    )
    if bad:
        from emailrelay.envelope import printable

        raise SubmitError(f"invalid {kind} address: [{printable(address)}]")
    return address


def _strip_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line


class HeaderField:
    """One header field: its lower-case name and its lines (no terminators)."""

    __slots__ = ("name", "lines")

    def __init__(self, name: str, lines: list[bytes]) -> None:
        self.name = name
        self.lines = lines

    @property
    def value(self) -> str:
        """The unfolded value (UTF-8, undecodable bytes kept as surrogates)."""
        text = b"\r\n".join(self.lines).decode("utf-8", "surrogateescape")
        return text.partition(":")[2].replace("\r\n", "").strip()


def split_fields(lines: list[bytes]) -> list[HeaderField]:
    """Group header lines into fields; a line starting SP/TAB continues the previous one."""
    fields: list[HeaderField] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].lines.append(line)
        else:
            name = line.partition(b":")[0].strip().lower().decode("latin-1") if b":" in line else ""
            fields.append(HeaderField(name, [line]))
    return fields


def addresses(fields: list[HeaderField], name: str) -> list[str]:
    """The mailbox addresses in every ``name`` header (groups expanded, empty ones dropped)."""
    values = [f.value for f in fields if f.name == name]
    if not values:
        return []
    from email.utils import getaddresses

    return [addr for _, addr in getaddresses(values) if addr]


def derived_from(fields: list[HeaderField]) -> str | None:
    """The sender from the headers: the single From: address, else the single Sender:,
    else the first From:, else the first Sender:; None if there is none."""
    from_addrs = addresses(fields, "from")
    sender_addrs = addresses(fields, "sender")
    for candidates in (from_addrs, sender_addrs):
        if len(candidates) == 1:
            return candidates[0]
    for candidates in (from_addrs, sender_addrs):
        if candidates:
            return candidates[0]
    return None


def _date_header(now: float) -> bytes:
    t = time.localtime(now)
    offset = t.tm_gmtoff or 0
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset) // 60, 60)
    month = _MONTHS[t.tm_mon - 1]
    text = (
        f"Date: {t.tm_mday:02d} {month} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {sign}{hours:02d}{minutes:02d}"
    )
    return text.encode("ascii")


def _message_id_header(now: float, domain: str) -> bytes:
    secs = int(now)
    usecs = int((now - secs) * 1_000_000)
    return f"Message-ID: <{secs}.{usecs:06d}.{os.getpid()}@{domain}>".encode("utf-8", "surrogateescape")


class Plan:
    """One message to store: its envelope recipients and its header block."""

    __slots__ = ("recipients", "header_block")

    def __init__(self, recipients: list[str], header_block: bytes) -> None:
        self.recipients = recipients
        self.header_block = header_block


def plan_messages(
    request: Request,
    headers: list[bytes],
    sender: str,
    sender_is_fallback: bool,
    recipients: list[str],
    now: float,
) -> list[Plan]:
    """The messages to store (more than one only with ``--bcc-split``), with edited headers."""
    fields = split_fields(headers)
    bcc = addresses(fields, "bcc")
    split = request.bcc_split and len(bcc) > 1
    main_recipients = [r for r in recipients if r not in bcc] if split else recipients

    removed: set[str] = set()
    if request.content_to:
        removed |= {"to", "cc", "bcc"}
    if request.content_from:
        removed |= {"from", "sender"}
    present = {f.name for f in fields}
    top: list[bytes] = []
    if request.content_to:
        top.append(b"To: " + ",".join(main_recipients).encode("utf-8", "surrogateescape"))
    if request.content_from:
        shown = "anonymous:;" if sender_is_fallback else sender
        top.append(b"From: " + shown.encode("utf-8", "surrogateescape"))
    if request.message_id_domain is not None and "message-id" not in present:
        top.append(_message_id_header(now, request.message_id_domain))
    if request.content_date and "date" not in present:
        top.append(_date_header(now))
    kept = [f for f in fields if f.name not in removed]

    def block(bcc_line: bytes | None) -> bytes:
        """Header block; with ``bcc_line`` it replaces the Bcc fields (at the first one)."""
        lines = list(top)
        pending = [] if bcc_line is None else [bcc_line]
        for f in kept:
            if f.name == "bcc" and split:
                lines += pending
                pending = []
            else:
                lines += f.lines
        lines += pending
        return b"".join(line + b"\r\n" for line in lines) + b"\r\n"

    if not split:
        return [Plan(recipients, block(None))]
    plans = [Plan(main_recipients, block(None))] if main_recipients else []
    for address in bcc:
        plans.append(Plan([address], block(b"bcc: " + address.encode("utf-8", "surrogateescape"))))
    return plans


# --------------------------------------------------------------------------
# input


class Input:
    """The message source: ``--content`` lines, then the input file or stdin."""

    def __init__(self, prefix: list[bytes], stream: BinaryIO | None, terminal: bool) -> None:
        self.prefix = list(prefix)
        self.stream = stream
        self.terminal = terminal

    def read_headers(self, body_only: bool) -> list[bytes]:
        """Header lines up to the first empty line (consumed, not returned).

        With ``body_only`` the stream is all body: only ``--content`` lines can
        be headers.
        """
        headers: list[bytes] = []
        while self.prefix:
            line = self.prefix.pop(0)
            if not line:
                return headers
            headers.append(line)
        if body_only or self.stream is None:
            return headers
        while True:
            raw = self.stream.readline()
            if not raw:
                return headers
            line = _strip_cr(raw[:-1] if raw.endswith(b"\n") else raw)
            if not line:
                return headers
            headers.append(line)

    def copy_body(self, write: _Writer) -> None:
        """Write the body, every line ending CRLF (one trailing CR per line stripped)."""
        for line in self.prefix:
            write(line + b"\r\n")
        self.prefix = []
        if self.stream is None:
            return
        if self.terminal:
            while True:
                raw = self.stream.readline()
                if not raw:
                    return
                line = _strip_cr(raw[:-1] if raw.endswith(b"\n") else raw)
                if line == b".":
                    return
                write(line + b"\r\n")
        carry = b""
        at_line_start = True
        while True:
            chunk = self.stream.read(CHUNK)
            if not chunk:
                break
            data = carry + chunk
            carry = b""
            if data.endswith(b"\r"):
                carry, data = b"\r", data[:-1]
            if data:
                write(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
                at_line_start = data.endswith(b"\n")
        if carry or not at_line_start:
            write(b"\r\n")  # an unterminated last line (a lone trailing CR is its terminator)


class _Writer:
    """Callable that appends to a message and counts the bytes."""

    def __init__(self, msg: NewMessage) -> None:
        self.msg = msg
        self.size = 0

    def __call__(self, data: bytes) -> None:
        self.msg.write(data)
        self.size += len(data)


def _open_input(request: Request) -> tuple[BinaryIO | None, bool]:
    if request.input_file is not None:
        try:
            return open(request.input_file, "rb"), False  # closed by submit()
        except OSError as e:
            raise SubmitError(f"cannot open input file: {request.input_file}: {_strerror(e)}") from None
    if request.no_stdin or sys.stdin is None:
        return None, False
    stdin = sys.stdin.buffer
    try:
        terminal = os.isatty(stdin.fileno())
    except (OSError, ValueError):
        terminal = False
    return stdin, terminal


def _strerror(e: OSError) -> str:
    return (e.strerror or str(e)).lower()


# --------------------------------------------------------------------------
# storing


def _copy_body(spool_msg: NewMessage, source: NewMessage, offset: int, size: int) -> None:
    """Copy ``size`` body bytes from another (flushed) message's content file."""
    with open(source.content_path, "rb") as f:
        f.seek(offset)
        while size > 0:
            data = f.read(min(CHUNK, size))
            if not data:
                raise SubmitError(f"short read from {source.content_path}")
            spool_msg.write(data)
            size -= len(data)


def submit(request: Request, debug: _Debug) -> list[str]:
    """Store the message(s); returns the content paths, in commit order.

    Raises:
        SubmitError, SpoolError, OSError: nothing of the failed message is left behind.
    """
    from emailrelay.spool import Spool, check_spool_dir, default_spool_dir

    sender = request.from_address
    if sender is not None:
        _check_address("from", sender)
    explicit_to = [_check_address("to", a) for a in request.to]

    if request.spool_dir is None:
        spool_dir = str(default_spool_dir())
    elif request.spool_dir == "":
        raise SubmitError('invalid spool directory: ""')
    else:
        spool_dir = request.spool_dir
    check_spool_dir(spool_dir)
    debug(f"spool directory {spool_dir}")

    stream, terminal = _open_input(request)
    try:
        source = Input(request.content_lines, stream, terminal)
        headers = source.read_headers(request.body_only)
        fields = split_fields(headers)
        fallback = False
        if sender is None:
            sender = derived_from(fields)
            if sender is None:
                sender, fallback = "anonymous", True
            _check_address("from", sender)
        recipients = explicit_to
        if not recipients:
            recipients = [
                _check_address("to", a)
                for f in fields
                if f.name in ("to", "cc", "bcc")
                for a in addresses([f], f.name)
            ]
        if not recipients:
            raise SubmitError("no recipients")
        plans = plan_messages(request, headers, sender, fallback, recipients, time.time())
        debug(f"from {sender!r}, {len(plans)} message(s)")
        return _store(Spool(spool_dir), source, plans, request, sender)
    finally:
        if stream is not None and request.input_file is not None:
            stream.close()


def _auth_value(value: str | None) -> str:
    """``-i``/``-o``: not given -> empty; empty -> ``<>``; else xtext."""
    if value is None:
        return ""
    if value == "":
        return "<>"
    from emailrelay.envelope import xtext_encode

    return xtext_encode(value)


def _store(spool: Spool, source: Input, plans: list[Plan], request: Request, sender: str) -> list[str]:
    """Create, fill and commit one spool message per plan; discard all uncommitted ones on error."""
    from emailrelay.envelope import Envelope, needs_utf8_mailbox_names

    msgs: list[NewMessage] = []
    committed = 0
    try:
        for plan in plans:
            msg = spool.create()
            msgs.append(msg)
            msg.write(plan.header_block)
        writer = _Writer(msgs[0])
        source.copy_body(writer)
        msgs[0].flush()
        for msg in msgs[1:]:
            _copy_body(msg, msgs[0], len(plans[0].header_block), writer.size)
        paths: list[str] = []
        for plan, msg in zip(plans, msgs, strict=True):
            envelope = Envelope(
                content="unknown",
                from_address=sender,
                to_remote=list(plan.recipients),
                authentication="",
                client="127.0.0.1",
                mail_from_auth_in=_auth_value(request.from_auth_in),
                mail_from_auth_out=_auth_value(request.from_auth_out),
                utf8_mailbox_names=needs_utf8_mailbox_names(sender, plan.recipients),
            )
            spool.commit_sync(msg, envelope)
            committed += 1
            paths.append(str(msg.content_path))
    finally:
        for msg in msgs[committed:]:
            spool.discard(msg)
    if request.copy:
        for msg in msgs:
            spool.copy_to_subdirectories(msg.id)
    return paths


# --------------------------------------------------------------------------
# entry point


class _Debug:
    def __init__(self, prog: str, enabled: bool) -> None:
        self.prog = prog
        self.enabled = enabled

    def __call__(self, text: str) -> None:
        if self.enabled:
            print(f"{self.prog}: debug: {text}", file=sys.stderr)


def run(prog: str, args: list[str]) -> int:
    """Run with the arguments after argv[0]; returns the exit code."""
    debug_on = False
    if "--debug" in args:
        end = args.index("--") if "--" in args else len(args)
        debug_on = "--debug" in args[:end]
        args = [a for i, a in enumerate(args) if not (a == "--debug" and i < end)]
    parsed = entry.front(options.SUBMIT_OPTIONS, prog, args)
    if isinstance(parsed, int):
        return parsed
    from emailrelay.spool import SpoolError

    try:
        request = _request(parsed)
        request.debug = request.debug or debug_on
        paths = submit(request, _Debug(prog, request.debug))
    except (SubmitError, SpoolError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"{prog}: {where}{_strerror(e)}", file=sys.stderr)
        return 1
    for path in paths:
        if request.verbose:
            print(os.path.abspath(path))
        elif request.filename:
            print(os.path.basename(path))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``emailrelay-submit`` console script.

    Args:
        argv: the whole command line including the program name; defaults to
            sys.argv.

    Returns:
        The exit code: 0 stored, 1 error.
    """
    return entry.main(run, argv, "emailrelay-submit")

if __name__ == "__main__":
    sys.exit(main())
