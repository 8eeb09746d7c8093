"""CI smoke of the benchmarks: `bench/run.py --quick` end to end on its own lab, in about two minutes.

Speeds on shared machines vary too much to assert the targets here; what is asserted is that every benchmark ran
and printed numbers, and the correctness facts the benchmarks check on the way: every data key rewrapped or
re-encrypted exactly once and still decrypting, and two partitions run side by side covering the store with no
data key done twice.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"
LAB_PORT_SPAN = 56


def free_port_base(preferred: int = 24600) -> int:
    for base in range(preferred, 32768 - LAB_PORT_SPAN, 100):
        try:
            for port in range(base, base + LAB_PORT_SPAN):
                with socket.socket() as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    pytest.fail("no free port base for the benchmark lab")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict]:
    work = tmp_path_factory.mktemp("bench")
    command = [
        str(PYTHON if PYTHON.exists() else sys.executable),
        str(ROOT / "bench" / "run.py"),
        "--quick",
        "--lab-dir",
        str(work / "lab"),
        "--port-base",
        str(free_port_base()),
        "--results",
        str(work / "results"),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    report = json.loads((work / "results" / "latest.json").read_text()) if done.returncode in (0, 1) else {}
    return done, report


@pytest.mark.lab
def test_quick_run_prints_the_table_with_numbers(quick_run: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    done, report = quick_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| benchmark | N | ours | baseline | ratio | peak RSS | target | holds | notes |" in done.stdout
    benchmarks = {row["benchmark"] for row in report["rows"]}
    for expected in (
        "rewrap vs raw hvac batch loop",
        "rewrap vs per-item Ansible loop (vault_write)",
        "rewrap peak RSS (streaming)",
        "rewrap scaling (time 10N / time N)",
        "rewrap 2 partitions in parallel",
        "re-encrypt vs raw boto3 pool of 16",
        "re-encrypt vs raw boto3 sequential",
        "inventory x1 vs the anchor way",
    ):
        assert expected in benchmarks, f"{expected} missing from {sorted(benchmarks)}"
    for row in report["rows"]:
        assert re.search(r"\d", row["ours"]) and re.search(r"\d", row["n"]), row
        if row["benchmark"] != "rewrap peak RSS (streaming)":
            assert row["ratio"] is not None and row["ratio"] > 0, row
    memory = next(row for row in report["rows"] if row["benchmark"] == "rewrap peak RSS (streaming)")
    assert 10 < memory["rss_mb"] < 4096, memory


@pytest.mark.lab
def test_quick_run_correctness_facts(quick_run: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    _unused, report = quick_run
    checks = report["checks"]
    assert checks and all(checks.values()), {name: ok for name, ok in checks.items() if not ok}
    names = " | ".join(checks)
    for fact in (
        "union complete",
        "no data key done twice",
        "data keys decrypt to their plaintexts",
        "every data key under the destination",
        "a sample of 20 data keys decrypts",
    ):
        assert fact in names, f"the run did not check: {fact}"
