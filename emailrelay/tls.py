"""TLS contexts for the server and the client, from E-MailRelay's TLS options.

TLS 1.2 is the minimum unless --tls-config says otherwise (SPEC.md section
0); the ssl module's secure default ciphers are used.  --tls-config items
``tlsv1.N`` set the minimum and ``-tlsv1.N`` the maximum protocol version;
``noverify`` keeps a CA list but does not enforce it; other items are
ignored (2.6 warns about unknown ones; we accept them silently).

Certificates (OPTIONS.md 3.5): one file holding key and chain, or two
files, key first.  Server client-certificate checking: with a CA list
(file, directory or ``<default>``) a client must present a certificate
that verifies; without one (or ``<none>``) none is asked for (2.6 asks and
only logs it, which Python's ssl module cannot do without failing
unverifiable ones).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence

_VERSIONS = {
    "tlsv1.0": ssl.TLSVersion.TLSv1,
    "tlsv1.1": ssl.TLSVersion.TLSv1_1,
    "tlsv1.2": ssl.TLSVersion.TLSv1_2,
    "tlsv1.3": ssl.TLSVersion.TLSv1_3,
}


def _configure(
    ctx: ssl.SSLContext, config: Sequence[str], certificate: Sequence[str], verify: str | None, purpose: ssl.Purpose
) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for item in config:
        if item in _VERSIONS:
            ctx.minimum_version = _VERSIONS[item]
        elif item.startswith("-") and item[1:] in _VERSIONS:
            ctx.maximum_version = _VERSIONS[item[1:]]
    if certificate:
        ctx.load_cert_chain(certfile=certificate[-1], keyfile=certificate[0])
    if verify is None or verify == "<none>" or "noverify" in config:
        ctx.verify_mode = ssl.CERT_NONE
        return
    ctx.verify_mode = ssl.CERT_REQUIRED
    if verify == "<default>":
        ctx.load_default_certs(purpose)
    elif os.path.isdir(verify):
        ctx.load_verify_locations(capath=verify)
    else:
        ctx.load_verify_locations(cafile=verify)


def client_context(config: Sequence[str], certificate: Sequence[str], verify: str | None) -> ssl.SSLContext:
    """Raises ssl.SSLError or OSError for unusable files."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # names are checked by --client-tls-verify-name only
    _configure(ctx, config, certificate, verify, ssl.Purpose.SERVER_AUTH)
    return ctx


def server_context(config: Sequence[str], certificate: Sequence[str], verify: str | None) -> ssl.SSLContext:
    """Raises ssl.SSLError or OSError for unusable files."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _configure(ctx, config, certificate, verify, ssl.Purpose.CLIENT_AUTH)
    return ctx
