"""Durable file operations: write, fsync, rename, fsync the directory.

This module's one job is to make a file's contents and its name survive a
crash, in the qmail order: write the data, fsync it, rename it into place,
fsync the directory that holds the name.  E-MailRelay 2.6 never fsyncs;
we do (SPEC.md section 0, "durability").

`DirectorySyncer` lets many concurrent commits in one directory share a
single directory fsync (group commit): each caller is released only by an
fsync that *started after* the caller's rename, so no caller is told its
rename is durable before it is.

Failures raise OSError to the caller, which owns the clean-up of its own
half-written files.  This module knows nothing about spool states or file
name suffixes (that is spool.py).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

#: File mode for every spool file we create (SPEC.md 1.5: umask 007, -rw-rw----).
FILE_MODE = 0o660


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """fsync a directory so that renames and creations inside it are durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_exclusive(path: str | os.PathLike[str], mode: int = FILE_MODE) -> int:
    """Create a new file that must not exist yet; return its write-only fd.

    The mode is applied with fchmod when the umask would narrow it, so spool
    files are 0660 whatever the caller's umask.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    if mode & _umask:
        try:
            os.fchmod(fd, mode)
        except BaseException:
            os.close(fd)
            raise
    return fd


def _read_umask() -> int:
    old = os.umask(0o077)
    os.umask(old)
    return old


_umask = _read_umask()


def set_umask(mask: int) -> int:
    """Set the process umask (and remember it here); returns the previous one."""
    global _umask
    old = os.umask(mask)
    _umask = mask
    return old


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of data to fd (os.write may write less)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_file_durably(path: str | os.PathLike[str], data: bytes, *, sync: bool = True) -> None:
    """Create path exclusively, write data, fsync it and close it.

    The caller renames it into place and syncs the directory afterwards.
    On any error the partial file is removed before the error is raised.
    """
    fd = create_exclusive(path)
    try:
        write_all(fd, data)
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    os.close(fd)


def _unlink_quietly(path: str | os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class DirectorySyncer:
    """Group commit of renames and directory fsyncs for one directory, for asyncio code.

    `await syncer.sync()` returns once an fsync of the directory that began
    after the call has completed.  `await syncer.rename(src, dst)` renames
    in the same worker thread, then waits for that fsync: the event loop
    never waits on the file system for a commit.  While one batch runs,
    every caller that arrives waits for the next one, so N concurrent
    commits cost about two thread hops and two directory fsyncs instead of N.
    A rename's own error (the file is gone, say) goes to its caller alone;
    an fsync error goes to every caller of that batch.
    """

    def __init__(self, directory: str | os.PathLike[str], *, enabled: bool = True) -> None:
        self._directory = Path(directory)
        self._enabled = enabled
        self._renames: list[tuple[Path, Path, asyncio.Future[None]]] = []
        self._next: asyncio.Future[None] | None = None
        self._running = False

    async def sync(self) -> None:
        import asyncio

        if not self._enabled:
            return
        await asyncio.shield(self._join())

    async def rename(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        """rename(2) then a directory fsync, both off the event loop (inline when fsync is off)."""
        import asyncio

        if not self._enabled:
            os.rename(src, dst)
            return
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._renames.append((Path(src), Path(dst), mine))
        batch = self._join()
        await asyncio.shield(mine)  # the rename itself (its own error)
        await asyncio.shield(batch)  # and the fsync after it

    def _join(self) -> asyncio.Future[None]:
        import asyncio

        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            if not self._running:
                asyncio.get_running_loop().create_task(self._run())
        return self._next

    async def _run(self) -> None:
        import asyncio

        self._running = True
        try:
            while self._next is not None:
                future, self._next = self._next, None
                renames, self._renames = self._renames, []
                outcomes: list[OSError | None] = []
                try:
                    await asyncio.to_thread(self._batch, renames, outcomes)
                except OSError as e:
                    future.set_exception(e)
                else:
                    future.set_result(None)
                for (_, _, waiter), outcome in zip(renames, outcomes):
                    if outcome is None:
                        waiter.set_result(None)
                    else:
                        waiter.set_exception(outcome)
                for _, _, waiter in renames[len(outcomes):]:  # the thread stopped early
                    if not waiter.done():
                        waiter.set_exception(OSError(errno.EIO, "rename not done"))
                if future.exception() is not None:
                    future.exception()  # retrieved: each waiter reports it
        finally:
            self._running = False

    def _batch(self, renames: list[tuple[Path, Path, object]], outcomes: list[OSError | None]) -> None:
        for src, dst, _ in renames:
            try:
                os.rename(src, dst)
            except OSError as e:
                outcomes.append(e)
            else:
                outcomes.append(None)
        fsync_directory(self._directory)
