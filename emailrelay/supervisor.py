"""``emailrelay supervise``: run each job of a configuration as a worker process and keep it alive.

One job: process supervision.  From the configuration (the same options
and file format as plain ``emailrelay``) `plan` derives the workers:
``storage`` (the SMTP server; named ``proxy`` instead with --as-proxy or
--immediate: with --immediate it forwards each message itself, with
--as-proxy the forward worker forwards after each session, in parallel;
--storage-workers N adds ``storage-2`` ... on the same listening socket),
``forward`` (when there is a forward address: polling, --forward, runs
asked for by the others), ``pop`` (--pop).  The TCP ``--admin`` interface is
served by the first of them.  The supervisor binds every listening socket
itself and hands the descriptors down (workers/link.py), so a worker that
restarts never closes the port: connections wait in the listen queue.

Each worker's life is a `lifecycle.Worker` (states, backoff, FATAL); this
module spawns, reaps and signals the processes and feeds what happens into
it.  A worker is RUNNING once it says ``ready`` over the admin socket from
the process id the supervisor started.  Workers log to a pipe; each line
becomes a log record tagged with the worker's name, written to the
configured log and streamed to subscribers.

The admin socket (admin_protocol.py) is a Unix socket created 0600 and
checked with SO_PEERCRED: a peer whose uid is not ours is refused.  Its
operations are `Supervisor.op_<name>`.  Spool reads go through
spool_view.py, spool changes through spool.py and resubmit.py: the
supervisor holds no mail policy.

Signals: SIGTERM and SIGINT shut down: stop listening, SIGTERM the SMTP,
POP and proxy workers and wait for them (they finish their sessions within
their own deadline), then the forward worker, SIGKILL after `STOP_DEADLINE`;
then the admin socket and the pid file are removed.  SIGHUP reloads the
configuration (systemd: RELOADING=1 ... READY=1).  Under systemd
(Type=notify) READY=1 is sent once every worker is RUNNING, STATUS= when
worker states change, WATCHDOG=1 when WatchdogSec= is set.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import re
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emailrelay import admin_protocol as proto
from emailrelay import config, lifecycle, options, sdnotify, spool_view
from emailrelay.lifecycle import WorkerState
from emailrelay.log import Log, LogSettings
from emailrelay.smtp_server import bind, format_address
from emailrelay.spool import Spool, default_spool_dir
from emailrelay.workers.link import ENVIRONMENT, WorkerSpec
from emailrelay.workers.runtime import StartupError

#: Seconds a worker may take from spawn to ``ready`` before it is killed.
START_TIMEOUT = 30.0
#: Seconds a worker has to exit after SIGTERM before it gets SIGKILL.
STOP_DEADLINE = 20.0
LOG_HISTORY = 2000
_LOG_LINE = re.compile(r"^[^:\s]+: (?:\d{8}\.\d{6}\.\d{3}: )?(info|warning|error|debug): (.*)$")


@dataclasses.dataclass(frozen=True)
class Job:
    """A worker that a configuration implies: its name, role and listening services."""

    name: str
    role: str
    services: tuple[str, ...] = ()
    unit: str = ""


Units = list[tuple[str, config.ServerConfig]]


def plan(units: Units) -> list[Job]:
    """The workers of a configuration, in start order: per instance (OPTIONS.md section 5),
    ``storage`` or ``proxy``, ``forward``, ``pop``; a named instance's are ``<name>/storage`` ..."""
    jobs: list[Job] = []
    for unit, server in units:
        prefix = f"{unit}/" if unit else ""
        mine: list[Job] = []
        if not server.no_smtp:
            # --immediate forwards inside the SMTP transaction: that worker forwards itself ("proxy" role);
            # --as-proxy forwards after each session, which the forward worker does on a core of its own
            immediate = server.forward is not None and server.forward.immediate
            role = "proxy" if immediate else "storage"
            name = "proxy" if immediate or (server.forward is not None and server.as_proxy) else "storage"
            mine.append(Job(prefix + name, role, ("smtp",), unit))
            # --storage-workers: more SMTP workers on the same listening socket (same key, same descriptors)
            mine += [Job(f"{prefix}{name}-{n}", role, ("smtp",), unit) for n in range(2, server.storage_workers + 1)]
        if server.forward is not None:
            mine.append(Job(prefix + "forward", "forward", (), unit))
        if server.pop is not None:
            mine.append(Job(prefix + "pop", "pop", ("pop",), unit))
        if server.admin is not None and mine:
            mine[0] = dataclasses.replace(mine[0], services=(*mine[0].services, "admin"))
        jobs += mine
    return jobs


ListenKey = tuple[str, str, tuple[str, ...], int]


def _service_key(server: config.ServerConfig, service: str) -> ListenKey:
    """What a listener is: instance, service, addresses, port (a reload keeps listeners whose key stays)."""
    if service == "smtp":
        return (server.unit, service, server.interfaces, server.port)
    if service == "pop":
        assert server.pop is not None
        return (server.unit, service, server.pop.interfaces, server.pop.port)
    assert server.admin is not None
    return (server.unit, service, server.admin.interfaces, server.admin.port)


class Managed:
    """One worker: its lifecycle, its process and what the admin protocol shows of it."""

    def __init__(self, job: Job, on_change: lifecycle.OnChange) -> None:
        self.job = job
        self.worker = lifecycle.Worker(
            job.name, on_change=on_change, startsecs=1.0, max_retries=5, backoff_base=0.5, backoff_max=30.0,
        )
        self.wanted = True
        self.process: asyncio.subprocess.Process | None = None
        self.exited = asyncio.Event()
        self._ps: Any = None

    def describe(self) -> dict[str, Any]:
        w = self.worker
        now = time.monotonic()
        info: dict[str, Any] = {
            "name": w.name, "role": self.job.role, "state": w.state.value, "pid": w.pid,
            "restarts": w.restarts, "failures": w.failures, "last_error": w.last_error,
            "exit_status": w.exit_status,
            "uptime": round(now - w.ready_at, 3) if w.ready_at is not None and w.pid else None,
            "cpu_percent": None, "rss": None, "wanted": self.wanted,
        }
        if w.pid:
            info.update(_usage(self, w.pid))
        return info


def _usage(holder: Any, pid: int) -> dict[str, Any]:
    """CPU (percent since the last call) and RSS of one process, by psutil."""
    import psutil

    try:
        ps = holder._ps
        if ps is None or ps.pid != pid:
            ps = holder._ps = psutil.Process(pid)
        with ps.oneshot():
            return {"cpu_percent": ps.cpu_percent(None), "rss": ps.memory_info().rss}
    except psutil.Error:
        return {}


class _Peer:
    """One admin connection."""

    def __init__(self, writer: asyncio.StreamWriter, pid: int) -> None:
        self.writer = writer
        self.pid = pid
        self.streams: set[str] = set()
        self.worker: Managed | None = None

    def send(self, message: dict[str, Any]) -> bool:
        if self.writer.is_closing():
            return False
        self.writer.write(proto.encode(message))
        return True


class Supervisor:
    def __init__(self, args: list[str], parsed: options.Parsed, units: Units, log: Log) -> None:
        self.args = args
        self.parsed = parsed
        self.log = log
        self.socket_path = units[0][1].admin_socket or proto.default_socket_path()
        self._set_units(units)
        self.managed: dict[str, Managed] = {}
        self.listeners: dict[ListenKey, list[socket.socket]] = {}
        self.peers: set[_Peer] = set()
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=LOG_HISTORY)
        self.started = time.monotonic()
        self._wakeup = asyncio.Event()
        self._stopping: asyncio.Future[str] | None = None
        self._announced_ready = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ps: Any = None

    # -- log and events -------------------------------------------------------

    def record(self, worker: str, level: str, text: str) -> None:
        entry = {"worker": worker, "level": level, "text": text, "time": time.time()}
        self.history.append(entry)
        self.log.emit(level, f"[{worker}] {text}")
        message = proto.stream("log", entry)
        for peer in tuple(self.peers):
            if "log" in peer.streams:
                self._stream_to(peer, message)

    def publish(self, event: dict[str, Any]) -> None:
        message = proto.stream("event", event)
        for peer in tuple(self.peers):
            if "event" in peer.streams:
                self._stream_to(peer, message)

    def _stream_to(self, peer: _Peer, message: dict[str, Any]) -> None:
        transport = peer.writer.transport
        if transport.get_write_buffer_size() > proto.SUBSCRIBER_BACKLOG:
            peer.streams.clear()
            peer.send(proto.stream("event", {"type": "overflow", "time": time.time()}))
            return
        peer.send(message)

    def _on_change(self, worker: lifecycle.Worker, old: WorkerState, new: WorkerState, reason: str) -> None:
        level = "error" if new is WorkerState.FATAL else "warning" if new is WorkerState.BACKOFF else "info"
        self.record("supervisor", level, f"worker {worker.name}: {old.value} -> {new.value}" + (f": {reason}" if reason else ""))
        self.publish({"type": "worker", "name": worker.name, "old": old.value, "new": new.value,
                      "reason": reason, "time": time.time()})
        self._wakeup.set()
        self._report_status()

    def _report_status(self) -> None:
        states = [m.worker.state for m in self.managed.values() if m.wanted]
        running = sum(1 for s in states if s is WorkerState.RUNNING)
        fatal = [m.worker.name for m in self.managed.values() if m.worker.state is WorkerState.FATAL]
        text = f"{running} of {len(states)} workers running" + (f"; FATAL: {', '.join(fatal)}" if fatal else "")
        if not self._announced_ready and states and running == len(states):
            self._announced_ready = True
            self._notify(sdnotify.ready)
            self.record("supervisor", "info", "all workers running")
        self._notify(lambda: sdnotify.status(text))

    def _notify(self, send: Callable[[], bool]) -> None:
        try:
            send()
        except OSError as e:
            self.log.warning(f"cannot notify systemd: {(e.strerror or str(e)).lower()}")

    # -- sockets ----------------------------------------------------------------

    def _set_units(self, units: Units) -> None:
        self.units = units
        self.configs = dict(units)
        self.spools: dict[str, Spool] = {}
        for unit, server in units:
            spool = Spool(server.spool_dir or default_spool_dir())
            spool.observer = lambda action, msg_id, detail, unit=unit: self.publish(
                {"type": "message", "action": action, "msg": msg_id, "unit": unit, "worker": "supervisor",
                 "time": time.time()}
            )
            self.spools[unit] = spool

    def _bind_listeners(self, jobs: list[Job]) -> dict[ListenKey, list[socket.socket]]:
        """Listening sockets for `jobs`, re-using those already bound for the same address."""
        wanted: dict[ListenKey, list[socket.socket]] = {}
        for job in jobs:
            for service in job.services:
                key = _service_key(self.configs[job.unit], service)
                if key in wanted:
                    continue
                if key in self.listeners:
                    wanted[key] = self.listeners[key]
                else:
                    wanted[key] = bind(list(key[2]), key[3])
        return wanted

    def _open_admin_socket(self) -> socket.socket:
        path = Path(self.socket_path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        if path.exists() or path.is_symlink():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # stale: nobody listens
            else:
                raise OSError(f"{path}: another supervisor is running")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(64)
        return sock

    # -- workers ----------------------------------------------------------------

    def _track(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _spawn(self, m: Managed) -> None:
        fds: dict[str, list[int]] = {}
        for service in m.job.services:
            fds[service] = [s.fileno() for s in self.listeners[_service_key(self.configs[m.job.unit], service)]]
        spec = WorkerSpec(m.job.name, m.job.role, self.socket_path, fds, m.job.unit)
        env = {k: v for k, v in os.environ.items() if k not in sdnotify.ENVIRONMENT}
        env[ENVIRONMENT] = spec.to_env()
        m.exited.clear()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "emailrelay.workers.child", *self.args,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, env=env,
                pass_fds=[fd for group in fds.values() for fd in group],
            )
        except OSError as e:
            m.worker.spawn_failed((e.strerror or str(e)).lower())
            m.exited.set()
            return
        m.process = process
        m.worker.spawned(process.pid)
        self._track(self._reap(m, process))

    async def _reap(self, m: Managed, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        lines = self._track(self._read_log(m.job.name, process.stderr))
        status = await process.wait()
        try:
            await asyncio.wait_for(lines, 2)
        except (TimeoutError, asyncio.CancelledError):
            pass
        if m.process is process:
            m.process = None
            m.worker.exited(status)
        m.exited.set()
        self._wakeup.set()

    async def _read_log(self, name: str, stream: asyncio.StreamReader) -> None:
        """A worker's stderr, as log records: whatever has arrived is read at once, then split into lines."""
        pending = b""
        while True:
            data = await stream.read(65536)
            if not data:
                if pending:
                    self._log_line(name, pending)
                return
            *lines, pending = (pending + data).split(b"\n")
            if len(pending) > 65536:  # no line is that long: take it as it is
                lines.append(pending)
                pending = b""
            for line in lines:
                self._log_line(name, line)

    def _log_line(self, name: str, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        match = _LOG_LINE.match(text)
        if match:
            self.record(name, match.group(1), match.group(2))
        elif text:
            self.record(name, "error", text)

    def _signal(self, m: Managed, signo: int) -> None:
        if m.process is not None and m.process.returncode is None:
            try:
                m.process.send_signal(signo)
            except ProcessLookupError:
                pass

    async def _stop(self, group: list[Managed], deadline: float = STOP_DEADLINE) -> None:
        """SIGTERM the group's processes, wait, SIGKILL what is left."""
        waiting = []
        for m in group:
            if m.worker.stop_requested():
                self._signal(m, signal.SIGTERM)
                waiting.append(m)
        if not waiting:
            return
        done, pending = await asyncio.wait([self._track(m.exited.wait()) for m in waiting], timeout=deadline)
        if pending:
            for m in waiting:
                if not m.exited.is_set():
                    self.record("supervisor", "warning", f"worker {m.job.name}: did not stop in {deadline:g}s: killed")
                    self._signal(m, signal.SIGKILL)
            await asyncio.wait(pending, timeout=5)

    async def _supervise(self) -> None:
        """Start what is wanted and due; kill workers that never become ready."""
        while True:
            self._wakeup.clear()
            now = time.monotonic()
            wake = now + 1.0
            for m in list(self.managed.values()):
                w = m.worker
                if not m.wanted:
                    continue
                if w.state is WorkerState.STOPPED or (w.state in (WorkerState.BACKOFF, WorkerState.EXITED) and w.due(now)):
                    await self._spawn(m)
                elif w.state in (WorkerState.BACKOFF, WorkerState.EXITED):
                    at = w.next_start_at()
                    if at is not None:
                        wake = min(wake, at)
                elif w.state is WorkerState.STARTING and w.started_at is not None:
                    if now - w.started_at > START_TIMEOUT:
                        self.record("supervisor", "warning", f"worker {w.name}: not ready after {START_TIMEOUT:g}s: killed")
                        self._signal(m, signal.SIGKILL)
            try:
                await asyncio.wait_for(self._wakeup.wait(), max(0.01, wake - time.monotonic()))
            except TimeoutError:
                pass

    def _install(self, units: Units) -> None:
        previous = self.units
        self._set_units(units)
        jobs = plan(units)
        try:
            listeners = self._bind_listeners(jobs)
        except OSError:
            self._set_units(previous)
            raise
        for key, sockets in self.listeners.items():
            if key not in listeners or listeners[key] is not sockets:
                for s in sockets:
                    s.close()
        self.listeners = listeners
        for key, sockets in listeners.items():
            for s in sockets:
                host, port = s.getsockname()[:2]
                unit = f"[{key[0]}] " if key[0] else ""
                self.record("supervisor", "info", f"{unit}{key[1]} listening on {format_address(host, port)}")
        self.managed = {job.name: Managed(job, self._on_change) for job in jobs}
        self._wakeup.set()

    # -- the admin socket ------------------------------------------------------

    async def _admin_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        except OSError:
            pid, uid = 0, -1
        if uid != os.geteuid():
            self.record("supervisor", "warning", f"admin connection refused: peer uid {uid} is not {os.geteuid()}")
            writer.write(proto.encode(proto.failed(None, proto.AdminError(
                "refused", f"permission denied: uid {uid} may not use this admin socket"))))
            await _close(writer)
            return
        peer = _Peer(writer, pid)
        self.peers.add(peer)
        peer.send(proto.greeting(f"emailrelay {_version()}", os.getpid()))
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:
                    peer.send(proto.failed(None, proto.AdminError("bad-request", "line too long")))
                    break
                if not line:
                    break
                try:
                    message = proto.decode(line)
                except proto.ProtocolError as e:
                    peer.send(proto.failed(None, proto.AdminError("bad-request", str(e))))
                    continue
                reply = await self._handle(peer, message)
                if reply is not None:
                    peer.send(reply)
                    try:
                        await writer.drain()
                    except OSError:
                        break
                if message.get("op") == "shutdown" and reply is not None and reply.get("ok"):
                    self._shutdown("admin shutdown command")
        except (ConnectionError, OSError):
            pass
        finally:
            self.peers.discard(peer)
            await _close(writer)

    async def _handle(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any] | None:
        request_id = message.get("id")
        op = message.get("op")
        if op in proto.WORKER_OPERATIONS:
            return self._worker_message(peer, message)
        if op not in proto.OPERATIONS:
            return proto.failed(request_id, proto.AdminError("bad-request", f"unknown operation: {op!r}"))
        handler = getattr(self, "op_" + str(op).replace("-", "_"))
        try:
            return proto.ok(request_id, await handler(peer, message))
        except proto.AdminError as e:
            return proto.failed(request_id, e)
        except (KeyError, TypeError, ValueError) as e:
            return proto.failed(request_id, proto.AdminError("bad-request", f"bad arguments for {op}: {e}"))
        except Exception as e:  # noqa: BLE001 - reported to the client and logged, the supervisor goes on
            self.record("supervisor", "error", f"admin {op}: internal error: {type(e).__name__}: {e}")
            return proto.failed(request_id, proto.AdminError("internal", f"{type(e).__name__}: {e}"))

    def _worker_message(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any] | None:
        op = message["op"]
        if op == "hello":
            m = self.managed.get(str(message.get("worker")))
            if m is None or m.worker.pid is None or m.worker.pid != peer.pid:
                return proto.failed(message.get("id"), proto.AdminError("refused", "not a worker of this supervisor"))
            peer.worker = m
            return None
        m = peer.worker
        if m is None or m.worker.pid != peer.pid:
            return proto.failed(message.get("id"), proto.AdminError("refused", "say hello first"))
        if op == "ready":
            if m.worker.state is WorkerState.STARTING:
                m.worker.ready()
        elif op == "event" and isinstance(message.get("event"), dict):
            self.publish(message["event"])
        elif op == "forward-request":
            self._request_forward(str(message.get("reason", "")))
        return None

    def _request_forward(self, reason: str) -> bool:
        forwarders = [m for m in self.managed.values() if m.job.role == "forward"]
        for m in forwarders:
            if m.worker.state is WorkerState.RUNNING:
                self._signal(m, signal.SIGUSR1)
                return True
        return False

    # -- operations (admin_protocol.OPERATIONS) ------------------------------------

    async def op_status(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any]:
        me = {"pid": os.getpid(), "uptime": round(time.monotonic() - self.started, 3),
              "version": _version(), "admin_socket": self.socket_path,
              "config_file": self.parsed.config_file, **_usage(self, os.getpid())}
        spools = []
        for unit, spool in self.spools.items():
            try:
                counts = await asyncio.to_thread(spool_view.counts, spool)  # a big spool takes a while
                spools.append({"unit": unit, "directory": str(spool.directory), **counts})
            except OSError as e:
                spools.append({"unit": unit, "directory": str(spool.directory), "error": (e.strerror or str(e)).lower()})
        return {"supervisor": me, "workers": [m.describe() for m in self.managed.values()],
                "spool": spools[0], "spools": spools}

    def _spools(self, message: dict[str, Any]) -> list[tuple[str, Spool]]:
        """The spools a request is about: its ``unit``, else all of them."""
        if "unit" in message:
            unit = str(message["unit"])
            if unit not in self.spools:
                raise proto.AdminError("not-found", f"no instance {unit!r}")
            return [(unit, self.spools[unit])]
        return list(self.spools.items())

    def _spool_of(self, message: dict[str, Any]) -> tuple[str, Spool]:
        """The spool that holds the request's ``msg`` (the first one if none does)."""
        candidates = self._spools(message)
        msg_id = str(message["msg"])
        for unit, spool in candidates:
            if "/" not in msg_id and spool.id_in_use(msg_id):
                return unit, spool
        return candidates[0]

    async def op_list(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any]:
        state = str(message.get("state", "all"))
        if state not in proto.STATES:
            raise proto.AdminError("bad-request", f"unknown state {state!r}: one of {', '.join(proto.STATES)}")
        states = spool_view.LISTED if state == "all" else (spool_view.BY_NAME[state],)
        limit = min(int(message.get("limit", 1000)), 100_000)
        offset = max(0, int(message.get("offset", 0)))
        spools = self._spools(message)
        if len(spools) == 1:
            unit, spool = spools[0]
            page = await asyncio.to_thread(spool_view.page, spool, states, offset, limit)
            for row in page["messages"]:
                row["unit"] = unit
            return page
        total, rows = 0, []
        for unit, spool in spools:  # each instance's first offset+limit rows, merged in arrival order
            page = await asyncio.to_thread(spool_view.page, spool, states, 0, offset + limit)
            total += page["total"]
            rows += [{**row, "unit": unit} for row in page["messages"]]
        rows.sort(key=lambda row: spool_view.arrival_order(row["id"]))
        return {"total": total, "offset": offset, "messages": rows[offset : offset + limit]}

    async def op_show(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any]:
        msg_id = str(message["msg"])
        unit, spool = self._spool_of(message)
        result = await asyncio.to_thread(spool_view.show, spool, msg_id, int(message.get("max_bytes", 1 << 20)))
        if result is None:
            raise proto.AdminError("not-found", f"no such message: {msg_id}")
        return {**result, "unit": unit}

    async def op_forward(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any]:
        if not any(m.job.role == "forward" for m in self.managed.values()):
            raise proto.AdminError("refused", "no forwarding: the configuration has no forward address")
        if not self._request_forward("admin"):
            raise proto.AdminError("unavailable", "the forward worker is not running")
        return {"requested": True}

    async def op_retry(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any]:
        from emailrelay import resubmit

        everything = bool(message.get("all"))
        if not everything and not message.get("msg"):
            raise proto.AdminError("bad-request", "retry needs a message id or all")
        ids = None if everything else [str(message["msg"])]
        spools = self._spools(message) if everything else [self._spool_of(message)]
        results = []
        for _, spool in spools:
            results += await asyncio.to_thread(resubmit.resubmit, spool, ids, limit=int(message.get("limit", 0)))
        if ids is not None and results and results[0].outcome is resubmit.Outcome.NOT_FOUND:
            raise proto.AdminError("not-found", f"no failed message {ids[0]}")
        retried = [r.id for r in results if r.outcome is resubmit.Outcome.RESUBMITTED]
        if retried:
            self._request_forward("retry")
        return {"results": [{"msg": r.id, "outcome": r.outcome.value, "action": r.action} for r in results],
                "retried": len(retried)}

    async def op_delete(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any]:
        msg_id = str(message["msg"])
        _, spool = self._spool_of(message)
        try:
            state = await asyncio.to_thread(spool.delete, msg_id)
        except FileNotFoundError:
            raise proto.AdminError("not-found", f"no such ready or failed message: {msg_id}") from None
        except BlockingIOError:
            raise proto.AdminError("busy", f"message {msg_id} is being forwarded") from None
        return {"msg": msg_id, "state": spool_view.STATE_NAMES[state]}

    def _worker(self, message: dict[str, Any]) -> Managed:
        name = str(message["name"])
        if name not in self.managed:
            raise proto.AdminError("not-found", f"no worker {name!r}: one of {', '.join(self.managed)}")
        return self.managed[name]

    async def _settled(self, m: Managed, timeout: float = 15.0) -> dict[str, Any]:
        """Wait until a wanted worker is RUNNING (or failed to start), an unwanted one STOPPED; describe it."""
        if m.wanted:
            settled = (WorkerState.RUNNING, WorkerState.FATAL, WorkerState.BACKOFF)
        else:
            settled = (WorkerState.STOPPED, WorkerState.FATAL)
        deadline = time.monotonic() + timeout
        while m.worker.state not in settled and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return m.describe()

    async def op_worker_restart(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any]:
        await self._stop([self._worker(message)])
        return await self.op_worker_start(peer, message)

    async def op_worker_stop(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any]:
        m = self._worker(message)
        m.wanted = False
        await self._stop([m])
        return m.describe()

    async def op_worker_start(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any]:
        """Start a stopped worker, or a FATAL one afresh; answers once it runs or fails to start."""
        m = self._worker(message)
        if m.worker.state is WorkerState.FATAL:
            m.worker.reset()
        m.wanted = True
        self._wakeup.set()
        await asyncio.sleep(0)
        return await self._settled(m)

    async def op_config_get(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any]:
        path = self.parsed.config_file
        text = None
        if path:
            try:
                text = Path(path).read_text(encoding="utf-8", errors="replace")
            except OSError as e:
                raise proto.AdminError("unavailable", f"cannot read {path}: {(e.strerror or str(e)).lower()}") from None
        return {"path": os.path.abspath(path) if path else None, "text": text, "arguments": self.args}

    def _validate(self, text: str | None) -> tuple[list[str], tuple[options.Parsed, config.ServerConfig] | None]:
        """Parse the arguments with the configuration file (or `text` in its place)."""
        args = list(self.args)
        temp = None
        if text is not None:
            path = self.parsed.config_file
            if not path:
                return ["there is no configuration file: the supervisor was started with options only"], None
            temp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.check")
            temp.write_text(text, encoding="utf-8")
            args = [temp.as_posix() if a == path else a for a in args]
        try:
            return check(args)
        finally:
            if temp is not None:
                temp.unlink(missing_ok=True)

    async def op_config_validate(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any]:
        errors, _ = self._validate(str(message["text"]))
        return {"valid": not errors, "errors": errors}

    async def op_config_replace(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any]:
        text = str(message["text"])
        errors, _ = self._validate(text)
        if errors:
            raise proto.AdminError("refused", "invalid configuration: " + "; ".join(errors))
        from emailrelay import durable

        path = Path(self.parsed.config_file or "")
        temp = path.with_name(f".{path.name}.{os.getpid()}.new")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        try:
            durable.write_all(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, path)
        durable.fsync_directory(path.parent)
        return await self.op_reload(peer, message)

    async def op_reload(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any]:
        errors = await self.reload()
        if errors:
            raise proto.AdminError("refused", "invalid configuration: " + "; ".join(errors))
        return {"workers": [m.describe() for m in self.managed.values()]}

    async def op_logs(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any]:
        limit = max(0, int(message.get("limit", 100)))
        return {"records": list(self.history)[-limit:] if limit else []}

    async def op_subscribe(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any]:
        streams = message.get("streams", ["event", "log"])
        if not isinstance(streams, list) or not set(streams) <= {"event", "log"}:
            raise proto.AdminError("bad-request", "streams must be a list of 'event' and 'log'")
        peer.streams = set(streams)
        return {"streams": sorted(peer.streams)}

    async def op_shutdown(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any]:
        return {"stopping": True}

    # -- reload and shutdown ---------------------------------------------------------

    async def reload(self) -> list[str]:
        """Re-read the configuration; restart the workers with it.  Returns errors (nothing changed)."""
        errors, checked = check(self.args)
        if errors or checked is None:
            for error in errors:
                self.record("supervisor", "error", f"reload refused: {error}")
            return errors
        parsed, units = checked
        self._notify(sdnotify.reloading)
        self.record("supervisor", "info", "reloading the configuration")
        await self._stop_all()
        try:
            self._install(units)
        except OSError as e:
            error = f"socket bind error: {(e.strerror or str(e)).lower()}"
            self.record("supervisor", "error", f"reload: {error}")
            self._install(self.units)
            return [error]
        self.parsed = parsed
        self._announced_ready = False
        self.publish({"type": "config", "action": "reloaded", "time": time.time()})
        return []

    async def _stop_all(self) -> None:
        """Stop every worker, servers first; none is restarted (they are no longer wanted)."""
        for m in self.managed.values():
            m.wanted = False
        servers = [m for m in self.managed.values() if m.job.role != "forward"]
        forwarders = [m for m in self.managed.values() if m.job.role == "forward"]
        await self._stop(servers)
        await self._stop(forwarders)

    def _shutdown(self, why: str) -> None:
        if self._stopping is not None and not self._stopping.done():
            self._stopping.set_result(why)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stopping = loop.create_future()
        for signo in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(signo, self._shutdown, signal.Signals(signo).name)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._track(self.reload()))
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self.log.batch_stderr_lines()  # every worker's lines pass through here: one write per loop turn
        admin_sock = self._open_admin_socket()
        admin = await asyncio.start_unix_server(self._admin_client, sock=admin_sock, limit=proto.MAX_LINE)
        self.record("supervisor", "info", f"admin socket {self.socket_path}")
        try:
            self._install(self.units)
        except OSError as e:
            admin.close()
            Path(self.socket_path).unlink(missing_ok=True)
            raise StartupError(f"socket bind error: {(e.strerror or str(e)).lower()}", 2) from None
        supervising = self._track(self._supervise())
        watchdog = None
        interval = sdnotify.watchdog_interval()
        if interval:
            watchdog = self._track(_watchdog(interval / 2))
        why = await self._stopping
        self.record("supervisor", "info", f"stopping: {why}")
        self._notify(sdnotify.stopping)
        supervising.cancel()
        for m in self.managed.values():
            m.wanted = False
        for sockets in self.listeners.values():
            for s in sockets:
                s.close()
        await self._stop_all()
        if watchdog is not None:
            watchdog.cancel()
        admin.close()
        for peer in tuple(self.peers):
            peer.writer.close()
        try:
            Path(self.socket_path).unlink()
        except OSError:
            pass
        self.record("supervisor", "info", "stopped")
        return 0


async def _watchdog(period: float) -> None:
    while True:
        try:
            sdnotify.watchdog()
        except OSError:
            pass
        await asyncio.sleep(period)


async def _close(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
        await writer.wait_closed()
    except OSError:
        pass


def _version() -> str:
    from emailrelay import __version__

    return __version__


def check(args: list[str]) -> tuple[list[str], tuple[options.Parsed, Units] | None]:
    """Parse and check ``emailrelay supervise`` arguments: (errors, (parsed, instances) when valid)."""
    parsed = options.parse(options.EMAILRELAY_OPTIONS, args, "emailrelay")
    if parsed.config_error is not None:
        return [parsed.config_error], None
    if parsed.errors:
        return list(parsed.errors), None
    if parsed.too_many_args:
        return ["too many non-option arguments"], None
    try:
        units = config.build_units(parsed)
    except config.ConfigError as e:
        return [str(e)], None
    if not all(server.serving for _, server in units):
        return ["--as-client and --dont-serve do not run as a service: use plain emailrelay"], None
    if not plan(units):
        return ["nothing to do: no smtp server, forwarding or pop server is configured"], None
    return [], (parsed, units)


def run(prog: str, args: list[str]) -> int:
    """``emailrelay supervise [OPTIONS] [CONFIG]``: the exit code."""
    from emailrelay import entry

    parsed = options.parse(options.EMAILRELAY_OPTIONS, args, prog)
    if parsed.config_error is None and not parsed.errors and parsed.flag("help"):
        return entry.print_help(options.EMAILRELAY_OPTIONS, prog, parsed)
    errors, checked = check(args)
    if errors or checked is None:
        sys.stderr.write(f"{prog}: error: {errors[0]}\n")
        return 1
    parsed, units = checked
    server = units[0][1]
    for warning in server.warnings:
        sys.stderr.write(f"{prog}: warning: {warning}\n")
    c = server.log
    log = Log(LogSettings(program=c.program, enabled=True, verbose=c.verbose, debug=c.debug, file=c.file,
                          time=c.time, syslog=c.syslog, facility=c.facility))
    for warning in server.log_warnings:
        log.warning(warning)
    from emailrelay.workers import runtime

    try:
        for _, unit_config in units:
            runtime.open_spool(unit_config, log)
    except runtime.StartupError as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        return e.code
    supervisor = Supervisor(args, parsed, units, log)
    pid_file = None
    if server.pid_file:
        from emailrelay.daemon import PidFile

        pid_file = PidFile(server.pid_file)
        try:
            pid_file.write()
        except OSError as e:
            sys.stderr.write(f"{prog}: error: cannot create file: {pid_file.path}: {(e.strerror or str(e)).lower()}\n")
            return 1
    try:
        return runtime.run_event_loop(supervisor.run())
    except runtime.StartupError as e:
        log.flush()  # the lines logged so far come first
        sys.stderr.write(f"{prog}: error: {e}\n")
        return e.code
    except OSError as e:
        log.flush()
        sys.stderr.write(f"{prog}: error: {e.strerror.lower() if e.strerror else e}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if pid_file is not None:
            pid_file.remove()
