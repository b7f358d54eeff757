"""The default spool directory rule (SPEC.md section 0), without touching the machine.

Each test runs emailrelay in a private mount namespace with its own tmpfs
over /var/spool, so /var/spool/emailrelay is created (or not) only there.
Needs root and util-linux's unshare/nsenter.
"""

from __future__ import annotations

import grp
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import Relay, command

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nsenter") is None,
    reason="needs root, unshare and nsenter",
)


def start_in_namespace(mount_options: str, env: dict[str, str]) -> Relay:
    relay = shlex.join([command("emailrelay"), "--log", "--no-daemon", "--port", "0", "--interface", "127.0.0.1"])
    script = f"mount -t tmpfs -o {mount_options} tmpfs /var/spool && exec {relay}"
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    return Relay(argv, Path("/var/spool/emailrelay"), env=env)


def test_root_creates_var_spool_emailrelay_root_daemon_2775(tmp_path):
    r = start_in_namespace("size=10m", dict(os.environ))
    try:
        r.started()
        r.wait_for(r"^emailrelay: info: spool directory: /var/spool/emailrelay$")
        stat = subprocess.run(
            ["nsenter", "-t", str(r.proc.pid), "-m", "stat", "-c", "%u %g %a", "/var/spool/emailrelay"],
            capture_output=True, text=True, check=True,
        ).stdout.split()
        assert stat == ["0", str(grp.getgrnam("daemon").gr_gid), "2775"]
    finally:
        r.stop()


def test_falls_back_to_the_user_state_directory(tmp_path):
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    r = start_in_namespace("ro", env)  # /var/spool read-only and empty: cannot be created
    try:
        r.started()
        expected = tmp_path / "state" / "emailrelay" / "spool"
        r.wait_for(rf"^emailrelay: info: spool directory: {expected}$")
        assert expected.is_dir()
    finally:
        r.stop()
