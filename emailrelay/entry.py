"""The shared top of every console script: program name, exit code, no traceback.

`main(run, argv, default_prog)` takes the program name from argv[0] (the
basename without extension, as E-MailRelay does), calls
``run(prog, args) -> int`` and turns whatever escapes it into an exit code:
Ctrl-C is 130, a closed stdout (``--help | head``) is 1, and any other
exception is one ``<prog>: error: <text>`` line on stderr and exit 1.

It also has the usage front-end every command shares (OPTIONS.md 7.7,
8.3): `print_help`, `usage_errors` (one ``<prog>: error: ...`` line each,
then the "try --help --verbose" hint) and `print_version`, and `front`,
which runs them in 2.6's order (help wins, then errors, then version) for
a command with no other checks.  Option syntax itself is options.py's.
"""

from __future__ import annotations

import os
import sys

from emailrelay import options
from emailrelay.options import program_name

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: console scripts start here
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from emailrelay.options import OptionTable, Parsed


def main(run: Callable[[str, list[str]], int], argv: Sequence[str] | None, default_prog: str) -> int:
    if argv is None:
        argv = sys.argv
    prog = program_name(argv[0]) if argv else default_prog
    try:
        return run(prog, list(argv[1:]))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        try:  # stdout went away: nothing more to say, and nothing at exit either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except Exception as e:  # the last line of defence: one line, no traceback
        try:
            sys.stderr.write(f"{prog}: error: {str(e) or type(e).__name__}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        return 1


def try_line(prog: str) -> str:
    """The hint printed after usage errors, indented under the program name."""
    return " " * (len(prog) + 2) + f'try "{prog} --help --verbose" for more information'


def print_help(table: OptionTable, prog: str, parsed: Parsed) -> int:
    """Help on stdout (--verbose for every option); returns exit code 0."""
    sys.stdout.write(options.help_text(table, prog, verbose=parsed.flag("verbose"), columns=options.help_columns()))
    return 0


def usage_errors(prog: str, messages: list[str], *, kind: str = "error", hint: bool = True) -> int:
    """One ``<prog>: <kind>: <message>`` line each on stderr, then the hint; returns exit code 1."""
    for message in messages:
        print(f"{prog}: {kind}: {message}", file=sys.stderr)
    if hint:
        print(try_line(prog), file=sys.stderr)
    return 1


def print_version(prog: str, parsed: Parsed) -> int:
    """The version text on stdout (--verbose for the feature lines); returns exit code 0."""
    sys.stdout.write(options.version_text(parsed.flag("verbose"), prog))
    return 0


def front(table: OptionTable, prog: str, args: list[str], *, hint: bool = True) -> Parsed | int:
    """Parse a companion tool's command line; an int is the exit code of help, errors or version."""
    parsed = options.parse(table, args, prog, config_file_allowed=False)
    if parsed.flag("help"):
        return print_help(table, prog, parsed)
    if parsed.errors:
        return usage_errors(prog, parsed.errors, hint=hint)
    if parsed.flag("version"):
        return print_version(prog, parsed)
    return parsed
