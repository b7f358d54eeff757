"""The installed ``emailrelay`` console script, run as a real process: help, version, usage errors, config files."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from emailrelay import options

from .conftest import Relay, command
from .smtpraw import RawSmtp

TRY = '            try "emailrelay --help --verbose" for more information\n'


def emailrelay(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([command("emailrelay"), *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def test_help() -> None:
    result = emailrelay("--help")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("emailrelay 0.1.0 (E-MailRelay 2.6 compatible)\n\nabbreviated usage: emailrelay [-dvhlrV]")
    shown = set(re.findall(r"^  (?:-., |    )--([a-z0-9-]+)", result.stdout, re.M))
    assert shown == {o.name for o in options.EMAILRELAY_OPTIONS.shown(verbose=False)}
    assert len(shown) == 10 and "--pop" not in result.stdout


def test_help_verbose_lists_every_option() -> None:
    result = emailrelay("--help", "--verbose")
    assert result.returncode == 0 and result.stderr == ""
    for option in options.EMAILRELAY_OPTIONS:
        assert (f"--{option.name}" in result.stdout) == (option.level > options.HIDDEN), option.name
    assert emailrelay("-hv").stdout == result.stdout


def test_help_wraps_at_columns() -> None:
    result = emailrelay("--help", env={"COLUMNS": "50"})
    assert result.returncode == 0
    assert max(len(line) for line in result.stdout.splitlines()) <= 50


def test_help_wins_over_errors() -> None:
    result = emailrelay("--foo", "--help", "--pop", "a", "b")
    assert result.returncode == 0 and result.stdout.startswith("emailrelay 0.1.0") and result.stderr == ""


def test_version() -> None:
    result = emailrelay("--version")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("emailrelay 0.1.0 (E-MailRelay 2.6 compatible)\n")
    assert "Multi-threading" not in result.stdout


def test_version_verbose_feature_lines() -> None:
    for args in (["--version", "--verbose"], ["-V", "-v"]):
        result = emailrelay(*args)
        assert result.returncode == 0 and result.stderr == ""
        out = result.stdout
        assert re.search(r"(?i)threading:.*enabled", out)
        assert re.search(r"Unix domain sockets: enabled", out)
        assert re.search(r"(?m)^ *POP.*: enabled", out)
        assert re.search(r"(?m)^ *Admin.*: enabled", out)
        assert re.search(r"TLS.library:.*[A-Z]", out)


def test_version_after_parse_errors() -> None:
    result = emailrelay("--foo", "--version")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == 'emailrelay: error: invalid option: "--foo"\n' + TRY


def test_unknown_options() -> None:
    result = emailrelay("--foo", "-P", "--port", "-1")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        'emailrelay: error: "--port -1" is probably a mistake, use "--port=... -1" or "--port=-1"\n'
        'emailrelay: error: invalid option: "--foo"\n'
        'emailrelay: error: invalid option: "-P"\n' + TRY
    )


def test_too_many_arguments() -> None:
    result = emailrelay("a.conf", "b.conf")
    assert result.returncode == 1
    assert result.stderr == "emailrelay: usage error: too many non-option arguments\n" + TRY


def test_unknown_user() -> None:
    result = emailrelay("--user=no-such-user-here", "--no-daemon", "--port", "0", "--interface", "127.0.0.1")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == "emailrelay: error: no such user: no-such-user-here\n"


def test_nothing_to_do(tmp_path) -> None:
    result = emailrelay("--no-smtp", "--no-daemon", "--spool-dir", str(tmp_path))
    assert (result.returncode, result.stderr) == (0, "emailrelay: nothing to do\n")


def test_semantic_error() -> None:
    result = emailrelay("--no-daemon", "--verbose")
    assert result.returncode == 1
    assert result.stderr == ("emailrelay: usage error: the --verbose option must be used with --log, --help, "
                             "--as-client, --as-server or --as-proxy\n")
    result = emailrelay("--no-daemon", "--port=abc")
    assert result.returncode == 1 and result.stderr == 'emailrelay: usage error: invalid value for "--port": abc\n'
    result = emailrelay("--no-daemon", "--spool-sync=never")
    assert result.returncode == 1
    assert result.stderr == 'emailrelay: usage error: invalid value for "--spool-sync": never: use filesystem or file\n'
    result = emailrelay("--no-daemon", "--forward-to=127.0.0.1:25", "--forward-connections=33")
    assert result.returncode == 1
    assert result.stderr == 'emailrelay: usage error: invalid value for "--forward-connections": 33\n'


def test_subcommands_only_as_the_first_argument() -> None:
    result = emailrelay("supervise", "--help", "--verbose")
    assert result.returncode == 0 and "--admin-socket" in result.stdout
    result = emailrelay("ctl", "--help")
    assert result.returncode == 0 and "retry" in result.stdout and "--admin-socket" in result.stdout
    result = emailrelay("--log", "supervise")  # not first: it is the configuration file
    assert result.returncode == 1
    assert result.stderr == "emailrelay: error: error reading configuration file: supervise\n"


def test_config_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.conf"
    result = emailrelay("--help", str(missing))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"emailrelay: error: error reading configuration file: {missing}\n"
    conf = tmp_path / "emailrelay.conf"
    conf.write_text("# test\nno-daemon\npop\n")
    result = emailrelay(str(conf))
    assert result.returncode == 1 and result.stderr == "emailrelay: usage error: the --pop option requires --pop-auth\n"
    conf.write_text("port 26\nv\n")
    result = emailrelay("--port=25", str(conf))
    assert result.returncode == 1
    assert result.stderr == ('emailrelay: error: duplicate use of "--port"\n'
                             'emailrelay: error: invalid option: "--v"\n' + TRY)
    conf.write_bytes(b"log\0\n")
    result = emailrelay(str(conf))
    assert result.returncode == 1
    assert result.stderr == f"emailrelay: error: invalid character in configuration file: {conf}\n"


def test_warning_then_start(tmp_path: Path, spool: Path) -> None:
    """A config file drives a real server; the startup warning comes first on stderr."""
    conf = tmp_path / "emailrelay.conf"
    conf.write_text(
        "# emailrelay.conf\n"
        f'spool-dir "{spool}"\n'
        "port 0\n"
        "interface 127.0.0.1\n"
        "domain cli.example\n"
        "size = 1000\n"
        "no-syslog\n"
    )
    relay = Relay([command("emailrelay"), "--as-server", "--no-daemon", str(conf)], spool)
    try:
        relay.wait_for("^emailrelay: warning: logging will stop because --as-server closes the standard "
                       "error stream soon after startup$")
        port = int(relay.wait_for(r"smtp server on 127\.0\.0\.1:(\d+)").group(1))
        with RawSmtp(port) as smtp:
            assert smtp.reply().startswith("220 cli.example ")
            assert "250-SIZE 1000" in smtp.cmd("EHLO test").replace("250 SIZE", "250-SIZE")
            assert smtp.cmd("QUIT").startswith("221")
    finally:
        relay.stop(signal.SIGTERM)


def test_keyboard_interrupt_is_not_a_traceback(spool: Path) -> None:
    relay = Relay([command("emailrelay"), "--log", "--no-daemon", "--port=0", "--interface=127.0.0.1",
                   f"--spool-dir={spool}"], spool)
    relay.started()
    relay.stop(signal.SIGINT)
    assert not any("Traceback" in line for line in relay.lines)
