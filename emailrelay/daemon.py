"""Process life of plain ``emailrelay``: detaching into the background and the pid file.

`detach()` does what OPTIONS.md 7.1 steps 10-12 describe, after the
listening sockets are bound and before the event loop starts: fork; the
parent waits up to a second for the pid file (when there is one) and exits
0; the child starts a new session, changes to ``/``, forks again so it can
never regain a terminal, and points stdin and stdout at /dev/null.
Everything that can fail at start-up (bad spool directory, bind errors,
broken secrets) has failed in the foreground before this, so the terminal
sees it.

`PidFile` writes ``<pid>\\n`` (mode 0644, parent directory created 0775),
and removes the file at exit only if it still holds this process's pid
(OPTIONS.md 7.2).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


class PidFile:
    def __init__(self, path: str) -> None:
        self.path = Path(os.path.abspath(path))
        self.written = False

    def write(self) -> None:
        """Raises OSError (the caller reports ``cannot create file``)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o775)
        temp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)
        os.rename(temp, self.path)
        self.written = True

    def remove(self) -> None:
        if not self.written:
            return
        try:
            if self.path.read_text().strip() == str(os.getpid()):
                self.path.unlink()
        except OSError:
            pass


def detach(pid_file: PidFile | None) -> None:
    """Become a daemon; returns in the grandchild only."""
    pid = os.fork()
    if pid > 0:  # the original process: wait briefly for the daemon's pid file, then go
        if pid_file is not None:
            for _ in range(100):
                if pid_file.path.exists():
                    break
                time.sleep(0.01)
        os._exit(0)
    os.setsid()
    os.chdir("/")
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
