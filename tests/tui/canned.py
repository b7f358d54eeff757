"""Fixed admin-protocol data for the snapshot tests: what a supervisor could say, frozen."""

from __future__ import annotations

T0 = 1795600000.0  # a fixed time: log lines render the same everywhere (TZ=UTC in the tests)

STATUS = {
    "supervisor": {"pid": 4242, "uptime": 3723.0, "version": "0.1.0", "admin_socket": "/run/emailrelay/admin.sock",
                   "config_file": "/etc/emailrelay.conf", "rss": 27_000_000, "cpu_percent": 0.5},
    "workers": [
        {"name": "storage", "role": "storage", "state": "RUNNING", "pid": 4243, "restarts": 0, "failures": 0,
         "last_error": None, "exit_status": None, "uptime": 3720.0, "cpu_percent": 1.0, "rss": 26_500_000,
         "wanted": True},
        {"name": "forward", "role": "forward", "state": "BACKOFF", "pid": None, "restarts": 2, "failures": 2,
         "last_error": "exited with status 1; failed start 2", "exit_status": 1, "uptime": None,
         "cpu_percent": None, "rss": None, "wanted": True},
        {"name": "pop", "role": "pop", "state": "FATAL", "pid": None, "restarts": 4, "failures": 5,
         "last_error": "exited with status 1; gave up after 5 failed starts", "exit_status": 1, "uptime": None,
         "cpu_percent": None, "rss": None, "wanted": True},
    ],
    "spool": {"unit": "", "directory": "/var/spool/emailrelay", "ready": 12, "busy": 1, "bad": 2, "new": 0},
}
STATUS["spools"] = [STATUS["spool"]]

EVENTS = [
    {"type": "message", "action": "stored", "msg": "emailrelay.4243.1795599990.7", "worker": "storage", "time": T0},
    {"type": "message", "action": "failed", "msg": "emailrelay.4243.1795599990.6", "worker": "forward",
     "reason": "one or more recipients rejected", "time": T0},
    {"type": "worker", "name": "forward", "old": "STARTING", "new": "BACKOFF", "reason": "exited with status 1",
     "time": T0},
]

LOGS = [
    {"worker": "supervisor", "level": "info", "text": "worker storage: STARTING -> RUNNING: ready", "time": T0},
    {"worker": "storage", "level": "info", "text": "smtp connection from 127.0.0.1:40210", "time": T0 + 1},
    {"worker": "storage", "level": "info", "text": "stored message emailrelay.4243.1795599990.7 (2104 bytes)",
     "time": T0 + 2},
    {"worker": "forward", "level": "warning",
     "text": "forwarding: emailrelay.4243.1795599990.6: failed: one or more recipients rejected (550)", "time": T0 + 3},
    {"worker": "forward", "level": "error", "text": "forwarding: connect failure: cannot connect to smarthost:25",
     "time": T0 + 4},
]

ROWS = [
    {"id": f"emailrelay.4243.1795599990.{n}", "state": "ready", "time": None, "size": 2104 + n,
     "from": f"sender{n}@example.com", "to": [f"rcpt{n}@example.net"], "client": "127.0.0.1"}
    for n in range(1, 13)
]
FAILED = [
    {"id": "emailrelay.4243.1795599990.5", "state": "bad", "time": None, "size": 900, "from": "a@example.com",
     "to": ["nobody@example.net"], "failures": 1, "reason": "one or more recipients rejected", "reason_code": "550"},
    {"id": "emailrelay.4243.1795599990.6", "state": "bad", "time": None, "size": 901, "from": "b@example.com",
     "to": ["later@example.net"], "failures": 3, "reason": "mailbox busy", "reason_code": "452"},
]

MESSAGE = {
    "id": "emailrelay.4243.1795599990.6", "state": "bad", "size": 180, "failures": 3, "reason": "mailbox busy",
    "reason_code": "452", "envelope": "",
    "fields": {"content": "8bit", "from": "b@example.com", "to_local": [], "to_remote": ["later@example.net"],
               "authentication": "", "client": "127.0.0.1", "forward_to": "", "forward_to_address": "",
               "reasons": ["mailbox busy"]},
    "truncated": False, "binary": True,
    "content": "Received: from client (127.0.0.1) by relay\r\nSubject: a very long subject line that goes on "
               "and on so that it has to be wrapped on a narrow terminal\r\nFrom: b@example.com\r\n\r\n"
               "Hello,\r\nthis body has a NUL \x00 and an escape \x1b[31m that must not reach the terminal.\r\n",
}

CONFIG = "# /etc/emailrelay.conf\nspool-dir /var/spool/emailrelay\nport 25\nforward-to smarthost:25\npoll 60\n"
