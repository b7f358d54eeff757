"""Durable file operations: write, fsync, rename, fsync the directory.

This module's one job is to make a file's contents and its name survive a
crash, in the qmail order: write the data, fsync it, rename it into place,
fsync the directory that holds the name.  E-MailRelay 2.6 never fsyncs;
we do (SPEC.md section 0, "durability").

`GroupCommitter` lets many concurrent commits in one directory share their
barriers (group commit): by default one syncfs(2) of the file system per
cycle instead of two fsyncs per message and one per directory; each caller
is released only by a barrier that *started after* its rename, so no
caller is told its message is durable before it is.

Failures raise OSError to the caller, which owns the clean-up of its own
half-written files.  This module knows nothing about spool states or file
name suffixes (that is spool.py).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (emailrelay-submit starts faster)

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

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


#: How a group commit makes written files and renames durable (--spool-sync).
SYNC_FILESYSTEM = "filesystem"  # one syncfs(2) of the directory's file system per cycle
SYNC_FILE = "file"  # fsync each written file, and the directory once per cycle


def syncfs_available() -> bool:
    """True where libc has syncfs(2) (Linux)."""
    return _syncfs() is not None


_syncfs_function: object = None


def _syncfs() -> Callable[[int], None] | None:
    """syncfs(fd) as a function raising OSError, or None where there is none."""
    global _syncfs_function
    if _syncfs_function is None:
        _syncfs_function = False
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            function = libc.syncfs
        except (OSError, AttributeError):
            return None
        function.argtypes = [ctypes.c_int]
        function.restype = ctypes.c_int

        def call(fd: int) -> None:
            if function(fd) != 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code))

        _syncfs_function = call
    return _syncfs_function or None  # type: ignore[return-value]


class _Job:
    __slots__ = ("write", "rename", "future", "error")

    def __init__(
        self,
        write: Callable[[bool], None] | None,
        rename: Callable[[], tuple[Path, Path]] | None,
        future: asyncio.Future[None],
    ) -> None:
        self.write = write
        self.rename = rename
        self.future = future
        self.error: BaseException | None = None


def _release(jobs: list[_Job], error: BaseException | None = None) -> None:
    """Wake the callers of finished jobs with their outcome (or `error` if they have none)."""
    for job in jobs:
        if not job.future.done():
            outcome = job.error or error
            if outcome is None:
                job.future.set_result(None)
            else:
                job.future.set_exception(outcome)


class GroupCommitter:
    """Group commit of writes and renames in one directory, for asyncio code.

    `await committer.commit(write, rename)` returns once the files that
    `write` creates are durable and, if `rename` is given, the rename it
    names is durable too: the qmail order, shared between every caller
    that arrives at about the same time.  `write(sync_each)` is a blocking
    function run in a worker thread; it creates and writes files and fsyncs
    each one itself when `sync_each` is true.  `rename()` returns (src,
    dst), computed after `write` ran.

    Two stages run at the same time, each in a thread of its own while it
    has work, so the files of the next messages are written while the disk
    flushes the last ones:

    - the *writer* writes the files of every job that has arrived, a batch
      at a time, and passes the batch on;
    - the *syncer* runs cycles: (1) one barrier -- in ``filesystem`` mode
      one syncfs(2) of the directory's file system (Linux: it waits until
      every dirty file and the journal are on disk, as fsync would for each
      file); in ``file`` mode the files were fsynced by their writer and
      the directory is fsynced; (2) the jobs passed on before the barrier
      began that have no rename, and the renames of the last cycle, are
      done: their callers are released; (3) those jobs' renames, which the
      next cycle's barrier makes durable (a last cycle is just the barrier).

    So a rename never happens before its files are durable, no caller is
    released before its rename is durable, and under load one barrier per
    cycle serves every session's messages.  With `enabled` false there are
    no barriers (tests and tools that fill spools).  An error of a job's own
    write or rename goes to that caller alone; a barrier's error to every
    caller it covered.  The caller owns the clean-up of its own files.
    """

    def __init__(self, directory: str | os.PathLike[str], *, mode: str = SYNC_FILESYSTEM, enabled: bool = True) -> None:
        self._directory = Path(directory)
        self._enabled = enabled
        self.mode = mode if mode == SYNC_FILE or syncfs_available() else SYNC_FILE
        self._queue: list[_Job] = []  # arrived, to be written
        self._written: list[_Job] = []  # written, waiting for a barrier
        self._writing = False
        self._syncing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._fd = -1

    async def commit(
        self,
        write: Callable[[bool], None] | None,
        rename: Callable[[], tuple[Path, Path]] | None = None,
    ) -> None:
        import asyncio

        job = _Job(write, rename, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._start()
        await asyncio.shield(job.future)

    def _start(self) -> None:
        """Start whichever stage has work and is not running."""
        import asyncio

        loop = asyncio.get_running_loop()
        if self._queue and not self._writing:
            self._writing = True
            self._keep(loop.create_task(self._write_stage()))
        if self._written and not self._syncing:
            self._syncing = True
            self._keep(loop.create_task(self._sync_stage()))

    def _keep(self, task: asyncio.Task[None]) -> None:
        """Hold a stage's task until it ends (the event loop keeps only weak references)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_stage(self) -> None:
        import asyncio

        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    await asyncio.to_thread(self._write_batch, batch)
                except BaseException as e:  # the thread itself failed: none of the batch is known written
                    for job in batch:
                        job.error = job.error or OSError(errno.EIO, f"commit failed: {e}")
                _release([job for job in batch if job.error is not None])
                self._written += [job for job in batch if job.error is None]
                self._start()
        finally:
            self._writing = False
            _release(self._queue, OSError(errno.EIO, "commit interrupted"))  # only when cancelled at shutdown

    async def _sync_stage(self) -> None:
        import asyncio

        renamed: list[_Job] = []
        try:
            while self._written or renamed:
                written, self._written = self._written, []
                try:
                    done, renamed = await asyncio.to_thread(self._sync_cycle, written, renamed)
                except BaseException as e:  # the thread itself failed: nobody's commit is known durable
                    for job in written + renamed:
                        job.error = job.error or OSError(errno.EIO, f"commit failed: {e}")
                    done, renamed = written + renamed, []
                _release(done)
        finally:
            self._syncing = False
            _release(renamed + self._written, OSError(errno.EIO, "commit interrupted"))

    def _write_batch(self, batch: list[_Job]) -> None:
        """The writer's work, in its thread: each job's files (errors stay with the job)."""
        sync_each = self._enabled and self.mode == SYNC_FILE
        for job in batch:
            if job.write is not None:
                try:
                    job.write(sync_each)
                except Exception as e:  # noqa: BLE001 - the caller gets it
                    job.error = e

    def _sync_cycle(self, written: list[_Job], renamed: list[_Job]) -> tuple[list[_Job], list[_Job]]:
        """One syncer cycle (class docstring), in its thread: (jobs done, jobs renamed)."""
        if self._enabled and (written or renamed):
            try:
                self._barrier()
            except OSError as e:
                for job in written + renamed:
                    job.error = e
                return written + renamed, []
        done = renamed
        renamed = []
        for job in written:
            if job.rename is None:
                done.append(job)
                continue
            try:
                os.rename(*job.rename())
            except OSError as e:
                job.error = e
                done.append(job)
            else:
                renamed.append(job)
        if not self._enabled:
            done += renamed
            renamed = []
        return done, renamed

    def _barrier(self) -> None:
        if self._fd < 0:
            self._fd = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if self.mode == SYNC_FILESYSTEM:
            _syncfs()(self._fd)  # type: ignore[misc]
        else:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
