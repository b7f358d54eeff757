"""durable.GroupCommitter: the qmail order holds for every caller of a group commit.

Real files in a real directory; the only seam is a subclass that records
when each barrier begins, next to the events the jobs record themselves
(the writer and the syncer run in threads of their own, at the same time).
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
from pathlib import Path

import pytest

from emailrelay import durable

MODES = [durable.SYNC_FILE] + ([durable.SYNC_FILESYSTEM] if durable.syncfs_available() else [])


class Recording(durable.GroupCommitter):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[tuple[str, int]] = []

    def _barrier(self) -> None:
        self.events.append(("barrier", -1))  # when it begins: only what was done before it is covered
        super()._barrier()


def _commit_all(committer: Recording, directory: Path, count: int, *, rename: bool = True) -> None:
    events = committer.events
    rng = random.Random(count)

    async def one(i: int) -> None:
        await asyncio.sleep(rng.random() / 100)

        def write(sync_each: bool) -> None:
            fd = durable.create_exclusive(directory / f"{i}.new")
            durable.write_all(fd, b"x" * 1000)
            if sync_each:
                os.fsync(fd)
            os.close(fd)
            events.append(("write", i))

        def names() -> tuple[Path, Path]:
            events.append(("rename", i))
            return directory / f"{i}.new", directory / f"{i}.ready"

        await committer.commit(write, names if rename else None)
        events.append(("released", i))

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(count)))

    asyncio.run(main())


def _barriers_between(events: list[tuple[str, int]], first: tuple[str, int], second: tuple[str, int]) -> int:
    a, b = events.index(first), events.index(second)
    assert a < b, (first, second)
    return sum(1 for e in events[a:b] if e[0] == "barrier")


@pytest.mark.parametrize("mode", MODES)
def test_every_rename_follows_a_barrier_after_its_write_and_every_release_one_after_its_rename(tmp_path, mode):
    committer = Recording(tmp_path, mode=mode)
    _commit_all(committer, tmp_path, 60)
    events = committer.events
    for i in range(60):
        assert _barriers_between(events, ("write", i), ("rename", i)) >= 1
        assert _barriers_between(events, ("rename", i), ("released", i)) >= 1
        assert (tmp_path / f"{i}.ready").read_bytes() == b"x" * 1000
    # the point of it: far fewer barriers than messages
    assert sum(1 for e in events if e[0] == "barrier") < 60
    assert committer.mode == mode


@pytest.mark.parametrize("mode", MODES)
def test_a_job_without_rename_is_released_after_a_barrier(tmp_path, mode):
    committer = Recording(tmp_path, mode=mode)
    _commit_all(committer, tmp_path, 10, rename=False)
    for i in range(10):
        assert _barriers_between(committer.events, ("write", i), ("released", i)) >= 1
        assert (tmp_path / f"{i}.new").exists()


def test_without_fsync_there_are_no_barriers(tmp_path):
    committer = Recording(tmp_path, enabled=False)
    _commit_all(committer, tmp_path, 10)
    assert ("barrier", -1) not in committer.events
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{i}.ready" for i in range(10))


@pytest.mark.parametrize("mode", MODES)
def test_errors_go_to_their_own_caller(tmp_path, mode):
    committer = durable.GroupCommitter(tmp_path, mode=mode)

    def good(name: str):
        def write(sync_each: bool) -> None:
            (tmp_path / name).write_bytes(b"ok")

        return write

    def bad_write(sync_each: bool) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    async def main():
        return await asyncio.gather(
            committer.commit(good("a.new"), lambda: (tmp_path / "a.new", tmp_path / "a")),
            committer.commit(bad_write, lambda: (tmp_path / "b.new", tmp_path / "b")),
            committer.commit(None, lambda: (tmp_path / "gone.new", tmp_path / "gone")),
            committer.commit(good("c.new"), lambda: (tmp_path / "c.new", tmp_path / "c")),
            return_exceptions=True,
        )

    results = asyncio.run(main())
    assert results[0] is None and results[3] is None
    assert isinstance(results[1], OSError) and results[1].errno == errno.ENOSPC
    assert isinstance(results[2], FileNotFoundError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c"]


def test_file_mode_is_used_where_syncfs_is_missing_or_asked_for(tmp_path):
    assert durable.GroupCommitter(tmp_path, mode=durable.SYNC_FILE).mode == durable.SYNC_FILE
    expected = durable.SYNC_FILESYSTEM if durable.syncfs_available() else durable.SYNC_FILE
    assert durable.GroupCommitter(tmp_path).mode == expected


# -- spool ids: an envelope a dead process with our pid left is never overwritten


def test_a_new_message_never_takes_the_id_of_an_envelope_left_in_the_spool(tmp_path):
    from emailrelay.envelope import Envelope
    from emailrelay.spool import Spool, State

    spool = Spool(tmp_path, fsync=False)
    msg = spool.create()
    # a dead process with our pid left an envelope (without content) under the id we are about to use
    left = spool.envelope_path(msg.id, State.BAD)
    left.write_bytes(b"theirs")
    taken = msg.id
    msg.write(b"Subject: mine\r\n\r\nx\r\n")
    spool.commit_sync(msg, Envelope(from_address="a@b", to_remote=["c@d"], client="127.0.0.1"))
    assert msg.id != taken
    assert left.read_bytes() == b"theirs" and not spool.content_path(taken).exists()
    assert spool.content_path(msg.id).read_bytes() == b"Subject: mine\r\n\r\nx\r\n"


def test_only_ids_of_our_first_second_need_a_look_at_the_disk(tmp_path):
    from emailrelay.spool import Spool

    spool = Spool(tmp_path, fsync=False)
    first = spool.new_id()
    pid, second = int(first.split(".")[1]), int(first.split(".")[2])
    assert spool.may_be_taken(first)
    assert spool.may_be_taken(f"emailrelay.{pid}.{second - 60}.1")  # the clock was stepped back
    assert not spool.may_be_taken(f"emailrelay.{pid}.{second + 1}.7")
    assert spool.may_be_taken(f"emailrelay.{pid + 1}.{second + 1}.7")  # not ours
    assert spool.may_be_taken("not-an-id")
