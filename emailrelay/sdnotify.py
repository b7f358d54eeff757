"""sd_notify: tell systemd how the service is doing, without libsystemd.

Its one job is the documented notification protocol (sd_notify(3)): each
message is newline-separated ``NAME=value`` fields sent as a single datagram
to the ``AF_UNIX`` ``SOCK_DGRAM`` socket named by ``$NOTIFY_SOCKET``, either a
file system path or, when it starts with ``@``, a Linux abstract socket name.
``emailrelay supervise`` runs under ``Type=notify`` (config/emailrelay.service)
and uses it to send READY=1 once every worker runs, STATUS= lines,
RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1 at shutdown, and
WATCHDOG=1 at half of ``watchdog_interval()`` when the unit sets WatchdogSec=.

Failure behaviour: with ``$NOTIFY_SOCKET`` unset (not started by systemd, or
by a unit that is not Type=notify) every call does nothing and returns False,
so callers never need to ask whether they run under systemd.  When the
variable is set but the datagram cannot be sent, OSError propagates: the
caller decides whether a lost notification matters (READY=1 does, a single
WATCHDOG=1 may not).  A field containing a newline raises ValueError instead
of silently becoming two fields.

Not responsible for: the ``vsock:`` addresses of newer systemd, passing file
descriptors (FDSTORE=), socket activation (sd_listen_fds), or deciding when to
notify.  It does not clear the variables either: a supervisor should leave
``ENVIRONMENT`` out of the environment of the processes it spawns, so that
only the main process talks to systemd (the unit also says NotifyAccess=main).
"""

from __future__ import annotations

import os
import socket
import time

ENVIRONMENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
"""The variables systemd passes to the main process for this protocol."""


def notify(*fields: str) -> bool:
    """Send ``fields`` (``NAME=value`` strings) to systemd as one datagram.

    Returns:
        True when the datagram was sent, False when ``$NOTIFY_SOCKET`` is unset
        or empty (nothing is done).

    Raises:
        ValueError: a field contains a newline, or there are no fields.
        OSError: the socket named by ``$NOTIFY_SOCKET`` cannot be sent to.
    """
    if not fields:
        raise ValueError("sd_notify: no fields to send")
    for field in fields:
        if "\n" in field:
            raise ValueError(f"sd_notify: newline in field {field!r}")
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto("\n".join(fields).encode(), address)
    return True


def ready() -> bool:
    """Startup (or a reload) is complete: ``READY=1``."""
    return notify("READY=1")


def status(text: str) -> bool:
    """A one-line status shown by ``systemctl status``: ``STATUS=<text>``."""
    return notify(f"STATUS={text}")


def reloading() -> bool:
    """A reload has begun; ``ready()`` ends it.

    Sends ``RELOADING=1`` with ``MONOTONIC_USEC=`` (CLOCK_MONOTONIC in
    microseconds), which systemd >= 253 requires to match the reload to the
    request; older versions ignore the extra field.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}")


def stopping() -> bool:
    """Shutdown has begun: ``STOPPING=1``."""
    return notify("STOPPING=1")


def watchdog() -> bool:
    """Keep-alive for WatchdogSec=: ``WATCHDOG=1``."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds that systemd expects of this process.

    Read from ``$WATCHDOG_USEC``; None when it is unset, not a positive
    integer, or when ``$WATCHDOG_PID`` is set and names another process (the
    variables were inherited, the watchdog is not ours).  Send ``watchdog()``
    at least twice per interval, as sd_watchdog_enabled(3) advises.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and (not _decimal(pid) or int(pid) != os.getpid()):
        return None
    if not _decimal(usec) or int(usec) == 0:
        return None
    return int(usec) / 1_000_000


def _decimal(text: str) -> bool:
    """Plain ASCII digits only (``int()`` would also take " 5", "+5", "1_0")."""
    return text.isascii() and text.isdigit()
