"""The file built-ins copy:, deliver:, split: and msgid: (SPEC.md 3.9), in real emailrelay processes.

Server filters run in an ``emailrelay`` storage server that smtplib talks to;
client filters in ``emailrelay --as-client`` against real downstream sinks,
on messages put into the spool with the library.  Files are checked byte
for byte: an envelope a filter copies or writes is compared with the one
the library would write (envelope.serialise).

deliver: needs To-Local recipients, which only an address verifier makes;
until there is one, a small filter program (`LOCALISE`) chained before
deliver: turns the ``@local.example`` recipients of a server message into
To-Local mailboxes, and hand-made messages give the client filter theirs.
"""

from __future__ import annotations

import os
import re
import smtplib
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from emailrelay.envelope import Envelope, parse, serialise

from .conftest import command, needs_root, spool_files
from .downstream import Received, Sink, downstream_fixture
from .test_forward import as_client, states, store

downstream = downstream_fixture()

BODY = b"Subject: file filters\r\n\r\nhello\r\n"
MAILDIR_NAME = re.compile(r"^(\d+)\.(\d{6})\.(\d+)\.([^./\\]+)\.(\d+)$")


def send(port: int, to: list[str], body: bytes = BODY) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail("a@b.example", to, body)


def envelope_bytes(to_remote: list[str], to_local: list[str] | None = None, **fields: object) -> bytes:
    """What the server writes for a message from send()."""
    env = Envelope(from_address="a@b.example", to_local=to_local or [], to_remote=to_remote, client="127.0.0.1")
    return serialise(Envelope(**{**env.__dict__, **fields}))


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def only_id(directory: Path, suffix: str = ".envelope") -> str:
    (name,) = [p.name for p in directory.iterdir() if p.name.endswith(suffix)]
    return name[: -len(suffix)]


def maildir(path: Path) -> Path:
    for sub in ("tmp", "cur", "new"):
        (path / sub).mkdir(parents=True)
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def python_script(tmp_path: Path, name: str, body: str) -> str:
    """A filter program run by this virtualenv's python (filters get PATH=/usr/bin:/bin only)."""
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\nimport sys\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


#: A server filter standing in for an address verifier: ``x@local.example`` becomes To-Local ``x``.
LOCALISE = """
from emailrelay.envelope import parse, serialise
path = sys.argv[2]
env = parse(open(path, "rb").read())
env.to_local = [a.split("@")[0] for a in env.to_remote if a.endswith("@local.example")]
env.to_remote = [a for a in env.to_remote if not a.endswith("@local.example")]
open(path, "wb").write(serialise(env))
"""


def content_of(r_spool: Path, msg_id: str) -> bytes:
    return (r_spool / f"{msg_id}.content").read_bytes()


def assert_server_content(data: bytes, body: bytes = BODY) -> None:
    """A content file as the server wrote it: one Received line, then what was sent."""
    received, _, rest = data.partition(b"\r\n")
    assert received.startswith(b"Received: from ") and rest == body


# -- copy: ----------------------------------------------------------------------------------------


def test_copy_into_plain_subdirectories_and_maildirs_then_takes_the_message(relay, spool):
    for name in ("alice", "postmaster", ".hidden"):
        (spool / name).mkdir()
    maildir(spool / "bob")
    r = relay("--filter", "copy:")
    send(r.port, ["c@d.example"])
    assert spool_files(spool) == []  # abandon: the originals are gone
    msg_id = only_id(spool / "alice")
    assert files(spool / "alice") == [f"{msg_id}.content", f"{msg_id}.envelope"]
    assert (spool / "alice" / f"{msg_id}.envelope").read_bytes() == envelope_bytes(["c@d.example"])
    content = (spool / "alice" / f"{msg_id}.content").read_bytes()
    assert_server_content(content)
    assert files(spool / "bob" / "tmp") == [] and files(spool / "bob" / "cur") == []
    (name,) = files(spool / "bob" / "new")
    m = MAILDIR_NAME.match(name)
    assert m and int(m.group(3)) == r.proc.pid and m.group(5) == "0"
    assert (spool / "bob" / "new" / name).read_bytes() == content
    assert files(spool / "postmaster") == [] and files(spool / ".hidden") == []
    for path in (spool / "alice" / f"{msg_id}.content", spool / "alice" / f"{msg_id}.envelope", spool / "bob" / "new" / name):
        assert mode(path) == 0o660
    # maildir names count on within the process
    send(r.port, ["c@d.example"])
    assert sorted(MAILDIR_NAME.match(n).group(5) for n in files(spool / "bob" / "new")) == ["0", "1"]


def test_copy_pop_copies_only_the_envelope_and_leaves_the_content(relay, spool):
    (spool / "alice").mkdir()
    (spool / "bob").mkdir()
    r = relay("--filter", "copy:pop")
    send(r.port, ["c@d.example", "e@f.example"])
    msg_id = only_id(spool / "alice")
    for name in ("alice", "bob"):
        assert files(spool / name) == [f"{msg_id}.envelope"]
        assert (spool / name / f"{msg_id}.envelope").read_bytes() == envelope_bytes(["c@d.example", "e@f.example"])
    assert spool_files(spool) == [f"{msg_id}.content"]
    assert_server_content(content_of(spool, msg_id))


def test_copy_hardlink_nodelete_links_the_content_and_keeps_the_message(relay, spool):
    (spool / "alice").mkdir()
    maildir(spool / "bob")
    r = relay("--filter", "copy:h;n")
    send(r.port, ["c@d.example"])
    msg_id = only_id(spool)
    assert spool_files(spool) == [f"{msg_id}.content", f"{msg_id}.envelope"]
    original = spool / f"{msg_id}.content"
    (name,) = files(spool / "bob" / "new")
    for copy in (spool / "alice" / f"{msg_id}.content", spool / "bob" / "new" / name):
        assert copy.stat().st_ino == original.stat().st_ino
    assert original.stat().st_nlink == 3
    assert (spool / "alice" / f"{msg_id}.envelope").read_bytes() == (spool / f"{msg_id}.envelope").read_bytes()


def test_copy_nodelete_without_hardlink_makes_independent_copies(relay, spool):
    (spool / "alice").mkdir()
    r = relay("--filter", "copy:no_delete")
    send(r.port, ["c@d.example"])
    msg_id = only_id(spool)
    copy, original = spool / "alice" / f"{msg_id}.content", spool / f"{msg_id}.content"
    assert copy.read_bytes() == original.read_bytes()
    assert copy.stat().st_ino != original.stat().st_ino and original.stat().st_nlink == 1


def test_copy_without_subdirectories_stores_the_message_normally(relay, spool):
    r = relay("--filter", "copy:")
    send(r.port, ["c@d.example"])
    msg_id = only_id(spool)
    assert spool_files(spool) == [f"{msg_id}.content", f"{msg_id}.envelope"]
    assert (spool / f"{msg_id}.envelope").read_bytes() == envelope_bytes(["c@d.example"])


@needs_root
def test_copy_failure_is_452_failed_and_undoes_the_copies_made(relay, spool):
    (spool / "alice").mkdir()
    maildir(spool / "bob")
    # bob/new on another file system: the rename from bob/tmp fails with EXDEV
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(spool / "bob" / "new")], check=True)
    try:
        r = relay("--filter", "copy:")
        with pytest.raises(smtplib.SMTPDataError) as e:
            send(r.port, ["c@d.example"])
        assert (e.value.smtp_code, e.value.smtp_error) == (452, b"failed")
        r.wait_for(r"rejected by the filter: copy: invalid cross-device link: ")
        assert spool_files(spool) == []
        assert files(spool / "alice") == [] and files(spool / "bob" / "tmp") == [] and files(spool / "bob" / "new") == []
    finally:
        subprocess.run(["umount", "-l", str(spool / "bob" / "new")], check=False)


def test_copy_as_a_client_filter_takes_the_message_from_the_forwarder(downstream, spool):
    sink = downstream(Sink)
    (spool / "alice").mkdir()
    msg_id = store(spool)
    envelope = (spool / f"{msg_id}.envelope").read_bytes()
    assert as_client(spool, sink.address, "--client-filter", "copy:").returncode == 0
    assert sink.messages == []
    assert spool_files(spool) == []
    assert (spool / "alice" / f"{msg_id}.envelope").read_bytes() == envelope
    assert (spool / "alice" / f"{msg_id}.content").read_bytes() == b"Subject: test\r\n\r\nhello\r\n"


# -- deliver: -------------------------------------------------------------------------------------


def test_deliver_as_a_client_filter_delivers_locally_then_forwards(downstream, spool):
    sink = downstream(Sink)
    maildir(spool / "bob")
    data = b"Subject: local and remote\r\n\r\nhi\r\n"
    msg_id = store(spool, data, to_local=["bob", "alice", "bob"], to_remote=["r@example.net"])
    envelope = (spool / f"{msg_id}.envelope").read_bytes()
    result = as_client(spool, sink.address, "--client-filter", "deliver:")
    assert result.returncode == 0, result.stderr
    assert sink.wait_for_messages(1) == [Received("a@example.com", ["r@example.net"], [], data)]
    assert spool_files(spool) == []  # forwarded
    assert mode(spool / "alice") == 0o770
    assert files(spool / "alice") == [f"{msg_id}.content", f"{msg_id}.envelope"]
    assert (spool / "alice" / f"{msg_id}.content").read_bytes() == data
    assert (spool / "alice" / f"{msg_id}.envelope").read_bytes() == envelope
    (name,) = files(spool / "bob" / "new")  # once, though bob is listed twice
    assert MAILDIR_NAME.match(name)
    assert (spool / "bob" / "new" / name).read_bytes() == data
    assert files(spool / "bob" / "tmp") == []


@pytest.mark.parametrize(
    "mailbox",
    ["../escape", ".hidden", "a/b", "", "tab\there", "two..dots"],
    ids=["dotdot-slash", "leading-dot", "slash", "empty", "control", "dotdot"],
)
def test_deliver_refuses_bad_mailbox_names_and_delivers_nothing(downstream, spool, mailbox):
    sink = downstream(Sink)
    msg_id = store(spool, to_local=["alice", mailbox], to_remote=["r@example.net"])
    assert as_client(spool, sink.address, "--client-filter", "deliver:").returncode == 0
    assert sink.messages == []
    assert states(spool)["bad"] == [msg_id]
    env = parse((spool / f"{msg_id}.envelope.bad").read_bytes())
    assert env.extra_lines[0].startswith("X-MailRelay-Reason: deliver: ")
    assert ("mailbox name" in env.extra_lines[0], env.extra_lines[1]) == (True, "X-MailRelay-ReasonCode: 550")
    assert [p.name for p in spool.iterdir() if p.is_dir()] == []  # not even alice
    assert not (spool.parent / "escape").exists()


def test_deliver_without_local_recipients_leaves_the_message_alone(downstream, spool):
    sink = downstream(Sink)
    store(spool)
    assert as_client(spool, sink.address, "--client-filter", "deliver:").returncode == 0
    assert len(sink.wait_for_messages(1)) == 1
    assert [p for p in spool.iterdir() if p.is_dir()] == []


def test_deliver_as_a_server_filter_takes_local_only_mail(relay, spool, tmp_path):
    mail = tmp_path / "mail"
    mail.mkdir()
    maildir(mail / "bob")
    localise = python_script(tmp_path, "localise", LOCALISE)
    r = relay("--filter", f"{localise},deliver:", "--delivery-dir", str(mail))
    send(r.port, ["alice@local.example", "bob@local.example"])
    assert spool_files(spool) == []  # abandon: delivered, nothing left to forward
    msg_id = only_id(mail / "alice")
    assert (mail / "alice" / f"{msg_id}.envelope").read_bytes() == envelope_bytes([], ["alice", "bob"])
    content = (mail / "alice" / f"{msg_id}.content").read_bytes()
    assert_server_content(content)
    (name,) = files(mail / "bob" / "new")
    assert (mail / "bob" / "new" / name).read_bytes() == content
    assert [p.name for p in spool.iterdir()] == []  # nothing under the spool directory


def test_deliver_keeps_mail_that_also_has_remote_recipients(relay, spool, tmp_path):
    localise = python_script(tmp_path, "localise", LOCALISE)
    r = relay("--filter", f"{localise},deliver:hardlink")
    send(r.port, ["alice@local.example", "r@example.net"])
    msg_id = only_id(spool)
    assert spool_files(spool) == [f"{msg_id}.content", f"{msg_id}.envelope"]
    expected = envelope_bytes(["r@example.net"], ["alice"])
    assert (spool / f"{msg_id}.envelope").read_bytes() == expected
    assert (spool / "alice" / f"{msg_id}.envelope").read_bytes() == expected
    assert (spool / "alice" / f"{msg_id}.content").stat().st_ino == (spool / f"{msg_id}.content").stat().st_ino


def test_deliver_nodelete_keeps_local_only_mail(relay, spool, tmp_path):
    localise = python_script(tmp_path, "localise", LOCALISE)
    r = relay("--filter", f"{localise},deliver:n")
    send(r.port, ["alice@local.example"])
    msg_id = only_id(spool)
    assert spool_files(spool) == [f"{msg_id}.content", f"{msg_id}.envelope"]
    assert files(spool / "alice") == [f"{msg_id}.content", f"{msg_id}.envelope"]


def test_deliver_bad_mailbox_as_a_server_filter_is_452_failed(relay, spool, tmp_path):
    localise = python_script(tmp_path, "localise", LOCALISE)
    r = relay("--filter", f"{localise},deliver:")
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(r.port, [".profile@local.example"])
    assert (e.value.smtp_code, e.value.smtp_error) == (452, b"failed")
    r.wait_for(r"rejected by the filter: deliver: invalid mailbox name: \.profile$")
    assert [p.name for p in spool.iterdir()] == []


# -- split: ---------------------------------------------------------------------------------------


def seq(msg_id: str) -> int:
    return int(msg_id.rsplit(".", 1)[1])


def test_split_makes_one_message_per_domain_then_each_is_routed_by_its_forward_to(relay, downstream, spool, tmp_path):
    recipients = ["a@Beta.example", "b@alpha.example", "c@beta.example", "d@gamma.example"]
    r = relay("--filter", "split:")
    send(r.port, recipients)
    ids = sorted((p.name[: -len(".envelope")] for p in spool.glob("*.envelope")), key=seq)
    assert len(ids) == 3 and spool_files(spool) == sorted([f"{i}.content" for i in ids] + [f"{i}.envelope" for i in ids])
    group = ["X-MailRelay-SplitGroupCount: 3"] + [f"X-MailRelay-SplitGroup: {i}" for i in ids]
    expected = {
        ids[0]: envelope_bytes(["b@alpha.example"], forward_to="alpha.example", extra_lines=group),
        ids[1]: envelope_bytes(["a@Beta.example", "c@beta.example"], forward_to="Beta.example", extra_lines=group),
        ids[2]: envelope_bytes(["d@gamma.example"], forward_to="gamma.example", extra_lines=group),
    }
    for msg_id, data in expected.items():
        assert (spool / f"{msg_id}.envelope").read_bytes() == data
        assert mode(spool / f"{msg_id}.envelope") == 0o660
    inodes = {(spool / f"{i}.content").stat().st_ino for i in ids}
    assert len(inodes) == 1 and (spool / f"{ids[0]}.content").stat().st_nlink == 3
    content = content_of(spool, ids[0])
    assert_server_content(content)

    # forwarding: a routing filter sends each domain to its own downstream server
    sinks = {domain: downstream(Sink) for domain in ("alpha.example", "beta.example", "gamma.example")}
    route = python_script(
        tmp_path, "route",
        "from emailrelay.envelope import parse, serialise\n"
        f"table = {{d: s for d, s in {[(d, s.address) for d, s in sinks.items()]!r}}}\n"
        "env = parse(open(sys.argv[2], 'rb').read())\n"
        "env.forward_to_address = table[env.forward_to.lower()]\n"
        "open(sys.argv[2], 'wb').write(serialise(env))\n",
    )  # fmt: skip
    default = downstream(Sink)
    result = as_client(spool, default.address, "--client-filter", route)
    assert result.returncode == 0, result.stderr
    assert default.messages == []
    assert [m.rcpt_tos for m in sinks["alpha.example"].wait_for_messages(1)] == [["b@alpha.example"]]
    assert [m.rcpt_tos for m in sinks["beta.example"].wait_for_messages(1)] == [["a@Beta.example", "c@beta.example"]]
    assert [m.rcpt_tos for m in sinks["gamma.example"].wait_for_messages(1)] == [["d@gamma.example"]]
    assert all(s.messages[0].data == content for s in sinks.values())
    assert spool_files(spool) == []


def test_split_raw_and_port(relay, spool):
    r = relay("--filter", "split:raw;2525")
    send(r.port, ["a@Beta.example", "b@beta.example"])
    ids = sorted((p.name[: -len(".envelope")] for p in spool.glob("*.envelope")), key=seq)
    group = ["X-MailRelay-SplitGroupCount: 2"] + [f"X-MailRelay-SplitGroup: {i}" for i in ids]
    assert (spool / f"{ids[0]}.envelope").read_bytes() == envelope_bytes(
        ["a@Beta.example"], forward_to="Beta.example:2525", extra_lines=group
    )
    assert (spool / f"{ids[1]}.envelope").read_bytes() == envelope_bytes(
        ["b@beta.example"], forward_to="beta.example:2525", extra_lines=group
    )


def test_split_with_one_domain_sets_forward_to_only(relay, spool):
    r = relay("--filter", "split:")
    send(r.port, ["a@One.example", "b@one.example"])
    msg_id = only_id(spool)
    assert spool_files(spool) == [f"{msg_id}.content", f"{msg_id}.envelope"]
    assert (spool / f"{msg_id}.envelope").read_bytes() == envelope_bytes(
        ["a@One.example", "b@one.example"], forward_to="One.example"
    )


def test_split_as_a_client_filter_sends_the_first_group_now_and_the_others_next_run(downstream, spool):
    sink = downstream(Sink)
    msg_id = store(spool, to_local=["postmaster"], to_remote=["x@two.example", "y@one.example"])
    assert as_client(spool, sink.address, "--client-filter", "split:").returncode == 0
    assert [m.rcpt_tos for m in sink.wait_for_messages(1)] == [["y@one.example"]]
    (other,) = states(spool)["ready"]  # a new id from the forwarding process's counter
    assert other != msg_id
    env = parse((spool / f"{other}.envelope").read_bytes())
    assert (env.to_local, env.to_remote, env.forward_to) == ([], ["x@two.example"], "two.example")
    assert env.extra_lines == ["X-MailRelay-SplitGroupCount: 2", f"X-MailRelay-SplitGroup: {msg_id}", f"X-MailRelay-SplitGroup: {other}"]
    assert as_client(spool, sink.address, "--client-filter", "split:").returncode == 0
    assert [m.rcpt_tos for m in sink.wait_for_messages(2)] == [["y@one.example"], ["x@two.example"]]
    assert spool_files(spool) == []


# -- msgid: ---------------------------------------------------------------------------------------

MESSAGE_ID = re.compile(rb"^Message-ID: <(\d+)\.(\d+)\.(\d+)\.(\d+)@relay\.example>\r\n")


def message_id_lines(data: bytes) -> list[bytes]:
    head = data.split(b"\r\n\r\n", 1)[0]
    return [line for line in head.split(b"\r\n") if line.lower().startswith(b"message-id:")]


def test_msgid_adds_exactly_one_message_id_at_the_top(relay, spool):
    r = relay("--filter", "msgid:", "--domain", "relay.example")
    for n in range(2):
        send(r.port, ["c@d.example"])
        msg_id = max((p.name[: -len(".envelope")] for p in spool.glob("*.envelope")), key=seq)
        data = content_of(spool, msg_id)
        m = MESSAGE_ID.match(data)
        assert m and int(m.group(3)) == r.proc.pid and int(m.group(4)) == n
        assert_server_content(data[m.end() :])
        assert len(message_id_lines(data)) == 1
    assert not list(spool.glob("*.tmp"))


@pytest.mark.parametrize(
    ("body", "added"),
    [
        (b"Subject: x\r\nmessage-ID: <given@example>\r\n\r\nbody\r\n", False),
        (b"Subject: x\r\nMessage-Id : <given@example>\r\n\r\nbody\r\n", False),
        (b"Subject: x\r\n\r\nMessage-ID: <in the body@example>\r\n", True),
        (b"Subject: x\r\nX-Message-ID: <other@example>\r\n", True),  # headers only, no blank line
    ],
    ids=["present", "space-before-colon", "only-in-body", "headers-only"],
)
def test_msgid_looks_only_at_the_header_section(relay, spool, body, added):
    r = relay("--filter", "msgid:", "--domain", "relay.example")
    send(r.port, ["c@d.example"], body)
    data = content_of(spool, only_id(spool))
    m = MESSAGE_ID.match(data)
    assert bool(m) == added
    assert_server_content(data[m.end() :] if m else data, body)


def test_msgid_as_a_client_filter_reaches_the_next_hop(downstream, spool):
    sink = downstream(Sink)
    store(spool)
    assert as_client(spool, sink.address, "--client-filter", "msgid:", "--domain", "relay.example").returncode == 0
    (m,) = sink.wait_for_messages(1)
    assert MESSAGE_ID.match(m.data) and m.data.endswith(b"\r\nSubject: test\r\n\r\nhello\r\n")


# -- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("copy:bogus", "copy: invalid option: bogus"),
        ("deliver:h;lowercase", "deliver: invalid option: lowercase"),
        ("split:raw;99999", "split: invalid port number: 99999"),
        ("split:x", "split: invalid option: x"),
        ("msgid:x", "msgid: invalid option: x"),
    ],
)
def test_bad_options_are_a_usage_error(spool, spec, error):
    result = subprocess.run(
        [command("emailrelay"), "--no-daemon", "--port", "0", "--spool-dir", str(spool), "--filter", spec],
        capture_output=True, timeout=30,
    )
    assert (result.returncode, result.stderr.decode().strip()) == (
        1, f"emailrelay: usage error: invalid filter specification: {error}"
    )


def test_documented_options_are_accepted(relay, spool):
    specs = "copy:p;h;n,copy:pop;hardlink;nodelete;no_delete,deliver:hardlink;nodelete;pop,split:raw;25,msgid:"
    r = relay("--filter", specs, "--domain", "relay.example")
    send(r.port, ["c@d.example"])
    msg_id = only_id(spool)
    assert MESSAGE_ID.match(content_of(spool, msg_id))
    assert parse((spool / f"{msg_id}.envelope").read_bytes()).forward_to == "d.example:25"
    assert os.access(spool / f"{msg_id}.content", os.R_OK)
