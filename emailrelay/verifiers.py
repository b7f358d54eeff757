"""Address verifiers (--address-verifier): is this recipient local, remote or refused?

Forms (SPEC.md section 4): a program (bare path or ``file:``), ``net:<addr>``,
``account:[<uid-range>;lowercase;check;remote]``, and ``exit:<n>`` or no
verifier at all, which accept every address as remote and unchanged.

A program gets six arguments (recipient, MAIL FROM address or "" for VRFY,
client ``ip:port`` (``ipv6.port``), --domain, the auth mechanism in lower
case or ``none``, the auth id or trust keyword) and runs exactly like a
filter (filters.execute: tiny environment, 1024 bytes of stdout, timeout).
Its exit code and stdout decide (4.1); ``net:`` sends the six values joined
by ``|`` on one line and reads one line back (4.2).

`verify` returns a `Verdict`; the SMTP session turns it into the RCPT or
VRFY reply and the envelope's To-Local / To-Remote line (4.4).  This
module does no SMTP.
"""

from __future__ import annotations

import asyncio
import os
import pwd
from dataclasses import dataclass

from emailrelay.filters import FilterSpecError, execute


@dataclass(frozen=True)
class Verdict:
    """The verifier's answer for one address."""

    valid: bool
    local: bool = False
    address: str = ""  # valid remote: the address to store; valid local: the mailbox
    full_name: str = ""  # valid local: for VRFY
    temporary: bool = False  # refused for now (450) rather than for good (550)
    abort: bool = False  # drop the connection without a reply
    text: str = ""  # reply text for a refusal
    reason: str = ""  # log text


@dataclass(frozen=True)
class Query:
    recipient: str
    mail_from: str  # "" for VRFY
    client: str  # "ip:port" or "ipv6.port"
    domain: str
    mechanism: str  # lower case, or "none"
    auth_id: str  # or the trust keyword, or ""

    def args(self) -> list[str]:
        return [self.recipient, self.mail_from, self.client, self.domain, self.mechanism, self.auth_id]


class Verifier:
    """One --address-verifier specification."""

    def __init__(self, spec: str, *, base_dir: str | None = None) -> None:
        self.spec = spec.strip()
        kind, colon, value = self.spec.partition(":")
        self.kind = "accept"
        self.value = ""
        self.uid_range = (1000, 32767)
        self.lowercase = self.check = self.remote = False
        if not self.spec or (colon and kind == "exit"):
            if colon and kind == "exit" and not value.strip().isdigit():
                raise FilterSpecError(f"not a numeric exit code: {value}")
            return
        if colon and kind == "net":
            if not value:
                raise FilterSpecError("invalid host:service format")
            self.kind, self.value = "net", value
            return
        if colon and kind == "account":
            self.kind = "account"
            self._account_options(value)
            return
        path = value if colon and kind == "file" else self.spec
        from emailrelay.options import expand_app

        if path.startswith("@app"):
            path = expand_app(path)
        if not os.path.isabs(path):
            path = os.path.join(base_dir or os.getcwd(), path)
        self.kind, self.value = "program", path

    def _account_options(self, value: str) -> None:
        for item in filter(None, (v.strip() for v in value.split(";"))):
            low = item.lower()
            if low[:1].isdigit():
                first, dash, last = low.partition("-")
                if not (first.isdigit() and dash and last.isdigit()):
                    raise FilterSpecError("not a valid numeric range")
                self.uid_range = (int(first), int(last))
            elif low in ("lowercase", "check", "remote") or len(low) <= 3:
                for flag in ("l", "r", "c"):
                    if low.startswith(flag) or (len(low) <= 3 and flag in low):
                        setattr(self, {"l": "lowercase", "r": "remote", "c": "check"}[flag], True)
                        break

    def warnings(self) -> list[str]:
        if self.kind == "program" and not os.path.exists(self.value):
            return [f"verifier program does not exist: {self.value}"]
        if self.kind == "program" and os.path.isdir(self.value):
            return [f"invalid program: {self.value}"]
        return []

    async def verify(self, query: Query, *, timeout: float) -> Verdict:
        if self.kind == "accept":
            return Verdict(True, address=query.recipient)
        if self.kind == "program":
            return await self._program(query, timeout)
        if self.kind == "net":
            return await self._net(query, timeout)
        return self._account(query)

    async def _program(self, query: Query, timeout: float) -> Verdict:
        code, output = await execute(self.value, query.args(), timeout=timeout)
        if code is None:
            return Verdict(False, temporary=True, text="timeout", reason="timeout")
        from emailrelay.envelope import printable

        text = output.decode("utf-8", "replace").rstrip(" \n\t").replace("\r\n", "\n").replace("\r", "")
        lines = [printable(line) for line in text.split("\n")] if text else []
        if code == 127 and lines and "exec error" in lines[0]:
            return Verdict(False, text="error", reason=lines[0].strip("<>").replace("filter", "verifier", 1))
        if code in (0, 1) and len(lines) >= 2:
            if code == 0:
                return Verdict(True, local=True, address=lines[1], full_name=lines[0])
            return Verdict(True, address=lines[1] or query.recipient)
        if code == 100:
            return Verdict(False, abort=True, reason="verifier asked to drop the connection")
        first = lines[0] if lines and lines[0] else "mailbox unavailable"
        reason = lines[1] if len(lines) > 1 and lines[1] else f"exit code {code}"
        return Verdict(False, temporary=code == 3, text=first, reason=reason)

    async def _net(self, query: Query, timeout: float) -> Verdict:
        from emailrelay.smtp_client import ConnectError, split_address

        try:
            async with asyncio.timeout(timeout or None):
                if self.value.startswith("/"):
                    reader, writer = await asyncio.open_unix_connection(self.value)
                else:
                    host, port = split_address(self.value)
                    reader, writer = await asyncio.open_connection(host, port)
                try:
                    writer.write(("|".join(query.args()) + "\n").encode("utf-8", "surrogateescape"))
                    await writer.drain()
                    line = (await reader.readline()).decode("utf-8", "replace").rstrip("\r\n")
                finally:
                    writer.close()
        except (OSError, TimeoutError, ConnectError) as e:
            return Verdict(False, temporary=True, text="cannot verify", reason=str(e) or "timeout")
        if not line:
            return Verdict(False, temporary=True, text="cannot verify", reason="connection lost")
        fields = line.split("|")
        code = fields[0]
        if code == "0" and len(fields) >= 2:
            return Verdict(True, local=True, address=fields[1], full_name=fields[2] if len(fields) > 2 else "")
        if code == "1":
            return Verdict(True, address=(fields[1] if len(fields) > 1 else "") or query.recipient)
        if code == "100":
            return Verdict(False, abort=True, reason="verifier asked to drop the connection")
        if code in ("2", "3"):
            text = fields[1] if len(fields) > 1 else ""
            return Verdict(False, temporary=code == "3", text=text, reason=fields[2] if len(fields) > 2 else text)
        return Verdict(False, text="", reason=f"invalid verifier response: {line[:100]}")

    def _account(self, query: Query) -> Verdict:
        address = query.recipient
        if address.lower() == "postmaster":
            return Verdict(True, local=True, address="postmaster", full_name="postmaster")
        local, at, domain = address.rpartition("@")
        if not at or domain.lower() != query.domain.lower():
            return self._account_miss(address, "not a local domain")
        name = local.strip('"')
        for candidate in (name, name.lower()) if name.isascii() else (name,):
            try:
                entry = pwd.getpwnam(candidate)
            except KeyError:
                continue
            if self.uid_range[0] <= entry.pw_uid <= self.uid_range[1]:
                mailbox = entry.pw_name.lower() if self.lowercase else entry.pw_name
                if self.remote:
                    return Verdict(True, address=address)
                return Verdict(True, local=True, address=mailbox, full_name=entry.pw_gecos.split(",")[0])
        return self._account_miss(address, "no such account")

    def _account_miss(self, address: str, reason: str) -> Verdict:
        if self.check:
            return Verdict(True, address=address)
        return Verdict(False, text="rejected", reason=reason)
