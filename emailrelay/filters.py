"""Filters: running --filter and --client-filter chains and reading their verdicts.

A filter specification (SPEC.md 3.1) is a comma list of items, each a
program path (bare or ``file:``) or a built-in (``exit:<n>``,
``sleepms:<n>``); the items form a chain that runs in order and stops at
the first result that is not ok (3.11).  `parse_chain` checks a
specification and raises `FilterSpecError` with 2.6's reasons.

An executable filter runs exactly as SPEC.md 3.2 says: argv ``[program,
content-path, envelope-path]``, environment ``PATH=/usr/bin:/bin`` and
``IFS`` only, stdin and stderr on /dev/null, stdout on a pipe of which the
first 1024 bytes are kept, in a new process group.  It runs under asyncio,
so other sessions go on while it works.  After --filter-timeout seconds
the whole process group gets SIGTERM (then SIGKILL) and the result is a
failure with reason ``timeout``.  A program that cannot be started counts
as exit 127 with ``filter exec error: <reason>``.

The exit code means different things for server and client filters (3.3);
`Result` carries the outcome (ok, abandon, fail), the special flag
(rescan for server filters, stop for client filters), and for failures
the response, reason and SMTP code parsed from the program's output (3.4).

The file built-ins (copy:, deliver:, split:, msgid:) live in
filters_file.py and the network ones (net:, spam:, spam-edit:, mx:) in
filters_net.py; `FilterContext` gives them the spool, the message id, the
domain and the delivery directory.

Not here: what a result does to the spool or the SMTP reply (the workers
decide).
"""

from __future__ import annotations

import asyncio
import enum
import os
import re
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: Filter stdout kept (SPEC.md appendix A).
STDOUT_LIMIT = 1024
FILTER_ENV = {"PATH": "/usr/bin:/bin", "IFS": " \t\n"}
BUILTINS = ("exit", "net", "spam", "spam-edit", "copy", "deliver", "split", "mx", "msgid", "file", "sleepms")
#: Built-ins implemented in their own modules: kind -> module name.
#: Each module has ``check(kind, value)`` (raises FilterSpecError) and
#: ``async run(kind, value, content, envelope, *, client, timeout, context) -> Result``.
BUILTIN_MODULES = {
    "copy": "emailrelay.filters_file",
    "deliver": "emailrelay.filters_file",
    "split": "emailrelay.filters_file",
    "msgid": "emailrelay.filters_file",
    "net": "emailrelay.filters_net",
    "spam": "emailrelay.filters_net",
    "spam-edit": "emailrelay.filters_net",
    "mx": "emailrelay.filters_net",
}


@dataclass(frozen=True)
class FilterContext:
    """What built-in filters may need beyond the two file paths."""

    spool_dir: str = ""
    msg_id: str = ""
    domain: str = "localhost"  # --domain, for msgid:
    delivery_dir: str = ""  # --delivery-dir; "" = the spool directory
    new_id: Callable[[], str] | None = None  # allocates message ids (split:)


def _builtin(kind: str):  # noqa: ANN202 - the module
    import importlib

    try:
        return importlib.import_module(BUILTIN_MODULES[kind])
    except ModuleNotFoundError:
        return None


class FilterSpecError(Exception):
    """A bad filter specification; str() is the reason."""


class Outcome(enum.Enum):
    OK = "ok"
    ABANDON = "abandon"
    FAIL = "fail"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    special: bool = False  # server: rescan; client: stop
    response: str = ""  # for failures: the text for the SMTP reply
    reason: str = ""  # for failures: the text for the log and the envelope
    code: int = 0  # for failures: an SMTP code the filter gave (400-599), else 0

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


OK = Result(Outcome.OK)

#: SPEC.md 3.3: exit code -> (outcome, special), for server and client filters.
_SERVER = {0: (Outcome.OK, False), 100: (Outcome.ABANDON, False), 101: (Outcome.OK, False),
           102: (Outcome.ABANDON, True), 103: (Outcome.OK, True), 104: (Outcome.FAIL, True),
           105: (Outcome.FAIL, False)}
_CLIENT = {0: (Outcome.OK, False), 100: (Outcome.ABANDON, False), 101: (Outcome.OK, False),
           102: (Outcome.OK, True), 103: (Outcome.OK, False), 104: (Outcome.ABANDON, True),
           105: (Outcome.FAIL, True)}


def interpret(exit_code: int, output: bytes, *, client: bool, name: str = "") -> Result:
    """The result of a filter that exited with exit_code and printed output (SPEC.md 3.3, 3.4)."""
    outcome, special = (_CLIENT if client else _SERVER).get(exit_code, (Outcome.FAIL, False))
    if outcome is not Outcome.FAIL:
        return Result(outcome, special)
    from emailrelay.envelope import printable

    text = output.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    kept = []
    for line in text.split("\n"):
        for opener, closer in (("<<", ">>"), ("[[", "]]")):
            if line.startswith(opener) and closer in line[2:]:
                kept.append(printable(line[2 : line.index(closer, 2)]))
                break
    response = kept[0] if kept and kept[0] else "rejected"
    code = 0
    m = re.match(r"^([45][0-9][0-9])( |\t|$)", response)
    if m:
        code = int(m.group(1))
        response = response[len(m.group(0)) :] or "rejected"
    reason = kept[1] if len(kept) > 1 and kept[1] else response
    if response.startswith("filter exec error:"):
        reason, response, code = response, "rejected", 0
    if not kept and name.startswith("exit:"):
        reason = name
    return Result(Outcome.FAIL, special, response.replace("\t", " "), reason, code)


@dataclass(frozen=True)
class Filter:
    """One item of a chain."""

    kind: str  # "program", "exit", "sleepms", or a BUILTIN_MODULES kind
    value: str  # the program path, the number, or the built-in's options
    spec: str  # as written

    async def run(
        self, content: str, envelope: str, *, client: bool, timeout: float, context: FilterContext | None = None
    ) -> Result:
        if self.kind == "exit":
            return interpret(int(self.value), b"", client=client, name=self.spec)
        if self.kind == "sleepms":
            await asyncio.sleep(int(self.value) / 1000)
            return OK
        if self.kind in BUILTIN_MODULES:
            module = _builtin(self.kind)
            assert module is not None
            return await module.run(
                self.kind, self.value, content, envelope, client=client, timeout=timeout,
                context=context or FilterContext(),
            )
        return await run_program(self.value, [content, envelope], client=client, timeout=timeout)


@dataclass(frozen=True)
class Chain:
    """Filters that run in order; the first result that is not ok ends the chain."""

    filters: tuple[Filter, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.filters)

    async def run(
        self, content: str, envelope: str, *, client: bool, timeout: float, context: FilterContext | None = None
    ) -> Result:
        special = False
        for f in self.filters:
            result = await f.run(content, envelope, client=client, timeout=timeout, context=context)
            special = special or result.special
            if not result.ok:
                return Result(result.outcome, special, result.response, result.reason, result.code)
        return Result(Outcome.OK, special)


def parse_chain(items: Sequence[str], *, base_dir: str | None = None) -> Chain:
    """Check and build a chain from the comma-separated option items.

    Relative program paths are made absolute against `base_dir` (the
    start-up directory).  Raises FilterSpecError.
    """
    filters = []
    for item in items:
        spec = item.strip()
        if not spec:
            filters.append(Filter("exit", "0", "exit:0"))
            continue
        kind, colon, value = spec.partition(":")
        if colon and kind in BUILTINS:
            if kind in ("exit", "sleepms"):
                if not value:
                    raise FilterSpecError("numeric value missing")
                if not value.isdigit():
                    raise FilterSpecError(f"invalid numeric value: {value}")
                if int(value) >= 0xFFFFFFFF // 1000:
                    raise FilterSpecError(f"numeric value too big: {value}")
                filters.append(Filter(kind, str(int(value)), spec))
                continue
            if kind in BUILTIN_MODULES:
                module = _builtin(kind)
                if module is None or kind not in getattr(module, "KINDS", ()):
                    raise FilterSpecError(f"the {kind}: filter is not supported yet")
                module.check(kind, value)
                filters.append(Filter(kind, value, spec))
                continue
            spec_path = value  # file:<path>
        else:
            spec_path = spec
        path = _program_path(spec_path, base_dir)
        filters.append(Filter("program", path, spec))
    return Chain(tuple(filters))


def _program_path(path: str, base_dir: str | None) -> str:
    from emailrelay.options import expand_app

    if path.startswith("@app"):
        path = expand_app(path)
    if not os.path.isabs(path):
        path = os.path.join(base_dir or os.getcwd(), path)
    return path


def drain_warnings() -> list[str]:
    """Warnings the built-in modules have collected since the last call (e.g. copy: with no sub-directories)."""
    import sys

    found: list[str] = []
    for name in set(BUILTIN_MODULES.values()):
        module = sys.modules.get(name)
        pending = getattr(module, "WARNINGS", None)
        if pending:
            found += pending
            pending.clear()
    return found


def program_warnings(chain: Chain, what: str = "filter") -> list[str]:
    """Start-up warnings for missing programs (OPTIONS.md 9.2)."""
    warnings = []
    for f in chain.filters:
        if f.kind != "program":
            continue
        if not os.path.exists(f.value):
            warnings.append(f"{what} program does not exist: {f.value}")
        elif os.path.isdir(f.value):
            warnings.append(f"invalid program: {f.value}")
    return warnings


async def run_program(program: str, args: list[str], *, client: bool, timeout: float) -> Result:
    """Run one filter program and interpret its exit code and output."""
    code, output = await execute(program, args, timeout=timeout)
    if code is None:
        return Result(Outcome.FAIL, False, "error", "timeout", 0)
    return interpret(code, output, client=client)


#: (uid, gid) that filter and verifier programs run as (--user when started as root), or None.
IDENTITY: tuple[int, int] | None = None


async def execute(program: str, args: list[str], *, timeout: float) -> tuple[int | None, bytes]:
    """Run a program the way filters and verifiers run (SPEC.md 3.2).

    Returns (exit code, the first 1024 bytes of stdout); the exit code is
    None after a timeout (the process group has been killed), 128+signo
    for a signal, and 127 with ``<<filter exec error: ...>>`` output when
    the program cannot be started.
    """
    loop = asyncio.get_running_loop()
    try:
        # subprocess.Popen, not the event loop's subprocess support: uvloop's
        # has no user/group switch, and it falls back to /bin/sh for a script
        # without a #! line where execve(2) says "exec format error"
        proc = subprocess.Popen(
            [program, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=FILTER_ENV,
            start_new_session=True,
            close_fds=True,
            **({"user": IDENTITY[0], "group": IDENTITY[1], "extra_groups": []} if IDENTITY else {}),
        )
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
        return 127, f"<<filter exec error: {reason}>>".encode()
    assert proc.stdout is not None
    exited = _exit_of(loop, proc)
    reader = asyncio.StreamReader()
    try:
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), proc.stdout)
    except BaseException:
        _kill_group(proc.pid, signal.SIGKILL)
        await asyncio.shield(exited)
        proc.stdout.close()
        raise
    kept = bytearray()

    async def read_all() -> None:
        while chunk := await reader.read(65536):
            if len(kept) < STDOUT_LIMIT:
                kept.extend(chunk[: STDOUT_LIMIT - len(kept)])

    try:
        async with asyncio.timeout(timeout or None):
            await read_all()
            code = await asyncio.shield(exited)
    except TimeoutError:
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(2):
                await asyncio.shield(exited)
        except TimeoutError:
            pass
        return None, bytes(kept)
    finally:
        transport.close()
        # however we leave (timeout, shutdown, cancellation), nothing of the filter stays behind
        if not exited.done():
            _kill_group(proc.pid, signal.SIGKILL)
            try:
                await asyncio.shield(exited)
            except asyncio.CancelledError:
                pass
    if code < 0:
        code = 128 - code
    return code, bytes(kept)


def _exit_of(loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes]) -> asyncio.Future[int]:
    """A future of the process's exit status, reaped when it ends (any event loop)."""
    future: asyncio.Future[int] = loop.create_future()

    def reap() -> None:
        code = proc.wait()
        if not future.done():
            future.set_result(code)

    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd (not Linux, or before 5.3): a thread waits
        loop.run_in_executor(None, proc.wait).add_done_callback(lambda _: loop.call_soon(reap))
        return future

    def readable() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        reap()

    loop.add_reader(pidfd, readable)
    return future


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
