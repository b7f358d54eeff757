"""Return failed messages to the queue: the library call and the ``emailrelay-resubmit`` command.

One job: move ``<id>.envelope.bad`` back to ``<id>.envelope`` (state BAD to
READY, one rename(2) each, through :mod:`emailrelay.spool`) for messages
that have not failed too often, as E-MailRelay 2.6's
``emailrelay-resubmit.sh`` and ``.js`` scripts do (SPEC.md 10.4, state
transition 10 of 1.3).  The retry counter is the number of
``X-MailRelay-Reason:`` lines in the envelope (each failure appends one,
SPEC.md 2.4), counted as :attr:`emailrelay.envelope.Envelope.reason_count`
does; a message with ``limit`` or more stays failed.  The Reason lines stay
in the file, so the count keeps growing with every failure.

:func:`resubmit` is the library call; the command line, the TUI and the
admin protocol all use it, so it prints nothing and reads no options.  It
gives one :class:`ResubmitResult` per message, with one of these outcomes:

    resubmitted                                  renamed to ready (or would be, in a dry run)
    refused: retry limit reached (<n> failures)  left failed
    not found                                    no ``.bad`` envelope of that id (any more)
    unreadable envelope: <reason>                cannot be read or parsed; left failed
    failed: <reason>                             the rename itself failed; left failed

An envelope that cannot be parsed is left failed rather than resubmitted:
the forwarder would only skip it again on every scan.  After the renames
the spool directory is fsynced once; if that fsync fails the renames stand
(a crash could at worst leave a message failed, which is safe), so it is
not reported.

The command (``emailrelay-resubmit [options] [<spool-dir>]``):

* spool directory: the argument or ``--spool-dir`` (not two different
  ones), else the default rule of :func:`emailrelay.spool.default_spool_dir`;
  it must be a writable directory (with ``--dry-run``, a readable one);
* ``--id`` (repeatable, or a comma list) picks messages by id (a ``.bad``
  file name is accepted too); without it every ``.bad`` envelope in the
  directory is considered, in byte-wise name order (SPEC.md 1.2);
* ``--limit <n>`` (default 5, 0 = no limit), ``--dry-run`` changes nothing;
* output: ``resubmitted <n>, refused <m>`` on stdout (with `` (dry run)``
  appended in a dry run) unless ``--quiet``; ``--verbose`` adds one line
  per resubmitted or refused message before it (``<id>: <outcome>``, and
  ``<id>: resubmitted (dry run)`` in a dry run);
  each message that was not found, unreadable or failed is one
  ``emailrelay-resubmit: <id>: <outcome>`` line on stderr, with or without
  ``--verbose``;
* exit status 0 when every message was resubmitted or refused (also when
  there was nothing to do), 1 when any was not found, unreadable or failed,
  for usage errors (``emailrelay-resubmit: error: ...`` plus a "try" line)
  and for a bad spool directory (``emailrelay-resubmit: invalid spool
  directory: <dir>: <reason>``).  Never a traceback.

Where we differ from 2.6 (for the man page's COMPATIBILITY section): the
shell script quotes its glob, so as shipped it matches nothing; this one
works, with the same counting and the same default limit.  The ``.js``
script counts only ``MailRelay-Reason: `` with a space, the shell script
any line; we count the lines after ``X-MailRelay-End`` that contain
``MailRelay-Reason:`` (``ReasonCode`` lines do not match either way).

Not responsible for: file names and states (:mod:`emailrelay.spool`), the
envelope format (:mod:`emailrelay.envelope`), the forwarder's own opt-in
retries of temporary failures (``--retry-limit``).
"""

from __future__ import annotations

import enum
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emailrelay import entry, options

if TYPE_CHECKING:
    from emailrelay.spool import Spool

#: The 2.6 scripts' retry limit.
DEFAULT_LIMIT = options.RESUBMIT_LIMIT


class Outcome(enum.Enum):
    """What happened to one message."""

    RESUBMITTED = "resubmitted"
    REFUSED = "refused"
    NOT_FOUND = "not found"
    UNREADABLE = "unreadable envelope"
    FAILED = "failed"


@dataclass(frozen=True)
class ResubmitResult:
    """The outcome for one message.

    Attributes:
        id: the message id.
        outcome: what happened.
        failures: the number of Reason lines counted (0 when the envelope
            was not read).
        detail: why an envelope was unreadable or a rename failed.
        dry_run: nothing was changed; ``RESUBMITTED`` means "would be".
    """

    id: str
    outcome: Outcome
    failures: int = 0
    detail: str = ""
    dry_run: bool = False

    @property
    def action(self) -> str:
        """The outcome as one line of text, e.g. ``refused: retry limit reached (5 failures)``."""
        if self.outcome is Outcome.REFUSED:
            plural = "" if self.failures == 1 else "s"
            return f"refused: retry limit reached ({self.failures} failure{plural})"
        if self.outcome in (Outcome.UNREADABLE, Outcome.FAILED):
            return f"{self.outcome.value}: {self.detail}"
        return self.outcome.value

    @property
    def ok(self) -> bool:
        """True when the message was resubmitted or deliberately left failed."""
        return self.outcome in (Outcome.RESUBMITTED, Outcome.REFUSED)


def resubmit(
    spool: Spool, ids: list[str] | None = None, *, limit: int = DEFAULT_LIMIT, dry_run: bool = False
) -> list[ResubmitResult]:
    """Move failed messages back to the queue unless they have failed ``limit`` times.

    Args:
        spool: the spool directory.
        ids: the messages to consider, in this order (duplicates dropped; a
            ``.envelope.bad`` file name is taken as its id); None for every
            failed message, in byte-wise name order.
        limit: a message with this many Reason lines or more stays failed;
            0 means no limit.
        dry_run: change nothing, report what would be done.

    Returns:
        One result per message considered.

    Raises:
        ValueError: a negative limit.
        OSError: the spool directory cannot be listed (only when ``ids`` is None).
    """
    from emailrelay.spool import State

    if limit < 0:
        raise ValueError(f"invalid retry limit: {limit}")
    candidates = spool.ids(State.BAD) if ids is None else _unique_ids(ids)
    results = [_one(spool, msg_id, limit, dry_run) for msg_id in candidates]
    if not dry_run and any(r.outcome is Outcome.RESUBMITTED for r in results):
        from emailrelay import durable

        try:
            durable.fsync_directory(spool.directory)
        except OSError:
            pass  # the renames stand; a crash could at worst leave them failed
    return results


def _unique_ids(ids: list[str]) -> list[str]:
    from emailrelay.spool import State, parse_name

    unique: list[str] = []
    for given in ids:
        parsed = parse_name(given)
        msg_id = parsed[0] if parsed is not None and parsed[1] is State.BAD else given
        if msg_id not in unique:
            unique.append(msg_id)
    return unique


def _one(spool: Spool, msg_id: str, limit: int, dry_run: bool) -> ResubmitResult:
    from emailrelay.envelope import EnvelopeError, parse
    from emailrelay.spool import State

    if not msg_id or "/" in msg_id or "\0" in msg_id:
        return ResubmitResult(msg_id, Outcome.NOT_FOUND, dry_run=dry_run)  # never a path outside the spool
    try:
        data = spool.envelope_path(msg_id, State.BAD).read_bytes()
    except FileNotFoundError:
        return ResubmitResult(msg_id, Outcome.NOT_FOUND, dry_run=dry_run)
    except OSError as e:
        return ResubmitResult(msg_id, Outcome.UNREADABLE, detail=_strerror(e), dry_run=dry_run)
    try:
        failures = parse(data).reason_count
    except EnvelopeError as e:
        return ResubmitResult(msg_id, Outcome.UNREADABLE, detail=str(e), dry_run=dry_run)
    if limit and failures >= limit:
        return ResubmitResult(msg_id, Outcome.REFUSED, failures, dry_run=dry_run)
    if not dry_run:
        try:
            spool.rename(msg_id, State.BAD, State.READY)
        except FileNotFoundError:
            return ResubmitResult(msg_id, Outcome.NOT_FOUND, failures)  # gone since we read it
        except OSError as e:
            return ResubmitResult(msg_id, Outcome.FAILED, failures, detail=_strerror(e))
    return ResubmitResult(msg_id, Outcome.RESUBMITTED, failures, dry_run=dry_run)


def _strerror(e: OSError) -> str:
    return (e.strerror or str(e)).lower()


# --------------------------------------------------------------------------
# the command


class UsageError(Exception):
    """A command-line problem: ``<prog>: error: <text>`` plus the "try" line."""


class SpoolDirError(Exception):
    """The spool directory cannot be used: one line, exit 1."""


@dataclass
class Request:
    """What the command line asks for, independent of the option parser."""

    spool_dir: str | None = None
    ids: list[str] | None = None
    limit: int = DEFAULT_LIMIT
    dry_run: bool = False
    verbose: bool = False
    quiet: bool = False


def _request(parsed: options.Parsed) -> Request:
    if len(parsed.arguments) > 1:
        raise UsageError("too many non-option arguments")
    given = parsed.value("spool-dir")
    if parsed.arguments:
        if given is not None and given != parsed.arguments[0]:
            raise UsageError(f'two spool directories: "{given}" and "{parsed.arguments[0]}"')
        given = parsed.arguments[0]
    limit_text = parsed.value("limit")
    limit = DEFAULT_LIMIT
    if limit_text is not None:
        text = limit_text.strip()
        if not (text.isascii() and text.isdigit()):
            raise UsageError(f'invalid value for "--limit": {limit_text}')
        limit = int(text)
    ids = parsed.items("id") if parsed.has("id") else None
    if ids == []:
        raise UsageError(f'invalid value for "--id": {parsed.value("id")}')
    return Request(
        spool_dir=None if given is None else options.expand_app(given),
        ids=ids,
        limit=limit,
        dry_run=parsed.flag("dry-run"),
        verbose=parsed.flag("verbose"),
        quiet=parsed.flag("quiet"),
    )


def _open_spool(request: Request) -> Spool:
    """The spool to work on; raises SpoolDirError for one that cannot be used."""
    from emailrelay.spool import Spool, SpoolError, check_spool_dir, default_spool_dir

    if request.spool_dir == "":
        raise SpoolDirError('invalid spool directory: ""')
    if request.spool_dir is None:
        try:
            directory = str(default_spool_dir())
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise SpoolDirError(f"invalid spool directory: {where}{_strerror(e)}") from None
    else:
        directory = request.spool_dir
    if request.dry_run:
        try:  # a dry run writes nothing, not even check_spool_dir's probe file
            os.listdir(directory)
        except OSError as e:
            raise SpoolDirError(f"invalid spool directory: {directory}: {_strerror(e)}") from None
    else:
        try:
            check_spool_dir(directory)
        except SpoolError as e:
            raise SpoolDirError(str(e)) from None
    return Spool(directory)


def _report(prog: str, request: Request, results: list[ResubmitResult]) -> int:
    suffix = " (dry run)" if request.dry_run else ""
    resubmitted = refused = 0
    problems = False
    for result in results:
        if result.outcome is Outcome.RESUBMITTED:
            resubmitted += 1
        elif result.outcome is Outcome.REFUSED:
            refused += 1
        if result.ok:
            if request.verbose:
                dry = suffix if result.outcome is Outcome.RESUBMITTED else ""
                print(f"{result.id}: {result.action}{dry}")
        else:
            problems = True
            sys.stdout.flush()
            print(f"{prog}: {result.id}: {result.action}", file=sys.stderr)
    if not request.quiet:
        print(f"resubmitted {resubmitted}, refused {refused}{suffix}")
    return 1 if problems else 0


def run(prog: str, args: list[str]) -> int:
    """Run with the arguments after argv[0]; returns the exit code."""
    table = options.RESUBMIT_OPTIONS
    parsed = options.parse(table, args, prog, config_file_allowed=False)
    if parsed.flag("help"):
        return entry.print_help(table, prog, parsed)
    errors = list(parsed.errors)
    request = Request()
    if not errors:
        try:
            request = _request(parsed)
        except UsageError as e:
            errors = [str(e)]
    if errors:
        return entry.usage_errors(prog, errors)
    if parsed.flag("version"):
        return entry.print_version(prog, parsed)
    try:
        spool = _open_spool(request)
        results = resubmit(spool, request.ids, limit=request.limit, dry_run=request.dry_run)
    except SpoolDirError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"{prog}: invalid spool directory: {where}{_strerror(e)}", file=sys.stderr)
        return 1
    return _report(prog, request, results)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``emailrelay-resubmit`` console script.

    Args:
        argv: the whole command line including the program name; defaults to
            sys.argv.

    Returns:
        The exit code: 0 done, 1 error.
    """
    return entry.main(run, argv, "emailrelay-resubmit")


if __name__ == "__main__":
    sys.exit(main())
