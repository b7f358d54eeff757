"""``emailrelay ctl``: the command-line client of the supervisor's admin socket.

One job: turn a command line into admin protocol requests (admin_client.py)
and their results into text for people or JSON for scripts.  Every command
is one function ``cmd_<name>(client, args) -> exit code`` below, listed in
`COMMANDS` with its help line; the man page is made from the same list.

Exit codes (`EXIT_*`): 0 success; 1 the supervisor refused the request
(unknown message or worker, invalid configuration ...); 2 usage error;
3 the supervisor cannot be reached (not running, permission denied, wrong
socket); 4 a temporary refusal that may succeed if repeated (a worker that
is starting, a message being forwarded).  Errors are one line on stderr:
``emailrelay ctl: error: ...``; never a traceback.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from typing import Any

from emailrelay import admin_protocol as proto
from emailrelay.admin_client import AdminClient, Unreachable
from emailrelay.humanize import duration, size

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TEMPORARY = 4


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _unit(args: argparse.Namespace) -> dict[str, str]:
    return {"unit": args.unit} if getattr(args, "unit", None) is not None else {}


def cmd_status(client: AdminClient, args: argparse.Namespace) -> int:
    status = client.call("status")
    if args.json:
        _print_json(status)
        return EXIT_OK
    me = status["supervisor"]
    print(f"supervisor pid {me['pid']}, up {duration(me['uptime'])}, rss {size(me.get('rss'))}, socket {me['admin_socket']}")
    print(f"{'WORKER':<16} {'STATE':<9} {'PID':>7} {'UPTIME':>7} {'RESTARTS':>8} {'CPU%':>5} {'RSS':>7}  LAST ERROR")
    for w in status["workers"]:
        cpu = "-" if w.get("cpu_percent") is None else f"{w['cpu_percent']:.0f}"
        print(f"{w['name']:<16} {w['state']:<9} {w['pid'] or '-':>7} {duration(w['uptime']):>7} {w['restarts']:>8} "
              f"{cpu:>5} {size(w.get('rss')):>7}  {w['last_error'] or ''}")
    for spool in status.get("spools", [status["spool"]]):
        name = f"spool [{spool['unit']}]" if spool.get("unit") else "spool"
        if "error" in spool:
            print(f"{name} {spool['directory']}: {spool['error']}")
        else:
            print(f"{name} {spool['directory']}: {spool['ready']} ready, {spool['busy']} in flight, "
                  f"{spool['bad']} failed, {spool['new']} arriving")
    return EXIT_OK


def _list(client: AdminClient, args: argparse.Namespace, state: str) -> int:
    result = client.call("list", state=state, offset=args.offset, limit=args.limit, **_unit(args))
    if args.json:
        _print_json(result)
        return EXIT_OK
    now = time.time()
    for m in result["messages"]:
        line = (f"{m['id']}  {m['state']:<5} {duration(now - m['time']) if 'time' in m else '-':>5} "
                f"{size(m.get('size')):>7}  {m.get('from', '?') or '<>'} -> {', '.join(m.get('to', []))}")
        if state == "bad" or m["state"] == "bad":
            line += f"\n    {m.get('reason_code') or '-'} {m.get('reason', m.get('error', ''))} (failures: {m.get('failures', 0)})"
        print(line)
    shown = len(result["messages"])
    if result["total"] > shown:
        print(f"({shown} of {result['total']} shown from offset {result['offset']})", file=sys.stderr)
    return EXIT_OK


def cmd_list(client: AdminClient, args: argparse.Namespace) -> int:
    return _list(client, args, args.state)


def cmd_failures(client: AdminClient, args: argparse.Namespace) -> int:
    return _list(client, args, "bad")


def cmd_forward(client: AdminClient, args: argparse.Namespace) -> int:
    client.call("forward")
    print("forwarding requested")
    return EXIT_OK


def cmd_retry(client: AdminClient, args: argparse.Namespace) -> int:
    if args.all == bool(args.id):
        raise _Usage("retry needs a message id or --all, not both")
    result = client.call("retry", all=True, **_unit(args)) if args.all else client.call("retry", msg=args.id, **_unit(args))
    for r in result["results"]:
        print(f"{r['msg']}: {r['action']}")
    return EXIT_OK


def cmd_delete(client: AdminClient, args: argparse.Namespace) -> int:
    result = client.call("delete", msg=args.id, **_unit(args))
    print(f"{result['msg']}: deleted ({result['state']})")
    return EXIT_OK


def cmd_show(client: AdminClient, args: argparse.Namespace) -> int:
    result = client.call("show", msg=args.id, max_bytes=args.max_bytes, **_unit(args))
    if args.json:
        _print_json(result)
        return EXIT_OK
    sys.stdout.write(result.get("envelope", ""))
    print()
    content = result.get("content", "")
    if result.get("binary"):
        content = content.replace("\0", "\\0")
    sys.stdout.write(content)
    if result.get("truncated"):
        print(f"\n[... truncated at {args.max_bytes} bytes of {result.get('size')}]")
    return EXIT_OK


def _worker_command(op: str, verb: str) -> Any:
    def command(client: AdminClient, args: argparse.Namespace) -> int:
        w = client.call(op, name=args.worker)
        print(f"{w['name']}: {w['state']}" + (f" (pid {w['pid']})" if w.get("pid") else "")
              + (f": {w['last_error']}" if w["state"] in ("FATAL", "BACKOFF") and w.get("last_error") else ""))
        return EXIT_OK if w["state"] in ("RUNNING", "STOPPED") else EXIT_REFUSED

    command.__doc__ = verb
    return command


cmd_restart = _worker_command("worker-restart", "restart")
cmd_start = _worker_command("worker-start", "start")
_cmd_stop_worker = _worker_command("worker-stop", "stop")


def cmd_stop(client: AdminClient, args: argparse.Namespace) -> int:
    if args.worker:
        return _cmd_stop_worker(client, args)
    client.call("shutdown")
    print("supervisor stopping")
    return EXIT_OK


def _log_line(record: dict[str, Any]) -> str:
    stamp = datetime.datetime.fromtimestamp(record.get("time", 0)).strftime("%Y-%m-%d %H:%M:%S")
    return f"{stamp} {record.get('worker', '?')}: {record.get('level', 'info')}: {record.get('text', '')}"


def cmd_logs(client: AdminClient, args: argparse.Namespace) -> int:
    if args.follow:
        client.call("subscribe", streams=["log"])
    for record in client.call("logs", limit=args.lines)["records"]:
        print(_log_line(record), flush=True)
    if args.follow:
        try:
            for message in client.stream():
                if message.get("stream") == "log":
                    print(_log_line(message["record"]), flush=True)
        except Unreachable:
            return EXIT_OK  # the supervisor stopped: the log has ended
    return EXIT_OK


def cmd_reload(client: AdminClient, args: argparse.Namespace) -> int:
    result = client.call("reload")
    print("reloaded: " + ", ".join(f"{w['name']} {w['state']}" for w in result["workers"]))
    return EXIT_OK


def cmd_config(client: AdminClient, args: argparse.Namespace) -> int:
    if args.validate or args.replace:
        path = args.validate or args.replace
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise _Usage(f"cannot read {path}: {(e.strerror or str(e)).lower()}") from None
        if args.validate:
            result = client.call("config-validate", text=text)
            for error in result["errors"]:
                print(f"error: {error}")
            print("valid" if result["valid"] else "invalid")
            return EXIT_OK if result["valid"] else EXIT_REFUSED
        client.call("config-replace", text=text)
        print("configuration replaced and reloaded")
        return EXIT_OK
    result = client.call("config-get")
    if result["text"] is None:
        print("# no configuration file; arguments: " + " ".join(result["arguments"]))
    else:
        sys.stdout.write(result["text"])
    return EXIT_OK


#: name -> (help, function); the man page reads this too.
COMMANDS: dict[str, tuple[str, Any]] = {
    "status": ("Show the workers (state, pid, uptime, restarts, CPU, RSS, last error) and the spool counts.", cmd_status),
    "list": ("List spooled messages (id, state, age, size, sender, recipients).", cmd_list),
    "failures": ("List failed (.bad) messages with their reasons and failure counts.", cmd_failures),
    "forward": ("Ask the forward worker to forward the spool now.", cmd_forward),
    "retry": ("Move a failed message (or --all) back to the queue and forward.", cmd_retry),
    "delete": ("Delete a ready or failed message.", cmd_delete),
    "show": ("Show a message's envelope and content.", cmd_show),
    "restart": ("Restart a worker (also a FATAL one).", cmd_restart),
    "start": ("Start a stopped or FATAL worker.", cmd_start),
    "stop": ("Stop a worker, or with no worker the whole supervisor.", cmd_stop),
    "logs": ("Show recent log records of all workers; -f follows the log.", cmd_logs),
    "reload": ("Re-read the configuration file and restart the workers with it.", cmd_reload),
    "config": ("Print the configuration file; --validate FILE checks one, --replace FILE installs it.", cmd_config),
}


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Usage(message)


def parser(prog: str) -> argparse.ArgumentParser:
    top = _Parser(prog=prog, description="Control a running emailrelay supervisor.")
    top.add_argument("--admin-socket", metavar="PATH", help="the supervisor's admin socket")
    top.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="how long to wait for a reply")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help_text, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name in ("status", "list", "failures", "show"):
            p.add_argument("--json", action="store_true", help="machine-readable output")
        if name in ("list", "failures"):
            if name == "list":
                p.add_argument("--state", choices=proto.STATES, default="all", help="which messages (default all)")
            p.add_argument("--offset", type=int, default=0, help="skip this many messages")
            p.add_argument("--limit", type=int, default=1000, help="show at most this many messages")
        if name == "retry":
            p.add_argument("id", nargs="?", help="the failed message's id")
            p.add_argument("--all", action="store_true", help="every failed message")
        if name in ("delete", "show"):
            p.add_argument("id", help="the message id")
        if name in ("list", "failures", "retry", "delete", "show"):
            p.add_argument("--unit", help="the named instance whose spool is meant (default: all, or the one "
                                          "that holds the message)")
        if name == "show":
            p.add_argument("--max-bytes", type=int, default=1 << 20, help="content shown at most (default 1 MiB)")
        if name in ("restart", "start"):
            p.add_argument("worker", help="the worker's name (storage, forward, pop, proxy)")
        if name == "stop":
            p.add_argument("worker", nargs="?", help="the worker's name; none: stop the supervisor")
        if name == "logs":
            p.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
            p.add_argument("-n", "--lines", type=int, default=100, help="how many past records (default 100)")
        if name == "config":
            p.add_argument("--validate", metavar="FILE", help="check this file as the configuration")
            p.add_argument("--replace", metavar="FILE", help="check, install and reload this configuration")
    return top


def run(prog: str, args: list[str]) -> int:
    prog = f"{prog} ctl"
    try:
        parsed = parser(prog).parse_args(args)
        if parsed.command is None:
            raise _Usage("a command is needed: " + ", ".join(COMMANDS))
    except _Usage as e:
        print(f"{prog}: usage error: {e}", file=sys.stderr)
        print(f"{prog}: try '{prog} --help' for more information", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as e:  # --help
        return int(e.code or 0)
    function = COMMANDS[parsed.command][1]
    try:
        with AdminClient(parsed.admin_socket, timeout=parsed.timeout) as client:
            return function(client, parsed)
    except _Usage as e:
        print(f"{prog}: usage error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Unreachable as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except proto.AdminError as e:
        print(f"{prog}: error: {e}" + (" (try again)" if e.retry else ""), file=sys.stderr)
        return EXIT_TEMPORARY if e.retry else EXIT_REFUSED
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
