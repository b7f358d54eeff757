"""The ``emailrelay-filter-copy`` console script: envelopes into every spool sub-directory.

One job: E-MailRelay's legacy ``emailrelay-filter-copy`` (SPEC.md 8.4; not
shipped with 2.5/2.6, whose built-in ``copy:pop`` filter replaced it), as a
thin command over that built-in: every copy is made by
``filters_file.run("copy", "pop", ...)``, the same code as
``--filter=copy:pop``, so the two can never disagree.

Filter mode, ``emailrelay-filter-copy <content-file> [<envelope-file>]``,
for ``emailrelay --pop-by-name --filter=<this program>``: the envelope is
the second argument (emailrelay passes it), else derived from the content
file name as 2.x did: ``<id>.envelope.new``, falling back to
``<id>.envelope``.  The envelope is copied (durably, as ``<id>.envelope``)
into every sub-directory of the content file's directory, except dot
directories and ``postmaster``, as ``copy:pop`` does; the content stays in
the spool directory, shared by the copies (POP's "content in parent").
Then the original envelope is removed and the exit code is 100 (the server
replies 250 and does not commit the message: its copies are the message
now).  On error nothing is left copied, the output is the two lines
``<<filter failed>>`` and ``<<reason>>`` (the SMTP reply text and the
reason, SPEC.md 3.4) and the exit code is 1; no sub-directories is such an
error (``no sub-directories to copy into``).

Spool mode, ``emailrelay-filter-copy --spool-dir <dir> [--verbose]`` (also
``-d``): the same for every waiting (``<id>.envelope``) message of the
directory; ``--verbose`` prints ``copied: <envelope>`` for each.  Errors are
``<prog>: error: <text>`` lines on stderr; a message that fails is left as
it was and the others are still copied.  Exit 0 when every message was
copied (or there was none), 1 otherwise.

Where we differ from the 2.x program (for the man page): spool mode exits 0
on success (2.x's inverted test exits 1 whether it worked or not); a failed
copy is removed again instead of left half made; copies skip dot directories
and ``postmaster`` and a maildir sub-directory gets the content in ``new/``
(the built-in's rules; 2.x copied the envelope into every sub-directory);
``--help`` exits 0 (2.x: 1); ``--version`` is new; spool mode takes every
``*.envelope``, not only names starting ``emailrelay``.

Not responsible for: the copying itself (filters_file.py), file names
(spool.py), option syntax (options.py).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from emailrelay import entry, filters, options

FAILED = "filter failed"
USAGE = "usage error: must be run by emailrelay with the full path of a message content file"
NO_SUBDIRECTORIES = "no sub-directories to copy into"


class CopyError(Exception):
    """One message could not be copied; str() is the reason."""


async def copy_one(content: Path, envelope: Path, msg_id: str) -> None:
    """Copy one message's envelope into the sub-directories and remove the original.

    Raises:
        CopyError: the built-in failed (nothing is left copied), or there
            are no sub-directories.
    """
    from emailrelay import filters_file

    context = filters.FilterContext(spool_dir=str(content.parent), msg_id=msg_id)
    result = await filters_file.run(
        "copy", "pop", str(content), str(envelope), client=False, timeout=0, context=context
    )
    filters_file.WARNINGS.clear()  # the built-in's "no sub-directories" warning: an error here
    if result.outcome is filters.Outcome.ABANDON:
        return
    if result.outcome is filters.Outcome.OK:
        raise CopyError(NO_SUBDIRECTORIES)
    raise CopyError(result.reason or result.response)


def message_files(content: str, envelope: str | None) -> tuple[Path, Path, str]:
    """(content path, envelope path, message id) for filter mode; raises CopyError."""
    from emailrelay.spool import Spool, State, parse_name

    content_path = Path(content).absolute()
    if not content_path.is_file():
        raise CopyError("no such file")
    parsed = parse_name(content_path.name)
    if parsed is None or parsed[1] is not None:
        raise CopyError("invalid filename")
    msg_id = parsed[0]
    if envelope:
        return content_path, Path(envelope).absolute(), msg_id
    box = Spool(content_path.parent)
    new = box.envelope_path(msg_id, State.NEW)
    if new.exists():
        return content_path, new, msg_id
    ready = box.envelope_path(msg_id, State.READY)
    if ready.exists():
        return content_path, ready, msg_id
    raise CopyError(f'no envelope file "{new}"')


def run_filter(content: str, envelope: str | None) -> int:
    """Filter mode; returns 100 (copied) or 1 (error, with the two ``<<...>>`` lines on stdout)."""
    try:
        content_path, envelope_path, msg_id = message_files(content, envelope)
        asyncio.run(copy_one(content_path, envelope_path, msg_id))
    except CopyError as e:
        _filter_failed(str(e))
        return 1
    return 100


def run_spool(prog: str, spool_dir: str, verbose: bool) -> int:
    """Spool mode; returns 0 when every waiting message was copied, else 1."""
    from emailrelay.spool import Spool, State

    box = Spool(Path(spool_dir).absolute())
    try:
        ids = box.ids(State.READY)
    except OSError as e:
        print(f"{prog}: error: invalid spool directory: {spool_dir}: {(e.strerror or str(e)).lower()}",
              file=sys.stderr)
        return 1

    async def copy_all() -> int:
        failures = 0
        for msg_id in ids:
            envelope = box.envelope_path(msg_id, State.READY)
            try:
                await copy_one(box.content_path(msg_id), envelope, msg_id)
            except CopyError as e:
                print(f"{prog}: error: {msg_id}: {e}", file=sys.stderr)
                if str(e) == NO_SUBDIRECTORIES:
                    return 1
                failures += 1
                continue
            if verbose:
                print(f"copied: {envelope}")
        return 1 if failures else 0

    return asyncio.run(copy_all())


def _filter_failed(reason: str) -> None:
    sys.stdout.write(f"<<{FAILED}>>\n<<{reason}>>\n")
    sys.stdout.flush()


def run(prog: str, args: list[str]) -> int:
    """Run with the arguments after argv[0]; returns the exit code."""
    from emailrelay import durable

    parsed = entry.front(options.FILTER_COPY_OPTIONS, prog, args, hint=False)
    if isinstance(parsed, int):
        return parsed
    durable.set_umask(0o007)  # copies are group-readable, as in the spool (SPEC.md 1.5)
    spool_dir = parsed.value("spool-dir")
    if spool_dir is not None:
        if parsed.arguments:
            print(f"{prog}: error: too many arguments with --spool-dir", file=sys.stderr)
            return 1
        return run_spool(prog, spool_dir, parsed.flag("verbose"))
    if not parsed.arguments or len(parsed.arguments) > 2:
        _filter_failed(USAGE)
        return 1
    envelope = parsed.arguments[1] if len(parsed.arguments) > 1 else None
    return run_filter(parsed.arguments[0], envelope)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``emailrelay-filter-copy`` console script.

    Args:
        argv: the whole command line including the program name; defaults to
            sys.argv.

    Returns:
        The exit code: 100 copied (filter mode), 0 done (spool mode, help,
        version), 1 error.
    """
    return entry.main(run, argv, "emailrelay-filter-copy")


if __name__ == "__main__":
    sys.exit(main())
