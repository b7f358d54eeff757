"""Frozen configuration values built from parsed ``emailrelay`` options.

One job: turn a :class:`emailrelay.options.Parsed` into a
:class:`ServerConfig`, checking option combinations and values first.

Order of checks in :func:`build` (the first failure raises
:class:`ConfigError` with a one-line message; cli prints it as
``emailrelay: usage error: <message>``):

1. options that are not implemented yet (``--pop is not supported yet``)
   and multiple instances; these come first so that a user of, say,
   ``--pop`` learns that it is missing rather than what else it needs;
2. the semantic checks of OPTIONS.md 9.1, in that order, with 2.6's texts;
3. option values: numbers must be non-negative integers
   (``invalid value for "--port": abc``), ``--interface`` items must be IP
   addresses for now;
4. paths that the daemon uses after changing to ``/`` are made absolute.

Startup warnings (OPTIONS.md 9.2) are not printed here: they are returned
in ``ServerConfig.warnings`` and cli prints each once, before the worker
starts; the worker does not print them again.  Warnings that 2.6 only
logs (with ``--log``), such as unknown ``--server-smtp-config`` items, are
in ``ServerConfig.log_warnings`` for the worker to log.

Not responsible for: syntax (options.py), the default spool directory
(spool.py) or the default domain (the worker computes it).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, fields, replace
from typing import TypeVar

from emailrelay.dnsbl import Dnsbl
from emailrelay.filters import Chain, FilterSpecError, parse_chain, program_warnings
from emailrelay.options import Parsed, expand_app
from emailrelay.smtp_client import ClientSmtpConfig, ClientTls
from emailrelay.verifiers import Verifier


class ConfigError(Exception):
    """A usage error found after parsing; str() is the one-line message."""


@dataclass(frozen=True)
class SmtpServerConfig:
    """``--server-smtp-config`` switches (OPTIONS.md 3.8)."""

    pipelining: bool = True
    chunking: bool = False
    smtputf8: bool = False
    smtputf8strict: bool = False
    strictparsing: bool = True
    alabels: bool = True
    #: ``nolinger`` sets SO_LINGER to zero; as in 2.6 it also draws the unknown-item warning.
    linger: bool = True


@dataclass(frozen=True)
class LogConfig:
    """Where and how to log (OPTIONS.md 2.9, 2.11 and 7.5)."""

    enabled: bool  # --log or any --as-*
    verbose: int  # how many times -v was given
    debug: bool
    file: str | None  # --log-file
    time: bool  # --log-time or --log-format=time
    address: bool  # --log-address or --log-format=address
    port: bool  # --log-format=port
    syslog: bool  # logging on, and --syslog or neither --no-syslog nor --as-client
    facility: str  # syslog facility name, "mail" by default
    close_stderr: bool  # --close-stderr, --as-server or --as-proxy
    program: str  # program name at the start of log lines
    unit: str = ""  # a named instance whose --log-format has "unit": lines carry "[unit] "


@dataclass(frozen=True)
class ForwardConfig:
    """Where and when to forward (OPTIONS.md 2.2 and 2.11, SPEC.md 7)."""

    address: str  # --forward-to, or the --as-client / --as-proxy value
    at_startup: bool  # --forward or --as-client
    on_disconnect: bool  # --forward-on-disconnect or --as-proxy
    poll: int  # seconds; 0 = no polling
    immediate: bool
    forward_to_some: bool
    retry_limit: int  # 0 = no automatic retry
    retry_interval: int  # seconds
    connection_timeout: int
    response_timeout: int
    prompt_timeout: int
    client_interface: str | None
    smtp: ClientSmtpConfig
    client_auth: str | None = None  # a secrets file, or plain:<b64>:<b64>
    client_auth_config: str = ""
    anonymous_client: bool = False  # --anonymous=client
    tls: ClientTls | None = None  # --client-tls or --client-tls-connection
    client_filter: Chain = Chain()  # --client-filter
    filter_timeout: int = 60
    connections: int = 1  # --forward-connections: parallel connections to the next hop


@dataclass(frozen=True)
class ServerTls:
    """Server TLS (OPTIONS.md 2.7, 3.5): STARTTLS or implicit TLS, certificates, client verification."""

    implicit: bool  # --server-tls-connection (else --server-tls: STARTTLS)
    certificate: tuple[str, ...]  # one PEM with key and chain, or key then cert
    verify: str | None = None  # CA file or directory, "<default>"; None or "<none>": no client certificate asked
    required: bool = False  # --server-tls-required
    config: tuple[str, ...] = ()  # --tls-config items


@dataclass(frozen=True)
class PopConfig:
    """The POP3 server (OPTIONS.md 2.4, SPEC.md 8)."""

    port: int  # --pop-port, 110
    interfaces: tuple[str, ...]  # pop= and unqualified --interface items; () = wildcards
    auth: str  # --pop-auth: a secrets file, or "pam:"
    by_name: bool  # --pop-by-name
    no_delete: bool  # --pop-no-delete


@dataclass(frozen=True)
class AdminConfig:
    """The admin interface (OPTIONS.md 2.5, SPEC.md 9)."""

    port: int  # --admin; 0 = ephemeral
    interfaces: tuple[str, ...]  # admin= and unqualified --interface items; () = wildcards
    terminate: bool  # --admin-terminate: the terminate command exists


@dataclass(frozen=True)
class ServerConfig:
    """Everything the storage worker needs."""

    spool_dir: str | None  # None: the default spool directory rule (spool.py)
    port: int  # 0 = ephemeral
    interfaces: tuple[str, ...]  # SMTP listen addresses; () = the wildcards 0.0.0.0 and ::
    size: int  # 0 = unlimited
    remote_clients: bool
    domain: str | None  # None: the canonical host name, computed by the worker
    anonymous: frozenset[str]  # subset of ANONYMOUS_SCOPES
    idle_timeout: float  # seconds
    smtp: SmtpServerConfig
    log: LogConfig
    daemon: bool
    #: False with --dont-serve or --as-client: no listeners, forward once and exit.
    serving: bool = True
    #: --filter: runs on each stored message before it is committed.
    filter: Chain = Chain()
    filter_timeout: int = 60
    #: --delivery-dir for deliver: ("" = the spool directory).
    delivery_dir: str = ""
    address_verifier: Verifier | None = None  # --address-verifier
    server_auth: str | None = None  # a secrets file, or "pam:"
    server_auth_config: str = ""
    server_tls: ServerTls | None = None
    connection_timeout: int = 40  # also the TLS handshake timeout
    pop: PopConfig | None = None  # --pop
    admin: AdminConfig | None = None  # --admin
    pid_file: str | None = None  # --pid-file (the first one), absolute
    no_smtp: bool = False  # --no-smtp: no SMTP listener
    admin_socket: str | None = None  # --admin-socket (supervise and ctl), absolute
    storage_workers: int = 1  # --storage-workers: SMTP workers under supervise
    spool_sync: str = "filesystem"  # --spool-sync: "filesystem" (group syncfs) or "file" (fsync each)
    as_proxy: bool = False  # --as-proxy: supervise names its SMTP worker "proxy"
    user: str = "daemon"  # --user: the unprivileged identity (OPTIONS.md 7.3)
    unit: str = ""  # the instance name (OPTIONS.md section 5); "" = the unnamed one
    dnsbl: Dnsbl | None = None  # --dnsbl
    #: None when there is no forward address.
    forward: ForwardConfig | None = None
    #: Startup warnings (OPTIONS.md 9.2) for cli to print once; the worker does not print them.
    warnings: tuple[str, ...] = ()
    #: Warnings 2.6 only logs (with --log); the worker logs them at startup.
    log_warnings: tuple[str, ...] = ()


_Switches = TypeVar("_Switches", SmtpServerConfig, ClientSmtpConfig)

ANONYMOUS_SCOPES = frozenset({"vrfy", "server", "content", "client"})
SYSLOG_FACILITIES = ("mail", "user", "daemon", *(f"local{n}" for n in range(8)))
DEFAULT_PORT = 25
DEFAULT_IDLE_TIMEOUT = 60


def build(parsed: Parsed) -> ServerConfig:
    """Check the parsed options and build the server configuration.

    Raises:
        ConfigError: for the first problem found, in the order given in the
            module docstring.
    """
    check_supported(parsed)
    check_semantics(parsed)
    log = build_log(parsed)
    smtp, smtp_warnings = smtp_config(parsed.items("server-smtp-config"), SmtpServerConfig)
    forward, client_warnings = forward_config(parsed)
    interface_warnings: list[str] = []
    config = ServerConfig(
        spool_dir=_path(parsed.value("spool-dir")),
        spool_sync=_choice(parsed, "spool-sync", ("filesystem", "file")),
        port=number(parsed, "port", DEFAULT_PORT, maximum=65535),
        interfaces=smtp_interfaces(parsed.items("interface"), "smtp", interface_warnings),
        size=number(parsed, "size", 0),
        remote_clients=parsed.flag("remote-clients"),
        domain=parsed.value("domain"),
        anonymous=anonymous_scopes(parsed.value("anonymous")),
        idle_timeout=float(number(parsed, "idle-timeout", DEFAULT_IDLE_TIMEOUT)),
        smtp=smtp,
        log=log,
        daemon=not (parsed.flag("no-daemon") or parsed.has("as-client")),
        serving=not (parsed.flag("dont-serve") or parsed.has("as-client")),
        filter=filter_chain(parsed, "filter"),
        delivery_dir=_path(parsed.value("delivery-dir")) or "",
        address_verifier=Verifier(parsed.value("address-verifier") or "") if parsed.has("address-verifier") else None,
        server_auth=_secrets_path(parsed.value("server-auth")),
        server_auth_config=parsed.value("server-auth-config") or "",
        server_tls=server_tls(parsed),
        connection_timeout=number(parsed, "connection-timeout", 40),
        pop=PopConfig(
            port=number(parsed, "pop-port", 110, maximum=65535),
            interfaces=smtp_interfaces(parsed.items("interface"), "pop", interface_warnings),
            auth=_secrets_path(parsed.value("pop-auth")) or "",
            by_name=parsed.flag("pop-by-name"),
            no_delete=parsed.flag("pop-no-delete"),
        ) if parsed.flag("pop") else None,
        admin=AdminConfig(
            port=number(parsed, "admin", 0, maximum=65535),
            interfaces=smtp_interfaces(parsed.items("interface"), "admin", interface_warnings),
            terminate=parsed.flag("admin-terminate"),
        ) if parsed.has("admin") else None,
        dnsbl=Dnsbl(parsed.items("dnsbl")) if parsed.has("dnsbl") else None,
        pid_file=os.path.abspath(expand_app(parsed.items("pid-file")[0])) if parsed.items("pid-file") else None,
        no_smtp=parsed.flag("no-smtp"),
        as_proxy=parsed.has("as-proxy"),
        storage_workers=max(1, number(parsed, "storage-workers", 1, maximum=64)),
        user=parsed.value("user") or "daemon",
        admin_socket=os.path.abspath(parsed.value("admin-socket") or "") if parsed.value("admin-socket") else None,
        filter_timeout=number(parsed, "filter-timeout", 60),
        forward=forward,
        warnings=tuple(startup_warnings(parsed, log)),
        log_warnings=tuple(smtp_warnings + client_warnings + interface_warnings),
    )
    return config


#: ServerConfig fields that are process-wide: read from the main instance only (OPTIONS.md section 5).
PROCESS_WIDE = ("log", "daemon", "pid_file", "user", "admin_socket", "warnings", "log_warnings")


def build_units(parsed: Parsed) -> list[tuple[str, ServerConfig]]:
    """Every instance's configuration, in order ("" = the unnamed one), OPTIONS.md section 5.

    Each instance is built from its own options only (no defaults are
    copied from the first); the process-wide settings (`PROCESS_WIDE`) are
    the main instance's.  Semantic checks run per instance, in order; the
    first failure is raised (ConfigError).  A named instance's log lines
    carry ``[name]`` when its own --log-format has ``unit``.
    """
    if parsed.units == [""]:
        return [("", build(parsed))]
    main = build(parsed)
    result = []
    for unit in parsed.units:
        if unit == parsed.main_unit:
            config = main
        else:
            config = build(parsed.for_unit(unit))
            config = replace(config, **{name: getattr(main, name) for name in PROCESS_WIDE})
        config = replace(config, unit=unit)
        if unit and "unit" in {i.strip() for i in parsed.items("log-format", unit=unit)}:
            config = replace(config, log=replace(config.log, unit=unit))
        result.append((unit, config))
    return result


def check_supported(parsed: Parsed) -> None:
    """Refuse options whose implementation lands in a later issue."""
    for name in parsed.given():
        if not parsed.table[name].implemented:
            raise ConfigError(f"--{name} is not supported yet")


def _log_on(parsed: Parsed) -> bool:
    return parsed.flag("log") or any(parsed.has(f"as-{m}") for m in ("client", "server", "proxy"))


def forward_address(parsed: Parsed) -> str | None:
    """The forward address: --as-client, else --as-proxy, else --forward-to (OPTIONS.md 2.11)."""
    for name in ("as-client", "as-proxy", "forward-to"):
        if parsed.has(name):
            return parsed.value(name)
    return None


def check_semantics(parsed: Parsed) -> None:
    """The checks of OPTIONS.md 9.1, in order, with their exact texts."""
    has = parsed.has
    if has("syslog") and parsed.value("syslog") not in ("", "yes", *SYSLOG_FACILITIES):
        raise ConfigError("invalid --syslog facility: use 'mail', 'user', 'daemon', or 'local0' to 'local7'")
    if has("poll") and not _positive(parsed.value("poll")):
        raise ConfigError("invalid --poll period: try --forward-on-disconnect")
    if any(has(n) for n in ("pop-port", "pop-auth", "pop-by-name", "pop-no-delete")) and not has("pop"):
        raise ConfigError("pop options require --pop")
    if has("pop") and not has("pop-auth"):
        raise ConfigError("the --pop option requires --pop-auth")
    if has("admin-terminate") and not has("admin"):
        raise ConfigError("the --admin-terminate option requires --admin")
    if has("forward-to") and (has("as-client") or has("as-proxy")):
        raise ConfigError("--forward-to cannot be used with --as-client or --as-proxy")
    if forward_address(parsed) is None:
        for name in ("forward", "forward-on-disconnect", "client-filter"):
            if has(name):
                raise ConfigError(f"--{name} requires --forward-to")
    if has("dont-serve") or has("as-client"):
        for name in ("filter", "port", "server-auth", "pop", "admin"):
            if has(name):
                raise ConfigError(f"the --{name} option cannot be used with --as-client or --dont-serve")
    if has("no-smtp"):
        for name in ("filter", "port", "server-auth"):
            if has(name):
                raise ConfigError(f"the --{name} option cannot be used with --no-smtp")
    for side in ("server", "client"):
        if has(f"{side}-auth-config") and not has(f"{side}-auth"):
            raise ConfigError(f"the --{side}-auth-config option requires --{side}-auth")
    if has("verbose") and not (has("help") or _log_on(parsed)):
        raise ConfigError(
            "the --verbose option must be used with --log, --help, --as-client, --as-server or --as-proxy"
        )
    if has("debug") and not _log_on(parsed):
        raise ConfigError("the --debug option requires --log, --as-client, --as-server or --as-proxy")
    for side in ("client", "server"):
        if has(f"{side}-tls") and has(f"{side}-tls-connection"):
            raise ConfigError(f"the --{side}-tls and --{side}-tls-connection options cannot be used together")
    for mode in ("server-tls", "server-tls-connection"):
        if has(mode) and not has("server-tls-certificate"):
            raise ConfigError(f"the --{mode} option requires --server-tls-certificate")
    server_tls = has("server-tls") or has("server-tls-connection")
    client_tls = has("client-tls") or has("client-tls-connection")
    if (has("server-tls-certificate") or has("server-tls-verify")) and not server_tls:
        raise ConfigError("the --server-tls options require either --server-tls or --server-tls-connection")
    if any(has(f"client-tls-{n}") for n in ("certificate", "verify", "required")) and not client_tls:
        raise ConfigError("the --client-tls- options require --client-tls or --client-tls-connection")
    for side in ("server", "client"):
        if len(parsed.items(f"{side}-tls-certificate")) > 2:
            raise ConfigError(f"the --{side}-tls-certificate option cannot be used more than twice")
    if has("client-tls-verify-name") and not has("client-tls-verify"):
        raise ConfigError("the --client-tls-verify-name options requires --client-tls-verify")
    if has("server-tls-required") and not server_tls:
        raise ConfigError("--server-tls-required requires --server-tls or --server-tls-connection")
    if any(item.startswith("client=") for item in parsed.items("interface")):
        raise ConfigError("using --interface with client= is no longer supported: use --client-interface instead")
    if has("dnsbl") and not has("remote-clients"):
        raise ConfigError("--dnsbl requires --remote-clients or -r")
    if has("dnsbl"):
        try:
            Dnsbl(parsed.items("dnsbl"))
        except FilterSpecError as e:
            raise ConfigError(f"invalid dnsbl configuration: {e}") from None
    if has("client-interface") and (forward_address(parsed) or "").startswith("/"):
        raise ConfigError("the --client-interface option cannot be used with a unix-domain forwarding address")
    if has("domain") and parsed.value("domain") == "":
        raise ConfigError("the --domain value must not be empty")
    for name, what in (("filter", "filter"), ("client-filter", "client filter")):
        if has(name):
            try:
                parse_chain(parsed.items(name))
            except FilterSpecError as e:
                raise ConfigError(f"invalid {what} specification: {e}") from None
    if has("address-verifier"):
        try:
            Verifier(parsed.value("address-verifier") or "")
        except FilterSpecError as e:
            raise ConfigError(f"invalid verifier specification: {e}") from None


def _positive(text: str | None) -> bool:
    return text is not None and text.strip().isdigit() and int(text) > 0


def number(parsed: Parsed, name: str, default: int, *, maximum: int | None = None) -> int:
    """A non-negative whole-number option value, or the default when not given.

    Raises:
        ConfigError: ``invalid value for "--<name>": <value>`` for anything else.
    """
    text = parsed.value(name)
    if text is None:
        return default
    stripped = text.strip()
    if not (stripped.isascii() and stripped.isdigit()) or (maximum is not None and int(stripped) > maximum):
        raise ConfigError(f"invalid value for \"--{name}\": {text}")
    return int(stripped)


def _choice(parsed: Parsed, name: str, choices: tuple[str, ...]) -> str:
    """One of a fixed set of words (the first is the default).

    Raises:
        ConfigError: ``invalid value for "--<name>": <value>: use a or b``.
    """
    text = parsed.value(name)
    if text is None:
        return choices[0]
    if text.strip().lower() not in choices:
        raise ConfigError(f"invalid value for \"--{name}\": {text}: use {' or '.join(choices)}")
    return text.strip().lower()


def _path(value: str | None) -> str | None:
    """A path option's value, with @app expanded and made absolute (a daemon changes to /)."""
    return None if value is None else os.path.abspath(expand_app(value))


def smtp_interfaces(
    items: list[str], listener_kind: str = "smtp", warnings: list[str] | None = None
) -> tuple[str, ...]:
    """The listen addresses of one listener kind among ``--interface`` items (unqualified and ``<kind>=``).

    Items are IP addresses or network interface names (``eth0``, ``lo``,
    with an optional ``-ipv4``/``-ipv6`` suffix), whose addresses are taken
    at start-up (OPTIONS.md 3.4; later address changes are not followed).
    A name with no addresses adds a warning; if nothing is left the
    wildcards are used.

    Raises:
        ConfigError: for fd#, Unix-socket and other unusable forms.
    """
    addresses: list[str] = []
    for item in items:
        kind, eq, listener = item.partition("=")
        if not eq or kind not in ("smtp", "pop", "admin"):
            kind, listener = "", item
        try:
            ipaddress.ip_address(listener.split("%", 1)[0])
            found = [listener]
        except ValueError:
            if listener.startswith("fd#"):
                raise ConfigError(f"listening on an inherited file descriptor ({item}) is not supported yet") from None
            if listener.startswith("/") and not listener.startswith("/dev/"):
                raise ConfigError(f"listening on a unix-domain socket ({item}) is not supported yet") from None
            if "/" in listener:
                raise ConfigError(f"invalid address or interface name: {listener}") from None
            found = interface_addresses(listener)
            if not found and warnings is not None and kind in ("", listener_kind):
                warnings.append(f'no addresses bound to named network interface "{listener}"')
        if kind in ("", listener_kind):
            addresses += [a for a in found if a not in addresses]
    return tuple(addresses)


def interface_addresses(name: str) -> list[str]:
    """The addresses of a network interface (``-ipv4``/``-ipv6`` keeps one family); [] if unknown."""
    import socket

    import psutil

    families = (socket.AF_INET, socket.AF_INET6)
    base = name
    if name.endswith("-ipv4"):
        base, families = name[:-5], (socket.AF_INET,)
    elif name.endswith("-ipv6"):
        base, families = name[:-5], (socket.AF_INET6,)
    return [a.address for a in psutil.net_if_addrs().get(base, []) if a.family in families]


def anonymous_scopes(value: str | None) -> frozenset[str]:
    """``--anonymous`` scopes: none when absent; all four without a value or with ``yes``."""
    if value is None:
        return frozenset()
    if value.strip().lower() in ("", "yes"):
        return ANONYMOUS_SCOPES
    return frozenset(item.strip() for item in value.split(",")) & ANONYMOUS_SCOPES


def forward_config(parsed: Parsed) -> tuple[ForwardConfig | None, list[str]]:
    """The forwarding settings, or None without a forward address."""
    address = forward_address(parsed)
    smtp, warnings = smtp_config(parsed.items("client-smtp-config"), ClientSmtpConfig)
    if address is None:
        return None, warnings
    poll = parsed.value("poll")
    return ForwardConfig(
        address=address,
        at_startup=parsed.flag("forward") or parsed.has("as-client"),
        on_disconnect=parsed.flag("forward-on-disconnect") or parsed.has("as-proxy"),
        poll=int(poll) if poll is not None else 0,
        immediate=parsed.flag("immediate"),
        forward_to_some=parsed.flag("forward-to-some"),
        retry_limit=number(parsed, "retry-limit", 0),
        retry_interval=number(parsed, "retry-interval", 60),
        connection_timeout=number(parsed, "connection-timeout", 40),
        response_timeout=number(parsed, "response-timeout", 60),
        prompt_timeout=number(parsed, "prompt-timeout", 20),
        client_interface=parsed.value("client-interface"),
        smtp=smtp,
        client_auth=_secrets_path(parsed.value("client-auth")),
        client_auth_config=parsed.value("client-auth-config") or "",
        anonymous_client="client" in anonymous_scopes(parsed.value("anonymous")),
        tls=client_tls(parsed),
        client_filter=filter_chain(parsed, "client-filter"),
        filter_timeout=number(parsed, "filter-timeout", 60),
        connections=max(1, number(parsed, "forward-connections", 1, maximum=32)),
    ), warnings


def filter_chain(parsed: Parsed, name: str) -> Chain:
    """The chain of a --filter / --client-filter option (already checked by check_semantics)."""
    try:
        return parse_chain(parsed.items(name)) if parsed.has(name) else Chain()
    except FilterSpecError as e:  # pragma: no cover - check_semantics has refused it
        raise ConfigError(str(e)) from None


def server_tls(parsed: Parsed) -> ServerTls | None:
    """Server TLS settings, or None when neither server TLS mode is on."""
    if not (parsed.flag("server-tls") or parsed.flag("server-tls-connection")):
        return None
    verify = parsed.value("server-tls-verify")
    return ServerTls(
        implicit=parsed.flag("server-tls-connection"),
        certificate=tuple(expand_app(item) for item in parsed.items("server-tls-certificate")),
        verify=verify if verify is None or verify.startswith("<") else expand_app(verify),
        required=parsed.flag("server-tls-required"),
        config=tuple(item.strip().lower() for item in parsed.items("tls-config")),
    )


def client_tls(parsed: Parsed) -> ClientTls | None:
    """Client TLS settings, or None when neither client TLS mode is on."""
    if not (parsed.flag("client-tls") or parsed.flag("client-tls-connection")):
        return None
    verify = parsed.value("client-tls-verify")
    return ClientTls(
        implicit=parsed.flag("client-tls-connection"),
        required=parsed.flag("client-tls-required"),
        certificate=tuple(expand_app(item) for item in parsed.items("client-tls-certificate")),
        verify=verify if verify is None or verify.startswith("<") else expand_app(verify),
        verify_name=parsed.value("client-tls-verify-name"),
        server_name=parsed.value("client-tls-server-name"),
        config=tuple(item.strip().lower() for item in parsed.items("tls-config")),
    )


def _secrets_path(value: str | None) -> str | None:
    """A secrets option value: ``plain:...`` and ``pam:`` are not paths (OPTIONS.md 3.12)."""
    if value is None or value.startswith(("plain:", "pam:")) or value == "/pam":
        return value
    return os.path.abspath(expand_app(value))


def smtp_server_config(items: list[str]) -> tuple[SmtpServerConfig, list[str]]:
    """Apply ``--server-smtp-config`` items to the defaults (see smtp_config)."""
    return smtp_config(items, SmtpServerConfig)


def smtp_config(items: list[str], kind: type[_Switches]) -> tuple[_Switches, list[str]]:
    """Apply ``--server-smtp-config`` / ``--client-smtp-config`` items to a switch set's defaults.

    Returns:
        The switches and the warnings for unknown items (``nolinger`` works
        in the server set and is still reported as unknown, as in 2.6).
    """
    names = {f.name for f in fields(kind)}
    values: dict[str, bool] = {}
    warnings: list[str] = []
    defaults = kind()
    for item in items:
        word = item.strip().lower()
        name, on = word, True
        for prefix, state in (("with-", True), ("without-", False), ("+", True), ("-", False), ("no", False)):
            if word.startswith(prefix) and word[len(prefix) :] in names:
                name, on = word[len(prefix) :], state
                break
        else:
            if word.startswith("=") and word[1:] in names:
                name, on = word[1:], getattr(defaults, word[1:])
        if name not in names or name == "linger":
            warnings.append(f"unknown smtp-config item [{item}]")
        if name in names:
            values[name] = on
    return kind(**values), warnings


def build_log(parsed: Parsed) -> LogConfig:
    """The logging settings, with the --as-* implications of OPTIONS.md 2.11."""
    enabled = _log_on(parsed)
    formats = {item.strip() for item in parsed.items("log-format")}
    syslog_value = parsed.value("syslog")
    return LogConfig(
        enabled=enabled,
        verbose=parsed.count("verbose"),
        debug=parsed.flag("debug"),
        file=_path(parsed.value("log-file")),
        time=parsed.flag("log-time") or "time" in formats,
        address=parsed.flag("log-address") or "address" in formats,
        port="port" in formats,
        syslog=enabled and (parsed.has("syslog") or not (parsed.flag("no-syslog") or parsed.has("as-client"))),
        facility="mail" if syslog_value in (None, "", "yes") else syslog_value,
        close_stderr=parsed.flag("close-stderr") or parsed.has("as-server") or parsed.has("as-proxy"),
        program=parsed.prog,
    )


def startup_warnings(parsed: Parsed, log: LogConfig) -> list[str]:
    """The OPTIONS.md 9.2 warnings that apply to the implemented options."""
    warnings: list[str] = []
    if len(parsed.items("pid-file")) > 1:
        warnings.append("more than one --pid-file: using the first")
    if log.enabled and log.close_stderr and log.file is None and not log.syslog:
        closer = next(n for n in ("close-stderr", "as-server", "as-proxy") if parsed.has(n))
        warnings.append(
            f"logging will stop because --{closer} closes the standard error stream soon after startup"
        )
    if "/pam" in (parsed.value("server-auth"), parsed.value("pop-auth")):
        warnings.append("pam authentication should be enabled with pam: rather than /pam")
    if parsed.has("address-verifier"):
        try:
            warnings += Verifier(parsed.value("address-verifier") or "").warnings()
        except FilterSpecError:
            pass
    for name in ("filter", "client-filter"):
        if parsed.has(name):
            try:
                warnings += program_warnings(parse_chain(parsed.items(name)))
            except FilterSpecError:
                pass
    domain = parsed.value("domain")
    if domain and not (domain.isascii() and domain.isprintable()):
        warnings.append(f"the domain should be printable ascii: try using \"{a_label(domain)}\"")
    return warnings


def a_label(domain: str) -> str:
    """The IDN A-label form of a domain, or the domain itself if it has none."""
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


__all__ = [
    "ANONYMOUS_SCOPES",
    "ConfigError",
    "LogConfig",
    "ServerConfig",
    "SmtpServerConfig",
    "build",
    "build_log",
    "check_semantics",
    "check_supported",
    "number",
    "smtp_server_config",
]
