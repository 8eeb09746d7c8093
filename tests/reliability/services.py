"""Stop, freeze and restart the servers of the suite's own lab (pids in $KEYOPS_LAB_DIR/lab.json)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from tests.integration.conftest import REPO_ROOT


def _state(lab: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    path = Path(lab["state_dir"]) / "lab.json"
    return path, json.loads(path.read_text())


def _record_pid(lab: dict[str, Any], service: str, pid: int) -> None:
    """Keep lab.json right, so `keyops_lab.py down` stops the new process like the original."""
    path, state = _state(lab)
    state["processes"][service]["pid"] = pid
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(state, indent=2))
    os.chmod(temp, 0o600)
    os.replace(temp, path)


def signal_service(lab: dict[str, Any], service: str, signum: int) -> None:
    _unused, state = _state(lab)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(state["processes"][service]["pid"], signum)


def kill_service(lab: dict[str, Any], service: str, port: int) -> None:
    signal_service(lab, service, signal.SIGKILL)
    wait_port(port, up=False)


def port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port: int, up: bool, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while port_open(port) != up:
        if time.monotonic() > deadline:
            raise AssertionError(f"port {port} did not {'open' if up else 'close'} within {timeout} s")
        time.sleep(0.05)


def _health(addr: str) -> int | None:
    session = requests.Session()
    session.trust_env = False
    try:
        return session.get(f"{addr}/v1/sys/health", timeout=2).status_code
    except requests.RequestException:
        return None


def restart_raft(lab: dict[str, Any]) -> None:
    """Start the lab's raft OpenBao again from its own config and data, unseal it, wait until it is active."""
    lab_dir = Path(lab["state_dir"])
    addr = lab["KEYOPS_LAB_RAFT_ADDR"]
    log = os.open(lab_dir / "logs" / "openbao-raft.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    environment = {key: os.environ[key] for key in ("PATH", "LANG", "TZ") if key in os.environ}
    environment["HOME"] = os.environ.get("HOME", "/tmp")
    try:
        child = subprocess.Popen(
            [str(REPO_ROOT / ".venv" / "bin" / "bao"), "server", f"-config={lab_dir / 'openbao' / 'raft.hcl'}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=lab_dir,
            env=environment,
            start_new_session=True,
        )
    finally:
        os.close(log)
    _record_pid(lab, "openbao-raft", child.pid)
    deadline = time.monotonic() + 60
    while _health(addr) not in (429, 503, 200):
        assert time.monotonic() < deadline, "the raft server did not come back"
        time.sleep(0.1)
    unseal_key = json.loads(Path(lab["KEYOPS_LAB_RAFT_INIT_FILE"]).read_text())["unseal_keys_b64"][0]
    session = requests.Session()
    session.trust_env = False
    session.put(f"{addr}/v1/sys/unseal", json={"key": unseal_key}, timeout=10).raise_for_status()
    while _health(addr) != 200:
        assert time.monotonic() < deadline, "the raft server did not become active after unseal"
        time.sleep(0.1)
