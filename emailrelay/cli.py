"""The ``emailrelay`` console script: argv -> options -> ServerConfig -> worker.

One job: decide what a command line asks for and report usage problems in
E-MailRelay 2.6's formats (OPTIONS.md 7.7 and 8.3), then hand a checked
:class:`emailrelay.config.ServerConfig` to the storage worker (which
also forwards when there is a forward address), or to the forwarding
worker for ``--as-client`` and ``--dont-serve``.

Order of precedence:

1. ``supervise`` or ``ctl`` as the first argument: not supported yet;
2. a configuration file that cannot be read (``error: ...``, exit 1);
3. ``--help`` (``--verbose`` for all options) wins over any other problem;
4. parse errors, one ``error:`` line each plus the "try" line, exit 1;
5. too many non-option arguments (``usage error:`` plus the "try" line);
6. ``--version``;
7. semantic errors from config.build (``usage error:``, exit 1), then
   startup warnings (``warning:``), then the worker runs.

Failure behaviour: never a traceback.  An unexpected exception becomes
``emailrelay: error: <text>`` with exit 1; Ctrl-C exits 130.

Not responsible for: option syntax (options.py), option meaning
(config.py), serving mail (workers).
"""

from __future__ import annotations

import sys

from emailrelay import config, entry, options

SUBCOMMANDS = ("supervise", "ctl")


def _try_line(prog: str) -> str:
    return " " * (len(prog) + 2) + f'try "{prog} --help --verbose" for more information'


def _error(prog: str, kind: str, message: str) -> None:
    print(f"{prog}: {kind}: {message}", file=sys.stderr)


def run(prog: str, args: list[str]) -> int:
    """Run the program for the arguments after argv[0]; returns the exit code."""
    if args and args[0] in SUBCOMMANDS:
        _error(prog, "usage error", f"{args[0]} is not supported yet")
        return 1
    parsed = options.parse(options.EMAILRELAY_OPTIONS, args, prog)
    if parsed.config_error is not None:
        _error(prog, "error", parsed.config_error)
        return 1
    if parsed.flag("help"):
        text = options.help_text(
            options.EMAILRELAY_OPTIONS, prog, verbose=parsed.flag("verbose"), columns=options.help_columns()
        )
        sys.stdout.write(text)
        return 0
    if parsed.errors:
        for message in parsed.errors:
            _error(prog, "error", message)
        print(_try_line(prog), file=sys.stderr)
        return 1
    if parsed.too_many_args:
        _error(prog, "usage error", "too many non-option arguments")
        print(_try_line(prog), file=sys.stderr)
        return 1
    if parsed.flag("version"):
        sys.stdout.write(options.version_text(parsed.flag("verbose"), prog))
        return 0
    try:
        server_config = config.build(parsed)
    except config.ConfigError as e:
        _error(prog, "usage error", str(e))
        return 1
    for warning in server_config.warnings:
        _error(prog, "warning", warning)
    sys.stderr.flush()
    if not server_config.serving:  # --as-client, --dont-serve: forward once and exit
        from emailrelay.workers import forward

        return forward.run_client(server_config)
    from emailrelay.workers import storage

    return storage.run(server_config)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``emailrelay`` console script.

    Args:
        argv: the whole command line including the program name; defaults
            to sys.argv.

    Returns:
        The exit code.
    """
    return entry.main(run, argv, "emailrelay")

if __name__ == "__main__":
    sys.exit(main())
