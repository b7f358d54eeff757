"""The option tables, the parser (OPTIONS.md sections 1, 4, 5), help, version and man pages."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from emailrelay import manpage, options
from emailrelay.options import EMAILRELAY_OPTIONS, PASSWD_OPTIONS, RESUBMIT_OPTIONS, SUBMIT_OPTIONS, Parsed

ROOT = Path(__file__).resolve().parents[2]

# OPTIONS.md section 2: every Unix option and its letter (-s is --spool-dir: SPEC.md section 0).
LETTERS = {
    "as-client": "q", "as-proxy": "y", "as-server": "d", "spool-dir": "s", "help": "h", "version": "V",
    "client-smtp-config": "c", "forward": "f", "forward-on-disconnect": "1", "forward-to": "o", "poll": "O",
    "client-filter": "Y", "client-interface": "6", "connection-timeout": "U", "idle-timeout": None,
    "response-timeout": "T", "forward-to-all": None, "forward-to-some": None, "immediate": "m",
    "port": "p", "remote-clients": "r", "address-verifier": None, "anonymous": "A", "delivery-dir": None,
    "dnsbl": None, "domain": "D", "filter": "z", "filter-timeout": "W", "interface": "I",
    "prompt-timeout": "w", "server-smtp-config": "Z", "size": "M",
    "pop": "B", "pop-by-name": "J", "pop-no-delete": "G", "pop-port": "E",
    "admin": "a", "admin-terminate": "Q",
    "client-auth": "C", "client-auth-config": None, "server-auth": "S", "server-auth-config": None,
    "pop-auth": "F",
    "client-tls": "j", "client-tls-certificate": None, "client-tls-connection": "b",
    "client-tls-required": None, "client-tls-server-name": None, "client-tls-verify": None,
    "client-tls-verify-name": None, "server-tls": "K", "server-tls-certificate": None,
    "server-tls-connection": None, "server-tls-required": None, "server-tls-verify": None, "tls-config": "9",
    "dont-serve": "x", "localedir": None, "no-daemon": "t", "no-smtp": "X", "pid-file": "i", "user": "u",
    "verbose": "v", "log": "l", "debug": "g", "log-address": None, "log-file": "N", "log-format": None,
    "log-time": "L", "no-syslog": "n", "syslog": "k", "close-stderr": "e",
}
MULTI = {
    "filter", "client-filter", "interface", "server-tls-certificate", "client-tls-certificate", "tls-config",
    "log-format", "server-smtp-config", "client-smtp-config", "dnsbl", "pid-file",
}
PLAIN = {"as-client", "as-proxy", "as-server", "spool-dir", "help", "version", "port", "remote-clients",
         "verbose", "log"}
IMPLEMENTED = {
    "as-server", "port", "interface", "spool-dir", "size", "no-daemon", "remote-clients", "log", "verbose",
    "debug", "log-file", "log-time", "log-format", "log-address", "no-syslog", "syslog", "close-stderr",
    "domain", "anonymous", "idle-timeout", "server-smtp-config", "help", "version", "test",
    # forwarding (issue 4)
    "as-client", "as-proxy", "client-smtp-config", "forward", "forward-on-disconnect", "forward-to", "poll",
    "client-interface", "connection-timeout", "response-timeout", "forward-to-all", "forward-to-some",
    "retry-limit", "retry-interval", "prompt-timeout", "dont-serve", "immediate", "client-auth",
    "client-auth-config", "client-tls", "client-tls-connection", "client-tls-required", "client-tls-certificate",
    "client-tls-verify", "client-tls-verify-name", "client-tls-server-name", "tls-config",
    "filter", "client-filter", "filter-timeout", "delivery-dir", "server-auth", "server-auth-config", "server-tls",
    "server-tls-connection", "server-tls-certificate", "server-tls-verify", "server-tls-required", "address-verifier",
    "pop", "pop-port", "pop-auth", "pop-by-name", "pop-no-delete", "dnsbl", "no-smtp", "pid-file", "localedir",
    "admin", "admin-terminate",
    # supervisor and process life (issue 7)
    "admin-socket", "user", "storage-workers",
    # performance (issue 9)
    "spool-sync", "forward-connections",
}
OURS = {"retry-limit", "retry-interval", "admin-socket", "storage-workers", "spool-sync", "forward-connections"}  # SPEC.md section 0 additions


def parse(*args: str) -> Parsed:
    return options.parse(EMAILRELAY_OPTIONS, list(args), "emailrelay")


def errors(*args: str) -> list[str]:
    return parse(*args).errors


# -- the tables --------------------------------------------------------------


def test_table_has_the_72_unix_options_plus_test_and_ours() -> None:
    names = {o.name for o in EMAILRELAY_OPTIONS}
    assert len(LETTERS) == 72
    assert names == set(LETTERS) | {"test"} | OURS
    assert "hidden" not in names and "show" not in names


@pytest.mark.parametrize("name", sorted(LETTERS))
def test_letters_and_multi(name: str) -> None:
    option = EMAILRELAY_OPTIONS[name]
    assert option.short == LETTERS[name]
    assert option.multi == (name in MULTI)


def test_optional_values_are_anonymous_and_syslog_only() -> None:
    assert {o.name for o in EMAILRELAY_OPTIONS if o.optional_value} == {"anonymous", "syslog"}


def test_implemented_now() -> None:
    assert {o.name for o in EMAILRELAY_OPTIONS if o.implemented} == IMPLEMENTED


def test_help_levels() -> None:
    assert {o.name for o in EMAILRELAY_OPTIONS.shown(verbose=False)} == PLAIN
    assert EMAILRELAY_OPTIONS["test"].level == options.HIDDEN
    assert EMAILRELAY_OPTIONS["test"] not in EMAILRELAY_OPTIONS.shown(verbose=True)


def test_groups_in_help_order() -> None:
    titles = [title for title, _ in EMAILRELAY_OPTIONS.grouped()]
    assert titles == ["Basic options", "SMTP client options", "SMTP server options", "POP server options",
                      "Admin server options", "Authentication options", "TLS options", "Process options",
                      "Logging options"]
    assert EMAILRELAY_OPTIONS["verbose"].group == EMAILRELAY_OPTIONS["log"].group == "Logging options"
    assert EMAILRELAY_OPTIONS["pop-auth"].group == "Authentication options"


def test_a_table_refuses_an_option_declared_twice() -> None:
    with pytest.raises(ValueError):
        options.OptionTable("x", "x", (options.Option("a"), options.Option("a")))
    with pytest.raises(ValueError):
        options.OptionTable("x", "x", (options.Option("a", "z"), options.Option("b", "z")))


def test_submit_table() -> None:
    letters = {o.name: o.short for o in SUBMIT_OPTIONS}
    assert letters == {
        "spool-dir": "s", "from": "f", "to": None, "input-file": "x", "no-stdin": "N", "body": "B",
        "content": "C", "content-to": "t", "content-from": "F", "content-date": "d",
        "content-message-id": "I", "bcc-split": "b", "copy": "c", "verbose": "v", "filename": "n",
        "auth": "a", "from-auth-in": "i", "from-auth-out": "o", "version": "V", "help": "h", "debug": None,
    }
    assert {o.name for o in SUBMIT_OPTIONS if o.multi} == {"to", "content"}
    assert {o.name for o in SUBMIT_OPTIONS if o.optional_value} == {"content-message-id"}


def test_resubmit_table() -> None:
    letters = {o.name: o.short for o in RESUBMIT_OPTIONS}
    assert letters == {
        "spool-dir": "s", "id": "i", "limit": "l", "dry-run": "n", "verbose": "v", "quiet": "q",
        "version": "V", "help": "h",
    }
    assert {o.name for o in RESUBMIT_OPTIONS if o.multi} == {"id"}
    assert RESUBMIT_OPTIONS["limit"].default == "5"
    assert all(o.implemented for o in RESUBMIT_OPTIONS)
    p = options.parse(RESUBMIT_OPTIONS, ["-nv", "--id=a,b", "-i", "c", "-l", "0", "/spool"], "r",
                      config_file_allowed=False)
    assert p.errors == [] and p.arguments == ["/spool"]
    assert p.items("id") == ["a", "b", "c"] and p.value("limit") == "0" and p.flag("dry-run")


def test_passwd_table() -> None:
    letters = {o.name: o.short for o in PASSWD_OPTIONS}
    assert letters == {
        "hash": "H", "password": "p", "base64": "b", "dotted": "d", "verbose": "v", "tls": "t",
        "tls-config": "T", "version": "V", "help": "h",
    }
    hidden = {o.name for o in PASSWD_OPTIONS if o.level == options.HIDDEN}
    assert hidden == {"tls", "tls-config"}  # SPEC 5.6: undocumented
    assert PASSWD_OPTIONS["hash"].default == "MD5"
    p = options.parse(PASSWD_OPTIONS, ["-bd", "-H", "md5", "-p", "x"], "p", config_file_allowed=False)
    assert p.errors == [] and p.value("hash") == "md5" and p.value("password") == "x" and p.flag("dotted")


# -- section 1: syntax -------------------------------------------------------


def test_long_value_forms() -> None:
    assert parse("--port=25").value("port") == "25"
    assert parse("--port", "25").value("port") == "25"
    assert parse("--domain=").value("domain") == ""
    assert parse("--port", "").value("port") == ""


def test_separate_value_starting_with_dash_is_refused() -> None:
    assert errors("--port", "-1") == ['"--port -1" is probably a mistake, use "--port=... -1" or "--port=-1"']
    assert parse("--port=-1").value("port") == "-1"


def test_optional_value_only_attached() -> None:
    p = parse("--anonymous")
    assert p.has("anonymous") and p.value("anonymous") == ""
    assert parse("--anonymous=vrfy").value("anonymous") == "vrfy"
    assert parse("-A").value("anonymous") == ""
    p = parse("--syslog", "local0")
    assert p.value("syslog") == "" and p.config_file == "local0"
    assert p.config_error == "error reading configuration file: local0"


@pytest.mark.parametrize("word", ["y", "yes", "t", "true", "1", "on", "YES", " On "])
def test_boolean_yes_words(word: str) -> None:
    p = parse(f"--log={word}")
    assert p.flag("log") and p.has("log") and p.errors == []


@pytest.mark.parametrize("word", ["n", "no", "f", "false", "0", "off", "No", " OFF"])
def test_boolean_no_words(word: str) -> None:
    p = parse(f"--log={word}")
    assert not p.flag("log") and not p.has("log") and p.errors == [] and p.given() == []


def test_boolean_other_value() -> None:
    assert errors("--log=maybe") == ['cannot give a value with "--log" (maybe)']
    assert errors("--log=") == ['cannot give a value with "--log" ()']


def test_boolean_takes_no_separate_value() -> None:
    p = parse("--log", "yes")
    assert p.flag("log") and p.config_file == "yes"


def test_on_and_off_conflict() -> None:
    assert errors("--log=yes", "--log=no") == ['conflicting values: "--log"']
    assert errors("--log=no", "-l") == ['conflicting values: "--log"']


def test_name_characters() -> None:
    assert errors("--Port=25") == ['invalid option: "--Port=25"']
    assert errors("--port_x=1") == ['invalid option: "--port_x"']


def test_short_options() -> None:
    p = parse("-ltv")
    assert p.flag("log") and p.flag("no-daemon") and p.count("verbose") == 1
    assert parse("-p", "25").value("port") == "25"
    p = parse("-lp", "25")
    assert p.flag("log") and p.value("port") == "25"
    assert errors("-pl", "25") == ["no value supplied for -p"]
    assert errors("-p25") == ['invalid option: "-2"', 'invalid option: "-5"', "no value supplied for -p"]
    assert errors("-p=25") == ['invalid option: "-2"', 'invalid option: "-5"', 'invalid option: "-="',
                               "no value supplied for -p"]
    assert errors("-p", "-1") == ['"-p -1" is probably a mistake, use "--port=... -1" or "--port=-1"']


def test_end_of_options() -> None:
    p = parse("--log", "--", "--weird.conf")
    assert p.flag("log") and p.config_file == "--weird.conf" and p.arguments == ["--weird.conf"]


def test_repeated_single_valued() -> None:
    p = parse("--port=25", "-p", "25")
    assert p.errors == [] and p.count("port") == 2
    assert errors("--port=25", "--port=26") == ['duplicate use of "--port"']
    assert errors("-p", "25", "-p", "26") == ['duplicate use of "--port"']


def test_repeated_boolean_counts() -> None:
    assert parse("-v", "-v").count("verbose") == 2
    assert parse("-vv", "--verbose").count("verbose") == 3
    assert parse().count("verbose") == 0


def test_multi_valued_accumulate() -> None:
    p = parse("--interface", "127.0.0.1,::1", "-I", "10.0.0.1", "--interface=10.0.0.1")
    assert p.errors == []
    assert p.items("interface") == ["127.0.0.1", "::1", "10.0.0.1", "10.0.0.1"]
    assert p.value("interface") == "127.0.0.1,::1,10.0.0.1,10.0.0.1"
    assert p.count("interface") == 3
    assert parse().items("interface") == [] and parse().value("interface") is None


def test_unknown_and_missing() -> None:
    assert errors("--foo") == ['invalid option: "--foo"']
    assert errors("--foo=bar") == ['invalid option: "--foo"']
    assert errors("-P") == ['invalid option: "-P"']
    assert errors("-H") == ['invalid option: "-H"']
    assert errors("--hidden") == ['invalid option: "--hidden"']
    assert errors("--show=popup") == ['invalid option: "--show"']
    assert errors("--port") == ['no value supplied for "--port"']
    assert errors("-Z") == ["no value supplied for -Z"]


def test_errors_are_sorted_and_deduplicated() -> None:
    assert errors("--zz", "--aa", "--zz", "-P") == [
        'invalid option: "--aa"', 'invalid option: "--zz"', 'invalid option: "-P"']


def test_localedir_is_taken_out_first() -> None:
    p = parse("--localedir", "/a", "--localedir=/b")
    assert p.errors == [] and p.localedir == "/a" and p.value("localedir") == "/b"
    p = parse("--localedir=/a", "--log")
    assert p.has("localedir") and p.value("localedir") == "/a" and p.given() == ["localedir", "log"]
    assert errors("--localedir") == ['no value supplied for "--localedir"']


def test_non_option_arguments() -> None:
    p = parse("--log", "a.conf")
    assert p.config_file == "a.conf" and not p.too_many_args
    p = parse("a.conf", "b.conf")
    assert p.too_many_args and p.config_error is None
    p = parse("a.conf", "--log")
    assert p.too_many_args and not p.flag("log")
    assert parse().config_file is None


def test_arguments_without_config_file() -> None:
    p = options.parse(SUBMIT_OPTIONS, ["-f", "me@x", "a@x", "--to", "b@x"], "emailrelay-submit",
                      config_file_allowed=False)
    assert p.value("from") == "me@x"
    assert p.arguments == ["a@x", "--to", "b@x"] and p.config_file is None and not p.too_many_args


def test_submit_parsing() -> None:
    p = options.parse(SUBMIT_OPTIONS, ["--to=a@x,b@x", "--to", "c@x", "-I", "-C", "Zm9v", "-C", "="],
                      "emailrelay-submit", config_file_allowed=False)
    assert p.items("to") == ["a@x", "b@x", "c@x"]
    assert p.has("content-message-id") and p.value("content-message-id") == ""
    assert p.value("content") == "Zm9v,="
    p = options.parse(SUBMIT_OPTIONS, ["--content-message-id=example.com", "-Bb"], "emailrelay-submit",
                      config_file_allowed=False)
    assert p.value("content-message-id") == "example.com" and p.flag("body") and p.flag("bcc-split")
    assert options.parse(SUBMIT_OPTIONS, ["--localedir=x"], "s", config_file_allowed=False).errors == [
        'invalid option: "--localedir=x"'.replace("=x", "")]


def test_accessors_refuse_names_the_table_lacks() -> None:
    with pytest.raises(KeyError):
        parse().value("prot")


def test_given_in_order() -> None:
    assert parse("--size=1", "--log", "--no-syslog=no", "--pop").given() == ["size", "log", "pop"]


def test_program_name() -> None:
    assert options.program_name("/usr/sbin/emailrelay") == "emailrelay"
    assert options.program_name("C:/x/emailrelay.exe") == "emailrelay"
    assert options.program_name("emailrelay-submit") == "emailrelay-submit"


# -- section 5: units ---------------------------------------------------------


def test_units() -> None:
    p = parse("--log", "--in-spool-dir", "/in", "--in-port", "25", "--out-spool-dir=/out", "--out-port=587")
    assert p.errors == [] and p.units == ["in", "out"]
    assert p.unit_value("in", "port") == "25" and p.unit_value("out", "port") == "587"
    assert p.unit_value("out", "spool-dir") == "/out"
    assert p.flag("log")  # no prefix: the first instance
    assert parse("--spool-dir=/a", "--in-spool-dir=/b").units == ["", "in"]
    assert parse().units == [""] and parse("--port=1").units == [""]


def test_unknown_unit_prefix() -> None:
    assert errors("--y-port", "1") == ['invalid option: "--y-port"']
    assert errors("--in-spool-dir=/a", "--y-port=1") == ['invalid option: "--y-port"']
    assert errors("--my-in-spool-dir=/a") == ['invalid option: "--my-in-spool-dir"']


def test_unit_duplicate_names_the_prefixed_option() -> None:
    assert errors("--in-spool-dir=/a", "--in-port=1", "--in-port=2") == ['duplicate use of "--in-port"']


def test_submit_has_no_units() -> None:
    p = options.parse(SUBMIT_OPTIONS, ["--in-spool-dir=/x"], "s", config_file_allowed=False)
    assert p.errors == ['invalid option: "--in-spool-dir"']


# -- section 4: the configuration file ---------------------------------------


def write(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "emailrelay.conf"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


def test_config_file_lines(tmp_path: Path) -> None:
    conf = write(tmp_path, (
        "# a comment\n"
        "\n"
        "   \t\n"
        "spool-dir /var/x # not a comment\n"
        "  port=587  \t\r\n"
        "=remote-clients\n"
        "log yes\n"
        "no-syslog=no\n"
        'filter "@app/my filter.sh"\n'
        "domain \t= example.com\n"
        "  #log-time\n"
        "log-format time,address\n"
        "in-spool-dir /in\n"
        "in-port 2525\n"
    ))
    p = parse("--log-format=port", conf)
    assert p.errors == [] and p.config_error is None and p.config_file == conf
    assert p.value("spool-dir") == "/var/x # not a comment"
    assert p.value("port") == "587"
    assert p.flag("remote-clients") and p.flag("log") and not p.has("no-syslog")
    assert p.value("filter") == "@app/my filter.sh"
    assert p.value("domain") == "example.com"
    assert not p.has("log-time")
    assert p.items("log-format") == ["port", "time", "address"]
    assert p.units == ["", "in"] and p.unit_value("in", "port") == "2525"


def test_config_file_read_lines() -> None:
    assert options.read_config_file("/nonexistent/x.conf") == (
        [], "error reading configuration file: /nonexistent/x.conf")


def test_config_file_quotes(tmp_path: Path) -> None:
    assert options.read_config_file(write(tmp_path, 'domain ""\nlog-file "a"b"\nsize "5\n')) == (
        ["--domain=", '--log-file=a"b', '--size="5'], None)


def test_config_file_empty_value_and_no_value(tmp_path: Path) -> None:
    p = parse(write(tmp_path, "port\n"))
    assert p.errors == ['no value supplied for "--port"']


def test_config_file_letters_do_not_work(tmp_path: Path) -> None:
    assert parse(write(tmp_path, "v\n")).errors == ['invalid option: "--v"']


def test_config_file_unreadable(tmp_path: Path) -> None:
    p = parse("--help", str(tmp_path / "missing.conf"))
    assert p.config_error == f"error reading configuration file: {tmp_path / 'missing.conf'}"
    assert parse(str(tmp_path)).config_error == f"error reading configuration file: {tmp_path}"


def test_config_file_nul(tmp_path: Path) -> None:
    conf = write(tmp_path, b"log\n\0\n")
    assert parse(conf).config_error == f"invalid character in configuration file: {conf}"


def test_config_file_line_limit(tmp_path: Path) -> None:
    assert parse(write(tmp_path, "# c\n\n" + "verbose\n" * 999)).config_error is None
    conf = write(tmp_path, "verbose\n" * 1000)
    assert parse(conf).config_error == f"too many lines in configuration file: {conf}"


def test_config_file_combines_with_command_line(tmp_path: Path) -> None:
    conf = write(tmp_path, "port 25\nlog\ninterface 10.0.0.1\npid-file /file.pid\n")
    p = parse("--port=25", "--log", "-I", "127.0.0.1", "--pid-file=/cmd.pid", conf)
    assert p.errors == [] and p.count("port") == 2
    assert p.items("interface") == ["127.0.0.1", "10.0.0.1"]
    assert p.items("pid-file") == ["/cmd.pid", "/file.pid"]
    assert parse("--port=26", conf).errors == ['duplicate use of "--port"']
    assert parse("--log=no", conf).errors == ['conflicting values: "--log"']


def test_config_file_after_end_of_options(tmp_path: Path) -> None:
    conf = write(tmp_path, "log\n")
    assert parse("--", conf).flag("log")


def test_app_prefix(tmp_path: Path) -> None:
    assert options.expand_app("@app/x.conf") == options.app_dir() + "/x.conf"
    assert options.expand_app("/etc/x.conf") == "/etc/x.conf"


# -- help and version ----------------------------------------------------------


def test_plain_help_shows_only_the_ten() -> None:
    text = options.help_text(EMAILRELAY_OPTIONS, "emailrelay", verbose=False, columns=79)
    shown = set(re.findall(r"^  (?:-., |    )--([a-z0-9-]+)", text, re.M))
    assert shown == PLAIN
    assert "abbreviated usage: emailrelay [-dvhlrV] [--as-client=<host:port>]" in text
    assert text.rstrip("\n").endswith("Copyright (C) 2026 the emailrelay authors")
    assert "emailrelay --help --verbose" in text
    assert all(len(line) <= 79 for line in text.splitlines())


def test_verbose_help_lists_every_visible_option() -> None:
    text = options.help_text(EMAILRELAY_OPTIONS, "emailrelay", verbose=True, columns=79)
    assert text.startswith("emailrelay 0.1.0 (E-MailRelay 2.6 compatible)\n\nusage: emailrelay [-dvhlrVQjbgxf1LtXnBJGKem]")
    shown = re.findall(r"^  (?:-., |    )--([a-z0-9-]+)", text, re.M)
    assert sorted(shown) == sorted(o.name for o in EMAILRELAY_OPTIONS if o.level > options.HIDDEN)
    assert "--test" not in text
    titles = [line for line in text.splitlines() if line.endswith(" options") and not line.startswith(" ")]
    assert titles == [t for t, _ in EMAILRELAY_OPTIONS.grouped()]
    assert "   emailrelay --as-server\n" in text
    assert "[--anonymous=<scope>]" in text and "-A, --anonymous[=<scope>]" in text
    assert all(len(line) <= 79 for line in text.splitlines())


def test_help_layout() -> None:
    text = options.help_text(EMAILRELAY_OPTIONS, "emailrelay", verbose=True, columns=100)
    port = next(line for line in text.splitlines() if line.startswith("  -p, --port=<port>"))
    assert port.index("Listen") == 42
    table = options.OptionTable("x", "x", (options.Option("a-very-long-option-name", None, "<arg>", "Text.", level=20),))
    assert "\n      --a-very-long-option-name=<arg> Text.\n" in options.help_text(table, "x", verbose=False)
    plain = options.help_text(EMAILRELAY_OPTIONS, "emailrelay", verbose=False, columns=60)
    assert all(len(line) <= 60 for line in plain.splitlines())
    assert "\n  [--as-client=<host:port>] [--as-proxy" in plain  # usage continuation lines are indented by two


def test_submit_help() -> None:
    text = options.help_text(SUBMIT_OPTIONS, "emailrelay-submit", verbose=True, columns=79)
    for option in SUBMIT_OPTIONS:
        assert f"--{option.name}" in text
    assert "[<to-address> ...]" in text


@pytest.mark.parametrize("table", [RESUBMIT_OPTIONS, PASSWD_OPTIONS])
def test_companion_help(table: options.OptionTable) -> None:
    plain = options.help_text(table, table.command, verbose=False, columns=79)
    verbose = options.help_text(table, table.command, verbose=True, columns=79)
    for option in table:
        shown = option.level != options.HIDDEN
        line = re.compile(rf"(?m)^  -{option.short}, {re.escape(option.long_syntax())}( |$)")
        assert bool(line.search(verbose)) == shown, option.name
        assert bool(line.search(plain)) == (shown and option.level <= options.PLAIN_LEVEL), option.name
    assert all(len(line) <= 79 for line in (plain + verbose).splitlines())


def test_version_text() -> None:
    plain = options.version_text(False)
    assert plain.startswith("emailrelay 0.1.0 (E-MailRelay 2.6 compatible)\n\nCopyright (C) 2026")
    assert "Multi-threading" not in plain
    verbose = options.version_text(True)
    assert re.search(r"(?i)threading:.*enabled", verbose)
    assert re.search(r"Unix domain sockets: enabled", verbose)
    assert re.search(r"(?m)^ *POP.*: enabled", verbose)
    assert re.search(r"(?m)^ *Admin.*: enabled", verbose)
    assert re.search(r"TLS.library:.*[A-Z]", verbose)
    assert f"\nTLS library: {options.tls_library()}\n\n" in verbose
    assert "This product includes software developed by the OpenSSL Project\n" in verbose
    assert not any(line.endswith(" ") for line in verbose.splitlines())


# -- man pages -----------------------------------------------------------------


def man_text(name: str) -> str:
    return (ROOT / "man" / name).read_text(encoding="utf-8").replace("\\-", "-")


@pytest.mark.parametrize("page, table", [
    ("emailrelay.1", EMAILRELAY_OPTIONS),
    ("emailrelay-submit.1", SUBMIT_OPTIONS),
    ("emailrelay-resubmit.1", RESUBMIT_OPTIONS),
    ("emailrelay-passwd.1", PASSWD_OPTIONS),
])
def test_every_option_is_in_its_man_page(page: str, table: options.OptionTable) -> None:
    text = man_text(page)
    for option in table:
        assert re.search(rf"--{option.name}\\fR", text), option.name
        if option.short:
            assert f"\\fB-{option.short}\\fR, \\fB--{option.name}\\fR" in text
        if option.arg:
            assert option.arg in text
        if option.since_issue is not None:
            assert re.search(rf"--{option.name}\\fR.*\n.*{options.NOT_YET[1:]}", text), option.name


def test_man_page_sections() -> None:
    text = man_text("emailrelay.1")
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "FILES", "ENVIRONMENT", "EXIT STATUS",
                    "COMPATIBILITY", "SEE ALSO"):
        assert f"\n.SH {section}\n" in text
    for needle in ("/var/spool/emailrelay", "2775", "user_state_dir", ".envelope.busy", ".envelope.bad",
                   "<host>.localnet", "LOG_INFO", "500 line too long", "--port=abc"):
        assert needle in text
    assert len(manpage.SPEC_DIFFERENCES) == 21  # one per row of SPEC.md section 0


def test_companion_man_pages() -> None:
    for page in ("emailrelay-resubmit.1", "emailrelay-passwd.1"):
        text = man_text(page)
        for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "COMPATIBILITY", "SEE ALSO"):
            assert f"\n.SH {section}\n" in text, (page, section)
    resubmit = man_text("emailrelay-resubmit.1")
    for needle in ("resubmitted <n>, refused <m>", "refused: retry limit reached (<n> failures)",
                   "unreadable envelope: <reason>", "matches nothing", "MailRelay-Reason:", "user_state_dir"):
        assert needle in resubmit
    passwd = man_text("emailrelay-passwd.1")
    for needle in ("gNYiNPCsyQUbUnJD1B4nQJGG2FXhHrpSenpSyoKzE+E=", "--dotted", "xtext", "invalid password",
                   "exception: invalid hash function", "base64 encoding error", "\n.SH DIAGNOSTICS\n"):
        assert needle in passwd
    assert {"emailrelay-resubmit.1", "emailrelay-passwd.1"} <= set(manpage.PAGES)


def test_committed_man_pages_are_fresh() -> None:
    for name, page in manpage.PAGES.items():
        assert (ROOT / "man" / name).read_text(encoding="utf-8") == page(), (
            f"man/{name} is stale: run python -m emailrelay.manpage")
    assert manpage.main(["--check"]) == 0


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
@pytest.mark.parametrize("name", sorted(manpage.PAGES))
def test_man_pages_render_without_warnings(name: str) -> None:
    result = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(ROOT / "man" / name)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == ""
