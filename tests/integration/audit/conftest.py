"""Audit fixtures: a private audit folder per test, the callback's options for it, and readers for each sink."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
RSYSLOG_CTL = [sys.executable, str(HERE / "rsyslog_ctl.py")]


class AuditSetup:
    def __init__(self, base: Path, lab: dict[str, Any]) -> None:
        self.base = base
        self.lab = lab
        self.log = base / "audit" / "audit.jsonl"
        self.spool = base / "spool"
        self.env: dict[str, str] = {
            "KEYOPS_AUDIT_PATH": str(self.log),
            "KEYOPS_AUDIT_SPOOL_DIR": str(self.spool),
            "KEYOPS_AUDIT_SINKS": "file",
            "KEYOPS_AUDIT_SYSLOG_HOST": lab["KEYOPS_LAB_SYSLOG_HOST"],
            "KEYOPS_AUDIT_SYSLOG_PORT": lab["KEYOPS_LAB_SYSLOG_PORT"],
            "ANSIBLE_LIBRARY": str(HERE / "library"),
            "ANSIBLE_LOCAL_TEMP": str(base / "ansible-tmp"),
            "ANSIBLE_REMOTE_TEMP": str(base / "ansible-tmp"),
        }

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def syslog_records(self) -> list[dict[str, Any]]:
        """Records the lab's rsyslog received from this test (the JSON part of each message)."""
        path = Path(self.lab["KEYOPS_LAB_SYSLOG_FILE"])
        if not path.exists():
            return []
        run_ids = {event["run_id"] for event in self.events()}
        records = [json.loads(line[line.index("{") :]) for line in path.read_text().splitlines() if "{" in line]
        return [record for record in records if record.get("run_id") in run_ids]


@pytest.fixture
def audit(lab: dict[str, Any], tmp_path: Path) -> AuditSetup:
    return AuditSetup(tmp_path, lab)


@pytest.fixture
def probe_task() -> Any:
    """A real module run that returns one audit event: the OpenBao audit device, planned in check mode."""

    def task(number: int) -> dict[str, Any]:
        return {
            "name": f"probe {number}",
            "keyops.runbooks.vault_audit_device": {"path": f"probe-{number}", "file_path": "/dev/null"},
            "check_mode": True,
        }

    return task


@pytest.fixture
def rsyslog_restored(lab: dict[str, Any]) -> Any:
    """Tests that stop the lab's rsyslog get it back afterwards, whatever happens."""
    yield RSYSLOG_CTL
    import socket
    import subprocess

    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", int(lab["KEYOPS_LAB_SYSLOG_PORT"]))) != 0:
            subprocess.run([*RSYSLOG_CTL, "start"], check=True, env={**os.environ, "KEYOPS_LAB_DIR": lab["state_dir"]})
