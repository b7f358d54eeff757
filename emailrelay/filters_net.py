"""The network built-in filters: ``net:``, ``spam:``, ``spam-edit:`` and ``mx:``.

Each talks to another server over a socket (SPEC.md 3.8, 3.9) and turns
what it hears into a `filters.Result`.  ``filters.py`` calls `check` when
it parses a specification and `run` for each message.

``net:<address>`` -- a line protocol with a filter daemon.  The request is
the content file's path and LF; the answer is one line: ``ok...`` passes,
anything else fails with the text before the first TAB as the SMTP
response (a leading ``4xx ``/``5xx `` becomes the reply code) and the text
after it as the reason.  Connections are kept open between messages in a
registry keyed by address (one per event loop): a message takes an idle
connection, or opens a new one if there is none (the first use, or every
connection is busy with another session's message), and gives it back
after a good answer.  A connection that the daemon closed while idle is
never reused, and if the daemon closes a reused connection just as the
request goes out, the request is sent once more on a new connection; a
connection that failed or timed out is closed, so a late answer can never
be read as the next message's.  Connection failures fail the message
with response ``failed`` and the error as the reason (``timeout`` for a
timeout).  Never abandon, never rescan.

``spam:<address>`` / ``spam-edit:<address>`` -- SpamAssassin's spamd, one
new connection per message: ``PROCESS SPAMC/1.4``, ``Content-length``, a
blank line, then the content streamed from its file (never read whole).
spamd's answer must start ``SPAMD/<version> 0``; its headers must give a
``Content-length`` (``Spam:`` gives the verdict); then that many bytes of
processed message follow.  ``spam:`` reads and discards them and fails a
message whose ``Spam:`` value does not start ``False`` (response
``rejected``, reason ``spam: <value>``).  ``spam-edit:`` writes them to
``<content>.spamd``, fsyncs it and renames it over the content file (so the
content is replaced byte for byte, or not at all), then passes whatever the
verdict.  Network and protocol errors fail both (response ``rejected``).

``mx:[nst=<s>;rt=<s>;<dns-server>[:port]...]`` -- routing by MX record.  It
reads the envelope's ``ForwardTo`` (``[user@]domain[:port]``, port 25 by
default): empty passes untouched; an address literal (``[192.0.2.1]``,
``[IPv6:2001:db8::1]``) is used as it is; otherwise the MX records of the
domain are looked up with dnspython's asyncio resolver, the host with the
lowest preference gets an ``A`` query, and ``<ip>:<port>`` goes into the
envelope's ``ForwardToAddress`` (``0.0.0.0`` clears it: use the default
``--forward-to``).  The envelope is rewritten as SPEC.md 2.5 says:
``<path>.tmp`` written, fsynced and renamed over the original, then the
directory fsynced; it is not rewritten when nothing changes.  NXDOMAIN, no
usable answer, or every nameserver failing -> fail with response
``failed`` and ``ForwardToAddress`` cleared; running out of
--filter-timeout -> fail, envelope untouched (as 2.6).

Decisions where 2.6 or SPEC.md leave room (most checked by
tests/integration/test_filters_net.py):

* Specification checks: an empty address gives ``invalid host:service
  format`` (2.6); an address with a SOCKS ``@`` part, a missing port or an
  unknown service name is refused at start-up too (2.6 let them through and
  failed every message).  ``mx:`` options are never an error.
* ``mx:`` options: ``nst=`` and ``rt=`` take whole seconds (defaults 1 and
  15, as 2.6); a nameserver is an IP literal with an optional port (``:53``
  by default; IPv6 as ``[addr]:port`` or ``addr.port``).  Anything else is
  ignored with a one-time warning per process and item (``mx: ignoring
  unrecognised option: <item>``), queued in `WARNINGS` when the filter
  first runs with it; the worker logs the queue after each filter run
  (``filters.drain_warnings``).  No nameserver -> the system's
  (/etc/resolv.conf), else 127.0.0.1 and ::1.
* dnspython does the DNS work, so the timers are its own: with one
  nameserver each query waits ``rt`` seconds (2.6: the restart timeout is
  the wait on the last server of a round), with several each waits ``nst``;
  the resolver moves through the servers and starts over until
  --filter-timeout.  CNAMEs are followed by the resolver within an answer
  and, for servers that give a CNAME alone, by asking again for its target
  (at most 8 times).  Any NXDOMAIN fails at once (2.6 wanted the AA bit,
  which a recursive resolver does not set; it then failed anyway once
  every server had said so).
* ``net:``: an empty line, or a code with no text, fails with response
  ``rejected`` (2.6 passed an empty line: silent misbehaviour); over-long
  answer lines (64 KiB) are a protocol error.  The pool keeps at most 16
  idle connections per address.
* ``spam:``: a response with no ``Spam:`` header passes, as 2.6's code
  does (SPEC.md reads as if it should fail); the processed message is read
  as exactly ``Content-length`` bytes (2.6 read whole lines).  No ``User:``
  header is sent.
* Timeouts: connecting, each write and each read may take
  --filter-timeout seconds (0 = no limit); for ``mx:`` it bounds the whole
  lookup.

On the client side the envelope is the forwarder's locked ``.busy`` file:
the rename puts a new inode in its place, so the forwarder takes its lock
(and its descriptor) again after the filter; today it does so only after an
ok result (a strict xfail test marks the failing case).

Failure behaviour: `run` never raises for a message (an unexpected
exception is a fail with response ``failed`` and the exception as the
reason); partial ``.spamd`` and ``.tmp`` files are removed.

Not here: what a result does to the spool or the SMTP reply (the workers),
chains and program filters (filters.py), and ``split:`` which sets the
``ForwardTo`` that ``mx:`` reads (filters_file.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
import weakref
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from emailrelay import durable, filters
from emailrelay.envelope import EnvelopeError, parse, printable, serialise, xtext_decode, xtext_valid

if TYPE_CHECKING:
    from emailrelay.filters import FilterContext

__all__ = ["KINDS", "WARNINGS", "check", "close_connections", "run"]

KINDS = ("net", "spam", "spam-edit", "mx")

#: Longest ``net:`` answer line and spamd header line.
MAX_LINE = 65536
#: Idle ``net:`` connections kept per address.
MAX_IDLE = 16
#: Content is streamed to spamd (and its answer to ``.spamd``) in chunks this big.
CHUNK = 256 * 1024
#: ``mx:`` defaults (2.6's MxLookup::Config), seconds.
NS_TIMEOUT = 1.0
RESTART_TIMEOUT = 15.0
#: How many CNAME-only answers ``mx:`` follows for one question.
MAX_CNAMES = 8

T = TypeVar("T")


class _Failure(Exception):
    """A network or protocol failure; str() is the reason."""


class _Disconnected(_Failure):
    """The peer closed or reset the connection."""


class _Timeout(_Failure):
    def __init__(self) -> None:
        super().__init__("timeout")


# --------------------------------------------------------------------------
# the filters.py interface


def check(kind: str, value: str) -> None:
    """Check the text after ``<kind>:``; raises FilterSpecError with the reason."""
    if kind == "mx":
        return  # options are never an error: unrecognised ones are warned about when used
    if not value:
        raise filters.FilterSpecError("invalid host:service format")
    if "@" in value:
        raise filters.FilterSpecError(f"invalid host:service format: {value}: socks is not allowed here")
    if value.startswith("/"):
        return
    try:
        _split(value)
    except _Failure as e:
        raise filters.FilterSpecError(str(e)) from None


async def run(
    kind: str,
    value: str,
    content: str,
    envelope: str,
    *,
    client: bool,
    timeout: float,
    context: FilterContext,
) -> filters.Result:
    """Run one network filter on one message (see the module docstring)."""
    try:
        if kind == "net":
            return await _net(value, content, timeout)
        if kind in ("spam", "spam-edit"):
            return await _spam(value, content, timeout, edit=kind == "spam-edit")
        if kind == "mx":
            return await _mx(value, envelope, timeout)
    except Exception as e:  # a filter's error is the message's failure, never the server's
        return filters.Result(filters.Outcome.FAIL, False, "failed", printable(str(e) or type(e).__name__))
    raise ValueError(f"not a network filter: {kind}")


async def close_connections() -> None:
    """Close every idle ``net:`` connection of the running event loop."""
    pool = _pools.pop(asyncio.get_running_loop(), {})
    for connections in pool.values():
        for connection in connections:
            await connection.aclose()


# --------------------------------------------------------------------------
# transport addresses and streams


def _split(address: str) -> tuple[str, int]:
    """``host:port`` (OPTIONS.md 3.1) -> (host, port); raises _Failure."""
    from emailrelay.smtp_client import ConnectError, split_address

    try:
        return split_address(address)
    except ConnectError as e:
        raise _Failure(str(e)) from None


def _strerror(e: OSError) -> str:
    if isinstance(e, socket.gaierror):
        return (e.strerror or str(e)).lower()
    if e.errno:
        return os.strerror(e.errno).lower()
    return (e.strerror or str(e) or type(e).__name__).lower()


async def _within(timeout: float, operation: Awaitable[T]) -> T:
    """Await operation for at most timeout seconds (0 = no limit); raises _Timeout."""
    try:
        async with asyncio.timeout(timeout or None):
            return await operation
    except TimeoutError:
        raise _Timeout() from None


async def _connect(address: str, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a TCP or unix-domain stream to address; raises _Failure."""
    try:
        if address.startswith("/"):
            return await _within(timeout, asyncio.open_unix_connection(address, limit=MAX_LINE))
        host, port = _split(address)
        return await _within(timeout, asyncio.open_connection(host, port, limit=MAX_LINE))
    except OSError as e:
        raise _Failure(f"connect failure: cannot connect to {address}: {_strerror(e)}") from None


async def _read_line(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """One LF-terminated line, LF included; raises _Failure."""
    try:
        return await _within(timeout, reader.readuntil(b"\n"))
    except asyncio.IncompleteReadError:
        raise _Disconnected("peer disconnected") from None
    except asyncio.LimitOverrunError:
        raise _Failure("invalid response: line too long") from None
    except OSError as e:
        raise _Disconnected(_strerror(e)) from None


async def _send(writer: asyncio.StreamWriter, data: bytes, timeout: float) -> None:
    try:
        writer.write(data)
        await _within(timeout, writer.drain())
    except OSError as e:
        raise _Disconnected(_strerror(e)) from None


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 2)
    except (OSError, TimeoutError):
        pass


# --------------------------------------------------------------------------
# net:


@dataclass(eq=False)
class _LineConnection:
    """One connection to a ``net:`` filter daemon."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def usable(self) -> bool:
        """Still open in both directions (an idle close shows as EOF)."""
        return not self.writer.is_closing() and not self.reader.at_eof()

    async def aclose(self) -> None:
        await _close(self.writer)


#: loop -> address -> idle connections.
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, list[_LineConnection]]] = (
    weakref.WeakKeyDictionary()
)


def _idle(address: str) -> list[_LineConnection]:
    return _pools.setdefault(asyncio.get_running_loop(), {}).setdefault(address, [])


async def _take(address: str, timeout: float) -> tuple[_LineConnection, bool]:
    """An idle connection (reused=True) or a new one; raises _Failure."""
    idle = _idle(address)
    while idle:
        connection = idle.pop()
        if connection.usable():
            return connection, True
        await connection.aclose()
    reader, writer = await _connect(address, timeout)
    return _LineConnection(reader, writer), False


async def _give_back(address: str, connection: _LineConnection) -> None:
    idle = _idle(address)
    if connection.usable() and len(idle) < MAX_IDLE:
        idle.append(connection)
    else:
        await connection.aclose()


async def _net(address: str, content: str, timeout: float) -> filters.Result:
    request = os.fsencode(content) + b"\n"
    for attempt in (1, 2):
        try:
            connection, reused = await _take(address, timeout)
        except _Failure as e:
            return _net_failed(str(e))
        try:
            await _send(connection.writer, request, timeout)
            line = await _read_line(connection.reader, timeout)
        except _Disconnected as e:
            await connection.aclose()
            if reused and attempt == 1:
                continue  # the daemon closed an idle connection just as we used it: once more on a new one
            return _net_failed(str(e))
        except _Failure as e:
            await connection.aclose()
            return _net_failed(str(e))
        except BaseException:
            await connection.aclose()
            raise
        await _give_back(address, connection)
        return net_result(line)
    raise AssertionError("unreachable")


def _net_failed(reason: str) -> filters.Result:
    return filters.Result(filters.Outcome.FAIL, False, "failed", printable(reason))


def net_result(line: bytes) -> filters.Result:
    """The result of a ``net:`` answer line (SPEC.md 3.8; LF and CRs around it ignored)."""
    line = line.rstrip(b"\n").strip(b"\r")
    if line.startswith(b"ok"):
        return filters.OK
    head, tab, tail = line.partition(b"\t")
    response = printable(head)
    code = 0
    m = re.match(r"([45][0-9][0-9])( |$)", response)
    if m:
        code = int(m.group(1))
        response = response[m.end() :]
    reason = printable(tail if tab else line)
    return filters.Result(filters.Outcome.FAIL, False, response or "rejected", reason or "rejected", code)


# --------------------------------------------------------------------------
# spam: and spam-edit:


async def _spam(address: str, content: str, timeout: float, *, edit: bool) -> filters.Result:
    try:
        verdict = await _spamd(address, content, timeout, edit=edit)
    except _Failure as e:
        return filters.Result(filters.Outcome.FAIL, False, "rejected", printable(str(e)))
    except OSError as e:  # the content or .spamd file
        reason = f"{_strerror(e)}: {e.filename}" if e.filename else _strerror(e)
        return filters.Result(filters.Outcome.FAIL, False, "rejected", printable(reason))
    if edit or verdict == "" or verdict[:5].lower() == "false":
        return filters.OK
    return filters.Result(filters.Outcome.FAIL, False, "rejected", printable(f"spam: {verdict}"))


async def _spamd(address: str, content: str, timeout: float, *, edit: bool) -> str:
    """One PROCESS exchange; returns the ``Spam:`` value.  Raises _Failure or OSError."""
    with open(content, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        reader, writer = await _connect(address, timeout)
        try:
            await _send(writer, f"PROCESS SPAMC/1.4\r\nContent-length: {size}\r\n\r\n".encode("ascii"), timeout)
            left = size
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    break  # the file shrank: spamd will see a short message and say so
                left -= len(chunk)
                await _send(writer, chunk, timeout)
            spam, length = await _spamd_headers(reader, timeout)
            if edit:
                await _spamd_body_to_file(reader, length, content, timeout)
            else:
                await _spamd_body(reader, length, timeout, None)
            return spam
        finally:
            await _close(writer)


async def _spamd_headers(reader: asyncio.StreamReader, timeout: float) -> tuple[str, int]:
    """The status line and headers; returns (``Spam:`` value, ``Content-length``)."""
    status = await _read_line(reader, timeout)
    words = status.split()
    if not (status.startswith(b"SPAMD/") and len(words) > 1 and words[1] == b"0"):
        raise _Failure(f"invalid response: {printable(status.strip())}")
    spam = ""
    length = 0
    while True:
        line = (await _read_line(reader, timeout)).rstrip(b"\n")
        if line in (b"", b"\r"):
            if length <= 0:
                raise _Failure("invalid response headers")
            return spam, length
        if line.startswith(b"Spam:"):
            spam = line[5:].strip().decode("utf-8", "surrogateescape")
        elif line[:15].lower() == b"content-length:":
            number = line[15:].strip()
            if not number.isdigit():
                raise _Failure(f"invalid response headers: {printable(line.strip())}")
            length = int(number)


async def _spamd_body(reader: asyncio.StreamReader, length: int, timeout: float, fd: int | None) -> None:
    """Read exactly length bytes of processed message, writing them to fd if given."""
    left = length
    while left > 0:
        try:
            chunk = await _within(timeout, reader.read(min(CHUNK, left)))
        except OSError as e:
            raise _Disconnected(_strerror(e)) from None
        if not chunk:
            raise _Disconnected("peer disconnected")
        left -= len(chunk)
        if fd is not None:
            durable.write_all(fd, chunk)


async def _spamd_body_to_file(reader: asyncio.StreamReader, length: int, content: str, timeout: float) -> None:
    """Write spamd's message to ``<content>.spamd``, then put it in place of the content."""
    temp = content + ".spamd"
    _unlink_quietly(temp)  # left by a crash
    fd = durable.create_exclusive(temp)
    try:
        try:
            await _spamd_body(reader, length, timeout, fd)
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
        os.rename(temp, content)
    except BaseException:
        _unlink_quietly(temp)
        raise
    await asyncio.to_thread(durable.fsync_directory, os.path.dirname(content) or ".")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------
# mx:


@dataclass(frozen=True)
class MxOptions:
    """The parsed text after ``mx:``."""

    nameservers: tuple[tuple[str, int], ...] = ()
    ns_timeout: float = NS_TIMEOUT
    restart_timeout: float = RESTART_TIMEOUT
    unrecognised: tuple[str, ...] = field(default=())


def mx_options(value: str) -> MxOptions:
    """Parse ``nst=<s>;rt=<s>;<ip>[:port];...``; bad items are collected, not raised."""
    nameservers: list[tuple[str, int]] = []
    nst, rt = NS_TIMEOUT, RESTART_TIMEOUT
    unrecognised: list[str] = []
    for item in (part.strip() for part in value.split(";")):
        if not item:
            continue
        if item.startswith("nst=") and item[4:].isdigit():
            nst = float(int(item[4:]))
        elif item.startswith("rt=") and item[3:].isdigit():
            rt = float(int(item[3:]))
        elif (server := _nameserver(item)) is not None:
            nameservers.append(server)
        else:
            unrecognised.append(item)
    return MxOptions(tuple(nameservers), nst, rt, tuple(unrecognised))


def _nameserver(item: str) -> tuple[str, int] | None:
    """An IP literal with an optional port, or None."""
    try:
        return str(ipaddress.ip_address(item)), 53
    except ValueError:
        pass
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|(.+)[:.](\d+)", item)
    if not m:
        return None
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.version == 4 and not (m.group(1) or ":" in item):
        return None  # "1.2.3.4.53" is not a form we accept
    if not 0 < int(port) < 65536:
        return None
    return str(address), int(port)


def parse_forward_to(forward_to: str) -> tuple[str, int]:
    """``[user@]domain[:port]`` -> (domain, port); port 25 when not given (SPEC.md 3.9)."""
    _, at, rest = forward_to.partition("@")
    text = rest if at else forward_to
    head, colon, tail = text.rpartition(":")
    if colon and tail.isdigit():
        return head, int(tail)
    return text, 25


def address_literal(domain: str, port: int) -> str | None:
    """``[a.b.c.d]`` or ``[IPv6:...]`` -> the transport address; None if not a literal.

    Raises _Failure for a bracketed text that is not an address.
    """
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            return f"{ipaddress.IPv6Address(inner[5:])}.{port}"  # 2.6's display form, e.g. ::1.25
        return f"{ipaddress.IPv4Address(inner)}:{port}"
    except ValueError:
        raise _Failure(f"invalid address literal: {domain}") from None


#: Warnings for the worker to log (filters.drain_warnings() empties it after each run).
WARNINGS: list[str] = []
_warned: set[str] = set()


def _warn_once(text: str) -> None:
    if text not in _warned:
        _warned.add(text)
        WARNINGS.append(text)


async def _mx(value: str, envelope_path: str, timeout: float) -> filters.Result:
    options = mx_options(value)
    for item in options.unrecognised:
        _warn_once(f"mx: ignoring unrecognised option: {item}")
    try:
        with open(envelope_path, "rb") as f:
            env = parse(f.read())
    except (OSError, EnvelopeError) as e:
        reason = f"{_strerror(e)}: {envelope_path}" if isinstance(e, OSError) else str(e)
        return filters.Result(filters.Outcome.FAIL, False, "failed", printable(reason))
    forward_to = xtext_decode(env.forward_to) if xtext_valid(env.forward_to) else env.forward_to
    domain, port = parse_forward_to(forward_to.strip())
    if not domain:
        return filters.OK
    error = ""
    try:
        address = address_literal(domain, port)
        if address is None:
            address = await _lookup(domain, port, options, timeout)
    except _Timeout:
        return filters.Result(filters.Outcome.FAIL, False, "failed", f"mx: {domain}: timeout")
    except _Failure as e:
        address, error = "", f"mx: {domain}: {e}"
    if address.startswith("0.0.0.0:"):
        address = ""  # "use the default --forward-to"
    if env.forward_to_address != address:
        env.forward_to_address = address
        await asyncio.to_thread(rewrite_envelope, envelope_path, serialise(env))
    if error:
        return filters.Result(filters.Outcome.FAIL, False, "failed", printable(error))
    return filters.OK


def rewrite_envelope(path: str, data: bytes) -> None:
    """SPEC.md 2.5: write ``<path>.tmp``, fsync it, rename it over path, fsync the directory."""
    temp = path + ".tmp"
    _unlink_quietly(temp)  # left by a crash mid-rewrite
    durable.write_file_durably(temp, data)
    try:
        os.rename(temp, path)
    except BaseException:
        _unlink_quietly(temp)
        raise
    durable.fsync_directory(os.path.dirname(path) or ".")


def _resolver(options: MxOptions, timeout: float) -> Any:
    import dns.asyncresolver
    import dns.nameserver
    import dns.resolver

    if options.nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in options.nameservers]
    else:
        try:
            resolver = dns.asyncresolver.Resolver()
        except (dns.resolver.NoResolverConfiguration, OSError):
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = ["127.0.0.1", "::1"]
    several = len(resolver.nameservers) > 1
    resolver.timeout = options.ns_timeout if several else options.restart_timeout
    resolver.lifetime = timeout or float("inf")
    resolver.cache = None
    return resolver


async def _lookup(domain: str, port: int, options: MxOptions, timeout: float) -> str:
    """MX then A; returns ``ip:port``.  Raises _Timeout or _Failure."""
    import dns.exception
    import dns.name
    import dns.rdatatype
    import dns.resolver

    resolver = _resolver(options, timeout)
    try:
        async with asyncio.timeout(timeout or None):
            answer = await _resolve(resolver, dns.name.from_text(domain), "MX")
            for rrset in answer.response.answer:  # an address in the MX answer is used as it is
                if rrset.rdtype == dns.rdatatype.A and len(rrset):
                    return f"{next(iter(rrset)).address}:{port}"
            hosts = [rr for rr in answer.rrset or () if rr.exchange != dns.name.root]
            if not hosts:
                raise _Failure("no mail exchanger")
            best = min(hosts, key=lambda rr: rr.preference)  # the first of the lowest
            answer = await _resolve(resolver, best.exchange, "A")
            if not answer.rrset:
                raise _Failure(f"no address for {best.exchange.to_text(omit_final_dot=True)}")
            return f"{next(iter(answer.rrset)).address}:{port}"
    except (TimeoutError, dns.exception.Timeout):
        raise _Timeout() from None
    except dns.resolver.NXDOMAIN:
        raise _Failure("no such domain") from None
    except dns.resolver.NoNameservers:
        raise _Failure("every nameserver failed") from None
    except dns.exception.DNSException as e:
        raise _Failure(str(e).rstrip(".").lower() or type(e).__name__) from None


async def _resolve(resolver: Any, name: Any, rdtype: str) -> Any:
    """resolver.resolve, also following a CNAME that came without its target's records."""
    for _ in range(MAX_CNAMES + 1):
        answer = await resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
        if answer.rrset is not None or answer.canonical_name == name:
            break
        name = answer.canonical_name
    if answer.rrset is None:
        raise _Failure(f"no {rdtype} record for {name.to_text(omit_final_dot=True)}")
    return answer
