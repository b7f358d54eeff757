"""Worker lifecycle: one state machine per supervised worker, with restart backoff.

The supervisor starts each worker (``storage``, ``forward``, ``pop``,
``proxy``, or ``in/storage`` for a named unit) as a child process and feeds
what happens to it into a `Worker`: `Worker.spawned`, `Worker.ready`,
`Worker.exited`, `Worker.stop_requested`, `Worker.reset`.  The `Worker`
decides the next state and when a restart is due (`Worker.next_start_at`,
`Worker.due`); the supervisor acts on that.  This module is pure: it starts
no processes, sends no signals, does not sleep and knows nothing of asyncio
or of mail.  All times come from a monotonic clock that is passed in
(default `time.monotonic`), so tests drive it with a fake clock.

States (supervisord/circus names), in one table, `TRANSITIONS`;
`Worker.enter_state` refuses moves that are not in it (`IllegalTransition`)
and reports every move, ``old -> new`` with a reason, to ``on_change``
(the supervisor's logger):

    =========  ===================================  ==============================
    state      meaning                              may go to
    =========  ===================================  ==============================
    STOPPED    no process; not to be started        STARTING
    STARTING   spawned, has not reported ready      RUNNING, BACKOFF, FATAL,
                                                    STOPPING
    RUNNING    reported ready                       STOPPING, EXITED, BACKOFF,
                                                    FATAL
    BACKOFF    failed start; restart after delay    STARTING, STOPPED
    STOPPING   asked to stop; waiting for the exit  STOPPED
    EXITED     died after a good run; restart now   STARTING, STOPPED
    FATAL      too many failed starts; reported     STOPPED
    =========  ===================================  ==============================

Events and what they do:

* ``spawned(pid)``: STOPPED, BACKOFF or EXITED -> STARTING.  A process
  that could not be spawned at all is ``spawn_failed(reason)``: a failed
  start (STARTING, then BACKOFF or FATAL).
* ``ready()``: STARTING -> RUNNING.  A worker is RUNNING only after it has
  said it is ready, never merely because its process exists.
* ``exited(code_or_signal, reason)``: from STOPPING -> STOPPED (asked for).
  Otherwise the death was unexpected.  A worker that dies before it has been
  RUNNING for ``startsecs`` (including one that never became ready) has
  *failed to start*: ``failures`` goes up by one, and the worker goes to
  BACKOFF, or to FATAL once ``failures`` reaches ``max_retries``.  A worker
  that dies after RUNNING for at least ``startsecs`` had a good run: its
  ``failures`` go back to 0 and it goes to EXITED, due for restart at once.
* ``stop_requested()``: STARTING or RUNNING -> STOPPING (the supervisor
  must signal the process); BACKOFF or EXITED -> STOPPED (no process, the
  pending restart is cancelled); STOPPED, STOPPING and FATAL stay put.
* ``reset()``: the operator's ``start`` of a FATAL worker: FATAL -> STOPPED
  with ``failures`` cleared, after which the supervisor spawns it.

Backoff: the n-th consecutive failed start waits ``backoff_base * 2**(n-1)``
seconds, capped at ``backoff_max`` (`backoff_delay`), counted from the
exit.  FATAL is final until `Worker.reset`: a crash loop ends there and is
reported (``last_error``, ``on_change``), not retried for ever and not
hidden.

Not this module's job: spawning, reaping, signals and stop deadlines
(supervisor.py), what a worker does (workers/), logging format (log.py).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class WorkerState(enum.Enum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"


_S = WorkerState
#: Every legal state change; anything else is refused by `Worker.enter_state`.
TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    _S.STOPPED: frozenset({_S.STARTING}),
    _S.STARTING: frozenset({_S.RUNNING, _S.BACKOFF, _S.FATAL, _S.STOPPING}),
    _S.RUNNING: frozenset({_S.STOPPING, _S.EXITED, _S.BACKOFF, _S.FATAL}),
    _S.BACKOFF: frozenset({_S.STARTING, _S.STOPPED}),
    _S.STOPPING: frozenset({_S.STOPPED}),
    _S.EXITED: frozenset({_S.STARTING, _S.STOPPED}),
    _S.FATAL: frozenset({_S.STOPPED}),
}

#: States in which the worker has a live process.
PROCESS_STATES: frozenset[WorkerState] = frozenset({_S.STARTING, _S.RUNNING, _S.STOPPING})

Clock = Callable[[], float]
OnChange = Callable[["Worker", WorkerState, WorkerState, str], None]


class IllegalTransition(RuntimeError):
    """A state change not in `TRANSITIONS`, or an event the current state cannot take.

    This is a bug in the caller (the supervisor), not a worker failure:
    retrying the same call cannot help.
    """


def backoff_delay(failures: int, base: float, maximum: float) -> float:
    """The wait before restarting after the ``failures``-th consecutive failed start.

    Returns ``base * 2**(failures-1)`` capped at ``maximum``; 0.0 when
    ``failures`` is 0 or less.
    """
    if failures <= 0:
        return 0.0
    # Cap the exponent so that a huge count cannot overflow the float.
    return min(base * 2.0 ** min(failures - 1, 1023), maximum)


def describe_exit(code_or_signal: int | None) -> str:
    """Text for an exit status in the asyncio/subprocess convention (negative = signal)."""
    if code_or_signal is None:
        return "exited"
    if code_or_signal < 0:
        return f"killed by signal {-code_or_signal}"
    return f"exited with status {code_or_signal}"


class Worker:
    """One supervised worker's state, counters and restart policy.

    Attributes:
        name: the worker's name (``storage``, ``in/storage`` ...).
        state: the current `WorkerState`; change it only by `enter_state`.
        pid: the process id while there is a process, else None.
        restarts: how many times the worker has been spawned again after
            dying (not counting the first start or a start after STOPPED).
        failures: consecutive failed starts (see the module docstring).
        started_at, ready_at, exited_at: clock readings of the last spawn,
            ready report and exit; None until they happen.
        exit_status: the last exit status (negative = signal), or None.
        last_error: why the worker last died unexpectedly or failed to
            spawn, or None.
        startsecs: how long a worker must be RUNNING for its start to count
            as good.
        max_retries: consecutive failed starts that make the worker FATAL.
        backoff_base, backoff_max: the backoff delay (`backoff_delay`).
    """

    def __init__(
        self,
        name: str,
        *,
        clock: Clock = time.monotonic,
        on_change: OnChange | None = None,
        startsecs: float = 1.0,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        if max_retries < 1:
            raise ValueError("max_retries must be at least 1")
        if startsecs < 0 or backoff_base < 0 or backoff_max < 0:
            raise ValueError("startsecs and backoff times must not be negative")
        self.name = name
        self.clock = clock
        self.on_change = on_change
        self.startsecs = startsecs
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.state = WorkerState.STOPPED
        self.pid: int | None = None
        self.restarts = 0
        self.failures = 0
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.exited_at: float | None = None
        self.exit_status: int | None = None
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"<Worker {self.name} {self.state.value} pid={self.pid} failures={self.failures}>"

    # -- the one way to change state -------------------------------------------

    def enter_state(self, new: WorkerState, reason: str = "") -> None:
        """Move to ``new`` if `TRANSITIONS` allows it and report ``old -> new``.

        Raises:
            IllegalTransition: ``new`` is not reachable from the current
                state (a move to the same state is illegal too).
        """
        old = self.state
        if new not in TRANSITIONS[old]:
            why = f" ({reason})" if reason else ""
            raise IllegalTransition(
                f"worker {self.name}: illegal state change {old.value} -> {new.value}{why}"
            )
        self.state = new
        if self.on_change is not None:
            self.on_change(self, old, new, reason)

    # -- events from the supervisor --------------------------------------------

    def spawned(self, pid: int) -> None:
        """A process has been started for this worker: -> STARTING."""
        restart = self.state in (WorkerState.BACKOFF, WorkerState.EXITED)
        self.enter_state(WorkerState.STARTING, f"spawned pid {pid}")
        if restart:
            self.restarts += 1
        self.pid = pid
        self.started_at = self.clock()
        self.ready_at = None
        self.exit_status = None

    def spawn_failed(self, reason: str) -> None:
        """No process could be started (exec failed ...): counts as a failed start."""
        restart = self.state in (WorkerState.BACKOFF, WorkerState.EXITED)
        self.enter_state(WorkerState.STARTING, "spawning")
        if restart:
            self.restarts += 1
        now = self.clock()
        self.pid = None
        self.started_at = now
        self.ready_at = None
        self.exited_at = now
        self.exit_status = None
        self.last_error = f"cannot spawn: {reason}"
        self._failed_start(self.last_error)

    def ready(self) -> None:
        """The worker has reported that it is ready: STARTING -> RUNNING."""
        self.enter_state(WorkerState.RUNNING, "ready")
        self.ready_at = self.clock()

    def exited(self, code_or_signal: int | None, reason: str = "") -> WorkerState:
        """The worker's process has gone; decide what happens next.

        Args:
            code_or_signal: the exit status, negative for a signal (the
                asyncio/subprocess convention), or None if unknown.
            reason: extra text for the log and ``last_error``.

        Returns:
            The new state: STOPPED, EXITED, BACKOFF or FATAL.

        Raises:
            IllegalTransition: the worker had no process.
        """
        if self.state not in PROCESS_STATES:
            raise IllegalTransition(
                f"worker {self.name}: exit reported in state {self.state.value}, which has no process"
            )
        now = self.clock()
        text = describe_exit(code_or_signal) + (f": {reason}" if reason else "")
        self.pid = None
        self.exited_at = now
        self.exit_status = code_or_signal
        if self.state is WorkerState.STOPPING:
            self.enter_state(WorkerState.STOPPED, text)
            return self.state
        self.last_error = text
        good_run = (
            self.state is WorkerState.RUNNING
            and self.ready_at is not None
            and now - self.ready_at >= self.startsecs
        )
        if good_run:
            self.failures = 0
            self.enter_state(WorkerState.EXITED, text)
        else:
            self._failed_start(text)
        return self.state

    def stop_requested(self) -> bool:
        """The worker is to stop (operator ``stop`` or shutdown).

        Returns:
            True if there is a process that the supervisor must now signal
            (the worker is STOPPING and `exited` will finish the stop);
            False if there was nothing to signal.
        """
        if self.state in (WorkerState.STARTING, WorkerState.RUNNING):
            self.enter_state(WorkerState.STOPPING, "stop requested")
            return True
        if self.state in (WorkerState.BACKOFF, WorkerState.EXITED):
            self.enter_state(WorkerState.STOPPED, "stop requested; restart cancelled")
        return False

    def reset(self) -> None:
        """The operator's ``start`` of a FATAL worker: FATAL -> STOPPED, failures cleared.

        The supervisor spawns the worker next.  Raises `IllegalTransition`
        if the worker is not FATAL.
        """
        self.enter_state(WorkerState.STOPPED, "reset by operator")
        self.failures = 0

    # -- restart policy ----------------------------------------------------------

    def next_start_at(self) -> float | None:
        """When the worker is next to be spawned, on the clock; None if not at all.

        BACKOFF: the exit time plus the backoff delay for ``failures``;
        EXITED: the exit time (restart at once); any other state: None.
        """
        if self.exited_at is None:
            return None
        if self.state is WorkerState.BACKOFF:
            return self.exited_at + backoff_delay(self.failures, self.backoff_base, self.backoff_max)
        if self.state is WorkerState.EXITED:
            return self.exited_at
        return None

    def due(self, now: float | None = None) -> bool:
        """True if the supervisor should spawn the worker now (``now`` defaults to the clock)."""
        at = self.next_start_at()
        if at is None:
            return False
        return (self.clock() if now is None else now) >= at

    # -- internals ------------------------------------------------------------------

    def _failed_start(self, text: str) -> None:
        self.failures += 1
        if self.failures >= self.max_retries:
            self.enter_state(WorkerState.FATAL, f"{text}; gave up after {self.failures} failed starts")
        else:
            self.enter_state(WorkerState.BACKOFF, f"{text}; failed start {self.failures}")
