"""What every worker process does the same way at start-up.

Open the log from the configuration, find and check the spool directory
(one-line error, exit 1), clean up after dead writers and forwarders, work
out the domain name, and build the forwarding settings.  Workers call these
in their `run`; nothing here serves or forwards mail.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from emailrelay import COMPATIBLE_VERSION, __version__, durable
from emailrelay.config import ServerConfig
from emailrelay.log import Log, LogSettings
from emailrelay.smtp_client import ClientSettings
from emailrelay.spool import Spool, SpoolError, check_spool_dir, default_spool_dir

VERSION_TEXT = f"emailrelay {__version__} (E-MailRelay {COMPATIBLE_VERSION} compatible)"


#: EMAILRELAY_LOOP=asyncio keeps the standard event loop where uvloop is installed.
LOOP_ENV = "EMAILRELAY_LOOP"


def run_event_loop(main: Coroutine[Any, Any, int]) -> int:
    """`asyncio.run(main)`, on uvloop when it is installed (the ``fast`` extra).

    uvloop is optional: without it, or with ``EMAILRELAY_LOOP=asyncio`` in
    the environment, the standard loop runs the same code.
    """
    if os.environ.get(LOOP_ENV, "").lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    import asyncio

    return asyncio.run(main)


def event_loop_name() -> str:
    """What `run_event_loop` runs on, for the start-up log: ``uvloop`` or ``asyncio``."""
    import asyncio

    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


class StartupError(Exception):
    """A worker cannot start; str() is the one-line reason, `code` the exit code."""

    def __init__(self, reason: str, code: int = 1) -> None:
        super().__init__(reason)
        self.code = code


def open_log(config: ServerConfig) -> Log:
    """The process log; configuration warnings that 2.6 logs are logged here."""
    durable.set_umask(0o007)
    c = config.log
    log = Log(
        LogSettings(
            program=c.program,
            enabled=c.enabled,
            verbose=c.verbose,
            debug=c.debug,
            file=c.file,
            time=c.time,
            syslog=c.syslog,
            facility=c.facility,
            unit=c.unit,
        )
    )
    for warning in config.log_warnings:
        log.warning(warning)
    return log


def open_spool(config: ServerConfig, log: Log) -> Spool:
    """Check the spool directory and recover it; raises StartupError."""
    try:
        directory = Path(config.spool_dir) if config.spool_dir else default_spool_dir()
        check_spool_dir(directory)
    except (SpoolError, OSError) as e:
        raise StartupError(str(e)) from None
    spool = Spool(directory.absolute(), sync_mode=config.spool_sync)
    log.info(f"spool directory: {spool.directory}")
    spool.recover(log=log.info)
    spool.recover_busy(log=log.info)
    return spool


def default_domain() -> str:
    """The host's canonical name from a DNS lookup, as E-MailRelay does.

    If the lookup fails, ``<host>.localnet`` (2.6's ``<host>:0.localnet``
    quirk fixed).
    """
    host = socket.gethostname().split(".", 1)[0] or os.environ.get("HOSTNAME", "") or "localhost"
    try:
        info = socket.getaddrinfo(host, None, flags=socket.AI_CANONNAME)
    except OSError:
        return f"{host}.localnet"
    canonical = info[0][3] if info and info[0][3] else ""
    return canonical or f"{host}.localnet"


def forward_settings(config: ServerConfig, domain: str):  # noqa: ANN201 - ForwardSettings
    """The forwarder's settings, or None without a forward address.

    Reads the --client-auth secrets; raises StartupError naming the file
    and line when they are broken.
    """
    from emailrelay.workers.forward import ForwardSettings

    f = config.forward
    if f is None:
        return None
    secrets = None
    if f.client_auth is not None:
        from emailrelay.secrets import Secrets, SecretsError

        try:
            if f.client_auth.startswith("plain:"):
                secrets = Secrets.inline(f.client_auth)
            else:
                secrets = Secrets.load(f.client_auth)
        except SecretsError as e:
            raise StartupError(str(e)) from None
    client = ClientSettings(
        domain=domain,
        connection_timeout=f.connection_timeout,
        response_timeout=f.response_timeout,
        prompt_timeout=f.prompt_timeout,
        client_interface=f.client_interface,
        smtp=f.smtp,
        secrets=secrets,
        auth_config=f.client_auth_config,
        anonymous=f.anonymous_client,
        tls=f.tls,
    )
    return ForwardSettings(
        delivery_dir=config.delivery_dir,
        client_filter=f.client_filter,
        filter_timeout=f.filter_timeout,
        forward_to=f.address,
        client=client,
        forward_to_some=f.forward_to_some,
        retry_limit=f.retry_limit,
        connections=f.connections,
        retry_interval=f.retry_interval,
    )


def server_auth(config: ServerConfig, domain: str, log: Log):  # noqa: ANN201 - ServerAuth | None
    """The --server-auth policy, or None; raises StartupError for a broken secrets file."""
    from emailrelay import auth_policy

    if config.server_auth is None:
        return None
    if config.server_auth in ("pam:", "/pam"):
        if not auth_policy.pam_available():
            raise StartupError("pam authentication is not available: the python-pam package is missing")
        return auth_policy.PamAuth(config.server_auth_config, log.warning)
    from emailrelay.secrets import Secrets, SecretsError

    try:
        secrets = Secrets.load(config.server_auth)
    except SecretsError as e:
        raise StartupError(str(e)) from None
    for warning in secrets.warnings:
        log.warning(warning)
    return auth_policy.SecretsAuth(secrets, domain, config.server_auth_config, log.warning)


def server_tls_context(config: ServerConfig):  # noqa: ANN201 - ssl.SSLContext | None
    """The server's SSL context, or None; raises StartupError for unusable certificate files."""
    t = config.server_tls
    if t is None:
        return None
    import ssl

    from emailrelay.tls import server_context

    try:
        return server_context(t.config, t.certificate, t.verify)
    except (ssl.SSLError, OSError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
        raise StartupError(f"cannot use the tls certificate files: {reason}") from None


def switch_user(config: ServerConfig) -> None:
    """--user (OPTIONS.md 7.3): called once the sockets are bound; raises StartupError.

    The user must exist whoever we run as.  Started as root with a user
    other than ``root``: supplementary groups are dropped, the effective
    gid becomes the user's (spool files are created ``root:<group>``, as
    2.6 makes them) and filters and verifiers run with the user's real and
    effective ids.  The effective uid stays root: 2.6 swaps it back to root
    for every file operation, which a process with threads cannot do
    safely, and the files it creates must stay the same.
    """
    import pwd

    from emailrelay import filters

    try:
        entry = pwd.getpwnam(config.user)
    except KeyError:
        raise StartupError(f"no such user: {config.user}") from None
    if os.geteuid() != 0 or config.user == "root":
        return
    try:
        os.setgroups([])
        os.setegid(entry.pw_gid)
    except OSError as e:
        raise StartupError(f"cannot switch to user {config.user}: {(e.strerror or str(e)).lower()}") from None
    filters.IDENTITY = (entry.pw_uid, entry.pw_gid)


def daemonize(config: ServerConfig):  # noqa: ANN201 - PidFile | bool | None
    """Detach when daemon mode is on, then write the pid file (OPTIONS.md 7.1, 7.2).

    Returns the PidFile to remove at exit, True when there is none, or None
    after reporting that the pid file could not be written.
    """
    from emailrelay.daemon import PidFile, detach

    pid_file = PidFile(config.pid_file) if config.pid_file else None
    if config.daemon:
        detach(pid_file)
    if pid_file is None:
        return True
    try:
        pid_file.write()
    except OSError as e:
        fatal(config.log.program, f"cannot create file: {pid_file.path}: {(e.strerror or str(e)).lower()}")
        return None
    return pid_file


def fatal(program: str, text: str) -> None:
    """The one-line error of a worker that cannot start (stderr, whatever the log)."""
    sys.stderr.write(f"{program}: error: {text}\n")
    sys.stderr.flush()
