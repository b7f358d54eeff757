"""The entry point of a worker process started by ``emailrelay supervise``.

``python -m emailrelay.workers.child <emailrelay options>`` with the
`link.WorkerSpec` in ``$EMAILRELAY_WORKER``: parse the same options as the
supervisor (the option table and config.build, so a worker and its
supervisor can never read a configuration differently), shape the
configuration to the worker's role, and run the storage process code with
the inherited sockets.

A worker logs to stderr only, one line per record, without time stamps:
the supervisor reads the pipe, tags each line with the worker's name and
writes it to the configured log (file, syslog, stderr).  Start-up warnings
were printed by the supervisor already.  A worker never detaches and never
writes the pid file.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from emailrelay import config, options
from emailrelay.workers.link import ENVIRONMENT, WorkerSpec


def role_config(server: config.ServerConfig, role: str) -> config.ServerConfig:
    """The configuration that one role runs with (link.ROLES)."""
    log = dataclasses.replace(server.log, enabled=True, file=None, syslog=False, time=False, close_stderr=False)
    shaped = dataclasses.replace(
        server, log=log, daemon=False, pid_file=None, warnings=(), log_warnings=(),
    )
    forward = server.forward
    if role in ("storage", "proxy"):
        shaped = dataclasses.replace(shaped, pop=None)
        if role == "proxy" and forward is not None:
            shaped = dataclasses.replace(shaped, forward=dataclasses.replace(forward, poll=0, at_startup=False))
    elif role == "forward":
        shaped = dataclasses.replace(shaped, no_smtp=True, pop=None)
    elif role == "pop":
        shaped = dataclasses.replace(shaped, no_smtp=True, forward=None)
    return shaped


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        spec = WorkerSpec.from_env(os.environ[ENVIRONMENT])
    except (KeyError, ValueError, TypeError) as e:
        sys.stderr.write(f"emailrelay: error: not started by emailrelay supervise ({e})\n")
        return 1
    parsed = options.parse(options.EMAILRELAY_OPTIONS, args, "emailrelay")
    if parsed.config_error or parsed.errors:
        sys.stderr.write(f"emailrelay: error: {parsed.config_error or parsed.errors[0]}\n")
        return 1
    try:
        server = dict(config.build_units(parsed))[spec.unit]
    except (config.ConfigError, KeyError) as e:
        sys.stderr.write(f"emailrelay: error: {e}\n")
        return 1
    from emailrelay.workers import storage

    try:
        return storage.run(role_config(server, spec.role), spec)
    except (OSError, ValueError) as e:  # the supervisor went away before we said hello, say
        sys.stderr.write(f"emailrelay: error: {spec.name}: {e}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
