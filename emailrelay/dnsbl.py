"""DNS block lists (--dnsbl): should a connecting client be turned away?

Configuration (OPTIONS.md 3.11), one comma list:

- new form ``<dnsbl-domain>[,<dnsbl-domain>...][,<threshold>[,<timeout>[,<dns-server>]]]``
- old form ``<dns-server>,<timeout>,<threshold>,<dnsbl-domain>[,...]``, recognised
  when the first field is not a domain (a number, an IP address, ``ip:port``).

Threshold (default 1) is how many lists must name the address to block it;
0 looks up and logs but never blocks.  Timeout in milliseconds (or
seconds with ``s``), default 5000; when it expires the client is let in,
unless the timeout was given negative.  The DNS server defaults to the
system's resolvers.

`Dnsbl.check(ip)` asks every list at once (``<reversed address>.<list>``,
an A record means "listed") through dnspython; the server calls it only
for peers outside the local ranges of SPEC.md 6.1.  The server withholds its
greeting until the answer and closes the connection silently when the
client is blocked.  This module does no SMTP.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

from emailrelay.filters import FilterSpecError


@dataclass(frozen=True)
class Verdict:
    blocked: bool
    listed: tuple[str, ...] = ()
    timed_out: bool = False


def _is_domain(text: str) -> bool:
    if not text or text.lstrip("-").isdigit() or text.endswith("s") and text[:-1].lstrip("-").isdigit():
        return False
    host = text.rsplit(":", 1)[0] if text.count(":") == 1 else text
    try:
        ipaddress.ip_address(host)
        return False
    except ValueError:
        return True


class Dnsbl:
    """A parsed --dnsbl configuration; raises FilterSpecError for a bad one."""

    def __init__(self, items: list[str]) -> None:
        fields = [f.strip() for f in items if f.strip()]
        if not fields:
            raise FilterSpecError("no dnsbl servers")
        self.server: str | None = None
        self.threshold = 1
        self.timeout_ms = 5000
        if not _is_domain(fields[0]):  # old form
            if len(fields) < 4:
                raise FilterSpecError("too few fields")
            self.server = fields[0]
            self.timeout_ms = _timeout(fields[1])
            self.threshold = _number(fields[2])
            self.domains = tuple(fields[3:])
        else:
            domains = []
            rest = list(fields)
            while rest and _is_domain(rest[0]):
                domains.append(rest.pop(0))
            self.domains = tuple(domains)
            if rest:
                self.threshold = _number(rest.pop(0))
            if rest:
                self.timeout_ms = _timeout(rest.pop(0))
            if rest:
                self.server = rest.pop(0)
            if rest:
                raise FilterSpecError("unused fields")
        if not self.domains:
            raise FilterSpecError("no dnsbl servers")

    async def check(self, ip: str) -> Verdict:
        import dns.asyncresolver
        import dns.exception
        import dns.resolver

        address = ipaddress.ip_address(ip.split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        reversed_name = address.reverse_pointer.rsplit(".", 2)[0]  # drop in-addr.arpa / ip6.arpa
        resolver = dns.asyncresolver.Resolver(configure=self.server is None)
        if self.server is not None:
            host, _, port = self.server.rpartition(":") if self.server.count(":") == 1 else (self.server, "", "")
            resolver.nameservers = [host or self.server]
            if port.isdigit():
                resolver.port = int(port)
        timeout = abs(self.timeout_ms) / 1000
        resolver.lifetime = timeout

        async def listed(domain: str) -> bool:
            try:
                await resolver.resolve(f"{reversed_name}.{domain}", "A")
                return True
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                return False

        try:
            async with asyncio.timeout(timeout):
                results = await asyncio.gather(*(listed(d) for d in self.domains))
        except (TimeoutError, dns.exception.Timeout, dns.resolver.NoNameservers):
            return Verdict(self.timeout_ms < 0, timed_out=True)
        names = tuple(d for d, hit in zip(self.domains, results, strict=True) if hit)
        return Verdict(bool(self.threshold) and len(names) >= self.threshold, names)


def _number(text: str) -> int:
    if not text.isdigit():
        raise FilterSpecError(f"invalid threshold: {text}")
    return int(text)


def _timeout(text: str) -> int:
    negative = text.startswith("-")
    body = text[1:] if negative else text
    scale = 1000 if body.endswith("s") else 1
    body = body[:-1] if body.endswith("s") else body
    if not body.isdigit():
        raise FilterSpecError(f"invalid timeout: {text}")
    value = int(body) * scale
    return -value if negative else value
