"""Stop or start just the lab's rsyslog (the lab has no per-service command): `rsyslog_ctl.py stop|start`.

Reads the lab from $KEYOPS_LAB_DIR. `start` runs rsyslogd with the lab's own config file, detached, and records
the new pid in lab.json so `keyops_lab.py down` stops it like the original.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait(port: int, up: bool, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while port_open(port) != up:
        if time.monotonic() > deadline:
            raise SystemExit(f"rsyslog did not {'start' if up else 'stop'} within {timeout}s")
        time.sleep(0.05)


def main(command: str) -> None:
    lab_dir = Path(os.environ["KEYOPS_LAB_DIR"])
    state_file = lab_dir / "lab.json"
    state = json.loads(state_file.read_text())
    port = int(state["env"]["KEYOPS_LAB_SYSLOG_PORT"])
    process = state["processes"]["rsyslog"]

    if command == "stop":
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process["pid"], signal.SIGTERM)
        wait(port, up=False)
        return

    log = os.open(lab_dir / "logs" / "rsyslog.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    child = subprocess.Popen(
        [
            "/usr/sbin/rsyslogd",
            "-n",
            "-f",
            str(lab_dir / "rsyslog" / "rsyslog.conf"),
            "-i",
            str(lab_dir / "rsyslog" / "rsyslogd.pid"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        cwd=lab_dir,
        start_new_session=True,
    )
    os.close(log)
    process["pid"] = child.pid
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.chmod(tmp, 0o600)
    os.replace(tmp, state_file)
    wait(port, up=True)


if __name__ == "__main__":
    main(sys.argv[1])
