"""One log format for every emailrelay process: stderr or a file, plus syslog.

Line format (OPTIONS.md 7.5)::

    <exe>: [<YYYYMMDD.HHMMSS.mmm>: ]<level>: [<context>]<text>

with level ``info``, ``warning``, ``error`` or ``debug``.  Verbose lines
(``-v``) are info lines that are written only when verbose logging is on;
callers should test `Log.verbose_on` before building expensive trace text.
An ESC becomes ``.``; over-long lines are cut and end with `` ...``.

Destinations: the `--log-file` file (``%d`` = YYYYMMDD, ``%h`` = HH,
reopened when the name changes) or else stderr; and syslog when enabled
(info -> LOG_INFO, warning -> LOG_WARNING, error -> LOG_ERR; debug never).
Nothing is written when logging is disabled, except that errors still reach
stderr (a process that cannot start must say why).

A write failure on the log destination is ignored: logging never stops mail.
This module knows nothing of SMTP or the spool.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass

MAX_LINE = 1000

#: Where syslog(3) sends (glibc's _PATH_LOG).
SYSLOG_SOCKET = "/dev/log"

FACILITIES = ("mail", "user", "daemon", *(f"local{i}" for i in range(8)))


@dataclass(frozen=True)
class LogSettings:
    """What the logger needs; built from config.LogConfig by the worker."""

    program: str = "emailrelay"
    enabled: bool = False
    verbose: int = 0
    debug: bool = False
    file: str | None = None
    time: bool = False
    syslog: bool = False
    facility: str = "mail"
    unit: str = ""  # a named instance with "unit" in its --log-format: "[unit] " before the text


class Log:
    """A logger for one process; cheap to call when a level is off."""

    def __init__(self, settings: LogSettings = LogSettings()) -> None:
        self.settings = settings
        self.verbose_on = settings.enabled and settings.verbose > 0
        self.debug_on = settings.enabled and settings.debug
        self._file_name = ""
        self._file = None
        self._syslog = None
        #: A supervised worker's stderr is a pipe to the supervisor: the lines of one
        #: event-loop turn go out in one write (`batch_stderr_lines`).
        self.batch_stderr = False
        self._stderr_lines: list[str] = []
        self._stderr_lock = threading.Lock()
        self._syslog_checked_at = -2.0  # time.monotonic() of the last look at SYSLOG_SOCKET
        self._syslog_present = False
        if settings.enabled and settings.syslog:
            import syslog

            facility = getattr(syslog, "LOG_" + settings.facility.upper(), syslog.LOG_MAIL)
            syslog.openlog(settings.program, syslog.LOG_PID, facility)
            self._syslog = syslog

    def info(self, text: str) -> None:
        if self.settings.enabled:
            self._emit("info", text)

    def verbose(self, text: str) -> None:
        if self.verbose_on:
            self._emit("info", text)

    def debug(self, text: str) -> None:
        if self.debug_on:
            self._emit("debug", text)

    def emit(self, level: str, text: str) -> None:
        """A record relayed from another process (a supervised worker), at its own level."""
        if self.settings.enabled:
            self._emit(level if level in ("info", "warning", "error", "debug") else "info", text)

    def warning(self, text: str) -> None:
        if self.settings.enabled:
            self._emit("warning", text)

    def error(self, text: str) -> None:
        if self.settings.enabled:
            self._emit("error", text)
        else:
            _write(sys.stderr, f"{self.settings.program}: error: {text}\n")

    def _emit(self, level: str, text: str) -> None:
        text = text.replace("\x1b", ".")
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE] + " ..."
        prefix = self.settings.program + ": "
        if self.settings.time:
            now = time.time()
            stamp = time.strftime("%Y%m%d.%H%M%S", time.localtime(now))
            prefix += f"{stamp}.{int(now * 1000) % 1000:03d}: "
        if self.settings.unit:
            text = f"[{self.settings.unit}] {text}"
        line = f"{prefix}{level}: {text}\n"
        if self.settings.file:
            stream = self._log_file()
            if stream is not None:
                _write(stream, line)
        elif self.batch_stderr:
            self._queue_stderr(line)
        else:
            _write(sys.stderr, line)
        if self._syslog is not None and level != "debug" and self._syslog_listening():
            priority = {
                "info": self._syslog.LOG_INFO,
                "warning": self._syslog.LOG_WARNING,
                "error": self._syslog.LOG_ERR,
            }[level]
            self._syslog.syslog(priority, line[:-1])

    def batch_stderr_lines(self) -> None:
        """From now on write stderr lines once per event-loop turn (and whatever is left at exit)."""
        import atexit

        self.batch_stderr = True
        atexit.register(self.flush)

    def _queue_stderr(self, line: str) -> None:
        """Keep a line for the one write at the end of this event-loop turn (`batch_stderr`)."""
        asyncio = sys.modules.get("asyncio")
        try:
            loop = asyncio.get_running_loop() if asyncio is not None else None
        except RuntimeError:
            loop = None
        if loop is None:
            self.flush()
            _write(sys.stderr, line)
            return
        with self._stderr_lock:
            self._stderr_lines.append(line)
            first = len(self._stderr_lines) == 1
        if first:
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the stderr lines kept for the end of this event-loop turn (any thread may log)."""
        with self._stderr_lock:
            lines, self._stderr_lines = self._stderr_lines, []
        if lines:
            _write(sys.stderr, "".join(lines))

    def _syslog_listening(self) -> bool:
        """Whether the syslog socket exists, looked at once a second.

        syslog(3) tries to connect to /dev/log on every call while nobody
        listens there (a container, a machine without a syslog daemon), which
        costs more than the rest of the line; a daemon that starts later is
        found within a second.
        """
        now = time.monotonic()
        if now >= self._syslog_checked_at + 1.0:
            self._syslog_checked_at = now
            self._syslog_present = os.path.exists(SYSLOG_SOCKET)
        return self._syslog_present

    def _log_file(self):  # noqa: ANN202 - a text stream or None
        assert self.settings.file
        name = self.settings.file.replace("%d", time.strftime("%Y%m%d")).replace("%h", time.strftime("%H"))
        if name != self._file_name:
            if self._file is not None:
                self._file.close()
            try:
                fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o660)
                self._file = os.fdopen(fd, "a", buffering=1, encoding="utf-8", errors="backslashreplace")
            except OSError:
                self._file = None
            self._file_name = name
        return self._file


def _write(stream, line: str) -> None:  # noqa: ANN001
    try:
        stream.write(line)
        stream.flush()
    except (OSError, ValueError):
        pass
