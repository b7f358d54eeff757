"""In-process events for the admin ``notify`` command and the network report of ``status``.

One job: carry what happens in the storage process (listeners, connections,
forwarding runs, messages) to whoever listens, today the admin server.

`EventBus` is a list of callbacks: `publish(*fields)` calls each subscriber
with the tuple of fields, in subscription order, and costs one truth test
when nobody subscribes.  Fields are SPEC.md 9's, e.g. ``("client",
"forward", "start", "admin")`` or ``("network", "in", "stop")``; rendering
them (``EVENT: ...``) is the admin server's business.  Subscribers must not
do I/O or re-enter the publisher: they queue and return.  A subscriber that
raises is a bug, and the exception reaches the publisher.

`NetworkMonitor` is 2.6's ``GNet::Monitor``: it keeps the listening
addresses and the open connections in and out, counts connections started
and finished, publishes the ``network: listen|in|out: start|stop`` events and
writes the ``status`` report (`report()`).  The servers and the forwarder
tell it about their sockets; it owns none.

Neither is a process-wide singleton: the storage worker makes one of each
when ``--admin`` is given and hands them to the servers and the forwarder,
which do nothing extra when given None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Subscriber = Callable[[tuple[str, ...]], None]


class EventBus:
    """Publish/subscribe of event field tuples, synchronously, in this event loop."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        """Stop calling `callback`; unknown callbacks are ignored."""
        try:
            self._subscribers.remove(callback)
        except ValueError:
            pass

    @property
    def active(self) -> bool:
        """True when somebody listens (a publisher may skip building costly fields)."""
        return bool(self._subscribers)

    def publish(self, *fields: str) -> None:
        if not self._subscribers:
            return
        for callback in tuple(self._subscribers):
            callback(fields)


@dataclass(eq=False)
class Connection:
    """One open connection as `status` shows it.

    `remote` is the peer's address once connected; an outgoing connection
    still on its way shows its target in brackets, ``(host:port)``, as 2.6 does.
    """

    local: str
    remote: str


class NetworkMonitor:
    """Listeners and connections of this process, for admin ``status`` and ``network:`` events."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self._listeners: list[str] = []
        self._in: list[Connection] = []
        self._out: list[Connection] = []
        self.in_started = 0
        self.in_finished = 0
        self.out_started = 0
        self.out_finished = 0

    # listeners

    def listening(self, address: str) -> None:
        self._listeners.append(address)
        self.bus.publish("network", "listen", "start")

    def not_listening(self, address: str) -> None:
        if address in self._listeners:
            self._listeners.remove(address)
            self.bus.publish("network", "listen", "stop")

    # connections

    def inbound(self, local: str, peer: str) -> Connection:
        """A server connection was accepted; pass the result to `closed`."""
        connection = Connection(local, peer)
        self._in.append(connection)
        self.in_started += 1
        self.bus.publish("network", "in", "start")
        return connection

    def outbound(self, target: str) -> Connection:
        """A client connection is being made to `target`; set `local`/`remote` once connected."""
        connection = Connection("", f"({target})")
        self._out.append(connection)
        self.out_started += 1
        self.bus.publish("network", "out", "start")
        return connection

    def closed(self, connection: Connection) -> None:
        """A connection from `inbound` or `outbound` has ended (a second call does nothing)."""
        if connection in self._in:
            self._in.remove(connection)
            self.in_finished += 1
            self.bus.publish("network", "in", "stop")
        elif connection in self._out:
            self._out.remove(connection)
            self.out_finished += 1
            self.bus.publish("network", "out", "stop")

    def report(self) -> list[str]:
        """The lines of admin ``status`` (SPEC.md 9), in 2.6's order."""
        lines = [f"LISTEN: {address}" for address in self._listeners]
        lines += [f"OUT started: {self.out_started}", f"OUT finished: {self.out_finished}"]
        lines += [f"OUT: {c.local or '0.0.0.0:0'} -> {c.remote}" for c in self._out]
        lines += [f"IN started: {self.in_started}", f"IN finished: {self.in_finished}"]
        lines += [f"IN: {c.local} <- {c.remote}" for c in self._in]
        return lines
