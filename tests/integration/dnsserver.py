"""A small DNS server on 127.0.0.1 for the ``mx:`` filter tests.

`DnsServer` answers UDP queries for a test zone the way a recursive
resolver answers a client: it follows CNAMEs itself and puts the whole
chain in the answer section, says NXDOMAIN for names it does not know and
gives an empty NOERROR answer for a known name without records of the
asked type.  Every answer has the AA and RA bits set.  It is built from
dnspython's parts (``dns.message``, ``dns.rrset``), runs an asyncio
datagram endpoint in its own thread on port 0, and records every question
in ``.queries`` as ``(name, type)`` (names without the final dot).

Misbehaviour per name (``"*"`` = every name): ``servfail`` (answer
SERVFAIL), ``drop`` (never answer); and ``cname_alone`` (answer a CNAME
without following it, as an authoritative server of another zone would).

Records are written as zone-file lines, ``"alpha.test MX 10 mx1.alpha.test"``;
names are taken as absolute.

Not here: TCP, EDNS, DNSSEC, zone transfers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import Any, Self

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

LOCALHOST = "127.0.0.1"
TTL = 60


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


class DnsServer:
    """A UDP DNS server for one test zone (see the module docstring)."""

    def __init__(
        self,
        records: Iterable[str] = (),
        *,
        servfail: Iterable[str] = (),
        drop: Iterable[str] = (),
        cname_alone: Iterable[str] = (),
    ) -> None:
        self.zone: dict[tuple[dns.name.Name, int], dns.rrset.RRset] = {}
        for line in records:
            self.add(line)
        self.servfail = {_name(n) for n in servfail if n != "*"}
        self.servfail_all = "*" in servfail
        self.drop = {_name(n) for n in drop if n != "*"}
        self.drop_all = "*" in drop
        self.cname_alone = {_name(n) for n in cname_alone}
        self.port = 0
        self._cond = threading.Condition()
        self._queries: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def add(self, line: str) -> None:
        """Add one record: ``<name> <type> <rdata...>``."""
        name, rdtype, rdata = line.split(None, 2)
        key = (_name(name), dns.rdatatype.from_text(rdtype))
        rd = dns.rdata.from_text(dns.rdataclass.IN, key[1], rdata, origin=dns.name.root, relativize=False)
        rrset = dns.rrset.from_rdata(key[0], TTL, rd)
        if key in self.zone:
            self.zone[key].union_update(rrset)
        else:
            self.zone[key] = rrset

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    @property
    def queries(self) -> list[tuple[str, str]]:
        with self._cond:
            return list(self._queries)

    # -- life

    def start(self) -> Self:
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, failure), name="DnsServer", daemon=True)
        self._thread.start()
        if not ready.wait(20):
            raise TimeoutError("DnsServer did not start")
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass  # the loop has already gone
        thread.join(20)
        assert not thread.is_alive(), "DnsServer thread did not stop"
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            asyncio.run(self._main(ready))
        except BaseException as error:
            failure.append(error)
            ready.set()

    async def _main(self, ready: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop = asyncio.Event()
        server = self

        class Protocol(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                try:
                    reply = server.answer(data)
                except Exception as error:  # recorded for the test, never raised in the loop
                    with server._cond:
                        server.errors.append(f"{type(error).__name__}: {error}")
                    return
                if reply is not None:
                    self.transport.sendto(reply, addr)

        transport, _ = await loop.create_datagram_endpoint(Protocol, local_addr=(LOCALHOST, 0))
        try:
            self.port = transport.get_extra_info("sockname")[1]
            ready.set()
            await self._stop.wait()
        finally:
            transport.close()

    # -- the answers (no I/O)

    def answer(self, wire: bytes) -> bytes | None:
        """The reply to one query, or None to stay silent."""
        query = dns.message.from_wire(wire)
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        with self._cond:
            self._queries.append((qname.to_text(omit_final_dot=True), dns.rdatatype.to_text(qtype)))
            self._cond.notify_all()
        if qname in self.drop or self.drop_all:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA | dns.flags.RA
        if qname in self.servfail or self.servfail_all:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        name = qname
        for _ in range(10):
            cname = self.zone.get((name, dns.rdatatype.CNAME))
            if cname is None or qtype == dns.rdatatype.CNAME:
                break
            response.answer.append(cname)
            if name in self.cname_alone:
                return response.to_wire()
            name = next(iter(cname)).target
        rrset = self.zone.get((name, qtype))
        if rrset is not None:
            response.answer.append(rrset)
        elif not any(key[0] == name for key in self.zone):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()
