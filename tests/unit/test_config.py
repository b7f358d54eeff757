"""ServerConfig building: semantic checks (OPTIONS.md 9.1), not-yet-supported options, values, warnings."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from emailrelay import config, options
from emailrelay.config import ANONYMOUS_SCOPES, ConfigError, SmtpServerConfig


def parse(*args: str) -> options.Parsed:
    parsed = options.parse(options.EMAILRELAY_OPTIONS, list(args), "emailrelay")
    assert parsed.errors == []
    return parsed


def build(*args: str) -> config.ServerConfig:
    return config.build(parse(*args))


def error(*args: str) -> str:
    with pytest.raises(ConfigError) as info:
        build(*args)
    return str(info.value)


def semantic_error(*args: str) -> str | None:
    try:
        config.check_semantics(parse(*args))
    except ConfigError as e:
        return str(e)
    return None


def test_defaults() -> None:
    c = build("--no-daemon")
    assert c.spool_dir is None and c.port == 25 and c.interfaces == () and c.size == 0
    assert not c.remote_clients and c.domain is None and c.anonymous == frozenset()
    assert c.idle_timeout == 60.0 and c.smtp == SmtpServerConfig() and not c.daemon
    assert c.warnings == () and c.log_warnings == ()
    log = c.log
    assert not log.enabled and log.verbose == 0 and not log.debug and log.file is None
    assert not (log.time or log.address or log.port or log.syslog or log.close_stderr)
    assert log.facility == "mail" and log.program == "emailrelay"


def test_values() -> None:
    c = build("-t", "-s", "/sp", "-p", "0", "-I", "127.0.0.1,smtp=::1", "--interface=pop=10.0.0.1",
              "-M", "1000", "-r", "-D", "mx.example.com", "--idle-timeout=5")
    assert c.spool_dir == "/sp" and c.port == 0 and c.interfaces == ("127.0.0.1", "::1")
    assert c.size == 1000 and c.remote_clients and c.domain == "mx.example.com" and c.idle_timeout == 5.0


def test_spool_dir_app_prefix() -> None:
    assert build("-t", "--spool-dir=@app/spool").spool_dir == options.app_dir() + "/spool"


# -- OPTIONS.md 9.1, in order ------------------------------------------------

SEMANTIC = [
    (["--syslog=local8"], "invalid --syslog facility: use 'mail', 'user', 'daemon', or 'local0' to 'local7'"),
    (["--poll=0"], "invalid --poll period: try --forward-on-disconnect"),
    (["--poll=abc"], "invalid --poll period: try --forward-on-disconnect"),
    (["--pop-port=1"], "pop options require --pop"),
    (["--pop-no-delete"], "pop options require --pop"),
    (["--pop"], "the --pop option requires --pop-auth"),
    (["--admin-terminate"], "the --admin-terminate option requires --admin"),
    (["--forward-to=a:25", "--as-proxy=b:25"], "--forward-to cannot be used with --as-client or --as-proxy"),
    (["--forward"], "--forward requires --forward-to"),
    (["--forward-on-disconnect"], "--forward-on-disconnect requires --forward-to"),
    (["--client-filter=x"], "--client-filter requires --forward-to"),
    (["--as-client=a:25", "--filter=x"], "the --filter option cannot be used with --as-client or --dont-serve"),
    (["--dont-serve", "--port=1"], "the --port option cannot be used with --as-client or --dont-serve"),
    (["--dont-serve", "--server-auth=x"], "the --server-auth option cannot be used with --as-client or --dont-serve"),
    (["--dont-serve", "--pop", "--pop-auth=x"], "the --pop option cannot be used with --as-client or --dont-serve"),
    (["--dont-serve", "--admin=1"], "the --admin option cannot be used with --as-client or --dont-serve"),
    (["--no-smtp", "--filter=x"], "the --filter option cannot be used with --no-smtp"),
    (["--no-smtp", "--port=1"], "the --port option cannot be used with --no-smtp"),
    (["--no-smtp", "--server-auth=x"], "the --server-auth option cannot be used with --no-smtp"),
    (["--server-auth-config=x"], "the --server-auth-config option requires --server-auth"),
    (["--client-auth-config=x"], "the --client-auth-config option requires --client-auth"),
    (["-v"], "the --verbose option must be used with --log, --help, --as-client, --as-server or --as-proxy"),
    (["--debug"], "the --debug option requires --log, --as-client, --as-server or --as-proxy"),
    (["--client-tls", "--client-tls-connection"],
     "the --client-tls and --client-tls-connection options cannot be used together"),
    (["--server-tls", "--server-tls-connection"],
     "the --server-tls and --server-tls-connection options cannot be used together"),
    (["--server-tls"], "the --server-tls option requires --server-tls-certificate"),
    (["--server-tls-connection"], "the --server-tls-connection option requires --server-tls-certificate"),
    (["--server-tls-verify=x"], "the --server-tls options require either --server-tls or --server-tls-connection"),
    (["--client-tls-required"], "the --client-tls- options require --client-tls or --client-tls-connection"),
    (["--server-tls", "--server-tls-certificate=a,b,c"],
     "the --server-tls-certificate option cannot be used more than twice"),
    (["--client-tls", "--client-tls-certificate=a", "--client-tls-certificate=b,c"],
     "the --client-tls-certificate option cannot be used more than twice"),
    (["--client-tls-verify-name=x"], "the --client-tls-verify-name options requires --client-tls-verify"),
    (["--server-tls-required"], "--server-tls-required requires --server-tls or --server-tls-connection"),
    (["--interface=client=127.0.0.1"],
     "using --interface with client= is no longer supported: use --client-interface instead"),
    (["--dnsbl=x"], "--dnsbl requires --remote-clients or -r"),
    (["--forward-to=/tmp/s", "--client-interface=127.0.0.1"],
     "the --client-interface option cannot be used with a unix-domain forwarding address"),
    (["--domain="], "the --domain value must not be empty"),
]


@pytest.mark.parametrize("args, message", SEMANTIC, ids=[m for _, m in SEMANTIC])
def test_semantic_checks(args: list[str], message: str) -> None:
    assert semantic_error(*args) == message


def test_semantic_checks_come_in_order() -> None:
    assert semantic_error("-v", "--syslog=x") == SEMANTIC[0][1]
    assert semantic_error("--domain=", "--debug") == "the --debug option requires --log, --as-client, --as-server or --as-proxy"
    assert semantic_error("--pop", "--pop-auth=x", "--admin-terminate") == "the --admin-terminate option requires --admin"


@pytest.mark.parametrize("args", [
    ["--syslog"], ["-k"], ["--syslog=yes"], ["--syslog=local7"], ["-v", "--help"], ["-v", "--as-server"],
    ["--debug", "--log"], ["--forward", "--as-client=a:1"], ["--forward-on-disconnect", "--as-proxy=a:1"],
    ["--dnsbl=x", "-r"], ["--server-tls", "--server-tls-certificate=a,b"], ["--poll=5", "--forward-to=a:1"],
])
def test_semantic_checks_pass(args: list[str]) -> None:
    assert semantic_error(*args) is None


def test_the_real_9_1_errors_through_build() -> None:
    assert error("-t", "--syslog=bad") == SEMANTIC[0][1]
    assert error("-t", "-v") == "the --verbose option must be used with --log, --help, --as-client, --as-server or --as-proxy"
    assert error("-t", "-g") == "the --debug option requires --log, --as-client, --as-server or --as-proxy"
    assert error("-t", "--domain=") == "the --domain value must not be empty"
    assert error("-t", "-I", "client=1.2.3.4") == SEMANTIC[33][1]


# -- not supported yet ---------------------------------------------------------


def test_not_supported_yet() -> None:
    assert error("--pop") == "the --pop option requires --pop-auth"
    assert error("--as-client=a:25", "--admin-terminate") == "the --admin-terminate option requires --admin"
    assert error("--as-client=a:25", "--admin=1") == "the --admin option cannot be used with --as-client or --dont-serve"


def test_multiple_instances_each_get_their_own_options_and_the_main_ones_process_settings() -> None:
    parsed = parse("--log", "-v", "--no-daemon", "--pid-file=/run/x.pid", "--spool-dir=/a", "--port=10025",
                   "--out-spool-dir=/b", "--out-forward-to=127.0.0.1:26", "--out-log-format=unit",
                   "--out-no-daemon=no")
    units = config.build_units(parsed)
    assert [u for u, _ in units] == ["", "out"]
    main, out = (c for _, c in units)
    assert (main.spool_dir, main.port, main.forward, main.unit) == ("/a", 10025, None, "")
    assert (out.spool_dir, out.port, out.forward.address, out.unit) == ("/b", 25, "127.0.0.1:26", "out")
    assert out.log == replace(main.log, unit="out") and out.daemon is False and out.pid_file == "/run/x.pid"
    assert main.log.unit == ""  # only an instance with "unit" in its own --log-format tags its lines


def test_instance_checks_run_per_instance_in_order() -> None:
    parsed = parse("-t", "--in-spool-dir=/a", "--in-pop", "--out-spool-dir=/b", "--out-admin-terminate")
    with pytest.raises(config.ConfigError, match="--pop option requires --pop-auth"):
        config.build_units(parsed)
    parsed = parse("-t", "--in-spool-dir=/a", "--out-spool-dir=/b", "--out-admin-terminate")
    with pytest.raises(config.ConfigError, match="--admin-terminate option requires --admin"):
        config.build_units(parsed)


@pytest.mark.parametrize("item, message", [
    ("fd#3", "listening on an inherited file descriptor (fd#3) is not supported yet"),
    ("/run/emailrelay.sock", "listening on a unix-domain socket (/run/emailrelay.sock) is not supported yet"),
    ("a/b", "invalid address or interface name: a/b"),
    ("pop=x/y", "invalid address or interface name: x/y"),
])
def test_interface_items(item: str, message: str) -> None:
    assert error("-t", f"--interface={item}") == message


def test_interface_names() -> None:
    warnings: list[str] = []
    assert config.smtp_interfaces(["lo-ipv4", "pop=lo", "nosuchif9"], "smtp", warnings) == ("127.0.0.1",)
    assert warnings == ['no addresses bound to named network interface "nosuchif9"']
    assert "127.0.0.1" in config.smtp_interfaces(["pop=lo"], "pop")


def test_interface_addresses() -> None:
    assert config.smtp_interfaces(["127.0.0.1", "smtp=::1", "admin=10.0.0.1", "pop=::", "127.0.0.1",
                                   "fe80::1%lo"]) == ("127.0.0.1", "::1", "fe80::1%lo")


# -- numbers -----------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--port=abc"], 'invalid value for "--port": abc'),
    (["--port=-1"], 'invalid value for "--port": -1'),
    (["--port=65536"], 'invalid value for "--port": 65536'),
    (["--port="], 'invalid value for "--port": '),
    (["-M", "1e6"], 'invalid value for "--size": 1e6'),
    (["--idle-timeout=1.5"], 'invalid value for "--idle-timeout": 1.5'),
    (["--idle-timeout=٣"], 'invalid value for "--idle-timeout": ٣'),
])
def test_numbers_must_be_whole_and_not_negative(args: list[str], message: str) -> None:
    assert error("-t", *args) == message


def test_numbers() -> None:
    assert build("-t", "--port=65535", "--size=0", "--idle-timeout=0").port == 65535


# -- daemon mode -------------------------------------------------------------


def test_daemon_mode_and_pid_file() -> None:
    assert build().daemon and build("--as-server").daemon and not build("--as-client=a:1").daemon
    c = build("--no-daemon", "--pid-file=run/x.pid", "--pid-file=/y.pid")
    assert c.pid_file == os.path.abspath("run/x.pid")


def test_as_server_no_daemon() -> None:
    c = build("--as-server", "--no-daemon")
    assert c.log.enabled and c.log.close_stderr and c.log.syslog and not c.daemon
    assert c.warnings == ()


# -- logging -----------------------------------------------------------------


def test_log_config() -> None:
    log = build("-t", "-l", "-v", "-v", "-g", "--log-file=/tmp/x-%d.log", "--log-format=port,address",
                "--syslog=local3").log
    assert log.enabled and log.verbose == 2 and log.debug and log.file == "/tmp/x-%d.log"
    assert log.port and log.address and not log.time and log.syslog and log.facility == "local3"
    log = build("-t", "-l", "-L", "--log-address", "-n").log
    assert log.time and log.address and not log.port and not log.syslog
    assert build("-t", "-l", "--log-format=time").log.time
    assert build("-t", "-l", "-k").log.facility == "mail"
    assert build("-t", "-l", "-n", "--syslog").log.syslog  # --syslog wins over --no-syslog
    assert not build("-t", "--syslog").log.syslog  # nothing is logged without --log
    assert build("-t", "-l", "--close-stderr", "--log-file=/x").log.close_stderr


def test_logging_will_stop_warning() -> None:
    assert build("--as-server", "-t", "-n").warnings == (
        "logging will stop because --as-server closes the standard error stream soon after startup",)
    assert build("-l", "-e", "-t", "-n").warnings == (
        "logging will stop because --close-stderr closes the standard error stream soon after startup",)
    assert build("--as-server", "-t", "-n", "--log-file=/x").warnings == ()
    assert build("-e", "-t", "-n").warnings == ()  # no logging, nothing stops


def test_domain_warning() -> None:
    c = build("-t", "--domain=bücher.example")
    assert c.domain == "bücher.example"
    assert c.warnings == ('the domain should be printable ascii: try using "xn--bcher-kva.example"',)


# -- anonymous and smtp config ------------------------------------------------


@pytest.mark.parametrize("args, scopes", [
    ([], frozenset()),
    (["--anonymous"], ANONYMOUS_SCOPES),
    (["-A"], ANONYMOUS_SCOPES),
    (["--anonymous=yes"], ANONYMOUS_SCOPES),
    (["--anonymous=vrfy,content"], frozenset({"vrfy", "content"})),
    (["--anonymous=server,bogus"], frozenset({"server"})),
    (["--anonymous=no"], frozenset()),
])
def test_anonymous(args: list[str], scopes: frozenset[str]) -> None:
    assert build("-t", *args).anonymous == scopes
    assert ANONYMOUS_SCOPES == {"vrfy", "server", "content", "client"}


def test_server_smtp_config() -> None:
    c = build("-t", "-Z", "chunking,-pipelining", "--server-smtp-config=with-smtputf8,nostrictparsing",
              "-Z", "+smtputf8strict,without-alabels")
    assert c.smtp == SmtpServerConfig(pipelining=False, chunking=True, smtputf8=True, smtputf8strict=True,
                                      strictparsing=False, alabels=False)
    assert c.log_warnings == ()
    smtp, warnings = config.smtp_server_config(["chunking", "=chunking", "bogus", "nolinger"])
    assert not smtp.chunking and not smtp.linger
    assert warnings == ["unknown smtp-config item [bogus]", "unknown smtp-config item [nolinger]"]
    assert build("-t", "-Z", "frobnicate").log_warnings == ("unknown smtp-config item [frobnicate]",)


def test_pid_file_and_pam_warnings() -> None:
    log = config.build_log(parse())
    assert config.startup_warnings(parse("--pid-file=/a", "--pid-file=/b"), log) == [
        "more than one --pid-file: using the first"]
    assert config.startup_warnings(parse("--server-auth=/pam"), log) == [
        "pam authentication should be enabled with pam: rather than /pam"]


def test_config_is_frozen() -> None:
    c = build("-t")
    with pytest.raises(AttributeError):
        c.port = 1  # type: ignore[misc]
