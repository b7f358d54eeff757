"""The shared top of every console script: program name, exit code, no traceback.

`main(run, argv, default_prog)` takes the program name from argv[0] (the
basename without extension, as E-MailRelay does), calls
``run(prog, args) -> int`` and turns whatever escapes it into an exit code:
Ctrl-C is 130, a closed stdout (``--help | head``) is 1, and any other
exception is one ``<prog>: error: <text>`` line on stderr and exit 1.

Not responsible for parsing or reporting usage errors: each command's
``run`` does that with its own option table.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from emailrelay.options import program_name


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
