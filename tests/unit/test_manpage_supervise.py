"""The man page documents emailrelay supervise, emailrelay ctl and the admin protocol.

The page is generated from ctl.COMMANDS, ctl.parser() and admin_protocol, so
these tests check that what the code offers shows up in the rendered text:
every ctl command and flag, every admin operation, the protocol version.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess

import pytest

from emailrelay import admin_protocol, ctl, manpage
from emailrelay.lifecycle import WorkerState


def _detroff(source: str) -> str:
    """A rough plain-text rendering of troff source, for when groff is not installed."""
    lines = []
    for line in source.splitlines():
        if line.startswith(".SH "):
            lines.append(line[4:])
        elif not line.startswith("."):
            lines.append("   " + line)
        elif line.startswith(".SS "):
            lines.append("   " + line[4:])
    text = "\n".join(lines)
    text = re.sub(r"\\f[BIRP]", "", text)
    return text.replace("\\-", "-").replace("\\&", "").replace("\\(bu", "*").replace("\\e", "\\")


@pytest.fixture(scope="module", params=["groff", "plain"])
def page(request: pytest.FixtureRequest) -> str:
    """man/emailrelay.1 as text: rendered by groff (when installed), and by a rough troff stripper."""
    source = manpage.emailrelay_page()
    if request.param == "plain":
        return _detroff(source)
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    result = subprocess.run(
        ["groff", "-man", "-Tascii", "-P-c", "-rLL=200n"],
        input=source, capture_output=True, text=True, check=True,
    )
    return re.sub(r".\x08", "", result.stdout)


def _section(text: str, title: str) -> str:
    match = re.search(rf"^{re.escape(title)}\n(.*?)(?=^[A-Z][A-Z ]+\n|\Z)", text, re.M | re.S)
    assert match, f"no {title} section"
    return match.group(1)


def _subparsers(top: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("ctl has no sub-commands")


def test_sections_present(page: str) -> None:
    for title in ("SUPERVISOR", "CTL COMMANDS", "ADMIN PROTOCOL"):
        assert re.search(rf"^{title}$", page, re.M), title


def test_synopsis_names_both_commands(page: str) -> None:
    synopsis = _section(page, "SYNOPSIS")
    assert "emailrelay supervise [option ...] [config-file]" in synopsis
    assert "emailrelay ctl [--admin-socket path] [--timeout seconds] command [argument ...]" in synopsis


def test_description_is_not_outdated(page: str) -> None:
    description = _section(page, "DESCRIPTION")
    assert "implements the storage server in the foreground" not in description
    assert "daemon" in description and "emailrelay supervise" in description


def test_every_ctl_command_and_flag(page: str) -> None:
    ctl_text = _section(page, "CTL COMMANDS")
    top = ctl.parser("emailrelay ctl")
    commands = _subparsers(top)
    assert set(commands) == set(ctl.COMMANDS)
    for name, (help_text, _) in ctl.COMMANDS.items():
        assert re.search(rf"^\s+{re.escape(name)}\b", ctl_text, re.M), name
        assert " ".join(help_text.split()[:4]) in " ".join(ctl_text.split()), name
    for p in [top, *commands.values()]:
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            for flag in action.option_strings:
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", ctl_text), (p.prog, flag)
            if action.help:
                first_words = " ".join(action.help.split()[:3])
                assert first_words.lower() in " ".join(ctl_text.split()).lower(), (p.prog, action.dest)


def test_ctl_exit_statuses(page: str) -> None:
    ctl_text = _section(page, "CTL COMMANDS")
    exits = {k: v for k, v in vars(ctl).items() if k.startswith("EXIT_")}
    assert set(manpage.CTL_EXIT_TEXT) == set(exits)
    for value in exits.values():
        assert re.search(rf"^\s+{value}\s", ctl_text, re.M), value


def test_operation_descriptions_cover_the_protocol() -> None:
    assert set(manpage.OPERATION_TEXT) == set(admin_protocol.OPERATIONS)
    assert set(manpage.WORKER_OPERATION_TEXT) == set(admin_protocol.WORKER_OPERATIONS)
    assert set(manpage.ERROR_KIND_TEXT) == set(admin_protocol.ERROR_KINDS)
    assert set(manpage.WORKER_STATE_TEXT) == {s.value for s in WorkerState}


def test_every_admin_operation_and_error_kind(page: str) -> None:
    protocol = _section(page, "ADMIN PROTOCOL")
    for op in (*admin_protocol.OPERATIONS, *admin_protocol.WORKER_OPERATIONS, *admin_protocol.ERROR_KINDS):
        assert re.search(rf"^\s+{re.escape(op)}(\s|$)", protocol, re.M), op


def test_protocol_version_and_socket(page: str) -> None:
    protocol = _section(page, "ADMIN PROTOCOL")
    assert f"version {admin_protocol.VERSION} of the protocol" in protocol
    assert f'"version": {admin_protocol.VERSION}' in protocol
    assert "/run/emailrelay/admin.sock" in protocol
    assert "$XDG_RUNTIME_DIR/emailrelay/admin.sock" in protocol
    assert "0600" in protocol
    files = _section(page, "FILES")
    assert "/run/emailrelay/admin.sock" in files


def test_worker_states_and_supervisor_facts(page: str) -> None:
    text = " ".join(_section(page, "SUPERVISOR").split())
    for state in WorkerState:
        assert state.value in text
    for fact in ("[storage]", "SIGHUP", "SIGTERM", "Type=notify", "READY=1", "STATUS=", "RELOADING=1",
                 "WATCHDOG=1", "--pid-file", "foreground",
                 f"After {manpage._restart_policy().max_retries} failed starts"):
        assert fact in text, fact


def test_tcp_admin_interface_is_described_separately(page: str) -> None:
    protocol = " ".join(_section(page, "ADMIN PROTOCOL").split())
    assert "The --admin TCP interface" in protocol
    assert "different interface" in protocol
