"""Every command-line option, declared once, and the parser that reads them.

One job: turn a command's argv (and, for ``emailrelay``, its configuration
file) into a :class:`Parsed` value, using one :class:`OptionTable` per
command.  The help text, the version text and the man pages
(:mod:`emailrelay.manpage`) are generated from the same tables, so an option
is described in exactly one place.

The syntax follows E-MailRelay 2.6 (OPTIONS.md sections 1, 4 and 5):
``--name=value``, ``--name value``, booleans with yes/no words, grouped short
flags, ``--``, counted repeats, multi-valued accumulation, the trailing
configuration file whose lines are appended after the command line, and
``--<unit>-<option>`` multi-instance prefixes.

Failure behaviour: the parser never raises for bad input.  Syntax errors are
collected from the whole command line and configuration file into
``Parsed.errors`` (sorted, de-duplicated, exact 2.6 texts); a configuration
file that cannot be used at all is reported in ``Parsed.config_error``.

Start-up: every console script imports this module first, and
emailrelay-submit runs once per message, so importing it must stay cheap:
no dataclasses (the module pulls in inspect, ast and dis, several
milliseconds, and each class costs about half a millisecond more), no
typing, and textwrap and re only where help and configuration files need
them.  The value classes are therefore plain classes that compare, hash and
print as the dataclasses they replaced did (:class:`_Record`; the frozen
ones refuse assignment).  Each command's table is built when it is first
read (module ``__getattr__`` at the end), so a command builds only its own.

Not responsible for: the meaning of values (numbers, addresses, option
combinations): that is :mod:`emailrelay.config`; printing and exit codes:
that is :mod:`emailrelay.cli`.
"""

from __future__ import annotations

import os
import sys

from emailrelay import COMPATIBLE_VERSION, __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see Start-up above)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: Help levels: options at or below PLAIN_LEVEL are in the plain ``--help``;
#: HIDDEN options are accepted but never shown.
HIDDEN = 0
PLAIN_LEVEL = 20

YES_WORDS = frozenset({"y", "yes", "t", "true", "1", "on"})
NO_WORDS = frozenset({"n", "no", "f", "false", "0", "off"})

#: The configuration file may hold at most this many option lines.
MAX_CONFIG_LINES = 999

#: Shown for options whose implementation lands in a later issue.
NOT_YET = "not yet implemented: refused at start-up"

#: The characters of a long option name (``[a-z0-9_-]+``).
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


class _Record:
    """Base of the value classes here: equality and repr over ``_fields``, as a dataclass has.

    Mutable records are unhashable (like a dataclass with ``eq=True``);
    :class:`_FrozenRecord` adds a hash and refuses assignment.
    """

    _fields: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__qualname__}({inner})"


class _FrozenRecord(_Record):
    """A record whose attributes are set once, in ``__init__`` through ``__dict__``."""

    def __hash__(self) -> int:
        return hash(self._values())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")


class Option(_FrozenRecord):
    """One option of one command.

    Attributes:
        name: long name without dashes.
        short: single-letter form, or None.
        arg: argument placeholder such as ``"<dir>"``; None for a boolean.
        help: one-sentence description (our own words).
        group: help group title (empty for tables without groups).
        level: help level; ``<= PLAIN_LEVEL`` shows in the plain help,
            ``HIDDEN`` never shows.
        default: default value as text for help and man page, or None.
        multi: may be repeated; every use is kept (comma-separated items).
        optional_value: the value is optional and can only be attached with
            ``=`` (``--anonymous[=<scope>]``).
        since_issue: None when implemented; else the issue that implements it.
        detail: extra text for the verbose help and the man page.
    """

    _fields = ("name", "short", "arg", "help", "group", "level", "default", "multi", "optional_value",
               "since_issue", "detail")
    name: str
    short: str | None
    arg: str | None
    help: str
    group: str
    level: int
    default: str | None
    multi: bool
    optional_value: bool
    since_issue: int | None
    detail: str

    def __init__(
        self,
        name: str,
        short: str | None = None,
        arg: str | None = None,
        help: str = "",
        group: str = "",
        level: int = 30,
        default: str | None = None,
        multi: bool = False,
        optional_value: bool = False,
        since_issue: int | None = None,
        detail: str = "",
    ) -> None:
        self.__dict__.update(
            name=name, short=short, arg=arg, help=help, group=group, level=level, default=default,
            multi=multi, optional_value=optional_value, since_issue=since_issue, detail=detail,
        )

    @property
    def boolean(self) -> bool:
        """True for an option that takes no value."""
        return self.arg is None

    @property
    def valued(self) -> bool:
        """True for an option that needs a value."""
        return self.arg is not None and not self.optional_value

    @property
    def implemented(self) -> bool:
        return self.since_issue is None

    def long_syntax(self) -> str:
        """``--name``, ``--name=<arg>`` or ``--name[=<arg>]``."""
        if self.arg is None:
            return f"--{self.name}"
        if self.optional_value:
            return f"--{self.name}[={self.arg}]"
        return f"--{self.name}={self.arg}"

    def sort_key(self) -> tuple[int, str]:
        """Help order: by level, then by name ignoring case."""
        return (self.level, self.name.lower())


class OptionTable(_FrozenRecord):
    """The options of one command, plus what its help and man page need.

    Attributes:
        command: program name, e.g. ``"emailrelay"``.
        summary: one line saying what the command does.
        options: the options, each declared once.
        operands: synopsis text for the non-option arguments.
        groups: help group titles in order (empty: no groups).
        units: ``--<unit>-<option>`` multi-instance prefixes are accepted.
        examples: (caption, command line) pairs for the verbose help.
    """

    _fields = ("command", "summary", "options", "operands", "groups", "units", "examples")
    command: str
    summary: str
    options: tuple[Option, ...]
    operands: str
    groups: tuple[str, ...]
    units: bool
    examples: tuple[tuple[str, str], ...]
    _by_name: dict[str, Option]
    _by_short: dict[str, Option]

    def __init__(
        self,
        command: str,
        summary: str,
        options: tuple[Option, ...],
        operands: str = "",
        groups: tuple[str, ...] = (),
        units: bool = False,
        examples: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.__dict__.update(
            command=command, summary=summary, options=options, operands=operands, groups=groups,
            units=units, examples=examples,
        )
        by_name: dict[str, Option] = {}
        by_short: dict[str, Option] = {}
        for option in self.options:
            if option.name in by_name:
                raise ValueError(f"{self.command}: option --{option.name} declared twice")
            by_name[option.name] = option
            if option.short is not None:
                if len(option.short) != 1 or option.short in by_short:
                    raise ValueError(f"{self.command}: bad or repeated letter -{option.short}")
                by_short[option.short] = option
            if self.groups and option.group not in self.groups:
                raise ValueError(f"{self.command}: --{option.name} has unknown group {option.group!r}")
        self.__dict__.update(_by_name=by_name, _by_short=by_short)

    def __iter__(self) -> Iterator[Option]:
        return iter(self.options)

    def __len__(self) -> int:
        return len(self.options)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Option | None:
        """The option with this long name, or None."""
        return self._by_name.get(name)

    def __getitem__(self, name: str) -> Option:
        option = self._by_name.get(name)
        if option is None:
            raise KeyError(f"{self.command} has no option --{name}")
        return option

    def by_short(self, letter: str) -> Option | None:
        """The option with this single-letter form, or None."""
        return self._by_short.get(letter)

    def shown(self, verbose: bool) -> list[Option]:
        """Options shown by ``--help`` (plain or verbose), in help order."""
        limit = 1_000_000 if verbose else PLAIN_LEVEL
        return sorted((o for o in self.options if HIDDEN < o.level <= limit), key=Option.sort_key)

    def grouped(self) -> list[tuple[str, list[Option]]]:
        """(group title, options in help order) for every group, for verbose help and man pages."""
        shown = self.shown(verbose=True)
        titles = self.groups or ("",)
        return [(title, [o for o in shown if o.group == title or not self.groups]) for title in titles]


# ---------------------------------------------------------------------------
# The emailrelay table (OPTIONS.md section 2)

BASIC = "Basic options"
CLIENT = "SMTP client options"
SERVER = "SMTP server options"
POP = "POP server options"
ADMIN = "Admin server options"
AUTH = "Authentication options"
TLS = "TLS options"
PROCESS = "Process options"
LOGGING = "Logging options"

_FORWARDING = 4
_POLICY = 5
_POP = 6
_PROCESS = 7

EMAILRELAY_OPTIONS: OptionTable  # built on first use, by __getattr__ at the end of this module


def _emailrelay_options() -> OptionTable:
    return OptionTable(
        command="emailrelay",
        summary="SMTP store-and-forward relay, proxy and POP3 server",
        operands="[<config-file>]",
        groups=(BASIC, CLIENT, SERVER, POP, ADMIN, AUTH, TLS, PROCESS, LOGGING),
        units=True,
        examples=(
            ("Keep a spool of incoming mail as a background storage server:", "emailrelay --as-server"),
            ("Send everything in the spool to a smarthost, then stop:", "emailrelay --as-client mail.myisp.net:smtp"),
            (
                "Accept mail on port 10025 and pass it on to a local server after each session:",
                "emailrelay --port 10025 --as-proxy localhost:25",
            ),
        ),
        options=(
            # Basic options
            Option("as-client", "q", "<host:port>", group=BASIC, level=10,
                   help="Deliver the messages already in the spool to the given server, then exit.",
                   detail="Short for --log --no-syslog --no-daemon --dont-serve --forward "
                          "--forward-to=<host:port>."),
            Option("as-proxy", "y", "<host:port>", group=BASIC, level=10,
                   help="Run in the background, storing incoming mail and passing it on to the given "
                        "server when each client disconnects.",
                   detail="Short for --log --close-stderr --forward-on-disconnect --forward-to=<host:port>."),
            Option("as-server", "d", group=BASIC, level=10,
                   help="Run in the background as a storage server that keeps incoming mail in the spool.",
                   detail="Short for --log --close-stderr."),
            Option("spool-dir", "s", "<dir>", group=BASIC, level=20,
                   help="Keep messages in this directory.",
                   detail="Without this option the spool is /var/spool/emailrelay when that directory "
                          "is writable, otherwise a per-user state directory (see FILES in the man page)."),
            Option("spool-sync", None, "<mode>", group=BASIC, default="filesystem",
                   help="How a stored message is made durable before its 250: filesystem or file.",
                   detail="filesystem (the default on Linux) writes the files of every message that arrives "
                          "at about the same time, then makes them all durable with one syncfs(2) of the "
                          "spool's file system before renaming them into place; file fsyncs each file and "
                          "the directory, which also suits a spool on a busy shared file system. Both "
                          "reply 250 only after the message is on disk."),
            Option("help", "h", group=BASIC, level=20,
                   help="Show help and exit; add --verbose for every option."),
            Option("version", "V", group=BASIC, level=20,
                   help="Show the version and exit; add --verbose for the build features."),
            # SMTP client options
            Option("client-smtp-config", "c", "<config>", group=CLIENT, multi=True,
                   help="Switch SMTP client protocol features on or off.",
                   detail="A comma list of pipelining, smtputf8strict, eightbitstrict and binarymimestrict, "
                          "each with an optional + or - in front."),
            Option("forward", "f", group=CLIENT,
                   help="Forward the spooled messages as soon as the program starts.",
                   detail="Requires --forward-to."),
            Option("forward-on-disconnect", "1", group=CLIENT,
                   help="Forward the spooled messages each time an SMTP client disconnects.",
                   detail="Requires --forward-to."),
            Option("forward-to", "o", "<host:port>", group=CLIENT,
                   help="Send forwarded messages to this SMTP server.",
                   detail="The address may be host:port, [ipv6]:port or the path of a unix-domain socket."),
            Option("poll", "O", "<period>", group=CLIENT,
                   help="Forward the spooled messages every so many seconds.",
                   detail="The period must be a whole number of seconds above zero."),
            Option("client-filter", "Y", "<program>", group=CLIENT, multi=True,
                   help="Run this filter on each message just before it is forwarded.",
                   detail="Requires --forward-to. Several filters form a chain."),
            Option("client-interface", "6", "<ip-address>", group=CLIENT,
                   help="Make outgoing connections from this local address."),
            Option("connection-timeout", "U", "<time>", group=CLIENT, default="40",
                   help="Give up connecting to the next server after this many seconds.",
                   detail="Also limits TLS handshakes."),
            Option("idle-timeout", None, "<time>", group=CLIENT, default="60",
                   help="Drop an incoming session that has been silent for this many seconds."),
            Option("response-timeout", "T", "<time>", group=CLIENT, default="60",
                   help="Give up waiting for a reply from the next server after this many seconds."),
            Option("forward-to-all", None, group=CLIENT,
                   help="Fail a message unless every recipient is accepted by the next server "
                        "(this is already the default)."),
            Option("forward-to-some", None, group=CLIENT,
                   help="Send to the recipients the next server accepts even when it refuses others."),
            Option("immediate", "m", group=CLIENT, level=31,
                   help="Forward each message while the submitting client waits for its reply.",
                   detail="Clients may time out: --forward-on-disconnect is usually better."),
            Option("forward-connections", None, "<count>", group=CLIENT, default="1",
                   help="Forward over this many connections to the next server at once.",
                   detail="Each message still goes over one connection; more connections raise the rate "
                          "when the next server is slow to answer. At most 32."),
            Option("retry-limit", None, "<count>", group=CLIENT, default="0",
                   help="Give a failed message this many more tries when its failure was temporary.",
                   detail="0 turns retries off. Messages refused with a 5xx reply are never retried."),
            Option("retry-interval", None, "<time>", group=CLIENT, default="60",
                   help="Wait this many seconds before the first retry, doubling for each later one.",
                   detail="The wait is never longer than 3600 seconds."),
            # SMTP server options
            Option("port", "p", "<port>", group=SERVER, level=20, default="25",
                   help="Listen for SMTP connections on this port.",
                   detail="0 picks a free port."),
            Option("remote-clients", "r", group=SERVER, level=20,
                   help="Accept connections from any address, not just local and private ones."),
            Option("address-verifier", None, "<program>", group=SERVER,
                   help="Check each recipient address with this program."),
            Option("anonymous", "A", "<scope>", group=SERVER, optional_value=True,
                   help="Say less about this server: a comma list of vrfy, server, content and client.",
                   detail="Without a list (or with yes) all four apply."),
            Option("delivery-dir", None, "<dir>", group=SERVER,
                   help="Base directory for local mailboxes written by the deliver: filter.",
                   detail="Defaults to the spool directory."),
            Option("dnsbl", None, "<config>", group=SERVER, multi=True,
                   help="Refuse clients listed by these DNS block lists.",
                   detail="Requires --remote-clients."),
            Option("domain", "D", "<fqdn>", group=SERVER,
                   help="Name this host uses for itself in greetings and Received lines.",
                   detail="Defaults to the canonical name of the host."),
            Option("filter", "z", "<program>", group=SERVER, multi=True,
                   help="Run this filter on each message once it has been stored.",
                   detail="Several filters form a chain."),
            Option("filter-timeout", "W", "<time>", group=SERVER, default="60",
                   help="Stop a filter or verifier that runs longer than this many seconds."),
            Option("interface", "I", "<ip-address-list>", group=SERVER, multi=True,
                   help="Listen only on these addresses.",
                   detail="Items may be qualified with smtp=, pop= or admin=. Without this option every "
                          "address is used (0.0.0.0 and ::)."),
            Option("prompt-timeout", "w", "<time>", group=SERVER, default="20",
                   help="Go ahead without the next server's greeting after this many seconds."),
            Option("server-smtp-config", "Z", "<config>", group=SERVER, multi=True,
                   help="Switch SMTP server protocol features on or off.",
                   detail="A comma list of pipelining, chunking, smtputf8, smtputf8strict, strictparsing "
                          "and alabels; write +item or -item (also with-item or noitem) to turn one on or off."),
            Option("size", "M", "<bytes>", group=SERVER, default="0",
                   help="Refuse messages bigger than this many bytes.",
                   detail="0 means no limit."),
            # POP server options
            Option("pop", "B", group=POP,
                   help="Run a POP3 server that serves the spooled messages.",
                   detail="Requires --pop-auth."),
            Option("pop-by-name", "J", group=POP,
                   help="Give each POP user the spool sub-directory named after them."),
            Option("pop-no-delete", "G", group=POP,
                   help="Ignore POP delete requests."),
            Option("pop-port", "E", "<port>", group=POP, default="110",
                   help="Listen for POP connections on this port."),
            # Admin server options
            Option("admin", "a", "<port>", group=ADMIN,
                   help="Run the administration interface on this port."),
            Option("admin-terminate", "Q", group=ADMIN,
                   help="Allow the terminate command on the administration interface.",
                   detail="Requires --admin."),
            Option("admin-socket", None, "<path>", group=ADMIN,
                   help="Use this owner-only Unix socket for emailrelay supervise and emailrelay ctl.",
                   detail="The default is /run/emailrelay/admin.sock for root, else admin.sock in the "
                          "user's runtime directory. Plain emailrelay ignores it."),
            Option("storage-workers", None, "<count>", group=ADMIN, default="1",
                   help="Under emailrelay supervise, run this many SMTP storage workers on the one listening socket.",
                   detail="They are named storage, storage-2 and so on; the kernel hands each new connection to "
                          "one of them. Plain emailrelay ignores it."),
            # Authentication options
            Option("client-auth", "C", "<file>", group=AUTH,
                   help="Authenticate to the next server with the client secrets in this file."),
            Option("client-auth-config", None, "<config>", group=AUTH,
                   help="Choose which authentication mechanisms the client prefers or avoids.",
                   detail="Requires --client-auth."),
            Option("server-auth", "S", "<file>", group=AUTH,
                   help="Make clients authenticate with the server secrets in this file, or with pam:."),
            Option("server-auth-config", None, "<config>", group=AUTH,
                   help="Choose which authentication mechanisms the servers offer.",
                   detail="Requires --server-auth."),
            Option("pop-auth", "F", "<file>", group=AUTH,
                   help="Check POP logins against the secrets in this file, or with pam:."),
            # TLS options
            Option("client-tls", "j", group=TLS,
                   help="Use STARTTLS when the next server offers it."),
            Option("client-tls-certificate", None, "<pem-file>", group=TLS, multi=True,
                   help="Present this key and certificate to the next server.",
                   detail="Give it twice (key file, then certificate file) to use two files."),
            Option("client-tls-connection", "b", group=TLS,
                   help="Speak TLS to the next server from the first byte (SMTPS)."),
            Option("client-tls-required", None, group=TLS,
                   help="Do not forward unless the TLS handshake succeeds."),
            Option("client-tls-server-name", None, "<hostname>", group=TLS,
                   help="Ask for this server name (SNI) in the TLS handshake."),
            Option("client-tls-verify", None, "<ca-list>", group=TLS,
                   help="Check the next server's certificate against these certificate authorities.",
                   detail="A file, a directory, <default> or <none>."),
            Option("client-tls-verify-name", None, "<cname>", group=TLS,
                   help="Require this name in the next server's certificate.",
                   detail="Requires --client-tls-verify."),
            Option("server-tls", "K", group=TLS,
                   help="Offer STARTTLS to SMTP clients and STLS to POP clients.",
                   detail="Requires --server-tls-certificate."),
            Option("server-tls-certificate", None, "<pem-file>", group=TLS, multi=True,
                   help="Present this key and certificate to clients.",
                   detail="Give it twice (key file, then certificate file) to use two files."),
            Option("server-tls-connection", None, group=TLS,
                   help="Speak TLS to SMTP clients from the first byte (SMTPS)."),
            Option("server-tls-required", None, group=TLS,
                   help="Refuse mail and authentication until the client has used STARTTLS."),
            Option("server-tls-verify", None, "<ca-list>", group=TLS,
                   help="Require client certificates signed by these certificate authorities."),
            Option("tls-config", "9", "<options>", group=TLS, multi=True,
                   help="Tune the TLS library, e.g. tlsv1.3 for a minimum protocol version."),
            # Process options
            Option("dont-serve", "x", group=PROCESS,
                   help="Listen for nothing; just forward and exit."),
            Option("localedir", None, "<dir>", group=PROCESS,
                   help="Translate messages using the catalogues under this directory."),
            Option("no-daemon", "t", group=PROCESS,
                   help="Stay in the foreground instead of running in the background."),
            Option("no-smtp", "X", group=PROCESS,
                   help="Do not listen for SMTP connections."),
            Option("pid-file", "i", "<path>", group=PROCESS, multi=True,
                   help="Write the process id into this file.",
                   detail="When given more than once the first one is used."),
            Option("user", "u", "<username>", group=PROCESS, default="daemon",
                   help="When started as root, run as this user; root means stay root.",
                   detail="After binding: supplementary groups are dropped and the effective group becomes "
                          "the user's, so spool files are created root:<group>; filters and address verifiers "
                          "run with the user's real and effective ids. The user must exist."),
            Option("test", None, "<x>", group=PROCESS, level=HIDDEN,
                   help="Internal test switches; accepted and ignored."),
            # Logging options
            Option("verbose", "v", group=LOGGING, level=11,
                   help="Log more (twice for even more), or show every option with --help.",
                   detail="Needs --log, --help or one of the --as options."),
            Option("log", "l", group=LOGGING, level=20,
                   help="Log to the standard error stream and to syslog."),
            Option("debug", "g", group=LOGGING,
                   help="Log debugging detail.",
                   detail="Needs --log or one of the --as options."),
            Option("log-address", None, group=LOGGING,
                   help="Put the client's IP address in SMTP server log lines.",
                   detail="The same as --log-format=address."),
            Option("log-file", "N", "<file>", group=LOGGING,
                   help="Write the log to this file instead of the standard error stream.",
                   detail="%d in the name becomes the date (YYYYMMDD) and %h the hour."),
            Option("log-format", None, "<format>", group=LOGGING, multi=True,
                   help="Add fields to log lines: a comma list of time, unit, address, port and msgid."),
            Option("log-time", "L", group=LOGGING,
                   help="Put a timestamp on log lines.",
                   detail="The same as --log-format=time."),
            Option("no-syslog", "n", group=LOGGING,
                   help="Do not log to syslog."),
            Option("syslog", "k", "<facility>", group=LOGGING, optional_value=True, default="mail",
                   help="Log to syslog even with --no-syslog or --as-client.",
                   detail="The facility is mail, user, daemon or local0 to local7."),
            Option("close-stderr", "e", group=LOGGING, level=31,
                   help="Stop using the standard error stream soon after start-up."),
        ),
    )


# ---------------------------------------------------------------------------
# The emailrelay-submit table (SPEC.md section 10.1)

SUBMIT_OPTIONS: OptionTable  # built on first use, by __getattr__ at the end of this module


def _submit_options() -> OptionTable:
    return OptionTable(
        command="emailrelay-submit",
        summary="put a message into an emailrelay spool directory",
        operands="[<to-address> ...]",
        examples=(
            ("Store a message for two recipients:", "emailrelay-submit -f me@example.com a@example.com b@example.com"),
        ),
        options=(
            Option("spool-dir", "s", "<dir>", level=20,
                   help="Store the message in this spool directory.",
                   detail="Defaults to the same directory as emailrelay uses."),
            Option("from", "f", "<address>", level=20,
                   help="Envelope sender.",
                   detail="Without it the sender comes from the From: or Sender: header, else anonymous."),
            Option("to", None, "<address-list>", level=20, multi=True,
                   help="Envelope recipients, as well as any given after the options.",
                   detail="Without recipients they come from the To:, Cc: and Bcc: headers."),
            Option("input-file", "x", "<file>", level=20,
                   help="Read the message from this file instead of the standard input."),
            Option("no-stdin", "N",
                   help="Do not read the standard input."),
            Option("body", "B",
                   help="The input is all body: it has no header lines."),
            Option("content", "C", "<base64>", multi=True,
                   help="Add one base64-encoded line to the content; a value of one character adds a blank line."),
            Option("content-to", "t",
                   help="Replace the To:, Cc: and Bcc: headers with one To: header listing the recipients."),
            Option("content-from", "F",
                   help="Replace the From: and Sender: headers with one From: header for the sender."),
            Option("content-date", "d",
                   help="Add a Date: header when there is none."),
            Option("content-message-id", "I", "<domain>", optional_value=True, default="local",
                   help="Add a Message-ID: header in this domain when there is none."),
            Option("bcc-split", "b",
                   help="Store a separate copy for each Bcc recipient, without the Bcc: header in the others."),
            Option("copy", "c",
                   help="Copy the stored envelope into every sub-directory of the spool directory."),
            Option("verbose", "v", level=20,
                   help="Print the full path of each stored content file, or show more help with --help."),
            Option("filename", "n", level=20,
                   help="Print the name of each stored content file."),
            Option("auth", "a",
                   help="Accepted for compatibility and ignored."),
            Option("from-auth-in", "i", "<value>",
                   help="Record this authentication name for the submitting client (empty for none)."),
            Option("from-auth-out", "o", "<value>",
                   help="Use this authentication name when the message is forwarded (empty for none)."),
            Option("version", "V", level=20,
                   help="Show the version and exit."),
            Option("help", "h", level=20,
                   help="Show help and exit; add --verbose for every option."),
            Option("debug", None,
                   help="Log debugging detail to the standard error stream."),
        ),
    )


# ---------------------------------------------------------------------------
# The emailrelay-resubmit table (SPEC.md sections 0 and 10.4)

#: A failed message with this many Reason lines stays failed (the 2.6 scripts' limit).
RESUBMIT_LIMIT = 5

RESUBMIT_OPTIONS: OptionTable  # built on first use, by __getattr__ at the end of this module


def _resubmit_options() -> OptionTable:
    return OptionTable(
        command="emailrelay-resubmit",
        summary="return failed messages in an emailrelay spool directory to the queue",
        operands="[<spool-dir>]",
        examples=(
            ("Retry every failed message that has failed fewer than five times:",
             "emailrelay-resubmit /var/spool/emailrelay"),
            ("Show what would be retried, one line per message:",
             "emailrelay-resubmit --dry-run --verbose"),
        ),
        options=(
            Option("spool-dir", "s", "<dir>", level=20,
                   help="Resubmit the failed messages in this spool directory.",
                   detail="The same as giving the directory after the options. Defaults to the same "
                          "directory as emailrelay uses."),
            Option("id", "i", "<message-id>", level=20, multi=True,
                   help="Resubmit only this message (emailrelay.<pid>.<secs>.<seq>).",
                   detail="Without it every failed message in the spool directory is considered."),
            Option("limit", "l", "<count>", level=20, default=str(RESUBMIT_LIMIT),
                   help="Leave a message failed once it has failed this many times.",
                   detail="A failure is one X-MailRelay-Reason line in the envelope. 0 means no limit."),
            Option("dry-run", "n", level=20,
                   help="Change nothing; say what would be done."),
            Option("verbose", "v", level=20,
                   help="Print one line per message, or show more help with --help."),
            Option("quiet", "q", level=20,
                   help="Do not print the summary line."),
            Option("version", "V", level=20,
                   help="Show the version and exit."),
            Option("help", "h", level=20,
                   help="Show help and exit; add --verbose for every option."),
        ),
    )


# ---------------------------------------------------------------------------
# The emailrelay-passwd table (SPEC.md section 5.6)

PASSWD_OPTIONS: OptionTable  # built on first use, by __getattr__ at the end of this module


def _passwd_options() -> OptionTable:
    return OptionTable(
        command="emailrelay-passwd",
        summary="encode a password for an emailrelay secrets file",
        examples=(
            ("Read a password from the standard input and print its masked MD5 key:",
             "emailrelay-passwd"),
            ("Print the xtext form for a plain secrets line:",
             "emailrelay-passwd --hash=NONE --password=secret"),
        ),
        options=(
            Option("hash", "H", "<function>", level=10, default="MD5",
                   help="Hash function: MD5, SHA1 or SHA256, or NONE for plain xtext encoding.",
                   detail="Upper or lower case."),
            Option("password", "p", "<pwd>", level=20,
                   help="Take the password from the command line instead of the standard input.",
                   detail="Other users may see it in the process table, and it may stay in the shell's "
                          "history."),
            Option("base64", "b", level=20,
                   help="The password is base64-encoded: decode it first."),
            Option("dotted", "d", level=20,
                   help="Print the MD5 key as eight dotted decimal numbers (the old format)."),
            Option("verbose", "v", level=30,
                   help="Show every option with --help."),
            Option("tls", "t", level=HIDDEN,
                   help="Accepted for compatibility and ignored: SHA1 and SHA256 are always available."),
            Option("tls-config", "T", "<config>", level=HIDDEN,
                   help="Accepted for compatibility and ignored."),
            Option("version", "V", level=20,
                   help="Show the version and exit."),
            Option("help", "h", level=10,
                   help="Show help and exit; add --verbose for every option."),
        ),
    )


# ---------------------------------------------------------------------------
# Parsing


class _Use(_FrozenRecord):
    """One use of an option, as written on the command line or in the file."""

    _fields = ("option", "unit", "written", "value")
    option: Option
    unit: str | None  # prefix as written; None = no prefix
    written: str  # "--in-port", "--port" or "-p", for messages
    value: str | None  # None: no value given

    def __init__(self, option: Option, unit: str | None, written: str, value: str | None) -> None:
        self.__dict__.update(option=option, unit=unit, written=written, value=value)


class _Entry(_Record):
    """What the uses of one option (in one unit) add up to."""

    _fields = ("option", "uses", "on", "value", "values")

    def __init__(
        self,
        option: Option,
        uses: int = 0,
        on: bool | None = None,
        value: str | None = None,
        values: list[str] | None = None,
    ) -> None:
        self.option = option
        self.uses = uses
        self.on = on  # booleans
        self.value = value  # single-valued and optional-valued
        self.values: list[str] = [] if values is None else values  # multi-valued


class Parsed(_Record):
    """The result of :func:`parse`.

    Attributes:
        prog: program name for messages.
        table: the table used.
        errors: parse errors, sorted and de-duplicated (exact 2.6 texts).
        arguments: the non-option arguments, in order.
        config_file: the configuration file path (first non-option argument),
            when the table takes one.
        too_many_args: more than one non-option argument where only a
            configuration file is allowed.
        config_error: why the configuration file could not be used, or None.
        units: instance names in order ("" = the unnamed instance).
        localedir: the ``--localedir`` value taken out of argv, or None.
    """

    _fields = ("prog", "table", "errors", "arguments", "config_file", "too_many_args", "config_error",
               "units", "localedir")

    def __init__(
        self,
        prog: str,
        table: OptionTable,
        errors: list[str] | None = None,
        arguments: list[str] | None = None,
        config_file: str | None = None,
        too_many_args: bool = False,
        config_error: str | None = None,
        units: list[str] | None = None,
        localedir: str | None = None,
        _entries: dict[tuple[str, str], _Entry] | None = None,
        _order: list[tuple[str, str]] | None = None,
        _selected: str | None = None,
    ) -> None:
        self.prog = prog
        self.table = table
        self.errors: list[str] = [] if errors is None else errors
        self.arguments: list[str] = [] if arguments is None else arguments
        self.config_file = config_file
        self.too_many_args = too_many_args
        self.config_error = config_error
        self.units: list[str] = [""] if units is None else units
        self.localedir = localedir
        self._entries: dict[tuple[str, str], _Entry] = {} if _entries is None else _entries
        self._order: list[tuple[str, str]] = [] if _order is None else _order
        self._selected = _selected

    def _values(self) -> tuple[object, ...]:
        return (*super()._values(), self._entries, self._order, self._selected)  # compared, not shown

    @property
    def main_unit(self) -> str:
        """The unit that options without a prefix apply to (the selected one in a `for_unit` view)."""
        if self._selected is not None:
            return self._selected
        return "" if "" in self.units else self.units[0]

    def for_unit(self, unit: str) -> Parsed:
        """A view in which unqualified lookups read `unit`'s options (OPTIONS.md section 5)."""
        view = Parsed(self.prog, self.table)
        view.__dict__.update(self.__dict__)  # shares the lists and dicts, as dataclasses.replace did
        view._selected = unit
        return view

    def _entry(self, name: str, unit: str | None) -> _Entry | None:
        self.table[name]  # KeyError for names the table does not have
        return self._entries.get((self.main_unit if unit is None else unit, name))

    def has(self, name: str, *, unit: str | None = None) -> bool:
        """True if the option was given (a boolean given as ``=no`` counts as not given)."""
        entry = self._entry(name, unit)
        if entry is None:
            return name == "localedir" and unit is None and self.localedir is not None
        return entry.on is not False

    def flag(self, name: str, *, unit: str | None = None) -> bool:
        """True if a boolean option is on."""
        entry = self._entry(name, unit)
        return entry is not None and entry.on is True

    def count(self, name: str, *, unit: str | None = None) -> int:
        """How many times the option was used (0 for a boolean that is off)."""
        entry = self._entry(name, unit)
        if entry is None or entry.on is False:
            return 0
        return entry.uses

    def value(self, name: str, *, unit: str | None = None) -> str | None:
        """The value of a valued option, or None when not given.

        A multi-valued option gives all its uses joined with ``,``.  An
        optional-valued option given without a value gives ``""``.
        """
        entry = self._entry(name, unit)
        if entry is None:
            if name == "localedir" and unit is None:
                return self.localedir
            return None
        if entry.option.multi:
            return ",".join(entry.values)
        return entry.value

    def items(self, name: str, *, unit: str | None = None) -> list[str]:
        """The comma-separated items of every use, in order, empty items left out."""
        entry = self._entry(name, unit)
        if entry is None:
            return []
        uses = entry.values if entry.option.multi else ([] if entry.value is None else [entry.value])
        return [item for use in uses for item in use.split(",") if item]

    def unit_value(self, unit: str, name: str) -> str | None:
        """:meth:`value` for one instance."""
        return self.value(name, unit=unit)

    def given(self) -> list[str]:
        """Names of the options given (in any unit), in order of first use."""
        names: list[str] = ["localedir"] if self.localedir is not None else []
        for unit, name in self._order:
            if name not in names and self.has(name, unit=unit):
                names.append(name)
        return names


def program_name(argv0: str) -> str:
    """Basename of argv[0] without its extension (``/usr/sbin/emailrelay.exe`` -> ``emailrelay``)."""
    base = os.path.basename(argv0) or "emailrelay"
    stem, _ = os.path.splitext(base)
    return stem or base


def app_dir() -> str:
    """The directory of the running program, which ``@app`` in paths stands for."""
    return os.path.dirname(os.path.abspath(sys.argv[0] if sys.argv and sys.argv[0] else "."))


def expand_app(path: str) -> str:
    """Replace a leading ``@app`` with :func:`app_dir`."""
    return app_dir() + path[4:] if path.startswith("@app") else path


def parse(table: OptionTable, argv: list[str], prog: str, *, config_file_allowed: bool = True) -> Parsed:
    """Parse a command's arguments (without argv[0]) and its configuration file.

    Args:
        table: the command's options.
        argv: the arguments after the program name.
        prog: program name for messages.
        config_file_allowed: the first non-option argument is a configuration
            file that is read and whose options are appended after the
            command line; False keeps all non-option arguments in
            ``Parsed.arguments`` (e.g. the recipients of emailrelay-submit).

    Returns:
        The parsed options; errors are reported in the result, never raised.
    """
    result = Parsed(prog=prog, table=table)
    args = list(argv)
    if "localedir" in table:
        result.localedir = _take_localedir(args)
    errors: list[str] = []
    uses, result.arguments = _scan(table, args, errors)
    if config_file_allowed and result.arguments:
        result.config_file = result.arguments[0]
        if len(result.arguments) > 1:
            result.too_many_args = True
        else:
            lines, result.config_error = read_config_file(result.config_file)
            for line in lines:
                file_uses, leftover = _scan(table, [line], errors)
                uses.extend(file_uses)
                errors.extend(f"invalid option: \"{arg}\"" for arg in leftover)
    result.units = _units(table, uses)
    for use in uses:
        _apply(result, use, errors)
    result.errors = sorted(set(errors))
    return result


def _take_localedir(args: list[str]) -> str | None:
    """Remove the first ``--localedir <dir>`` or ``--localedir=<dir>`` from args."""
    for i, arg in enumerate(args):
        if arg.startswith("--localedir="):
            del args[i]
            return arg.split("=", 1)[1]
        if arg == "--localedir" and i + 1 < len(args):
            value = args[i + 1]
            del args[i : i + 2]
            return value
    return None


def _resolve(table: OptionTable, name: str) -> tuple[Option, str | None] | None:
    """The option a long name refers to, and its unit prefix if it has one."""
    option = table.get(name)
    if option is not None:
        return option, None
    if table.units and "-" in name:
        prefix, rest = name.split("-", 1)
        option = table.get(rest)
        if prefix and option is not None:
            return option, prefix
    return None


def _dubious(written: str, option: Option, value: str) -> str:
    return (
        f"\"{written} {value}\" is probably a mistake, "
        f"use \"--{option.name}=... {value}\" or \"--{option.name}={value}\""
    )


def _scan(table: OptionTable, args: list[str], errors: list[str]) -> tuple[list[_Use], list[str]]:
    """Split args into option uses and the trailing non-option arguments."""
    uses: list[_Use] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            return uses, args[i:]
        if arg.startswith("--"):
            body = arg[2:]
            name, eq, attached = body.partition("=")
            if not name or not _NAME_CHARS.issuperset(name):
                name, eq, attached = body, "", ""
            resolved = _resolve(table, name)
            if resolved is None:
                errors.append(f"invalid option: \"--{name}\"")
                continue
            option, unit = resolved
            written = f"--{name}"
            if eq:
                uses.append(_Use(option, unit, written, attached))
            elif option.valued:
                if i >= len(args):
                    errors.append(f"no value supplied for \"{written}\"")
                else:
                    value = args[i]
                    i += 1
                    if value.startswith("-"):
                        errors.append(_dubious(written, option, value))
                    else:
                        uses.append(_Use(option, unit, written, value))
            else:
                uses.append(_Use(option, unit, written, "" if option.optional_value else None))
        elif arg.startswith("-") and len(arg) > 1:
            letters = arg[1:]
            for n, letter in enumerate(letters):
                option = table.by_short(letter)
                written = f"-{letter}"
                if option is None:
                    errors.append(f"invalid option: \"{written}\"")
                elif not option.valued:
                    uses.append(_Use(option, None, written, "" if option.optional_value else None))
                elif n != len(letters) - 1 or i >= len(args):
                    errors.append(f"no value supplied for {written}")
                else:
                    value = args[i]
                    i += 1
                    if value.startswith("-"):
                        errors.append(_dubious(written, option, value))
                    else:
                        uses.append(_Use(option, None, written, value))
        else:
            return uses, args[i - 1 :]
    return uses, []


def _units(table: OptionTable, uses: list[_Use]) -> list[str]:
    """Instance names in the order their spool-dir options appear ("" = unnamed)."""
    units: list[str] = []
    if table.units:
        for use in uses:
            if use.option.name == "spool-dir":
                unit = use.unit or ""
                if unit not in units:
                    units.append(unit)
    return units or [""]


def _apply(result: Parsed, use: _Use, errors: list[str]) -> None:
    """Add one use to the result, recording duplicate and conflict errors."""
    if use.unit is not None and use.unit not in result.units:
        errors.append(f"invalid option: \"{use.written}\"")
        return
    option = use.option
    key = (result.main_unit if use.unit is None else use.unit, option.name)
    entry = result._entries.get(key)
    if entry is None:
        entry = _Entry(option)
    long_written = f"--{use.unit}-{option.name}" if use.unit is not None else f"--{option.name}"
    if option.boolean:
        if use.value is None:
            on = True
        elif use.value.strip().lower() in YES_WORDS:
            on = True
        elif use.value.strip().lower() in NO_WORDS:
            on = False
        else:
            errors.append(f"cannot give a value with \"{long_written}\" ({use.value})")
            return
        if entry.on is not None and entry.on != on:
            errors.append(f"conflicting values: \"{long_written}\"")
            return
        entry.on = on
    elif option.multi:
        entry.values.append(use.value or "")
    else:
        if entry.uses and entry.value != use.value:
            errors.append(f"duplicate use of \"{long_written}\"")
            return
        entry.value = use.value
    entry.uses += 1
    if key not in result._entries:
        result._entries[key] = entry
        result._order.append(key)


def read_config_file(path: str) -> tuple[list[str], str | None]:
    """Read a configuration file into ``--key`` / ``--key=value`` arguments.

    Returns:
        (arguments, error): error is None, or the message for a file that
        cannot be read, holds a NUL byte or has too many option lines.
    """
    try:
        with open(expand_app(path), "rb") as f:
            data = f.read()
    except (OSError, ValueError):
        return [], f"error reading configuration file: {path}"
    if b"\0" in data:
        return [], f"invalid character in configuration file: {path}"
    args: list[str] = []
    for raw in data.decode("utf-8", errors="surrogateescape").split("\n"):
        parsed = config_line(raw)
        if parsed is None:
            continue
        key, value, quoted = parsed
        if len(args) >= MAX_CONFIG_LINES:
            return [], f"too many lines in configuration file: {path}"
        args.append(f"--{key}={value}" if value or quoted else f"--{key}")
    return args, None


def config_line(raw: str) -> tuple[str, str, bool] | None:
    """One configuration file line as (key, value, quoted); None for blank and comment lines.

    The key is the first word (after leading blanks and ``=``), the value
    the rest after blanks or ``=``, with one pair of surrounding double
    quotes removed (``quoted`` says so); a trailing CR is ignored.
    """
    line = raw[:-1] if raw.endswith("\r") else raw
    line = line.lstrip(" \t=")
    import re

    key_match = re.match(r"[^ \t=]*", line)
    key = key_match.group(0) if key_match else ""
    if not key or key.startswith("#"):
        return None
    value = line[len(key) :].lstrip(" \t=").rstrip(" \t")
    quoted = len(value) >= 2 and value.startswith('"') and value.endswith('"')
    return key, value[1:-1] if quoted else value, quoted


# ---------------------------------------------------------------------------
# Help and version text


def _copyright() -> str:
    return "Copyright (C) 2026 the emailrelay authors"


def banner(prog: str = "emailrelay") -> str:
    """First line of --help and --version, e.g. ``emailrelay 0.1.0 (E-MailRelay 2.6 compatible)``."""
    return f"{prog} {__version__} (E-MailRelay {COMPATIBLE_VERSION} compatible)"


def describe(option: Option, *, verbose: bool) -> str:
    """An option's description for help: the one-line help, plus detail when verbose."""
    parts = [option.help]
    if verbose:
        if option.detail:
            parts.append(option.detail)
        if option.default is not None:
            parts.append(f"Default: {option.default}.")
        if option.since_issue is not None:
            parts.append(f"({NOT_YET})")
    return " ".join(parts)


def _usage(table: OptionTable, prog: str, *, verbose: bool, columns: int) -> list[str]:
    shown = table.shown(verbose)
    letters = "".join(o.short for o in shown if o.short and o.boolean)
    words = [f"[-{letters}]"] if letters else []
    for option in shown:
        words.append(f"[--{option.name}]" if option.boolean else f"[--{option.name}={option.arg}]")
    if table.operands:
        words.append(table.operands)
    head = ("usage: " if verbose else "abbreviated usage: ") + prog
    import textwrap  # here and below, not at the top: only help needs it

    return textwrap.wrap(
        " ".join([head, *words]), width=columns, subsequent_indent="  ",
        break_long_words=False, break_on_hyphens=False,
    ) or [head]


def _option_lines(option: Option, *, verbose: bool, columns: int) -> list[str]:
    column = 42 if verbose else 30
    short = f"-{option.short}, " if option.short else "    "
    syntax = f"  {short}{option.long_syntax()}"
    syntax = syntax.ljust(column) if len(syntax) < column else syntax + " "
    import textwrap

    return textwrap.wrap(
        describe(option, verbose=verbose), width=max(columns, column + 20), initial_indent=syntax,
        subsequent_indent=" " * column, break_long_words=False, break_on_hyphens=False,
    )


def help_columns() -> int:
    """The wrap width for help text: $COLUMNS, else 79 (OPTIONS.md section 6)."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        return 79
    return columns if columns > 0 else 79


def help_text(table: OptionTable, prog: str, *, verbose: bool, columns: int = 79) -> str:
    """The ``--help`` text: plain shows the level-20 options, verbose every visible one by group."""
    import textwrap

    lines = [banner(prog), ""]
    lines += _usage(table, prog, verbose=verbose, columns=columns)
    lines.append("")
    if verbose:
        for title, options in table.grouped():
            lines.append("")
            if title:
                lines.append(title)
            for option in options:
                lines += _option_lines(option, verbose=True, columns=columns)
        lines.append("")
        for caption, command in table.examples:
            lines += [*textwrap.wrap(caption, width=columns, break_on_hyphens=False), f"   {command}", ""]
    else:
        for option in table.shown(verbose=False):
            lines += _option_lines(option, verbose=False, columns=columns)
        pointer = f"For every option, run \"{prog} --help --verbose\"."
        lines += ["", *textwrap.wrap(pointer, width=columns, break_on_hyphens=False), ""]
    lines.append(_copyright())
    return "\n".join(lines) + "\n"


def tls_library() -> str:
    """The TLS library in use, as the ``TLS library:`` feature line shows it."""
    import ssl  # here, not at the top: emailrelay-submit must start fast

    return getattr(ssl, "OPENSSL_VERSION", "") or "none"


def version_text(verbose: bool, prog: str = "emailrelay") -> str:
    """The ``--version`` text; verbose adds the feature lines of OPTIONS.md 8.2 in their exact form."""
    lines = [banner(prog), "", _copyright(), ""]
    if verbose:
        lines += [
            "Multi-threading: enabled",  # asyncio runs DNS look-ups and blocking work in threads
            "Unix domain sockets: enabled",
            "POP server: enabled",
            "Admin server: enabled",
            f"TLS library: {tls_library()}",
            "",
        ]
    if tls_library().startswith("OpenSSL"):
        lines += [
            "This product includes software developed by the OpenSSL Project",
            "for use in the OpenSSL Toolkit (http://www.openssl.org/)",
            "",
        ]
    lines += [
        "This is free software, licensed under the GNU General Public License,",
        "version 3 or later, and it comes with ABSOLUTELY NO WARRANTY. You may",
        "share and change it under the terms of that licence.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# The emailrelay-filter-copy table (SPEC.md section 8.4)

FILTER_COPY_OPTIONS: OptionTable  # built on first use, by __getattr__ at the end of this module


def _filter_copy_options() -> OptionTable:
    return OptionTable(
        command="emailrelay-filter-copy",
        summary="copy message envelopes into the spool's sub-directories, for --pop-by-name",
        operands="[<content-file> [<envelope-file>]]",
        examples=(
            ("Give each POP user (one spool sub-directory per user) every message:",
             "emailrelay --pop --pop-by-name --pop-auth=/etc/emailrelay.auth "
             "--filter=/usr/bin/emailrelay-filter-copy"),
            ("Copy every message already waiting in the spool directory:",
             "emailrelay-filter-copy --spool-dir=/var/spool/emailrelay --verbose"),
        ),
        options=(
            Option("spool-dir", "d", "<dir>", level=20,
                   help="Copy every waiting message of this spool directory, instead of one message.",
                   detail="Without it the program works as a --filter on the content file given as its "
                          "first argument."),
            Option("verbose", "v", level=20,
                   help="With --spool-dir, print one line per copied message; with --help, show more help."),
            Option("version", "V", level=20,
                   help="Show the version and exit."),
            Option("help", "h", level=20,
                   help="Show help and exit; add --verbose for every option."),
        ),
    )


# ---------------------------------------------------------------------------
# Building the tables on first use

#: Each table is built when it is first read (PEP 562 module ``__getattr__``),
#: so a command pays only for its own: emailrelay-submit never builds the
#: hundred-option emailrelay table.
_TABLES: dict[str, Callable[[], OptionTable]] = {
    "EMAILRELAY_OPTIONS": _emailrelay_options,
    "SUBMIT_OPTIONS": _submit_options,
    "RESUBMIT_OPTIONS": _resubmit_options,
    "PASSWD_OPTIONS": _passwd_options,
    "FILTER_COPY_OPTIONS": _filter_copy_options,
}


def __getattr__(name: str) -> OptionTable:
    build = _TABLES.get(name)
    if build is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    table = globals()[name] = build()
    return table
