"""The ``emailrelay`` console script: argv -> options -> ServerConfig -> worker.

One job: decide what a command line asks for and report usage problems in
E-MailRelay 2.6's formats (OPTIONS.md 7.7 and 8.3), then hand a checked
:class:`emailrelay.config.ServerConfig` to the storage worker (which
also forwards when there is a forward address), or to the forwarding
worker for ``--as-client`` and ``--dont-serve``.

Order of precedence:

1. ``supervise`` or ``ctl`` as the first argument: supervisor.py or ctl.py
   takes the rest of the command line;
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


def _error(prog: str, kind: str, message: str) -> None:
    print(f"{prog}: {kind}: {message}", file=sys.stderr)


def run(prog: str, args: list[str]) -> int:
    """Run the program for the arguments after argv[0]; returns the exit code."""
    if args and args[0] == "supervise":
        from emailrelay import supervisor

        return supervisor.run(prog, args[1:])
    if args and args[0] == "ctl":
        from emailrelay import ctl

        return ctl.run(prog, args[1:])
    parsed = options.parse(options.EMAILRELAY_OPTIONS, args, prog)
    if parsed.config_error is not None:
        _error(prog, "error", parsed.config_error)
        return 1
    if parsed.flag("help"):
        return entry.print_help(options.EMAILRELAY_OPTIONS, prog, parsed)
    if parsed.errors:
        return entry.usage_errors(prog, parsed.errors)
    if parsed.too_many_args:
        return entry.usage_errors(prog, ["too many non-option arguments"], kind="usage error")
    if parsed.flag("version"):
        return entry.print_version(prog, parsed)
    try:
        units = [c for _, c in config.build_units(parsed)]
    except config.ConfigError as e:
        _error(prog, "usage error", str(e))
        return 1
    server_config = units[0]
    for warning in server_config.warnings:
        _error(prog, "warning", warning)
    sys.stderr.flush()
    if not server_config.serving:  # --as-client, --dont-serve: forward once and exit
        from emailrelay.workers import forward

        return forward.run_client(server_config)
    from emailrelay.workers import storage

    return storage.run(units)


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
