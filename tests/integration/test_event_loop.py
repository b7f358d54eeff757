"""The same relay on both event loops: uvloop (the ``fast`` extra) and asyncio's own.

workers/runtime.run_event_loop picks uvloop when it is installed, unless
EMAILRELAY_LOOP=asyncio.  The whole suite runs on whichever is the default;
this module runs one path through every worker -- SMTP with STARTTLS into
the spool, a server filter, POP3 with STLS out of it, and ``--as-client``
forwarding -- on each loop explicitly, and checks from the verbose log that
the loop asked for is the one that ran.
"""

from __future__ import annotations

import importlib.util
import os
import poplib
import smtplib
import subprocess

import pytest

from .conftest import Relay, as_user, command
from .downstream import Certificates, Sink, downstream_fixture

downstream = downstream_fixture()

LOOPS = [
    "asyncio",
    pytest.param("uvloop", marks=pytest.mark.skipif(
        importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed (pip install emailrelay[fast])"
    )),
]


def _env(loop: str) -> dict[str, str]:
    return {**os.environ, "EMAILRELAY_LOOP": loop}


@pytest.mark.parametrize("loop", LOOPS)
def test_store_filter_pop_and_forward(loop, spool, tmp_path, downstream):
    certs = Certificates.shared()
    secrets = tmp_path / "pop.auth"
    secrets.write_text("server plain alice secret\n")
    marker = tmp_path / "filtered"
    filt = tmp_path / "filter.sh"
    filt.write_text(f"#!/bin/sh\necho $1 >> {marker}\nexit 0\n")
    filt.chmod(0o755)
    argv = [
        command("emailrelay"), "--log", "--verbose", "--no-daemon", "--port", "0", "--interface", "127.0.0.1",
        "--spool-dir", str(spool), "--server-tls", "--server-tls-certificate", str(certs.paths["good"]),
        "--filter", str(filt), "--pop", "--pop-port", "0", "--pop-auth", str(secrets), "--pop-no-delete",
        *as_user(()),
    ]
    r = Relay(argv, spool, env=_env(loop)).started()
    try:
        r.wait_for(rf"event loop: {loop}$")
        pop_port = int(r.wait_for(r"pop server on 127\.0\.0\.1:(\d+)").group(1))
        bodies = [f"Subject: {n}\r\n\r\nmessage {n} on {loop}\r\n".encode() for n in range(3)]
        with smtplib.SMTP("127.0.0.1", r.port, timeout=20) as s:
            s.starttls(context=certs.client_context())
            for body in bodies:
                s.sendmail("a@example.com", ["b@example.net"], body)
        assert len(marker.read_text().split()) == 3
        p = poplib.POP3("127.0.0.1", pop_port, timeout=20)
        p.stls(context=certs.client_context())
        p.user("alice")
        p.pass_("secret")
        count, _ = p.stat()
        assert count == 3
        retrieved = [b"\r\n".join(p.retr(i)[1]) for i in range(1, count + 1)]
        p.quit()
        for body in bodies:
            assert any(body.rstrip(b"\r\n") in text for text in retrieved)
    finally:
        assert r.stop() in (0, 143)
    sink = downstream(Sink)
    result = subprocess.run(
        [command("emailrelay"), "--as-client", sink.address, "--spool-dir", str(spool), "--verbose", *as_user(())],
        capture_output=True, timeout=60, env=_env(loop),
    )
    assert result.returncode == 0, result.stderr
    assert f"event loop: {loop}" in result.stderr.decode()
    assert sorted(m.data.split(b"\r\n")[-2] for m in sink.wait_for_messages(3)) == [
        f"message {n} on {loop}".encode() for n in range(3)
    ]
    assert not any(spool.iterdir())
