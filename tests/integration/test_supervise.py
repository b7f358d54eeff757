"""emailrelay supervise and emailrelay ctl: real supervisor, real workers, real sockets."""

from __future__ import annotations

import json
import os
import poplib
import re
import signal
import smtplib
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from .conftest import Relay, command, run
from .downstream import Sink, downstream_fixture

downstream = downstream_fixture()


class Supervised(Relay):
    """A running ``emailrelay supervise`` and its admin socket."""

    def __init__(self, args: list[str], spool: Path, socket_path: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(args, spool, env)
        self.socket = socket_path
        self.pop_port = 0
        self.admin_port = 0

    def started(self) -> Supervised:  # type: ignore[override]
        self.port = int(self.wait_for(r"\[supervisor\] smtp listening on 127\.0\.0\.1:(\d+)").group(1))
        self.wait_for(r"\[supervisor\] all workers running")
        for line in self.lines:
            if m := re.search(r"\[supervisor\] pop listening on 127\.0\.0\.1:(\d+)", line):
                self.pop_port = int(m.group(1))
            if m := re.search(r"\[supervisor\] admin listening on 127\.0\.0\.1:(\d+)", line):
                self.admin_port = int(m.group(1))
        return self

    def ctl(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return run(command("emailrelay"), "ctl", "--admin-socket", str(self.socket), *args)

    def status(self) -> dict:
        result = self.ctl("status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def workers(self) -> dict[str, dict]:
        return {w["name"]: w for w in self.status()["workers"]}

    def wait_state(self, name: str, state: str, timeout: float = 30.0, **match: object) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            w = self.workers()[name]
            if w["state"] == state and all(w[k] == v for k, v in match.items()):
                return w
            assert time.monotonic() < deadline, f"{name} is {w}, not {state} {match}"
            time.sleep(0.05)


@pytest.fixture
def supervise(tmp_path: Path, spool: Path):
    """Start ``emailrelay supervise`` with a configuration file of the given lines."""
    started: list[Supervised] = []

    def start(*lines: str, args: tuple[str, ...] = (), env: dict[str, str] | None = None, wait: bool = True,
              socket_path: Path | None = None) -> Supervised:
        socket_path = socket_path or tmp_path / "admin.sock"
        conf = tmp_path / "emailrelay.conf"
        conf.write_text("\n".join([
            f"spool-dir {spool}", "port 0", "interface 127.0.0.1", f"admin-socket {socket_path}", *lines,
        ]) + "\n")
        s = Supervised([command("emailrelay"), "supervise", *args, str(conf)], spool, socket_path,
                       env={**os.environ, **(env or {})})
        s.config = conf  # type: ignore[attr-defined]
        started.append(s)
        return s.started() if wait else s

    yield start
    for s in started:
        s.stop()


def send(port: int, subject: str, to: str = "someone@example.net") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.sendmail("sender@example.com", [to], f"Subject: {subject}\r\n\r\nbody of {subject}\r\n")


def subjects(sink: Sink) -> set[str]:
    return {re.search(rb"Subject: (\S+)", m.data).group(1).decode() for m in sink.messages}


def pop_auth(tmp_path: Path) -> Path:
    path = tmp_path / "pop.auth"
    path.write_text("server plain alice secret\n")
    return path


# -- the whole service --------------------------------------------------------------


def test_every_worker_runs_and_mail_flows_in_forwarded_and_collected(supervise, downstream, spool, tmp_path):
    sink = downstream(Sink)
    (spool / "alice").mkdir()
    s = supervise(
        f"forward-to {sink.address}", "forward-on-disconnect", "poll 60",
        "filter copy:nodelete", "pop", "pop-port 0", "pop-by-name", f"pop-auth {pop_auth(tmp_path)}",
    )
    workers = s.workers()
    assert {name: w["state"] for name, w in workers.items()} == {"storage": "RUNNING", "forward": "RUNNING", "pop": "RUNNING"}
    assert all(w["pid"] and w["rss"] > 0 for w in workers.values())
    assert len({w["pid"] for w in workers.values()} | {s.proc.pid}) == 4  # one process each
    send(s.port, "flow-1")
    sink.wait_for_messages(1)
    assert subjects(sink) == {"flow-1"}
    pop = poplib.POP3("127.0.0.1", s.pop_port, timeout=30)
    try:
        pop.user("alice")
        pop.pass_("secret")
        assert pop.stat()[0] == 1
        assert b"Subject: flow-1" in b"\r\n".join(pop.retr(1)[1])
    finally:
        pop.quit()


def test_killed_workers_are_restarted_and_nothing_accepted_is_lost(supervise, downstream, spool, tmp_path):
    sink = downstream(Sink)
    s = supervise(f"forward-to {sink.address}", "forward-on-disconnect", "poll 1",
                  "pop", "pop-port 0", f"pop-auth {pop_auth(tmp_path)}")
    accepted: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                send(s.port, f"m{n}")
                accepted.append(f"m{n}")
            except ConnectionRefusedError as e:
                refused.append(str(e))
            except (smtplib.SMTPException, OSError):
                pass  # a session cut by the kill: not accepted, the client would retry
            time.sleep(0.01)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        for name in ("storage", "forward", "pop"):
            time.sleep(0.5)
            before = s.workers()[name]
            os.kill(before["pid"], signal.SIGKILL)
            after = s.wait_state(name, "RUNNING", restarts=before["restarts"] + 1)
            assert after["pid"] != before["pid"]
            assert "killed by signal 9" in after["last_error"]
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert refused == []  # the supervisor's listening socket never closed
    assert len(accepted) > 10
    sink.wait_until(lambda: set(accepted) <= subjects(sink), timeout=30, what="every accepted message")
    assert s.count(r"Traceback") == 0, "\n".join(s.lines)


def test_a_worker_that_always_crashes_ends_fatal_and_ctl_says_so(supervise, tmp_path):
    broken = tmp_path / "broken.auth"
    broken.write_text("server plain alice\n")  # a secret is missing: the pop worker cannot start
    s = supervise("pop", "pop-port 0", f"pop-auth {broken}", wait=False)
    s.wait_for(r"worker pop: \w+ -> FATAL", timeout=60)
    result = s.ctl("status")
    assert result.returncode == 0
    line = next(line for line in result.stdout.decode().splitlines() if line.startswith("pop "))
    assert "FATAL" in line and "exited with status 1" in line
    workers = s.workers()
    assert workers["storage"]["state"] == "RUNNING"
    assert workers["pop"]["failures"] == 5 and workers["pop"]["pid"] is None
    assert s.count(r"\[pop\] .*broken\.auth") >= 1  # the worker's own reason reached the log
    broken.write_text("server plain alice secret\n")
    result = s.ctl("restart", "pop")
    assert result.returncode == 0, result.stderr
    assert s.workers()["pop"]["state"] == "RUNNING"


# -- ctl --------------------------------------------------------------------------------


def test_ctl_spool_commands(supervise, downstream, spool):
    sink = downstream(Sink, rcpt_replies={"no@example.net": (550, "5.1.1 no such user")})
    s = supervise(f"forward-to {sink.address}")
    send(s.port, "good")
    send(s.port, "bad1", to="no@example.net")
    send(s.port, "bad2", to="no@example.net")
    listing = json.loads(s.ctl("list", "--json").stdout)
    assert listing["total"] == 3 and {m["state"] for m in listing["messages"]} == {"ready"}
    assert s.ctl("forward").returncode == 0
    sink.wait_for_messages(1)
    deadline = time.monotonic() + 20
    while json.loads(s.ctl("failures", "--json").stdout)["total"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    failures = json.loads(s.ctl("failures", "--json").stdout)["messages"]
    assert [f["reason_code"] for f in failures] == ["550", "550"]
    assert all(f["reason"] == "one or more recipients rejected" and f["failures"] == 1 for f in failures)
    text = s.ctl("failures").stdout.decode()
    assert "550 one or more recipients rejected (failures: 1)" in text
    first, second = (f["id"] for f in failures)
    shown = s.ctl("show", first)
    assert shown.returncode == 0 and b"X-MailRelay-To-Remote: no@example.net" in shown.stdout
    assert b"Subject: bad1" in shown.stdout or b"Subject: bad2" in shown.stdout
    assert json.loads(s.ctl("show", first, "--json").stdout)["state"] == "bad"
    assert s.ctl("delete", first).returncode == 0
    assert not (spool / f"{first}.envelope.bad").exists() and not (spool / f"{first}.content").exists()
    result = s.ctl("delete", first)
    assert result.returncode == 1 and b"no such" in result.stderr
    assert s.ctl("show", "emailrelay.1.2.3").returncode == 1
    result = s.ctl("retry", second)
    assert result.returncode == 0 and b"resubmitted" in result.stdout
    deadline = time.monotonic() + 20
    while True:  # retried, forwarded, refused again: a second Reason line
        failed = json.loads(s.ctl("failures", "--json").stdout)["messages"]
        if failed and failed[0]["failures"] == 2:
            break
        assert time.monotonic() < deadline, failed
        time.sleep(0.05)
    result = s.ctl("retry", "--all")
    assert result.returncode == 0 and second.encode() in result.stdout
    assert s.ctl("retry", "emailrelay.1.2.3").returncode == 1
    assert s.ctl("retry").returncode == 2


def test_ctl_worker_and_log_commands(supervise, downstream):
    sink = downstream(Sink)
    s = supervise(f"forward-to {sink.address}")
    before = s.workers()["forward"]
    result = s.ctl("restart", "forward")
    assert result.returncode == 0 and b"forward: RUNNING" in result.stdout
    after = s.workers()["forward"]
    assert after["pid"] != before["pid"] and after["restarts"] == 0  # asked for: not counted as a crash
    assert s.ctl("stop", "forward").returncode == 0
    assert s.workers()["forward"]["state"] == "STOPPED"
    result = s.ctl("forward")
    assert result.returncode == 4 and b"not running" in result.stderr  # retry can help
    assert s.ctl("start", "forward").returncode == 0
    assert s.workers()["forward"]["state"] == "RUNNING"
    result = s.ctl("restart", "nosuch")
    assert result.returncode == 1 and b"no worker" in result.stderr
    logs = s.ctl("logs", "-n", "500").stdout.decode()
    assert "supervisor: info: worker forward: STOPPING -> STOPPED" in logs
    assert re.search(r"storage: info: smtp server on 127\.0\.0\.1:\d+", logs)
    follower = subprocess.Popen([command("emailrelay"), "ctl", "--admin-socket", str(s.socket), "logs", "-f", "-n", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        send(s.port, "followed")
        assert s.ctl("forward").returncode == 0
        sink.wait_for_messages(1)
        deadline = time.monotonic() + 10
        seen = b""
        os.set_blocking(follower.stdout.fileno(), False)
        while b"forward: info: forwarding: done" not in seen:
            assert time.monotonic() < deadline, seen
            seen += follower.stdout.read() or b""
            time.sleep(0.05)
        assert b"storage: info: stored message" in seen
    finally:
        follower.terminate()
        follower.wait()
        follower.stdout.close()
        follower.stderr.close()


def test_ctl_config_reload_and_stop(supervise, tmp_path):
    s = supervise()
    assert set(s.workers()) == {"storage"}
    conf: Path = s.config  # type: ignore[attr-defined]
    shown = s.ctl("config")
    assert shown.returncode == 0 and shown.stdout.decode() == conf.read_text()
    bad = tmp_path / "bad.conf"
    bad.write_text(conf.read_text() + "pop-port 99999999\n")
    result = s.ctl("config", "--validate", str(bad))
    assert result.returncode == 1 and b"invalid" in result.stdout
    result = s.ctl("config", "--replace", str(bad))
    assert result.returncode == 1 and b"invalid configuration" in result.stderr
    assert "99999999" not in conf.read_text()
    good = tmp_path / "good.conf"
    good.write_text(conf.read_text() + f"pop\npop-port 0\npop-auth {pop_auth(tmp_path)}\n")
    assert s.ctl("config", "--validate", str(good)).returncode == 0
    port = s.port
    result = s.ctl("config", "--replace", str(good))
    assert result.returncode == 0, result.stderr
    assert conf.read_text() == good.read_text()
    s.wait_state("pop", "RUNNING")
    send(port, "after-reload")  # the SMTP port is the same socket
    assert s.ctl("reload").returncode == 0
    assert s.ctl("stop").returncode == 0
    assert s.proc.wait(timeout=30) == 0
    assert not s.socket.exists()
    result = s.ctl("status")
    assert result.returncode == 3 and b"cannot connect" in result.stderr


def test_ctl_usage_and_unreachable(tmp_path):
    result = run(command("emailrelay"), "ctl")
    assert result.returncode == 2 and b"a command is needed" in result.stderr
    result = run(command("emailrelay"), "ctl", "frobnicate")
    assert result.returncode == 2 and b"usage error" in result.stderr
    result = run(command("emailrelay"), "ctl", "--admin-socket", str(tmp_path / "none.sock"), "status")
    assert result.returncode == 3
    assert result.stderr.decode().count("\n") == 1 and "cannot connect" in result.stderr.decode()


# -- the admin socket -----------------------------------------------------------------------

PEEK = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print(s.makefile().readline())"


def test_admin_socket_is_owner_only_and_checks_the_peer_uid(supervise):
    directory = Path(tempfile.mkdtemp(prefix="emailrelay-admin-"))
    try:
        os.chmod(directory, 0o755)
        s = supervise(socket_path=directory / "admin.sock")
        mode = s.socket.stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        assert s.ctl("status").returncode == 0
        nobody = dict(user=65534, group=65534, capture_output=True, timeout=30)
        result = subprocess.run(["/usr/bin/python3", "-c", PEEK, str(s.socket)], **nobody)
        assert result.returncode != 0 and b"PermissionError" in result.stderr  # 0600 keeps it out
        os.chmod(s.socket, 0o666)  # even when the file lets it in, the uid check refuses it
        result = subprocess.run(["/usr/bin/python3", "-c", PEEK, str(s.socket)], **nobody)
        reply = json.loads(result.stdout)
        assert reply["ok"] is False and reply["error"]["kind"] == "refused" and "uid 65534" in reply["error"]["message"]
        s.wait_for(r"admin connection refused: peer uid 65534")
    finally:
        subprocess.run(["rm", "-rf", str(directory)], check=False)


def test_admin_protocol_greeting_errors_and_events(supervise):
    s = supervise()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(s.socket))
        f = sock.makefile("rwb")
        greeting = json.loads(f.readline())
        assert greeting["protocol"] == "emailrelay-admin" and greeting["version"] == 1
        for line in (b"not json\n", b'{"id": 1, "op": "nosuch"}\n', b'{"id": 2, "op": "show"}\n'):
            f.write(line)
            f.flush()
            reply = json.loads(f.readline())
            assert reply["ok"] is False and reply["error"]["kind"] == "bad-request" and reply["error"]["retry"] is False
        f.write(b'{"id": 3, "op": "subscribe", "streams": ["event"]}\n')
        f.flush()
        assert json.loads(f.readline()) == {"id": 3, "ok": True, "result": {"streams": ["event"]}}
        send(s.port, "evented")
        event = json.loads(f.readline())
        assert event["stream"] == "event"
        assert event["event"]["type"] == "message" and event["event"]["action"] == "stored"
        assert event["event"]["worker"] == "storage"


def test_admin_tcp_interface_is_served_under_the_supervisor(supervise, downstream, spool):
    sink = downstream(Sink)
    s = supervise(f"forward-to {sink.address}", "admin 0", "admin-terminate")
    assert s.admin_port
    send(s.port, "via-admin")
    with socket.create_connection(("127.0.0.1", s.admin_port), timeout=30) as sock:
        f = sock.makefile("rwb")

        def command_(text: bytes) -> bytes:
            f.write(text + b"\r\n")
            f.flush()
            reply = b""
            while not reply.endswith(b"E-MailRelay> "):
                reply += f.read1(65536)
            return reply

        assert re.match(rb"emailrelay\.\d+\.\d+\.1\r\n", command_(b"list"))
        assert b"forward" in command_(b"help")
        command_(b"forward")
        sink.wait_for_messages(1)
        deadline = time.monotonic() + 10
        while command_(b"list") != b"<none>\r\nE-MailRelay> ":  # gone once the forwarder removes it
            assert time.monotonic() < deadline
            time.sleep(0.05)


# -- process life ---------------------------------------------------------------------------


def test_sigterm_lets_a_session_finish_and_removes_socket_and_pid_file(supervise, tmp_path, spool):
    pid_file = tmp_path / "run" / "emailrelay.pid"
    s = supervise(f"pid-file {pid_file}")
    assert pid_file.read_text() == f"{s.proc.pid}\n"
    smtp = smtplib.SMTP("127.0.0.1", s.port, timeout=30)
    smtp.ehlo()
    smtp.mail("a@example.com")
    smtp.rcpt("b@example.net")
    s.proc.send_signal(signal.SIGTERM)
    s.wait_for(r"\[storage\] stopping: SIGTERM")
    code, _ = smtp.data(b"Subject: last\r\n\r\nstill accepted\r\n")
    assert code == 250
    smtp.quit()
    assert s.proc.wait(timeout=30) == 0
    assert not pid_file.exists() and not s.socket.exists()
    assert len(list(spool.glob("*.envelope"))) == 1
    assert s.count(r"Traceback") == 0, "\n".join(s.lines)


def test_notify_socket_gets_ready_status_reloading_and_stopping(supervise, tmp_path):
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(30)
    try:
        s = supervise(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})

        def until(*fields: str) -> list[str]:
            got: list[str] = []
            while not set(fields) <= set(got):
                got += listener.recv(4096).decode().split("\n")
            return got

        until("READY=1", "STATUS=1 of 1 workers running")
        until("WATCHDOG=1")  # every 0.2 s: half of WatchdogSec
        environ = Path(f"/proc/{s.workers()['storage']['pid']}/environ").read_bytes()
        assert b"NOTIFY_SOCKET" not in environ  # only the supervisor talks to systemd
        s.proc.send_signal(signal.SIGHUP)
        assert any(f.startswith("MONOTONIC_USEC=") for f in until("RELOADING=1"))
        until("READY=1")
        s.proc.send_signal(signal.SIGTERM)
        until("STOPPING=1")
        assert s.proc.wait(timeout=30) == 0
    finally:
        listener.close()


def test_supervise_startup_errors_are_one_line(tmp_path, spool):
    result = run(command("emailrelay"), "supervise", "--spool-dir", str(spool), "--no-smtp")
    assert result.returncode == 1 and b"nothing to do" in result.stderr
    result = run(command("emailrelay"), "supervise", "--as-client", "127.0.0.1:9", "--spool-dir", str(spool))
    assert result.returncode == 1 and b"plain emailrelay" in result.stderr
    result = run(command("emailrelay"), "supervise", str(tmp_path / "missing.conf"))
    assert result.returncode == 1 and result.stderr.count(b"\n") == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(command("emailrelay"), "supervise", "--spool-dir", str(spool), "--interface", "127.0.0.1",
                     "--port", str(port), "--admin-socket", str(tmp_path / "a.sock"))
    assert result.returncode == 2 and b"socket bind error: address already in use" in result.stderr
    assert b"Traceback" not in result.stderr and not (tmp_path / "a.sock").exists()


def test_as_proxy_stores_in_the_proxy_worker_and_forwards_after_each_session_in_the_forward_worker(
    supervise, downstream
):
    sink = downstream(Sink)
    s = supervise(f"as-proxy {sink.address}")
    assert set(s.workers()) == {"proxy", "forward"}
    send(s.port, "proxied")
    sink.wait_for_messages(1)
    # the session's end asks the forward worker (its own process, its own core) for a run
    s.wait_for(r"\[proxy\] smtp connection closed")
    s.wait_for(r"\[forward\] forwarding: emailrelay\.\S+: sent")
    assert s.count(r"\[proxy\] forwarding") == 0


def test_immediate_forwards_inside_the_transaction_in_the_proxy_worker(supervise, downstream):
    sink = downstream(Sink)
    s = supervise(f"forward-to {sink.address}", "immediate")
    assert set(s.workers()) == {"proxy", "forward"}
    send(s.port, "at once")
    assert len(sink.messages) == 1  # before the 250 that send() waited for
    s.wait_for(r"\[proxy\] forwarding: emailrelay\.\S+: sent")


def test_named_instances_get_workers_of_their_own(supervise, downstream, tmp_path):
    sink = downstream(Sink)
    out_spool = tmp_path / "out-spool"
    out_spool.mkdir()
    s = supervise(f"out-spool-dir {out_spool}", "out-port 0", "out-interface 127.0.0.1",
                  f"out-forward-to {sink.address}", "out-forward-on-disconnect")
    assert set(s.workers()) == {"storage", "out/storage", "out/forward"}
    out_port = int(s.wait_for(r"\[out/storage\] \[out\] smtp server on 127\.0\.0\.1:(\d+)").group(1))
    send(out_port, "via-out")
    sink.wait_for_messages(1)
    send(s.port, "kept-in")
    listing = json.loads(s.ctl("list", "--json").stdout)
    assert [(m["unit"], m["state"]) for m in listing["messages"]] == [("", "ready")]
    status = s.status()
    assert [sp["unit"] for sp in status["spools"]] == ["", "out"]
    assert "spool [out]" in s.ctl("status").stdout.decode()
    assert json.loads(s.ctl("list", "--unit", "out", "--json").stdout)["total"] == 0
    result = s.ctl("list", "--unit", "nosuch")
    assert result.returncode == 1 and b"no instance" in result.stderr


def test_storage_workers_share_the_listening_socket(supervise, spool):
    s = supervise("storage-workers 2")
    workers = s.workers()
    assert {name: w["state"] for name, w in workers.items()} == {"storage": "RUNNING", "storage-2": "RUNNING"}
    os.kill(workers["storage"]["pid"], signal.SIGSTOP)  # one of them busy: the other takes every connection
    try:
        for n in range(3):
            send(s.port, f"shared-{n}")
    finally:
        os.kill(workers["storage"]["pid"], signal.SIGCONT)
    assert len(list(spool.glob("*.envelope"))) == 3
    deadline = time.monotonic() + 10
    while s.count(r"\[storage-2\] stored message") < 3:  # log lines come through the pipe a little later
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert s.count(r"\[storage\] stored message") == 0
    result = s.ctl("restart", "storage-2")
    assert result.returncode == 0 and b"storage-2: RUNNING" in result.stdout


def test_ctl_on_a_corrupt_envelope_and_a_message_in_flight(supervise, spool):
    s = supervise()
    send(s.port, "good")
    (good,) = [p.name[: -len(".envelope")] for p in spool.glob("*.envelope")]
    bad_id = "emailrelay.1.1795600000.1"
    (spool / f"{bad_id}.content").write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    (spool / f"{bad_id}.envelope.bad").write_bytes(b"this is not an envelope\r\n")
    listing = json.loads(s.ctl("failures", "--json").stdout)
    (row,) = listing["messages"]
    assert row["id"] == bad_id and row["error"] and "from" not in row  # listed, with why it cannot be read
    result = s.ctl("failures")
    assert result.returncode == 0 and bad_id.encode() in result.stdout and b"Traceback" not in result.stderr
    result = s.ctl("show", bad_id)
    assert result.returncode == 0 and b"this is not an envelope" in result.stdout and b"body" in result.stdout
    result = s.ctl("retry", bad_id)
    assert result.returncode == 0 and b"unreadable envelope" in result.stdout
    assert (spool / f"{bad_id}.envelope.bad").exists()  # left as it was
    (spool / f"{good}.envelope").rename(spool / f"{good}.envelope.busy")  # as a forwarder claims it
    result = s.ctl("delete", good)
    assert result.returncode == 4 and b"being forwarded" in result.stderr and b"try again" in result.stderr
    assert (spool / f"{good}.envelope.busy").exists() and (spool / f"{good}.content").exists()
    assert s.ctl("delete", bad_id).returncode == 0
    assert not (spool / f"{bad_id}.envelope.bad").exists() and not (spool / f"{bad_id}.content").exists()
