"""emailrelay-resubmit as a real process against temporary spool directories (SPEC.md 10.4)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emailrelay.resubmit import Outcome, resubmit
from emailrelay.spool import Spool

RESUBMIT = Path(sys.executable).parent / "emailrelay-resubmit"

pytestmark = pytest.mark.skipif(
    not RESUBMIT.exists(), reason="pip install -e . to get the emailrelay-resubmit script"
)

PROG = "emailrelay-resubmit"


def envelope(reasons: int, *, crlf: bool = True, code: int = 550) -> bytes:
    """A failed envelope with ``reasons`` Reason/ReasonCode pairs, spelled out (SPEC 2.4, 2.6)."""
    lines = [
        "X-MailRelay-Format: #2821.8",
        "X-MailRelay-Content: 8bit",
        "X-MailRelay-From: alice@example.com",
        "X-MailRelay-ToCount: 1",
        "X-MailRelay-To-Remote: carol@example.net",
        "X-MailRelay-Authentication: ",
        "X-MailRelay-Client: 192.168.1.10",
        "X-MailRelay-ClientCertificate: ",
        "X-MailRelay-MailFromAuthIn: ",
        "X-MailRelay-MailFromAuthOut: ",
        "X-MailRelay-ForwardTo: ",
        "X-MailRelay-ForwardToAddress: ",
        "X-MailRelay-ClientAccountSelector: ",
        "X-MailRelay-Utf8MailboxNames: 0",
        "X-MailRelay-End: 1",
    ]
    for n in range(reasons):
        lines.append(f"X-MailRelay-Reason: 4.2.{n} <carol@example.net>: try again later")
        lines.append(f"X-MailRelay-ReasonCode: {code}" if code else "X-MailRelay-ReasonCode:")
    eol = "\r\n" if crlf else "\n"
    return "".join(line + eol for line in lines).encode()


def add_bad(spool: Path, seq: int, reasons: int, *, crlf: bool = True, data: bytes | None = None) -> str:
    """A failed message (content and .bad envelope) in the spool; returns its id."""
    msg_id = f"emailrelay.4123.1718012345.{seq}"
    (spool / f"{msg_id}.content").write_bytes(b"Subject: test\r\n\r\nhello\r\n")
    (spool / f"{msg_id}.envelope.bad").write_bytes(envelope(reasons, crlf=crlf) if data is None else data)
    return msg_id


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RESUBMIT), *args], capture_output=True, text=True, timeout=30, env=env)


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def states(spool: Path) -> dict[str, str]:
    """id -> envelope suffix ("envelope" or "envelope.bad")."""
    found = {}
    for name in files(spool):
        if ".envelope" in name:
            msg_id, _, suffix = name.partition(".envelope")
            found[msg_id] = "envelope" + suffix
    return found


# -- counting ------------------------------------------------------------------


def test_messages_with_fewer_than_five_reason_lines_go_back_to_the_queue(spool: Path) -> None:
    written = {}
    for reasons in range(7):
        msg_id = add_bad(spool, reasons + 1, reasons, crlf=reasons % 2 == 0)
        written[msg_id] = (spool / f"{msg_id}.envelope.bad").read_bytes()
    result = run(str(spool))
    assert (result.returncode, result.stdout, result.stderr) == (0, "resubmitted 5, refused 2\n", "")
    expected = {
        f"emailrelay.4123.1718012345.{n + 1}": "envelope" if n < 5 else "envelope.bad" for n in range(7)
    }
    assert states(spool) == expected
    for msg_id, data in written.items():
        # Renamed, not rewritten: the Reason lines stay (they are the retry counter), LF files stay LF.
        assert (spool / f"{msg_id}.{expected[msg_id]}").read_bytes() == data
        assert (spool / f"{msg_id}.content").read_bytes() == b"Subject: test\r\n\r\nhello\r\n"


def test_verbose_gives_one_line_per_message_in_byte_wise_name_order(spool: Path) -> None:
    add_bad(spool, 9, 1)
    add_bad(spool, 10, 5, crlf=False)
    add_bad(spool, 11, 6)
    add_bad(spool, 100, 0, crlf=False)
    result = run("--verbose", str(spool))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "emailrelay.4123.1718012345.10: refused: retry limit reached (5 failures)\n"
        "emailrelay.4123.1718012345.100: resubmitted\n"
        "emailrelay.4123.1718012345.11: refused: retry limit reached (6 failures)\n"
        "emailrelay.4123.1718012345.9: resubmitted\n"
        "resubmitted 2, refused 2\n"
    )


def test_reason_code_lines_do_not_count(spool: Path) -> None:
    data = envelope(4, code=0)  # "X-MailRelay-ReasonCode:" with no value and no trailing space
    assert data.count(b"ReasonCode:\r\n") == 4
    msg_id = add_bad(spool, 1, 0, data=data)
    result = run("-v", str(spool))
    assert result.stdout == f"{msg_id}: resubmitted\nresubmitted 1, refused 0\n"
    assert states(spool) == {msg_id: "envelope"}


def test_a_reason_line_written_by_the_forwarder_is_counted(spool: Path) -> None:
    from emailrelay.envelope import reason_lines

    for crlf in (True, False):
        data = envelope(4, crlf=crlf) + reason_lines("connection refused", 0, crlf=crlf)
        add_bad(spool, 1 if crlf else 2, 0, data=data)
    result = run(str(spool))
    assert (result.returncode, result.stdout) == (0, "resubmitted 0, refused 2\n")


def test_limit(spool: Path) -> None:
    for reasons in range(4):
        add_bad(spool, reasons + 1, reasons)
    assert run("--limit", "2", "-q", str(spool)).returncode == 0
    assert list(states(spool).values()) == ["envelope", "envelope", "envelope.bad", "envelope.bad"]
    result = run("--limit=0", str(spool))  # no limit
    assert result.stdout == "resubmitted 2, refused 0\n"
    assert set(states(spool).values()) == {"envelope"}


def test_a_message_resubmitted_and_failed_again_counts_up_to_the_limit(spool: Path) -> None:
    from emailrelay.envelope import reason_lines

    msg_id = add_bad(spool, 1, 1)
    for attempt in range(2, 7):
        assert run("-q", str(spool)).returncode == 0
        ready = spool / f"{msg_id}.envelope"
        if attempt > 5:
            assert not ready.exists()
            break
        # what the forwarder does: append a Reason pair and rename back to .bad
        with open(ready, "ab") as f:
            f.write(reason_lines(f"attempt {attempt}", 451))
        ready.rename(spool / f"{msg_id}.envelope.bad")
    assert states(spool) == {msg_id: "envelope.bad"}
    assert (spool / f"{msg_id}.envelope.bad").read_bytes().count(b"X-MailRelay-Reason:") == 5


def test_nothing_to_do(spool: Path) -> None:
    (spool / "emailrelay.1.2.3.envelope").write_bytes(envelope(0))
    result = run(str(spool))
    assert (result.returncode, result.stdout, result.stderr) == (0, "resubmitted 0, refused 0\n", "")


# -- unreadable envelopes and ids ------------------------------------------------


def test_a_corrupt_envelope_stays_failed_and_is_reported(spool: Path) -> None:
    good = add_bad(spool, 1, 0)
    junk = add_bad(spool, 2, 0, data=b"this is not an envelope\r\n")
    truncated = add_bad(spool, 3, 0, data=envelope(2).replace(b"X-MailRelay-End: 1\r\n", b""))
    result = run("-v", str(spool))
    assert result.returncode == 1
    assert result.stdout == f"{good}: resubmitted\nresubmitted 1, refused 0\n"
    assert result.stderr == (
        f'{PROG}: {junk}: unreadable envelope: expected "X-MailRelay-Format:"\n'
        f'{PROG}: {truncated}: unreadable envelope: expected "X-MailRelay-End:"\n'
    )
    assert states(spool) == {good: "envelope", junk: "envelope.bad", truncated: "envelope.bad"}


def test_an_envelope_that_cannot_be_read(spool: Path) -> None:
    (spool / "emailrelay.1.2.3.envelope.bad").mkdir()
    result = run(str(spool))
    assert result.returncode == 1
    assert result.stderr == f"{PROG}: emailrelay.1.2.3: unreadable envelope: is a directory\n"
    assert "Traceback" not in result.stderr


def test_ids(spool: Path) -> None:
    one, two, three = (add_bad(spool, n, 0) for n in (1, 2, 3))
    result = run("--id", one, "-i", f"{three}.envelope.bad", "--id", one, "-v", str(spool))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"{one}: resubmitted\n{three}: resubmitted\nresubmitted 2, refused 0\n"
    assert states(spool) == {one: "envelope", two: "envelope.bad", three: "envelope"}


def test_ids_that_do_not_exist(spool: Path) -> None:
    ready = add_bad(spool, 1, 0)
    (spool / f"{ready}.envelope.bad").rename(spool / f"{ready}.envelope")
    refused = add_bad(spool, 2, 5)
    result = run(f"--id={ready},emailrelay.9.9.9", "--id", refused, "-v", str(spool))
    assert result.returncode == 1
    assert (
        result.stdout == f"{refused}: refused: retry limit reached (5 failures)\nresubmitted 0, refused 1\n"
    )
    assert result.stderr == f"{PROG}: {ready}: not found\n{PROG}: emailrelay.9.9.9: not found\n"


def test_an_id_cannot_reach_outside_the_spool(tmp_path: Path, spool: Path) -> None:
    outside = tmp_path / "outside.envelope.bad"
    outside.write_bytes(envelope(0))
    result = run("--id", "../outside", str(spool))
    assert result.returncode == 1
    assert result.stderr == f"{PROG}: ../outside: not found\n"
    assert outside.exists() and not (tmp_path / "outside.envelope").exists()


def test_dry_run_changes_nothing(spool: Path) -> None:
    add_bad(spool, 1, 0)
    add_bad(spool, 2, 5)
    before = files(spool)
    mtime = os.stat(spool).st_mtime_ns
    result = run("--dry-run", "-v", str(spool))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        "emailrelay.4123.1718012345.1: resubmitted (dry run)\n"
        "emailrelay.4123.1718012345.2: refused: retry limit reached (5 failures)\n"
        "resubmitted 1, refused 1 (dry run)\n"
    )
    assert files(spool) == before
    assert os.stat(spool).st_mtime_ns == mtime  # not even the writability probe
    assert run("-n", "-q", str(spool)).stdout == ""


def test_quiet(spool: Path) -> None:
    add_bad(spool, 1, 0)
    result = run("--quiet", "--spool-dir", str(spool))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert states(spool) == {"emailrelay.4123.1718012345.1": "envelope"}


# -- the command line --------------------------------------------------------------


def test_spool_directory_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = run(str(missing))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"{PROG}: invalid spool directory: {missing}: no such file or directory\n"
    plain = tmp_path / "file"
    plain.write_text("x")
    for args in ([str(plain)], ["-n", str(plain)]):
        result = run(*args)
        assert result.returncode == 1
        assert result.stderr == f"{PROG}: invalid spool directory: {plain}: not a directory\n"
    result = run("--spool-dir=")
    assert (result.returncode, result.stderr) == (1, f'{PROG}: invalid spool directory: ""\n')


def test_spool_dir_option_and_argument(tmp_path: Path, spool: Path) -> None:
    add_bad(spool, 1, 0)
    assert run("-s", str(spool), str(spool)).returncode == 0
    result = run("-s", str(tmp_path), str(spool))
    assert result.returncode == 1
    assert result.stderr.startswith(f'{PROG}: error: two spool directories: "{tmp_path}" and "{spool}"\n')


@pytest.mark.parametrize(
    "args, message",
    [
        (["a", "b"], "too many non-option arguments"),
        (["--limit=x"], 'invalid value for "--limit": x'),
        (["--limit", "-1"], '"--limit -1" is probably a mistake, use "--limit=... -1" or "--limit=-1"'),
        (["--limit=-1"], 'invalid value for "--limit": -1'),
        (["--id="], 'invalid value for "--id": '),
        (["--bogus"], 'invalid option: "--bogus"'),
    ],
)
def test_usage_errors(spool: Path, args: list[str], message: str) -> None:
    add_bad(spool, 1, 0)
    result = run(*args, str(spool))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"{PROG}: error: {message}\n"
        + " " * (len(PROG) + 2)
        + f'try "{PROG} --help --verbose" for more information\n'
    )
    assert states(spool) == {"emailrelay.4123.1718012345.1": "envelope.bad"}


def test_help_and_version() -> None:
    result = run("--help")
    assert result.returncode == 0 and result.stdout.startswith(f"{PROG} 0.1.0 (E-MailRelay 2.6 compatible)\n")
    assert "[<spool-dir>]" in result.stdout and "--dry-run" in result.stdout
    verbose = " ".join(run("--help", "--verbose").stdout.split())
    assert "Default: 5." in verbose and "0 means no limit" in verbose
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith(f"{PROG} 0.1.0 (E-MailRelay 2.6 compatible)\n")


# -- the default spool directory (in a private mount namespace, as test_default_spool) ----

needs_namespace = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare",
)


def in_namespace(mount_options: str, script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a shell script with a fresh tmpfs over /var/spool that only it can see."""
    full = f"mount -t tmpfs -o {mount_options} tmpfs /var/spool && {script}"
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", full],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@needs_namespace
def test_default_spool_directory_as_root(tmp_path: Path) -> None:
    source = tmp_path / "emailrelay.1.2.3.envelope.bad"
    source.write_bytes(envelope(1))
    exe = shlex.quote(str(RESUBMIT))
    script = (
        "mkdir /var/spool/emailrelay && "
        f"cp {shlex.quote(str(source))} /var/spool/emailrelay/ && "
        f"{exe} -v && ls /var/spool/emailrelay"
    )
    result = in_namespace("size=10m", script, dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout
        == "emailrelay.1.2.3: resubmitted\nresubmitted 1, refused 0\nemailrelay.1.2.3.envelope\n"
    )


@needs_namespace
def test_default_spool_directory_falls_back_to_the_user_state_directory(tmp_path: Path) -> None:
    spool = tmp_path / "state" / "emailrelay" / "spool"
    spool.mkdir(parents=True)
    add_bad(spool, 1, 0)
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    result = in_namespace("ro", shlex.quote(str(RESUBMIT)), env)  # /var/spool read-only and empty
    assert (result.returncode, result.stdout, result.stderr) == (0, "resubmitted 1, refused 0\n", "")
    assert states(spool) == {"emailrelay.4123.1718012345.1": "envelope"}


@needs_namespace
def test_default_spool_directory_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "file"))
    result = in_namespace("ro", shlex.quote(str(RESUBMIT)), env)
    assert (result.returncode, result.stdout) == (1, "")
    expected = tmp_path / "file" / "emailrelay" / "spool"
    assert result.stderr == f"{PROG}: invalid spool directory: {expected}: not a directory\n"


# -- the library call that the TUI and the admin interface share -------------------------


def test_library_results(spool: Path) -> None:
    ok = add_bad(spool, 1, 2)
    refused = add_bad(spool, 2, 3)
    junk = add_bad(spool, 3, 0, data=b"junk\n")
    results = resubmit(Spool(spool), [ok, refused, junk, "emailrelay.0.0.0"], limit=3, dry_run=True)
    assert [(r.id, r.outcome, r.failures, r.ok) for r in results] == [
        (ok, Outcome.RESUBMITTED, 2, True),
        (refused, Outcome.REFUSED, 3, True),
        (junk, Outcome.UNREADABLE, 0, False),
        ("emailrelay.0.0.0", Outcome.NOT_FOUND, 0, False),
    ]
    assert [r.action for r in results] == [
        "resubmitted",
        "refused: retry limit reached (3 failures)",
        'unreadable envelope: expected "X-MailRelay-Format:"',
        "not found",
    ]
    assert states(spool)[ok] == "envelope.bad"
    assert [r.outcome for r in resubmit(Spool(spool))] == [
        Outcome.RESUBMITTED,
        Outcome.RESUBMITTED,
        Outcome.UNREADABLE,
    ]
    assert states(spool) == {ok: "envelope", refused: "envelope", junk: "envelope.bad"}
    with pytest.raises(ValueError):
        resubmit(Spool(spool), limit=-1)
