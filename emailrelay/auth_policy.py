"""Server authentication policy for SMTP (and later POP): who may log in, and how.

`SecretsAuth` answers the questions smtp_protocol.Session asks through its
`ServerAuth` interface, from a --server-auth secrets file (secrets.py) and
the SASL exchanges of sasl.py: which mechanisms to offer in a plain or TLS
session (--server-auth-config), whether the peer address is trusted by a
``server none`` line, and what to do after a failure.  `PamAuth` does the
same for ``pam:``: PLAIN checked against the machine's PAM stack (service
``emailrelay``), in a thread so the server keeps serving.

Failures are logged in one fixed format that fail2ban can match::

    warning: authentication failed: client 192.0.2.7: mechanism PLAIN: user [bob]: wrong password for [bob]

and each further failure from the same address makes the reply wait
longer (1 s, 2 s, 4 s ... at most 16 s) until that address succeeds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from emailrelay.secrets import Secrets

MAX_DELAY = 16.0


class _Failures:
    """Failed attempts per peer address, for the slow-down."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._count: dict[str, int] = {}

    def failed(self, peer_ip: str, mechanism: str, user: str, reason: str) -> float:
        self._log(f"authentication failed: client {peer_ip}: mechanism {mechanism}: user [{user}]: {reason}")
        n = self._count.get(peer_ip, 0) + 1
        self._count[peer_ip] = n
        if len(self._count) > 10000:  # bounded: forget the oldest addresses
            for key in list(self._count)[:5000]:
                del self._count[key]
        return 0.0 if n == 1 else min(2.0 ** (n - 2), MAX_DELAY)

    def succeeded(self, peer_ip: str) -> None:
        self._count.pop(peer_ip, None)


class SecretsAuth:
    """ServerAuth from a secrets file."""

    def __init__(self, secrets: Secrets, domain: str, config: str, log: Callable[[str], None]) -> None:
        self.secrets = secrets
        self.domain = domain
        self.config = config
        self._failures = _Failures(log)

    def mechanisms(self, secure: bool) -> list[str]:
        return self.secrets.server_mechanisms(secure, self.config)

    def start(self, mechanism: str):  # noqa: ANN201 - sasl.ServerMechanism
        from emailrelay.sasl import ServerMechanism

        return ServerMechanism(mechanism, self.secrets, self.domain)

    def trusted(self, peer_ip: str) -> str | None:
        return self.secrets.trusted(peer_ip)

    def failed(self, peer_ip: str, mechanism: str, user: str, reason: str) -> float:
        return self._failures.failed(peer_ip, mechanism, user, reason)

    def succeeded(self, peer_ip: str) -> None:
        self._failures.succeeded(peer_ip)


class _PamPlain:
    """A PLAIN exchange checked by PAM."""

    def __init__(self) -> None:
        self.id: str | None = None

    def challenge(self) -> bytes:
        return b""

    async def respond(self, data: bytes) -> tuple[str, object]:
        parts = data.split(b"\0")
        if len(parts) != 3:
            return ("fail", "invalid PLAIN response")
        self.id = parts[1].decode("utf-8", "replace")
        password = parts[2].decode("utf-8", "replace")
        ok = await asyncio.to_thread(_pam_check, self.id, password)
        return ("ok", self.id) if ok else ("fail", f"pam refused [{self.id}]")


def _pam_check(user: str, password: str) -> bool:
    import pam  # python-pam

    return bool(pam.authenticate(user, password, service="emailrelay"))


class PamAuth:
    """ServerAuth for ``--server-auth pam:``: PLAIN only, against PAM."""

    def __init__(self, config: str, log: Callable[[str], None]) -> None:
        self.config = config
        self._failures = _Failures(log)

    def mechanisms(self, secure: bool) -> list[str]:
        from emailrelay.secrets import parse_auth_config

        items = parse_auth_config(self.config) if self.config else {}
        allow = items.get("a" if secure and ("a" in items or "d" in items) else "m")
        deny = items.get("d" if secure and ("a" in items or "d" in items) else "x", [])
        names = ["PLAIN"]
        if allow is not None:
            names = [n for n in names if n in [a.upper() for a in allow]]
        return [n for n in names if n not in [d.upper() for d in deny]]

    def start(self, mechanism: str) -> _PamPlain:
        return _PamPlain()

    def trusted(self, peer_ip: str) -> str | None:
        return None

    def failed(self, peer_ip: str, mechanism: str, user: str, reason: str) -> float:
        return self._failures.failed(peer_ip, mechanism, user, reason)

    def succeeded(self, peer_ip: str) -> None:
        self._failures.succeeded(peer_ip)


def pam_available() -> bool:
    try:
        import pam  # noqa: F401
    except ImportError:
        return False
    return True
