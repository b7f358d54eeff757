"""--filter and --client-filter with real filter programs (shell scripts)."""

from __future__ import annotations

import os
import smtplib
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .conftest import command, spool_files
from .downstream import Sink, downstream_fixture
from .test_forward import as_client, bad_envelope, states, store

downstream = downstream_fixture()


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def send(port: int, body: bytes = b"Subject: f\r\n\r\nx\r\n", to: str = "c@d.example") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail("a@b.example", [to], body)


def test_filter_sees_paths_environment_and_can_edit_the_content(relay, spool, tmp_path):
    record = tmp_path / "record"
    f = script(tmp_path, "f", f'echo "$0|$1|$2|$PATH|$(env | sort | tr "\\n" " ")" > {record}\necho "X-Filtered: yes" >> "$1"\nexit 0')
    r = relay("--filter", f)
    send(r.port)
    args = record.read_text().strip().split("|")
    assert args[0] == f
    assert Path(args[1]).parent == spool and args[1].endswith(".content")
    assert args[2] == args[1][: -len(".content")] + ".envelope.new"
    assert args[3] == "/usr/bin:/bin"
    assert set(args[4].split()) <= {"PATH=/usr/bin:/bin", "IFS=", "PWD=" + os.getcwd(), "SHLVL=1", "_=/usr/bin/env"} | {
        x for x in args[4].split() if x.startswith("PWD=")
    }
    (content,) = spool.glob("*.content")
    assert content.read_bytes().endswith(b"X-Filtered: yes\n")
    assert len(list(spool.glob("*.envelope"))) == 1


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        ("echo '<<550 5.7.1 go away>>'\necho '<<spam score 99>>'\nexit 1", (550, b"5.7.1 go away")),
        ("echo 'ignored'\necho '[[not today]]'\nexit 1", (452, b"not today")),
        ("exit 3", (452, b"rejected")),
        ("exit 105", (452, b"rejected")),
    ],
    ids=["code-and-reason", "brackets", "bare", "105"],
)
def test_failing_filter_rejects_and_removes_the_message(relay, spool, tmp_path, body, reply):
    r = relay("--filter", script(tmp_path, "f", body))
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(r.port)
    assert (e.value.smtp_code, e.value.smtp_error) == reply
    r.wait_for("rejected by the filter")
    assert spool_files(spool) == []


def test_abandon_means_the_filter_took_the_message(relay, spool, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    f = script(tmp_path, "f", f'mv "$1" "$2" {taken}/\nexit 100')
    r = relay("--filter", f)
    send(r.port)
    assert spool_files(spool) == []
    assert len(list(taken.iterdir())) == 2


def test_exit_builtin_and_chains(relay, spool, tmp_path):
    first = script(tmp_path, "first", f"touch {tmp_path}/ran-first\nexit 0")
    second = script(tmp_path, "second", f"touch {tmp_path}/ran-second\nexit 0")
    r = relay("--filter", f"{first},exit:1", "--filter", second)
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(r.port)
    assert (e.value.smtp_code, e.value.smtp_error) == (452, b"rejected")
    assert (tmp_path / "ran-first").exists() and not (tmp_path / "ran-second").exists()


def test_hung_filter_is_killed_with_its_process_group_and_others_go_on(relay, spool, tmp_path):
    pidfile = tmp_path / "child.pid"
    f = script(tmp_path, "f", f'if grep -q slow "$1"; then sleep 300 & echo $! > {pidfile}; wait; fi\nexit 0')
    r = relay("--filter", f, "--filter-timeout", "2")
    errors: list[BaseException] = []

    def slow() -> None:
        try:
            send(r.port, b"Subject: slow\r\n\r\nx\r\n")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=slow)
    t.start()
    deadline = time.monotonic() + 10
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    send(r.port, b"Subject: fast\r\n\r\nx\r\n")  # another session is served meanwhile
    t.join()
    assert isinstance(errors[0], smtplib.SMTPDataError)
    assert (errors[0].smtp_code, errors[0].smtp_error) == (452, b"error")
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    (content,) = spool.glob("*.content")
    assert b"fast" in content.read_bytes()


def test_unstartable_filter_is_an_exec_error(relay, spool, tmp_path):
    f = tmp_path / "not-executable"
    f.write_text("#!/bin/sh\nexit 0\n")
    r = relay("--filter", str(f))
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(r.port)
    assert (e.value.smtp_code, e.value.smtp_error) == (452, b"rejected")
    r.wait_for("rejected by the filter: filter exec error: permission denied")


def test_bad_filter_specification_and_missing_program(tmp_path):
    base = [command("emailrelay"), "--log", "--no-daemon", "--port", "0", "--interface", "127.0.0.1", "--spool-dir", str(tmp_path)]
    result = subprocess.run([*base, "--filter", "exit:x"], capture_output=True, timeout=30)
    assert (result.returncode, result.stderr.decode().strip()) == (
        1, "emailrelay: usage error: invalid filter specification: invalid numeric value: x"
    )
    result = subprocess.run(
        [command("emailrelay"), "--as-client", "127.0.0.1:9", "--client-filter", "exit:", "--spool-dir", str(tmp_path)],
        capture_output=True, timeout=30,
    )
    assert result.stderr.decode().strip() == "emailrelay: usage error: invalid client filter specification: numeric value missing"
    proc = subprocess.Popen([*base, "--filter", "/no/such/filter"], stderr=subprocess.PIPE)
    try:
        line = proc.stderr.readline().decode().strip()
    finally:
        proc.terminate()
        proc.wait()
        proc.stderr.close()
    assert line == "emailrelay: warning: filter program does not exist: /no/such/filter"


def test_rescan_exit_103_triggers_forwarding(relay, downstream, spool, tmp_path):
    sink = downstream(Sink)
    r = relay("--filter", "exit:103", "--forward-to", sink.address)
    send(r.port)
    assert len(sink.wait_for_messages(1)) == 1
    r.wait_for("forwarding: rescan")


# -- client filters ------------------------------------------------------------------


def test_client_filter_fail_abandon_and_edit(downstream, spool, tmp_path):
    sink = downstream(Sink)
    f = script(
        tmp_path, "cf",
        'case "$(cat "$1")" in\n'
        '*reject*) echo "<<not this one>>"; exit 1;;\n'
        '*keep*) exit 100;;\n'
        '*) echo "X-Client-Filtered: $(basename "$2")" >> "$1"; exit 0;;\n'
        "esac",
    )
    rejected = store(spool, b"Subject: reject\r\n\r\nx\r\n")
    kept = store(spool, b"Subject: keep\r\n\r\nx\r\n")
    store(spool, b"Subject: send\r\n\r\nx\r\n")
    assert as_client(spool, sink.address, "--client-filter", f).returncode == 0
    (m,) = sink.wait_for_messages(1)
    assert m.data.endswith(b".envelope.busy\r\n")
    assert states(spool)["ready"] == [kept] and states(spool)["bad"] == [rejected]
    assert bad_envelope(spool, rejected)[1][:2] == ["X-MailRelay-Reason: not this one", "X-MailRelay-ReasonCode: 550"]


def test_client_filter_exit_102_sends_one_message_per_run(downstream, spool):
    sink = downstream(Sink)
    for n in range(3):
        store(spool, f"Subject: {n}\r\n\r\nx\r\n".encode())
    assert as_client(spool, sink.address, "--client-filter", "exit:102").returncode == 0
    assert len(sink.wait_for_messages(1)) == 1
    assert len(states(spool)["ready"]) == 2


def test_client_filter_timeout_fails_the_message(downstream, spool, tmp_path):
    sink = downstream(Sink)
    msg_id = store(spool)
    f = script(tmp_path, "cf", "sleep 30")
    result = as_client(spool, sink.address, "--client-filter", f, "--filter-timeout", "1")
    assert result.returncode == 0
    assert bad_envelope(spool, msg_id)[1][:2] == ["X-MailRelay-Reason: timeout", "X-MailRelay-ReasonCode: 550"]
    assert sink.messages == []


def test_routing_filter_runs_before_connecting_and_can_route(downstream, spool, tmp_path):
    default = downstream(Sink)
    routed = downstream(Sink)
    f = script(tmp_path, "route", f'sed -i "s/^X-MailRelay-ForwardToAddress:.*/X-MailRelay-ForwardToAddress: {routed.address}/" "$2"\nexit 0')
    store(spool, forward_to="example.org")
    assert as_client(spool, default.address, "--client-filter", f).returncode == 0
    assert len(routed.wait_for_messages(1)) == 1 and default.messages == []
