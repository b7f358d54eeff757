"""The spool directory: message ids, states and their file names, in one place.

Only this module knows how a message state maps to a file name (SPEC.md 1.1):

    <id>.content            the message (written first, fsynced before commit)
    <id>.envelope.new       NEW: envelope being written / server filter running
    <id>.envelope           READY: committed, ready to forward, visible to POP
    <id>.envelope.busy      BUSY: claimed by a forwarding client
    <id>.envelope.bad       BAD: forwarding failed, Reason lines appended

with ids ``emailrelay.<pid>.<secs>.<seq>`` (seq pre-incremented per Spool).
An id is allocated at MAIL FROM, as in 2.6, but the content file is created
only when 64 KiB of content have arrived or at commit, so a small message
costs the event loop no file creation (2.6 creates it at MAIL FROM).

Every state change is one rename(2).  A commit is: content fsynced,
``.envelope.new`` written and fsynced, renamed to ``.envelope``, the
directory fsynced; only then may the caller reply 250 (SPEC.md section 0).
Concurrent asyncio commits are written and made durable together
(durable.GroupCommitter): by default one syncfs(2) of the spool's file
system covers every message of a cycle (--spool-sync filesystem); with
--spool-sync file each file and the directory are fsynced.

Recovery (`Spool.recover`) removes what dead writers left behind: a
``.envelope.new`` or an envelope-less ``.content`` whose id's pid is not a
live process (or is a later process that re-used the pid).  A forwarder
claims a message by locking its envelope (flock) and renaming it to
``.busy``, and holds the lock until the message is delivered, released or
failed; `Spool.recover_busy` returns ``.busy`` files whose lock nobody
holds to READY.

`Spool.observer`, when set, is told of each state change that this module
makes for a caller: ``stored``, ``forwarded``, ``failed`` (with the reason),
``retried`` (BAD -> READY) and ``deleted``.  The supervisor's workers set it
to stream message events; it must not block or raise.

Errors are OSError (with the file name) or SpoolError; the partial files of a
failed commit are removed before the error propagates, so a failure never
leaves a half-written message in the READY state.  This module does no
logging and no networking.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from emailrelay import durable
from emailrelay.envelope import Envelope, serialise

#: E-MailRelay's compiled-in spool directory (OPTIONS.md section 6).
SYSTEM_SPOOL_DIR = Path("/var/spool/emailrelay")

#: Content bytes are gathered up to this size before each write(2).
WRITE_BUFFER = 64 * 1024


class SpoolError(Exception):
    """A spool directory problem with a one-line, user-facing message."""


class State(enum.Enum):
    """Message states and the envelope-file suffix that encodes each one."""

    NEW = ".envelope.new"
    READY = ".envelope"
    BUSY = ".envelope.busy"
    BAD = ".envelope.bad"


CONTENT_SUFFIX = ".content"
ID_PREFIX = "emailrelay."


def envelope_name(msg_id: str, state: State) -> str:
    return msg_id + state.value


def content_name(msg_id: str) -> str:
    return msg_id + CONTENT_SUFFIX


def parse_name(name: str) -> tuple[str, State | None] | None:
    """Map a directory entry to (id, state), state None for a content file.

    Returns None for names that are not spool files (sub-directories,
    ``.tmp`` rewrites and the like).
    """
    if name.endswith(CONTENT_SUFFIX):
        return name[: -len(CONTENT_SUFFIX)], None
    for state in (State.NEW, State.BUSY, State.BAD):
        if name.endswith(state.value):
            return name[: -len(state.value)], state
    if name.endswith(State.READY.value):
        return name[: -len(State.READY.value)], State.READY
    return None


def id_pid_and_time(msg_id: str) -> tuple[int, int] | None:
    """The writer's pid and allocation time from an id, or None if not ours."""
    parts = msg_id.split(".")
    if len(parts) != 4 or parts[0] != "emailrelay":
        return None
    try:
        return int(parts[1]), int(parts[2])
    except ValueError:
        return None


# -- the spool directory itself ---------------------------------------------


def default_spool_dir() -> Path:
    """The spool directory used when no --spool-dir is given (SPEC.md section 0).

    `/var/spool/emailrelay` if it exists and is writable; created
    ``root:daemon`` mode 2775 when running as root; otherwise the
    platformdirs user state directory's ``spool``.
    """
    system = SYSTEM_SPOOL_DIR
    if system.is_dir() and os.access(system, os.W_OK | os.X_OK):
        return system
    if os.geteuid() == 0:
        try:
            system.mkdir(parents=True, exist_ok=True)
            gid = _daemon_gid()
            os.chown(system, 0, gid if gid is not None else 0)
            os.chmod(system, 0o2775)
            return system
        except OSError:
            pass
    from platformdirs import user_state_dir

    path = Path(user_state_dir("emailrelay")) / "spool"
    path.mkdir(parents=True, exist_ok=True, mode=0o770)
    return path


def _daemon_gid() -> int | None:
    import grp

    try:
        return grp.getgrnam("daemon").gr_gid
    except KeyError:
        return None


def check_spool_dir(directory: str | os.PathLike[str]) -> None:
    """Check that the spool directory exists, is searchable and is writable.

    Raises SpoolError with a one-line message naming the directory.  The
    write check really creates and removes a file, because access(2) says
    yes to root on a read-only mount.
    """
    path = Path(directory)
    try:
        if not path.is_dir():
            os.listdir(path)  # raises the right strerror for a missing path
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        os.listdir(path)
    except OSError as e:
        raise SpoolError(f"invalid spool directory: {path}: {_strerror(e)}") from None
    probe = path / f".emailrelay-write-test.{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise SpoolError(f"spool directory is not writable: {path}: {_strerror(e)}") from None


def _strerror(e: OSError) -> str:
    return (e.strerror or str(e)).lower()


# -- writing messages --------------------------------------------------------


class NewMessage:
    """A message being written: content bytes so far, no envelope yet.

    The content file is created only when the first WRITE_BUFFER bytes are
    written out, or at commit (in the commit thread), so small messages never
    block the event loop on a file creation.  Its id may still change then,
    if a dead process left a file of the same name.
    """

    def __init__(self, spool: Spool, msg_id: str) -> None:
        self._spool = spool
        self.id = msg_id
        self._fd = -1
        self.size = 0
        self._buffer = bytearray()

    @property
    def content_path(self) -> Path:
        return self._spool.content_path(self.id)

    @property
    def envelope_path(self) -> Path:
        """The committed (READY) envelope path."""
        return self._spool.envelope_path(self.id, State.READY)

    @property
    def new_envelope_path(self) -> Path:
        return self._spool.envelope_path(self.id, State.NEW)

    def write(self, data: bytes | memoryview) -> None:
        """Append content bytes (buffered; errors surface here or at commit)."""
        self.size += len(data)
        self._buffer += data
        if len(self._buffer) >= WRITE_BUFFER:
            self.flush()

    def flush(self) -> None:
        """Write the buffered bytes, creating the content file first if need be."""
        if self._fd < 0:
            while True:
                try:
                    self._fd = durable.create_exclusive(self.content_path)
                except FileExistsError:
                    self.id = self._spool.new_id()
                    continue
                if not self._spool.may_be_taken(self.id) or not self._spool.id_in_use(self.id):
                    break
                # an envelope of an earlier process with this pid and second: never overwrite it
                os.close(self._fd)
                self._fd = -1
                _unlink_quietly(self.content_path)
                self.id = self._spool.new_id()
        if self._buffer:
            durable.write_all(self._fd, self._buffer)
            self._buffer.clear()

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class Claim:
    """A message this process is forwarding: its BUSY file, its content, and the locks on them."""

    def __init__(self, msg_id: str, fd: int, path: Path) -> None:
        self.id = msg_id
        self.fd = fd
        self.path = path
        self.content_fd = -1

    def replace_fd(self, fd: int) -> None:
        old, self.fd = self.fd, fd
        os.close(old)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
        if self.content_fd >= 0:
            fd, self.content_fd = self.content_fd, -1
            os.close(fd)


class Spool:
    """One spool directory, with its own message-id sequence counter."""

    def __init__(
        self, directory: str | os.PathLike[str], *, fsync: bool = True, sync_mode: str = durable.SYNC_FILESYSTEM
    ) -> None:
        self.directory = Path(directory)
        self._fsync = fsync
        self._sync_mode = sync_mode  # --spool-sync (durable.GroupCommitter)
        self._seq = 0
        self._pid = 0  # the process that made the last id, and the second of its first id (may_be_taken)
        self._pid_since = 0
        self._committer: durable.GroupCommitter | None = None
        #: Called as observer(action, msg_id, detail) after a state change (module docstring).
        self.observer: Callable[[str, str, str], None] | None = None

    def _tell(self, action: str, msg_id: str, detail: str = "") -> None:
        if self.observer is not None:
            self.observer(action, msg_id, detail)

    # ids and paths

    def new_id(self) -> str:
        self._seq = (self._seq + 1) & 0xFFFFFFFFFFFFFFFF or 1
        pid, now = os.getpid(), int(time.time())
        if pid != self._pid:
            self._pid, self._pid_since = pid, now
        return f"{ID_PREFIX}{pid}.{now}.{self._seq}"

    def may_be_taken(self, msg_id: str) -> bool:
        """Whether a dead process with our pid could have used this id of ours.

        It died before this process started, so only ids of the second we
        made our first id in (or earlier, after the clock was stepped back)
        can be its; later ones are ours alone and need no look at the disk.
        """
        parsed = id_pid_and_time(msg_id)
        return parsed is None or parsed[0] != self._pid or parsed[1] <= self._pid_since

    def id_in_use(self, msg_id: str) -> bool:
        """True if an envelope of this id exists in any state."""
        return any(self.envelope_path(msg_id, state).exists() for state in State)

    def envelope_path(self, msg_id: str, state: State = State.READY) -> Path:
        return self.directory / envelope_name(msg_id, state)

    def content_path(self, msg_id: str) -> Path:
        return self.directory / content_name(msg_id)

    def ids(self, state: State = State.READY) -> list[str]:
        """Ids of messages in a state, in byte-wise name order (SPEC.md 1.2)."""
        suffix = state.value
        found = []
        with os.scandir(self.directory) as it:
            for entry in it:
                parsed = parse_name(entry.name)
                if parsed is not None and parsed[1] is state:
                    found.append(parsed[0])
        found.sort(key=lambda i: (i + suffix).encode("utf-8", "surrogateescape"))
        return found

    # writing

    def create(self) -> NewMessage:
        """Allocate an id for a new message (its content file comes later)."""
        return NewMessage(self, self.new_id())

    def _write(self, msg: NewMessage, envelope: Envelope, sync: bool) -> None:
        """Flush the content and write the ``.envelope.new``, fsyncing each if `sync`."""
        msg.flush()
        if sync:
            os.fsync(msg._fd)
        msg.close()
        durable.write_file_durably(msg.new_envelope_path, serialise(envelope), sync=sync)

    def commit_sync(self, msg: NewMessage, envelope: Envelope) -> None:
        """Make the message durable and READY (blocking; for command-line tools).

        On failure the partial files are removed and the OSError re-raised.
        """
        try:
            self._write(msg, envelope, self._fsync)
            os.rename(msg.new_envelope_path, msg.envelope_path)
        except BaseException:
            self.discard(msg)
            raise
        if self._fsync:
            durable.fsync_directory(self.directory)

    @property
    def committer(self) -> durable.GroupCommitter:
        if self._committer is None:
            self._committer = durable.GroupCommitter(self.directory, mode=self._sync_mode, enabled=self._fsync)
        return self._committer

    async def commit(self, msg: NewMessage, envelope: Envelope) -> None:
        """Write the message and make it durable and READY, without blocking the event loop.

        The files are written in the group committer's thread, together
        with those of concurrent commits (durable.GroupCommitter).  Returns
        only when the READY name is durable.  On failure nothing is left
        READY and the error is re-raised.
        """
        try:
            await self.committer.commit(
                lambda sync: self._write(msg, envelope, sync), lambda: (msg.new_envelope_path, msg.envelope_path)
            )
        except BaseException:
            # The rename may or may not be durable: withdraw the message, as
            # the client is about to be told it was not accepted.
            self.discard(msg)
            raise
        self._tell("stored", msg.id)

    async def prepare(self, msg: NewMessage, envelope: Envelope) -> None:
        """The NEW state: content and ``.envelope.new`` durable (server filters run now).

        On failure the partial files are removed and the error re-raised.
        """
        try:
            await self.committer.commit(lambda sync: self._write(msg, envelope, sync))
        except BaseException:
            self.discard(msg)
            raise

    async def finish(self, msg: NewMessage, *, missing_ok: bool = False, rewritten: bool = False) -> bool:
        """NEW -> READY, durably.  Returns False if the files were gone (a filter took them).

        `rewritten`: a filter may have changed the files, so they are made
        durable again before the rename.  With `missing_ok` a vanished
        ``.envelope.new`` is not an error (the abandon result of SPEC.md 1.3
        #4a).  On any other failure nothing is left READY and the error is
        re-raised.
        """

        def resync(sync: bool) -> None:
            if sync:
                _fsync_paths(msg.content_path, msg.new_envelope_path)

        try:
            await self.committer.commit(
                resync if rewritten else None, lambda: (msg.new_envelope_path, msg.envelope_path)
            )
        except FileNotFoundError:
            if missing_ok:
                return False
            self.discard(msg)
            raise
        except BaseException:
            self.discard(msg)
            raise
        self._tell("stored", msg.id)
        return True

    def forget(self, msg: NewMessage) -> None:
        """Close an uncommitted message's files without removing them (a filter owns them now)."""
        msg.close()

    def discard(self, msg: NewMessage) -> None:
        """Remove every file of an uncommitted (or withdrawn) message."""
        msg.close()
        msg._buffer.clear()
        for path in (msg.new_envelope_path, msg.envelope_path, msg.content_path):
            _unlink_quietly(path)

    # state changes of stored messages

    def rename(self, msg_id: str, old: State, new: State) -> None:
        """Move a message from one state to another with one rename(2)."""
        os.rename(self.envelope_path(msg_id, old), self.envelope_path(msg_id, new))
        if old is State.BAD and new is State.READY:
            self._tell("retried", msg_id)

    def delete(self, msg_id: str) -> State:
        """Remove a READY or BAD message for an operator; returns the state it was in.

        A READY message is claimed first, so a forwarder never sends a
        message that is being deleted.  Raises FileNotFoundError when there
        is no such READY or BAD message, BlockingIOError when a forwarder
        holds it.
        """
        if not msg_id or "/" in msg_id or "\0" in msg_id:
            raise FileNotFoundError(msg_id)
        if self.envelope_path(msg_id, State.BAD).exists():
            self.remove(msg_id, State.BAD)
            state = State.BAD
        else:
            if not self.envelope_path(msg_id, State.READY).exists():
                if self.envelope_path(msg_id, State.BUSY).exists():
                    raise BlockingIOError(errno.EWOULDBLOCK, "the message is being forwarded")
                raise FileNotFoundError(msg_id)
            claim = self.claim(msg_id)
            if claim is None:
                raise BlockingIOError(errno.EWOULDBLOCK, "the message is being forwarded")
            _unlink_quietly(claim.path)
            _unlink_quietly(self.content_path(claim.id))
            claim.close()
            state = State.READY
        if self._fsync:
            durable.fsync_directory(self.directory)
        self._tell("deleted", msg_id)
        return state

    def summary(self) -> dict[State, int]:
        """How many envelopes there are in each state (one directory scan)."""
        counts = dict.fromkeys(State, 0)
        with os.scandir(self.directory) as it:
            for entry in it:
                parsed = parse_name(entry.name)
                if parsed is not None and parsed[1] is not None:
                    counts[parsed[1]] += 1
        return counts

    def remove(self, msg_id: str, state: State) -> None:
        """Delete a message: envelope first, so it is never READY without content."""
        _unlink_quietly(self.envelope_path(msg_id, state))
        _unlink_quietly(self.content_path(msg_id))

    # forwarding: claim, then exactly one of deliver, release, fail

    def claim(self, msg_id: str) -> Claim | None:
        """Take a READY message for forwarding: lock it, rename it to BUSY.

        The advisory lock (flock) is taken on the READY file before the
        rename and held until the claim ends, so a BUSY file whose lock is
        free belongs to nobody (`recover_busy`).  Returns None if another
        process has it or it has gone.
        """
        path = self.envelope_path(msg_id, State.READY)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(path, self.envelope_path(msg_id, State.BUSY))
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        claim = Claim(msg_id, fd, self.envelope_path(msg_id, State.BUSY))
        claim.content_fd = _lock_quietly(self.content_path(msg_id))
        return claim

    def relock(self, claim: Claim) -> bool:
        """Lock the BUSY file and content again after a filter may have replaced them.

        Returns False if the envelope has gone or another process holds it.
        """
        try:
            fd = os.open(claim.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        if os.fstat(fd).st_ino != os.fstat(claim.fd).st_ino:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            claim.replace_fd(fd)
        else:
            os.close(fd)
        content = _lock_quietly(self.content_path(claim.id))
        if content >= 0:
            if claim.content_fd >= 0:
                os.close(claim.content_fd)
            claim.content_fd = content
        return True

    def read_claimed(self, claim: Claim) -> bytes:
        """The claimed envelope's bytes (read through the locked descriptor)."""
        size = os.fstat(claim.fd).st_size
        return os.pread(claim.fd, size, 0)

    def deliver(self, claim: Claim) -> None:
        """The message has gone: remove the envelope, then the content."""
        _unlink_quietly(claim.path)
        _unlink_quietly(self.content_path(claim.id))
        claim.close()
        self._tell("forwarded", claim.id)

    def release(self, claim: Claim) -> None:
        """Give a message back unchanged: BUSY -> READY."""
        try:
            os.rename(claim.path, self.envelope_path(claim.id, State.READY))
        except FileNotFoundError:
            pass  # deleted under us (by a client filter, say): nothing to give back
        claim.close()

    def fail(self, claim: Claim, reason: bytes, *, rewrite: bytes | None = None) -> None:
        """BUSY -> BAD with reason lines appended (SPEC.md 7.6).

        `reason` is the bytes to append (envelope.reason_lines and any
        extra lines); `rewrite`, if given, replaces the envelope first (a
        changed recipient list), written and fsynced under a locked temporary
        name and renamed over the BUSY file, so the lock is never lost.
        """
        if rewrite is not None:
            temp = self.directory / (claim.path.name + ".tmp")
            _unlink_quietly(temp)  # left by a crash mid-rewrite
            fd = durable.create_exclusive(temp)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                durable.write_all(fd, rewrite)
                os.rename(temp, claim.path)
            except BaseException:
                os.close(fd)
                _unlink_quietly(temp)
                raise
            claim.replace_fd(fd)
        end = os.lseek(claim.fd, 0, os.SEEK_END)
        os.pwrite(claim.fd, reason, end)
        if self._fsync:
            os.fsync(claim.fd)
        os.rename(claim.path, self.envelope_path(claim.id, State.BAD))
        if self._fsync:
            durable.fsync_directory(self.directory)
        claim.close()
        self._tell("failed", claim.id, reason.decode("utf-8", "replace").strip())

    def _shared_with_subdirectory(self, msg_id: str) -> bool:
        """True if a sub-directory holds an envelope of this id (copy:pop, submit --copy)."""
        with os.scandir(self.directory) as it:
            subdirs = [entry.path for entry in it if entry.is_dir(follow_symlinks=False)]
        return any(
            os.path.exists(os.path.join(sub, envelope_name(msg_id, state))) for sub in subdirs for state in State
        )

    def recover_busy(self, *, log: Callable[[str], None] = lambda _: None) -> list[str]:
        """Return BUSY messages that no live process holds to READY.

        A forwarder locks both the envelope and the content of a claimed
        message, so a client filter that replaces one of them (by rename)
        still leaves the other locked until the forwarder locks the new
        file (`relock`); a message is recovered only when both are free.
        """
        recovered = []
        for msg_id in self.ids(State.BUSY):
            path = self.envelope_path(msg_id, State.BUSY)
            if _locked(self.content_path(msg_id)):
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a live forwarder has it
            try:
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    os.rename(path, self.envelope_path(msg_id, State.READY))
                    log(f"returned a message that a dead process was forwarding: {msg_id}")
                    recovered.append(msg_id)
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
        if recovered and self._fsync:
            durable.fsync_directory(self.directory)
        return recovered

    def copy_to_subdirectories(self, msg_id: str) -> int:
        """Copy a READY envelope into every sub-directory (``submit --copy``).

        Skips dot-directories and ``postmaster`` (SPEC.md 3.9).  Each copy is
        written durably under a temporary name and renamed into place.  If
        every copy succeeded the original envelope is removed (the content
        stays, shared by the copies).  Returns the number of copies.
        """
        source = self.envelope_path(msg_id)
        data = source.read_bytes()
        subdirs = sorted(
            entry.name
            for entry in os.scandir(self.directory)
            if entry.is_dir() and not entry.name.startswith(".") and entry.name != "postmaster"
        )
        copies = 0
        for name in subdirs:
            target_dir = self.directory / name
            temp = target_dir / envelope_name(msg_id, State.NEW)
            durable.write_file_durably(temp, data, sync=self._fsync)
            os.rename(temp, target_dir / envelope_name(msg_id, State.READY))
            if self._fsync:
                durable.fsync_directory(target_dir)
            copies += 1
        if copies:
            source.unlink()
            if self._fsync:
                durable.fsync_directory(self.directory)
        return copies

    # recovery

    def recover(self, *, log: Callable[[str], None] = lambda _: None) -> list[str]:
        """Remove what dead writers left behind; returns the ids cleaned up.

        A ``.envelope.new`` (with its content) or a ``.content`` with no
        envelope in any state is removed when the pid in its id is not a live
        process that started before the id was allocated (so a restarted
        worker that got its predecessor's pid still cleans up after it).
        """
        entries: dict[str, set[State | None]] = {}
        with os.scandir(self.directory) as it:
            for entry in it:
                parsed = parse_name(entry.name)
                if parsed is not None:
                    entries.setdefault(parsed[0], set()).add(parsed[1])
        cleaned = []
        for msg_id, states in sorted(entries.items()):
            stale_new = State.NEW in states
            orphan = states == {None} and not self._shared_with_subdirectory(msg_id)
            if not (stale_new or orphan) or not _writer_is_dead(msg_id):
                continue
            if stale_new:
                _unlink_quietly(self.envelope_path(msg_id, State.NEW))
            if not states & {State.READY, State.BUSY, State.BAD}:
                _unlink_quietly(self.content_path(msg_id))
            what = "unfinished envelope" if stale_new else "content without an envelope"
            log(f"removed {what} of a dead process: {msg_id}")
            cleaned.append(msg_id)
        if cleaned and self._fsync:
            durable.fsync_directory(self.directory)
        return cleaned

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())


def _writer_is_dead(msg_id: str) -> bool:
    parsed = id_pid_and_time(msg_id)
    if parsed is None:
        return False  # not one of our names: leave it to the operator
    pid, secs = parsed
    if pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    # The pid is alive; it is the writer only if it started before the id.
    try:
        import psutil

        return psutil.Process(pid).create_time() > secs + 1
    except Exception:  # psutil.NoSuchProcess and friends: gone meanwhile
        return True


def _lock_quietly(path: Path) -> int:
    """An fd holding an exclusive flock on path, or -1 if it is missing or locked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return -1
    return fd


def _locked(path: Path) -> bool:
    """True if another open file description holds a lock on path."""
    fd = _lock_quietly(path)
    if fd < 0:
        return path.exists()
    os.close(fd)
    return False


def _fsync_paths(*paths: Path) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

