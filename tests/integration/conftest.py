"""The lab for integration tests: one per test session, started, seeded and stopped here.

Set KEYOPS_TEST_LAB_DIR to the state folder of a lab that is already up (e.g. `.lab` after `make lab-up`) to
reuse it: it is seeded if it is not yet, and left running at the end. Otherwise a fresh lab starts in a temporary
folder on ports from KEYOPS_TEST_LAB_PORT_BASE (default 28200; each pytest-xdist worker adds 100; the next free
base up when another session holds it), beside any demo lab on 18200.

The `lab` fixture yields lab.json (state_dir, port_base, ports, processes, tls_endpoints, env) with every
environment variable of env.sh also at the top level (`lab["VAULT_ADDR"]`) and seed.json under `lab["seed"]`;
the variables are also set in os.environ for the whole session. Areas add their own fixtures in
tests/integration/<area>/conftest.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_CLI = REPO_ROOT / "lab" / "keyops_lab.py"
DEFAULT_TEST_PORT_BASE = 28200
LAB_PORT_SPAN = 56  # offsets 0..55 in lab/keyops_lab.py
PORT_BASE_STEP = 100
EPHEMERAL_PORTS_START = 32768  # above this, client sockets and their TIME_WAIT leftovers can hold a lab port


def lab_python() -> str:
    """The venv's Python: the lab finds `bao` and `moto_server` next to it."""
    venv_python = REPO_ROOT / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


def run_lab(command: str, lab_dir: Path, port_base: int, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `keyops_lab.py <command>` for the lab in `lab_dir`; never raises on a non-zero exit."""
    environment = {**os.environ, "KEYOPS_LAB_DIR": str(lab_dir), "KEYOPS_LAB_PORT_BASE": str(port_base)}
    return subprocess.run(
        [lab_python(), str(LAB_CLI), *command.split()],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ports_free(port_base: int) -> bool:
    """Whether every port of a lab at `port_base` can be bound on loopback now."""
    for port in range(port_base, port_base + LAB_PORT_SPAN):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port_base(preferred: int, step: int = PORT_BASE_STEP) -> int:
    """`preferred`, or the next free base above it: another test session on this machine may hold the usual one."""
    for port_base in range(preferred, EPHEMERAL_PORTS_START - LAB_PORT_SPAN, step):
        if ports_free(port_base):
            return port_base
    pytest.fail(f"no free lab port base between {preferred} and {EPHEMERAL_PORTS_START}")


def start_lab(lab_dir: Path, preferred: int, step: int = PORT_BASE_STEP) -> int:
    """`up` on the first free port base from `preferred`; retried when another session takes it meanwhile.

    `step` is the distance between the bases tried: pytest-xdist workers step by 100 per worker, so a worker that
    moves on never lands on another worker's preferred base."""
    port_base = preferred
    for _attempt in range(5):
        port_base = free_port_base(port_base, step)
        result = run_lab("up", lab_dir, port_base)
        if result.returncode == 0:
            return port_base
        if "ports already in use" not in result.stderr:
            break
        port_base += step
    _require(result, f"up (port base {port_base})")
    return port_base


def _require(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        pytest.fail(f"lab {what} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")


def worker_offset(config: pytest.Config) -> int:
    worker = getattr(config, "workerinput", {}).get("workerid", "gw0")
    return PORT_BASE_STEP * int(worker.removeprefix("gw")) if worker.startswith("gw") else 0


def worker_step(config: pytest.Config) -> int:
    return PORT_BASE_STEP * int(getattr(config, "workerinput", {}).get("workercount", 1))


@pytest.fixture(scope="session")
def lab_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run_lab(command, lab_dir, port_base)`: drive a lab of a test's own (e.g. to test the lab itself)."""
    return run_lab


@pytest.fixture(scope="session")
def lab_port_base() -> Callable[[int], int]:
    """`free_port_base(preferred)`: a port base whose lab ports are all free now."""
    return free_port_base


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    existing = os.environ.get("KEYOPS_TEST_LAB_DIR")
    if existing:
        lab_dir = Path(existing).resolve()
        state = json.loads((lab_dir / "lab.json").read_text())
        port_base = int(state["port_base"])
        _require(run_lab("status", lab_dir, port_base), f"status in KEYOPS_TEST_LAB_DIR={lab_dir}")
        owned = False
    else:
        lab_dir = tmp_path_factory.mktemp("lab")
        preferred = int(os.environ.get("KEYOPS_TEST_LAB_PORT_BASE", DEFAULT_TEST_PORT_BASE))
        port_base = start_lab(lab_dir, preferred + worker_offset(request.config), worker_step(request.config))
        owned = True

    try:
        _require(run_lab("seed", lab_dir, port_base), "seed")
        state = json.loads((lab_dir / "lab.json").read_text())
        info = {**state, **state["env"], "seed": json.loads((lab_dir / "seed.json").read_text())}
        with pytest.MonkeyPatch.context() as patch:
            for name, value in state["env"].items():
                patch.setenv(name, value)
            yield info
    finally:
        if owned:
            run_lab("down", lab_dir, port_base)
