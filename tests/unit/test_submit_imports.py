"""emailrelay-submit starts fast: what importing it and submitting one message must not import.

Applications run emailrelay-submit once per message, so its start-up is
mostly imports (bench/submit.py measures it).  These tests run a fresh
interpreter and look at ``sys.modules``: the modules named here were once
imported on this path (dataclasses, typing, textwrap and, through them,
inspect) or would cost a lot if they crept in (asyncio, ssl, email).  A
failure names the module; find who imports it with
``python -X importtime -c "import emailrelay.submit"``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: Not imported by ``import emailrelay.submit``.
HEAVY_AT_IMPORT = ("dataclasses", "typing", "textwrap", "inspect", "asyncio", "ssl", "email", "emailrelay.spool")

#: Not imported even by a whole submission with --from and recipient arguments.
HEAVY_AT_RUN = ("textwrap", "base64", "asyncio", "ssl", "socket", "email", "argparse")

CHILD = """
import sys
sys.argv = ["emailrelay-submit", "--spool-dir", sys.argv[1], "--from", "a@example.com", "b@example.com"]
import emailrelay.submit
print(" ".join(sorted(sys.modules)))
rc = emailrelay.submit.main()
import emailrelay.options
print(" ".join(sorted(sys.modules)))
print("EMAILRELAY_OPTIONS" in vars(emailrelay.options))
print(rc)
"""


def run_child(spool: Path) -> tuple[set[str], set[str], bool, int]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(spool)],
        input=b"Subject: test\n\nbody\n", capture_output=True, timeout=60, check=True,
    )
    at_import, at_end, built, rc = proc.stdout.decode().splitlines()
    assert proc.stderr == b""
    return set(at_import.split()), set(at_end.split()), built == "True", int(rc)


def test_import_and_one_submission_stay_light(tmp_path: Path) -> None:
    at_import, at_end, emailrelay_table_built, rc = run_child(tmp_path)
    assert rc == 0
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".content", ".envelope"]
    assert [m for m in HEAVY_AT_IMPORT if m in at_import] == []
    assert [m for m in HEAVY_AT_RUN if m in at_end] == []
    assert "emailrelay.spool" in at_end  # the child did submit through the spool
    assert not emailrelay_table_built  # submit builds only its own option table
