"""Tests for emailrelay.lifecycle: the transition table, backoff and crash loops, on a fake clock."""

from __future__ import annotations

import itertools

import pytest

from emailrelay.lifecycle import (
    TRANSITIONS,
    IllegalTransition,
    Worker,
    WorkerState,
    backoff_delay,
    describe_exit,
)

S = WorkerState


class FakeClock:
    """A plain callable clock: returns `now`, which the test sets."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock | None = None, **kw: object) -> tuple[Worker, list[tuple[S, S, str]]]:
    changes: list[tuple[S, S, str]] = []

    def on_change(w: Worker, old: S, new: S, reason: str) -> None:
        changes.append((old, new, reason))

    w = Worker("in/storage", clock=clock or FakeClock(), on_change=on_change, **kw)  # type: ignore[arg-type]
    return w, changes


# -- the table -----------------------------------------------------------------------

ALL_PAIRS = list(itertools.product(S, S))
LEGAL = [(a, b) for a, b in ALL_PAIRS if b in TRANSITIONS[a]]
ILLEGAL = [(a, b) for a, b in ALL_PAIRS if b not in TRANSITIONS[a]]


def test_table_covers_every_state():
    assert set(TRANSITIONS) == set(S)
    assert all(isinstance(v, frozenset) for v in TRANSITIONS.values())
    assert all(a not in TRANSITIONS[a] for a in S)  # no self-moves


def test_table_is_as_documented():
    assert TRANSITIONS == {
        S.STOPPED: {S.STARTING},
        S.STARTING: {S.RUNNING, S.BACKOFF, S.FATAL, S.STOPPING},
        S.RUNNING: {S.STOPPING, S.EXITED, S.BACKOFF, S.FATAL},
        S.BACKOFF: {S.STARTING, S.STOPPED},
        S.STOPPING: {S.STOPPED},
        S.EXITED: {S.STARTING, S.STOPPED},
        S.FATAL: {S.STOPPED},
    }


def test_state_names_are_supervisord_names():
    assert [s.value for s in S] == [
        "STOPPED",
        "STARTING",
        "RUNNING",
        "BACKOFF",
        "STOPPING",
        "EXITED",
        "FATAL",
    ]


@pytest.mark.parametrize(("old", "new"), LEGAL, ids=lambda s: s.value)
def test_legal_transition(old: S, new: S):
    w, changes = make()
    w.state = old
    w.enter_state(new, "because")
    assert w.state is new
    assert changes == [(old, new, "because")]


@pytest.mark.parametrize(("old", "new"), ILLEGAL, ids=lambda s: s.value)
def test_illegal_transition_refused(old: S, new: S):
    w, changes = make()
    w.state = old
    with pytest.raises(IllegalTransition) as info:
        w.enter_state(new, "because")
    assert w.state is old
    assert changes == []
    assert f"worker in/storage: illegal state change {old.value} -> {new.value}" in str(info.value)


# -- backoff ------------------------------------------------------------------------------


def test_backoff_sequence_and_cap():
    assert [backoff_delay(n, 1.0, 60.0) for n in range(0, 9)] == [
        0.0,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        32.0,
        60.0,
        60.0,
    ]
    assert backoff_delay(5, 0.5, 3.0) == 3.0
    assert backoff_delay(10**6, 1.0, 60.0) == 60.0  # no overflow


def test_backoff_schedule_on_worker():
    clock = FakeClock(0.0)
    w, _ = make(clock, max_retries=10, backoff_base=2.0, backoff_max=10.0)
    delays = []
    w.spawned(1)
    for pid in range(2, 8):
        clock.now += 0.1
        assert w.exited(1) is S.BACKOFF
        at = w.next_start_at()
        assert at is not None
        delays.append(round(at - clock.now, 6))
        clock.now = at - 0.01
        assert not w.due()
        clock.now = at
        assert w.due()
        assert w.due(at) and not w.due(at - 1)
        w.spawned(pid)
    assert delays == [2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert w.restarts == 6


# -- a normal life -------------------------------------------------------------------------------


def test_start_ready_stop():
    clock = FakeClock(10.0)
    w, changes = make(clock)
    assert w.state is S.STOPPED and w.pid is None
    assert not w.due(1e9) and w.next_start_at() is None
    w.spawned(1234)
    assert (w.state, w.pid, w.started_at) == (S.STARTING, 1234, 10.0)
    clock.now = 10.5
    w.ready()
    assert (w.state, w.ready_at) == (S.RUNNING, 10.5)
    assert w.stop_requested() is True
    assert w.state is S.STOPPING
    clock.now = 11.0
    assert w.exited(-15) is S.STOPPED
    assert (w.pid, w.exited_at, w.exit_status) == (None, 11.0, -15)
    assert w.last_error is None and w.failures == 0 and w.restarts == 0
    assert [(a, b) for a, b, _ in changes] == [
        (S.STOPPED, S.STARTING),
        (S.STARTING, S.RUNNING),
        (S.RUNNING, S.STOPPING),
        (S.STOPPING, S.STOPPED),
    ]
    assert not w.due(1e9)


def test_running_only_after_ready():
    clock = FakeClock()
    w, _ = make(clock, startsecs=1.0)
    w.spawned(1)
    clock.now += 1000  # alive for a long time but never ready: still a failed start
    assert w.state is S.STARTING
    assert w.exited(1, "bind failed") is S.BACKOFF
    assert w.failures == 1
    assert w.last_error == "exited with status 1: bind failed"


# -- crash loops ---------------------------------------------------------------------------------


def test_crash_loop_ends_in_fatal():
    clock = FakeClock(0.0)
    w, changes = make(clock, max_retries=3, startsecs=5.0)
    w.spawned(1)
    w.ready()
    clock.now = 1.0  # died 1s after ready, startsecs is 5: a failed start
    assert w.exited(-11) is S.BACKOFF and w.failures == 1
    clock.now = w.next_start_at() or 0
    w.spawned(2)
    clock.now += 0.1
    assert w.exited(2) is S.BACKOFF and w.failures == 2
    clock.now = w.next_start_at() or 0
    w.spawned(3)
    assert w.exited(3, "no config") is S.FATAL
    assert w.failures == 3 and w.restarts == 2
    assert w.last_error == "exited with status 3: no config"
    assert w.next_start_at() is None and not w.due(1e9)
    assert changes[-1][:2] == (S.STARTING, S.FATAL)
    assert "gave up after 3 failed starts" in changes[-1][2]
    # FATAL stays FATAL: no restart, a stop does nothing, only reset leaves it
    assert w.stop_requested() is False and w.state is S.FATAL
    with pytest.raises(IllegalTransition):
        w.spawned(4)
    with pytest.raises(IllegalTransition):
        w.exited(0)
    w.reset()
    assert (w.state, w.failures) == (S.STOPPED, 0)
    w.spawned(5)
    assert w.state is S.STARTING


def test_reset_only_from_fatal():
    w, _ = make()
    with pytest.raises(IllegalTransition):
        w.reset()


def test_spawn_failure_is_a_failed_start():
    clock = FakeClock(0.0)
    w, changes = make(clock, max_retries=2)
    w.spawn_failed("No such file or directory")
    assert w.state is S.BACKOFF and w.failures == 1 and w.pid is None
    assert w.last_error == "cannot spawn: No such file or directory"
    assert w.next_start_at() == 1.0
    clock.now = 1.0
    w.spawn_failed("No such file or directory")
    assert w.state is S.FATAL and w.restarts == 1
    assert [(a, b) for a, b, _ in changes] == [
        (S.STOPPED, S.STARTING),
        (S.STARTING, S.BACKOFF),
        (S.BACKOFF, S.STARTING),
        (S.STARTING, S.FATAL),
    ]


def test_long_running_worker_resets_failure_count():
    clock = FakeClock(0.0)
    w, _ = make(clock, max_retries=3, startsecs=5.0)
    w.spawned(1)
    assert w.exited(1) is S.BACKOFF
    clock.now = w.next_start_at() or 0
    w.spawned(2)
    assert w.exited(1) is S.BACKOFF
    assert w.failures == 2  # one more failed start would be FATAL
    clock.now = w.next_start_at() or 0
    w.spawned(3)
    w.ready()
    clock.now += 5.0  # RUNNING for exactly startsecs: a good run
    assert w.exited(-9, "oom") is S.EXITED
    assert w.failures == 0
    assert w.last_error == "killed by signal 9: oom"
    # restart at once, and the next failure starts the count again
    assert w.next_start_at() == clock.now and w.due()
    w.spawned(4)
    clock.now += 0.1
    assert w.exited(1) is S.BACKOFF and w.failures == 1
    assert w.next_start_at() == clock.now + 1.0
    assert w.restarts == 3


def test_exit_just_before_startsecs_is_a_failed_start():
    clock = FakeClock(0.0)
    w, _ = make(clock, startsecs=5.0)
    w.spawned(1)
    w.ready()
    clock.now = 4.999
    assert w.exited(0) is S.BACKOFF and w.failures == 1


# -- stopping ----------------------------------------------------------------------------------


def test_stop_during_backoff_cancels_restart():
    clock = FakeClock(0.0)
    w, changes = make(clock)
    w.spawned(1)
    w.exited(1)
    assert w.state is S.BACKOFF and w.next_start_at() == 1.0
    assert w.stop_requested() is False  # nothing to signal
    assert w.state is S.STOPPED
    assert changes[-1] == (S.BACKOFF, S.STOPPED, "stop requested; restart cancelled")
    assert w.next_start_at() is None and not w.due(1e9)


def test_stop_when_exited_cancels_restart():
    clock = FakeClock(0.0)
    w, _ = make(clock, startsecs=0.0)
    w.spawned(1)
    w.ready()
    assert w.exited(0) is S.EXITED
    assert w.stop_requested() is False and w.state is S.STOPPED


def test_stop_while_starting():
    w, _ = make()
    w.spawned(1)
    assert w.stop_requested() is True and w.state is S.STOPPING
    with pytest.raises(IllegalTransition):
        w.ready()  # too late: it is stopping
    assert w.exited(0) is S.STOPPED and w.failures == 0


def test_stop_is_idempotent_where_nothing_runs():
    w, changes = make()
    assert w.stop_requested() is False and w.state is S.STOPPED
    w.spawned(1)
    w.stop_requested()
    assert w.stop_requested() is False and w.state is S.STOPPING
    assert len(changes) == 2


# -- misuse --------------------------------------------------------------------------------------


def test_events_in_wrong_state_are_refused():
    w, _ = make()
    with pytest.raises(IllegalTransition):
        w.ready()
    with pytest.raises(IllegalTransition, match="no process"):
        w.exited(0)
    w.spawned(1)
    with pytest.raises(IllegalTransition):
        w.spawned(2)


def test_bad_settings():
    with pytest.raises(ValueError):
        Worker("x", max_retries=0)
    with pytest.raises(ValueError):
        Worker("x", backoff_base=-1)


def test_default_clock_is_monotonic():
    w = Worker("storage")
    w.spawned(1)
    assert w.started_at is not None and w.started_at > 0


def test_describe_exit():
    assert describe_exit(0) == "exited with status 0"
    assert describe_exit(-9) == "killed by signal 9"
    assert describe_exit(None) == "exited"
