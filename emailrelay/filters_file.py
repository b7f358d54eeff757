"""Built-in file filters: ``copy:``, ``deliver:``, ``split:`` and ``msgid:`` (SPEC.md 3.9).

One job: what these four built-ins do to the files of one spool message.
filters.py runs them through its ``BUILTIN_MODULES`` hook: `check` vets the
options at start-up, `run` does the work for one message and returns a
`filters.Result`.  They see the same two paths an executable filter sees:
``<id>.content`` and the envelope, ``<id>.envelope.new`` for ``--filter``
and ``<id>.envelope.busy`` for ``--client-filter`` (SPEC.md 3.10).

``copy:[p|pop;h|hardlink;n|nodelete|no_delete]``
    Into every sub-directory of the spool directory (sorted) except dot
    directories and ``postmaster``: a maildir (one with ``tmp``, ``cur`` and
    ``new``) gets the content as ``tmp/<name>`` renamed to ``new/<name>``;
    otherwise, with ``pop``, the envelope only, as ``<id>.envelope``; else
    the content (a hard link with ``hardlink``, a copy if linking fails) and
    then the envelope as ``<id>.envelope``.  Then the originals are deleted
    (the envelope, and the content unless ``pop``) and the result is
    abandon, or with ``nodelete`` the message stays and the result is ok.
    No sub-directories: ok, and a warning (once per process).
``deliver:[h|hardlink;n|nodelete|no_delete;p|pop]``
    For each distinct ``To-Local`` mailbox (sorted): ``<delivery-dir>/<mailbox>``
    is created if missing (0770) and gets the message as ``copy:`` would
    (a maildir gets the content in ``new/``; otherwise content and envelope).
    With no remote recipients and no ``nodelete`` the originals are deleted:
    abandon.  Otherwise ok, the message goes on to forwarding.  No local
    recipients: ok, nothing touched.  ``pop`` is accepted and does nothing
    (as in 2.6).
``split:[raw;<port>]``
    ``To-Remote`` grouped by domain (after the last ``@``; ASCII lower-cased
    unless ``raw``).  The first group keeps the message; each further group
    becomes a new READY message with an id from the server's counter, a hard
    link of the content (a copy if linking fails) and an envelope with
    ``To-Local`` cleared, only that group's recipients, ``ForwardTo`` = the
    domain as written in the group's first address plus ``:<port>``, and,
    when there is more than one group, ``SplitGroupCount``/``SplitGroup``
    extra lines naming every id (the original first).  The original envelope
    is rewritten the same way but keeps its ``To-Local`` lines.
``msgid:``
    Adds ``Message-ID: <secs.usecs.pid.n@domain>`` + CRLF at the top of the
    content when its header section has no ``Message-ID`` (case-insensitive),
    through ``<content>.tmp`` and a rename.

Failure: any error (I/O, a bad mailbox name, an unreadable envelope) gives
``Result(FAIL, response="failed", reason=<the error>)``, so the server
replies ``452 failed`` and a client filter fails the message (SPEC.md 3.5,
3.6).  What a failing ``copy:``, ``deliver:`` or ``split:`` created before the
error is removed again, so a retry does not deliver twice.  The work runs in
a worker thread; like 2.6's built-ins it has no timeout.

Durability: every envelope we create is written under a NEW name, fsynced,
renamed to its READY name, and its directory fsynced; copied content and
maildir files are fsynced before they are renamed or referenced; deletions
and rewrites are followed by a directory fsync.  Files are 0660, created
directories 0770 (SPEC.md 1.5).  File names come from spool.py, except the
maildir names, which are not spool names.

Decisions where 2.6 is odd or SPEC.md leaves a choice:

* Unknown options are a start-up error (2.6 ignores them silently);
  ``deliver:`` options are accepted (SPEC.md section 0).
* A mailbox name must be non-empty, printable, without ``/`` or ``..`` and
  must not start with a dot: the ``--pop-by-name`` rule of SPEC.md section 0.
  All names are checked before anything is delivered.
* ``split:`` with one domain still sets ``ForwardTo`` (2.6 does); no
  SplitGroup lines then.  ``Utf8MailboxNames`` is worked out again for each
  group's recipients.  Every envelope of a group keeps the original's extra
  lines, except earlier SplitGroup lines, which are replaced.  Recipients
  with no ``@`` form a group with an empty ``ForwardTo``.
* As a client filter ``split:`` works on the envelope it is given (the
  ``.busy`` file), not on a ``.envelope.new`` that does not exist (2.6's
  quirk).  The new messages are READY and go in a later forwarding run;
  the original goes on in this run, over the connection already open.
* ``msgid:`` treats the end of the file as the end of the header section
  (a message of headers only gets its Message-ID; 2.6 fails it with
  ``format error``), and takes ``Message-ID :`` (space before the colon,
  RFC 5322 obsolete syntax) as a Message-ID, where 2.6 would add a second
  one.  A header line over 10000 bytes is a ``format error``.
* ``split:`` commits its new messages at once, so they stay even if a
  later filter of the chain rejects the original (as in 2.6).
* ``copy:``/``deliver:`` replace an earlier copy of the same id in a
  sub-directory; hard-linked content in a set-group-id directory is given
  the directory's group when we may (SPEC.md 1.5).

Warnings (``copy:`` with no sub-directories) are appended to `WARNINGS`, once
per text; the caller may log them.  Not here: what abandon, ok or fail do to
the spool afterwards (the workers), parsing the envelope format (envelope.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emailrelay import durable, filters
from emailrelay.envelope import Envelope, EnvelopeError, needs_utf8_mailbox_names, parse, printable, serialise
from emailrelay.spool import CONTENT_SUFFIX, State, content_name, envelope_name

KINDS = ("copy", "deliver", "split", "msgid")

#: Warnings for the caller to log (each text once per process).
WARNINGS: list[str] = []

DIR_MODE = 0o770
#: msgid: refuses a header line longer than this (2.6's reader limit).
HEADER_LINE_LIMIT = 10000
_CHUNK = 1024 * 1024

_FILE_OPTIONS = {
    "p": "pop", "pop": "pop",
    "h": "hardlink", "hardlink": "hardlink",
    "n": "nodelete", "nodelete": "nodelete", "no_delete": "nodelete",
}  # fmt: skip

#: Process-wide counters: maildir names (shared by copy: and deliver:) and msgid:.
_maildir_seq = itertools.count()
_msgid_seq = itertools.count()


class FileFilterError(Exception):
    """A built-in's own failure; str() is the reason."""


@dataclass(frozen=True)
class FileOptions:
    pop: bool = False
    hardlink: bool = False
    nodelete: bool = False


@dataclass(frozen=True)
class SplitOptions:
    raw: bool = False
    port: str = ""


def _items(value: str) -> list[str]:
    return [item for item in value.split(";") if item]


def file_options(kind: str, value: str) -> FileOptions:
    """Options of ``copy:`` or ``deliver:``; raises FilterSpecError."""
    found = set()
    for item in _items(value):
        if item not in _FILE_OPTIONS:
            raise filters.FilterSpecError(f"{kind}: invalid option: {printable(item)}")
        found.add(_FILE_OPTIONS[item])
    return FileOptions(pop="pop" in found, hardlink="hardlink" in found, nodelete="nodelete" in found)


def split_options(value: str) -> SplitOptions:
    """Options of ``split:``; raises FilterSpecError."""
    raw, port = False, ""
    for item in _items(value):
        if item == "raw":
            raw = True
        elif item.isascii() and item.isdigit():
            if not 0 < int(item) < 65536:
                raise filters.FilterSpecError(f"split: invalid port number: {item}")
            port = str(int(item))
        else:
            raise filters.FilterSpecError(f"split: invalid option: {printable(item)}")
    return SplitOptions(raw, port)


def check(kind: str, value: str) -> None:
    """Check a built-in's options at start-up; raises filters.FilterSpecError."""
    if kind in ("copy", "deliver"):
        file_options(kind, value)
    elif kind == "split":
        split_options(value)
    elif kind == "msgid":
        if value:
            raise filters.FilterSpecError(f"msgid: invalid option: {printable(value)}")
    else:
        raise filters.FilterSpecError(f"not a file filter: {kind}")


async def run(
    kind: str,
    value: str,
    content: str,
    envelope: str,
    *,
    client: bool,
    timeout: float,
    context: filters.FilterContext,
) -> filters.Result:
    """Run one built-in on one message (in a worker thread); never raises for file errors."""
    spool_dir = Path(context.spool_dir) if context.spool_dir else Path(content).parent
    msg_id = context.msg_id or _id_from_content(content)
    try:
        if kind == "copy":
            outcome = await asyncio.to_thread(
                copy_message, Path(content), Path(envelope), msg_id, spool_dir, file_options(kind, value)
            )
        elif kind == "deliver":
            delivery_dir = Path(context.delivery_dir) if context.delivery_dir else spool_dir
            outcome = await asyncio.to_thread(
                deliver_message,
                Path(content),
                Path(envelope),
                msg_id,
                delivery_dir,
                file_options(kind, value),
            )
        elif kind == "split":
            allocate = _threadsafe(context.new_id)
            outcome = await asyncio.to_thread(
                split_message,
                Path(content),
                Path(envelope),
                msg_id,
                spool_dir,
                split_options(value),
                allocate,
            )
        elif kind == "msgid":
            outcome = await asyncio.to_thread(add_message_id, Path(content), context.domain)
        else:
            raise FileFilterError(f"not a file filter: {kind}")
    except (OSError, EnvelopeError, FileFilterError, filters.FilterSpecError) as e:
        return filters.Result(filters.Outcome.FAIL, response="failed", reason=f"{kind}: {_describe(e)}")
    return filters.Result(outcome)


def _id_from_content(content: str) -> str:
    name = os.path.basename(content)
    return name[: -len(CONTENT_SUFFIX)] if name.endswith(CONTENT_SUFFIX) else name


def _describe(e: BaseException) -> str:
    if isinstance(e, EnvelopeError):
        return f"invalid envelope: {e}"
    if isinstance(e, OSError):
        text = (e.strerror or str(e)).lower()
        return f"{text}: {e.filename}" if e.filename else text
    return str(e)


def _warn_once(text: str) -> None:
    if text not in WARNINGS:
        WARNINGS.append(text)


def _threadsafe(new_id: Callable[[], str] | None) -> Callable[[], str]:
    """new_id() called on the event loop's thread, for use from a worker thread.

    The spool's id counter is not thread-safe, and the event loop also
    allocates ids (at MAIL FROM); so each call hops back to the loop.
    """
    if new_id is None:

        def refuse() -> str:
            raise FileFilterError("no message id allocator")

        return refuse
    loop = asyncio.get_running_loop()

    async def call() -> str:
        return new_id()

    def allocate() -> str:
        try:
            return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=30)
        except TimeoutError:  # the event loop is stopping
            raise FileFilterError("cannot allocate a new message id") from None

    return allocate


# -- private spool-file primitives (written here, not in spool.py) ----------


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _copy_file(source: Path, target: Path, prefix: bytes = b"") -> None:
    """Copy prefix + source to a new file target (0660), fsynced; no partial file on error."""
    with open(source, "rb", buffering=0) as f:
        fd = durable.create_exclusive(target)
        try:
            durable.write_all(fd, prefix)
            while chunk := f.read(_CHUNK):
                durable.write_all(fd, chunk)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(target)
            raise
        os.close(fd)


def _link_or_copy(source: Path, target: Path, hardlink: bool) -> None:
    """target as a hard link of source when asked and possible, else a copy.

    Nothing may exist at target.  A link lives in a directory that the caller
    fsyncs; a copy is fsynced here.
    """
    if hardlink:
        try:
            os.link(source, target)
        except FileExistsError:
            raise
        except OSError:
            pass  # another file system, too many links, not allowed: copy
        else:
            _fix_group(target)
            return
    _copy_file(source, target)


def _fix_group(path: Path) -> None:
    """Give a hard link in a set-group-id directory that directory's group, when we may."""
    try:
        parent = os.stat(path.parent)
        if parent.st_mode & stat.S_ISGID and os.stat(path).st_gid != parent.st_gid:
            os.chown(path, -1, parent.st_gid)
    except OSError:
        pass


def _commit_envelope(data: bytes, directory: Path, msg_id: str, created: list[Path]) -> None:
    """Write envelope bytes as ``<directory>/<id>.envelope``, durably.

    Written as ``<id>.envelope.new`` (a stale one is replaced), fsynced,
    renamed to the READY name (replacing an earlier copy), directory fsynced.
    """
    temp = directory / envelope_name(msg_id, State.NEW)
    final = directory / envelope_name(msg_id, State.READY)
    _unlink_quietly(temp)
    durable.write_file_durably(temp, data)
    try:
        os.rename(temp, final)
    except BaseException:
        _unlink_quietly(temp)
        raise
    created.append(final)
    durable.fsync_directory(directory)


def _rewrite_envelope(path: Path, data: bytes) -> None:
    """Replace an envelope: ``<path>.tmp`` written and fsynced, renamed over it (SPEC.md 2.5)."""
    temp = path.with_name(path.name + ".tmp")
    _unlink_quietly(temp)
    durable.write_file_durably(temp, data)
    try:
        os.rename(temp, path)
    except BaseException:
        _unlink_quietly(temp)
        raise
    durable.fsync_directory(path.parent)


def _delete_originals(envelope: Path, content: Path | None) -> None:
    """Remove the message: envelope first, so it is never left without content."""
    _unlink_quietly(envelope)
    if content is not None:
        _unlink_quietly(content)
    durable.fsync_directory(envelope.parent)


def _roll_back(created: list[Path]) -> None:
    for path in reversed(created):
        try:
            os.unlink(path)
        except OSError:
            pass


def _make_directory(path: Path) -> None:
    """Create a directory 0770 (keeping an inherited set-group-id bit) unless it exists."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise
        return
    mode = os.stat(path).st_mode
    if stat.S_IMODE(mode) & 0o777 != DIR_MODE:
        os.chmod(path, (stat.S_IMODE(mode) & ~0o777) | DIR_MODE)


# -- delivery into one directory (copy: and deliver:) -----------------------


def _is_maildir(directory: Path) -> bool:
    return all((directory / sub).is_dir() for sub in ("tmp", "cur", "new"))


def maildir_name() -> str:
    """``<secs>.<usecs, 6 digits>.<pid>.<hostname>.<seq>``, hostname with ``/ \\ .`` as ``_``."""
    now = time.time_ns() // 1000
    host = socket.gethostname().translate(str.maketrans("/\\.", "___"))
    return f"{now // 1_000_000}.{now % 1_000_000:06d}.{os.getpid()}.{host}.{next(_maildir_seq)}"


def _deliver_to(
    directory: Path,
    msg_id: str,
    content: Path,
    envelope_data: bytes,
    *,
    hardlink: bool,
    envelope_only: bool,
    created: list[Path],
) -> None:
    """Put one message into one directory (a maildir, a pop-by-name directory or a plain one)."""
    if _is_maildir(directory):
        name = maildir_name()
        temp, final = directory / "tmp" / name, directory / "new" / name
        _link_or_copy(content, temp, hardlink)
        try:
            os.rename(temp, final)
        except BaseException:
            _unlink_quietly(temp)
            raise
        created.append(final)
        durable.fsync_directory(final.parent)
        return
    if not envelope_only:
        target = directory / content_name(msg_id)
        _unlink_quietly(target)
        _link_or_copy(content, target, hardlink)
        created.append(target)
    _commit_envelope(envelope_data, directory, msg_id, created)


# -- copy: ------------------------------------------------------------------


def copy_message(
    content: Path, envelope: Path, msg_id: str, spool_dir: Path, options: FileOptions
) -> filters.Outcome:
    """``copy:`` for one message; returns OK or ABANDON (originals deleted)."""
    with os.scandir(spool_dir) as it:
        names = [e.name for e in it if e.is_dir() and not e.name.startswith(".") and e.name != "postmaster"]
    names.sort(key=lambda n: n.encode("utf-8", "surrogateescape"))
    if not names:
        _warn_once(f"copy filter: no sub-directories of [{spool_dir}] to copy in to")
        return filters.Outcome.OK
    data = envelope.read_bytes()
    created: list[Path] = []
    try:
        for name in names:
            _deliver_to(
                spool_dir / name, msg_id, content, data,
                hardlink=options.hardlink, envelope_only=options.pop, created=created,
            )  # fmt: skip
    except BaseException:
        _roll_back(created)
        raise
    if options.nodelete:
        return filters.Outcome.OK
    _delete_originals(envelope, None if options.pop else content)
    return filters.Outcome.ABANDON


# -- deliver: ---------------------------------------------------------------


def mailbox_problem(name: str) -> str:
    """Why a To-Local mailbox name cannot be a directory name, or "" if it can."""
    if not name:
        return "empty mailbox name"
    if not name.isprintable() or "/" in name or ".." in name or name.startswith("."):
        return f"invalid mailbox name: {printable(name)}"
    return ""


def deliver_message(
    content: Path, envelope: Path, msg_id: str, delivery_dir: Path, options: FileOptions
) -> filters.Outcome:
    """``deliver:`` for one message; returns OK or ABANDON (originals deleted)."""
    data = envelope.read_bytes()
    env = parse(data)
    if not env.to_local:
        return filters.Outcome.OK
    mailboxes = sorted(set(env.to_local), key=lambda n: n.encode("utf-8", "surrogateescape"))
    for name in mailboxes:
        if problem := mailbox_problem(name):
            raise FileFilterError(problem)
    created: list[Path] = []
    try:
        for name in mailboxes:
            directory = delivery_dir / name
            _make_directory(directory)
            _deliver_to(
                directory, msg_id, content, data,
                hardlink=options.hardlink, envelope_only=False, created=created,
            )  # fmt: skip
    except BaseException:
        _roll_back(created)
        raise
    if env.to_remote or options.nodelete:
        return filters.Outcome.OK
    _delete_originals(envelope, content)
    return filters.Outcome.ABANDON


# -- split: -----------------------------------------------------------------

_SPLIT_KEYS = ("X-MailRelay-SplitGroupCount:", "X-MailRelay-SplitGroup:")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _domain(address: str) -> str:
    return address.rpartition("@")[2] if "@" in address else ""


def split_groups(recipients: list[str], options: SplitOptions) -> list[tuple[str, list[str]]]:
    """(ForwardTo, recipients) per domain, in sorted domain order."""
    groups: dict[str, list[str]] = {}
    for address in recipients:
        domain = _domain(address)
        key = domain if options.raw else domain.translate(_ASCII_LOWER)
        groups.setdefault(key, []).append(address)
    result = []
    for key in sorted(groups, key=lambda d: d.encode("utf-8", "surrogateescape")):
        members = groups[key]
        domain = _domain(members[0])
        forward_to = f"{domain}:{options.port}" if domain and options.port else domain
        result.append((forward_to, members))
    return result


def split_message(
    content: Path,
    envelope: Path,
    msg_id: str,
    spool_dir: Path,
    options: SplitOptions,
    new_id: Callable[[], str],
) -> filters.Outcome:
    """``split:`` for one message; always OK (errors raise)."""
    env = parse(envelope.read_bytes())
    groups = split_groups(env.to_remote, options)
    if not groups:
        return filters.Outcome.OK
    created: list[Path] = []
    try:
        ids = [msg_id] + [_reserve_id(content, spool_dir, new_id, created) for _ in groups[1:]]
        extra = env.extra_lines
        if len(groups) > 1:
            extra = [line for line in extra if not line.startswith(_SPLIT_KEYS)]
            extra += [f"X-MailRelay-SplitGroupCount: {len(ids)}"] + [
                f"X-MailRelay-SplitGroup: {i}" for i in ids
            ]
        for group_id, (forward_to, members) in list(zip(ids, groups, strict=True))[1:]:
            part = _narrowed(env, forward_to, members, extra, to_local=[])
            _commit_envelope(serialise(part), spool_dir, group_id, created)
        forward_to, members = groups[0]
        original = _narrowed(env, forward_to, members, extra, to_local=env.to_local)
        if original != env:
            _rewrite_envelope(envelope, serialise(original))
    except BaseException:
        _roll_back(created)
        raise
    return filters.Outcome.OK


def _narrowed(
    env: Envelope, forward_to: str, members: list[str], extra: list[str], *, to_local: list[str]
) -> Envelope:
    return dataclasses.replace(
        env,
        to_local=list(to_local),
        to_remote=list(members),
        forward_to=forward_to,
        utf8_mailbox_names=needs_utf8_mailbox_names(env.from_address, members),
        extra_lines=list(extra),
    )


def _reserve_id(content: Path, spool_dir: Path, new_id: Callable[[], str], created: list[Path]) -> str:
    """A fresh id whose content (a hard link, or a copy) now exists and that has no envelope."""
    for _ in range(100):
        candidate = new_id()
        target = spool_dir / content_name(candidate)
        try:
            _link_or_copy(content, target, hardlink=True)
        except FileExistsError:
            continue  # left by an earlier process with our pid
        if any((spool_dir / envelope_name(candidate, state)).exists() for state in State):
            _unlink_quietly(target)
            continue
        created.append(target)
        return candidate
    raise FileFilterError("cannot allocate a new message id")


# -- msgid: -----------------------------------------------------------------


def new_message_id(domain: str) -> str:
    """``<secs.usecs.pid.n@domain>`` (usecs not padded, n from 0, as in 2.6)."""
    now = time.time_ns() // 1000
    return f"<{now // 1_000_000}.{now % 1_000_000}.{os.getpid()}.{next(_msgid_seq)}@{domain}>"


def has_message_id(content: Path) -> bool:
    """True if the header section has a Message-ID header; raises FileFilterError on a format error."""
    with open(content, "rb") as f:
        while line := f.readline(HEADER_LINE_LIMIT + 3):
            text = line.rstrip(b"\n").rstrip(b"\r")
            if len(text) > HEADER_LINE_LIMIT:
                raise FileFilterError("format error")
            if not text:
                return False  # end of the header section
            name, colon, _ = text.partition(b":")
            if colon and name.rstrip(b" \t").lower() == b"message-id":
                return True
    return False


def add_message_id(content: Path, domain: str) -> filters.Outcome:
    """``msgid:`` for one message: prepend a Message-ID if there is none; returns OK."""
    if has_message_id(content):
        return filters.Outcome.OK
    temp = content.with_name(content.name + ".tmp")
    _unlink_quietly(temp)
    header = f"Message-ID: {new_message_id(domain)}\r\n".encode("utf-8", "surrogateescape")
    _copy_file(content, temp, header)
    try:
        os.rename(temp, content)
    except BaseException:
        _unlink_quietly(temp)
        raise
    durable.fsync_directory(content.parent)
    return filters.Outcome.OK


__all__ = [
    "KINDS",
    "WARNINGS",
    "FileFilterError",
    "FileOptions",
    "SplitOptions",
    "add_message_id",
    "check",
    "copy_message",
    "deliver_message",
    "file_options",
    "mailbox_problem",
    "maildir_name",
    "new_message_id",
    "run",
    "split_groups",
    "split_message",
    "split_options",
]
