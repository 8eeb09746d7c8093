"""The lab's start-up checks, on real child processes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

LAB_DIR = Path(__file__).resolve().parents[3] / "lab"


@pytest.fixture(scope="module")
def lab_cli():
    sys.path.insert(0, str(LAB_DIR))
    try:
        spec = importlib.util.spec_from_file_location("keyops_lab_under_test", LAB_DIR / "keyops_lab.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up while it loads
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("keyops_lab_under_test", None)
        sys.path.remove(str(LAB_DIR))


def exited_server(log: Path, message: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        child = subprocess.Popen(["sh", "-c", f"echo '{message}'; exit 1"], stdout=out, stderr=subprocess.STDOUT)
    child.wait()
    return child


def test_a_server_that_lost_its_port_is_reported_as_ports_in_use(lab_cli, tmp_path: Path) -> None:
    """Another process may bind a port between `up`'s check and the server's own bind: that must read as a port
    clash (callers retry on another base), not as a crash of the server."""
    log = tmp_path / "pebble.log"
    child = exited_server(log, "listen tcp 127.0.0.1:28330: bind: address already in use")

    with pytest.raises(lab_cli.LabError, match="ports already in use: pebble could not bind"):
        lab_cli.wait_until("pebble", lambda: False, timeout=5, child=child, log_hint=str(log))


def test_a_server_that_fails_otherwise_is_reported_with_its_exit_code(lab_cli, tmp_path: Path) -> None:
    log = tmp_path / "pebble.log"
    child = exited_server(log, "bad configuration")

    with pytest.raises(lab_cli.LabError, match="pebble exited with code 1 while starting") as raised:
        lab_cli.wait_until("pebble", lambda: False, timeout=5, child=child, log_hint=str(log))
    assert "ports already in use" not in str(raised.value)
