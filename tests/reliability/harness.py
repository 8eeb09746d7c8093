"""Run playbooks the way an operator does, kill them with SIGKILL at a chosen moment, and keep their output.

Every run's stdout and stderr (at -vvvv unless told otherwise) go to files under the suite's outputs folder, and
every run's temporary folders and audit sinks point there too: the secrets sweep reads that folder at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.support.playbook import ANSIBLE_PLAYBOOK, ROOT

_RUNS = itertools.count(1)


def write_playbook(
    folder: Path, name: str, tasks: list[dict[str, Any]], play_vars: dict[str, Any] | None = None
) -> Path:
    play: dict[str, Any] = {"name": name, "hosts": "localhost", "gather_facts": False, "tasks": tasks}
    if play_vars:
        play["vars"] = play_vars
    path = folder / f"{name}.yml"
    path.write_text(yaml.safe_dump([play], sort_keys=False), encoding="utf-8")
    return path


def demo_approvers_env(lab_dir: str) -> dict[str, str]:
    """The trusted files the dual-control gate re-verifies approvals against, as an execution environment sets
    them: here the lab's demo approvers (made by playbooks/demo_approve.yml on the first demo run)."""
    folder = Path(lab_dir) / "demo-approvers"
    return {
        "KEYOPS_APPROVERS_FILE": str(folder / "approvers.yml"),
        "KEYOPS_ALLOWED_SIGNERS": str(folder / "allowed_signers"),
    }


def run_env(outputs: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a run: JSON results on stdout, temp folders and the audit file inside ``outputs``."""
    temp = outputs / "tmp"
    temp.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
            "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(temp / "ansible-local"),
            "ANSIBLE_REMOTE_TEMP": str(temp / "ansible-remote"),
            "ANSIBLE_KEEP_REMOTE_FILES": "0",
            "TMPDIR": str(temp),
            "KEYOPS_AUDIT_PATH": str(outputs / "audit" / "audit.jsonl"),
            "KEYOPS_AUDIT_SPOOL_DIR": str(outputs / "audit" / "spool"),
        }
    )
    env.update(extra or {})
    return env


class Run:
    """One ansible-playbook process, its output files and (after ``wait``) its parsed task results."""

    def __init__(
        self,
        playbook: Path,
        outputs: Path,
        env: dict[str, str] | None = None,
        verbosity: int = 4,
        args: list[str] | None = None,
    ) -> None:
        number = next(_RUNS)
        logs = outputs / "runs"
        logs.mkdir(exist_ok=True)
        self.stdout_path = logs / f"{number:04d}-{playbook.stem}.stdout"
        self.stderr_path = logs / f"{number:04d}-{playbook.stem}.stderr"
        command = [ANSIBLE_PLAYBOOK, str(playbook), *(args or [])] + (["-" + "v" * verbosity] if verbosity else [])
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=run_env(outputs, env),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.started = time.monotonic()
        self.rc: int | None = None

    def wait(self, timeout: float = 600) -> Run:
        self.rc = self.process.wait(timeout=timeout)
        return self

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def results(self) -> dict[str, dict[str, Any]]:
        """Each task's localhost result by task name (the JSON callback's document)."""
        text = self.stdout
        start = text.find('{\n    "custom_stats"')
        if start < 0:
            start = text.find("{")
        document = json.JSONDecoder().raw_decode(text[start:])[0] if start >= 0 else {"plays": []}
        found: dict[str, dict[str, Any]] = {}
        for play in document.get("plays", []):
            for task in play.get("tasks", []):
                for result in task.get("hosts", {}).values():
                    found[task["task"]["name"]] = result
        return found

    def kill(self) -> list[int]:
        """SIGKILL the playbook and everything under it (Ansible's workers call setsid, so a process group is not
        enough). Freeze the tree first, so nothing forks a child we would miss, then kill every member."""
        frozen: list[int] = []
        for _round in range(20):
            tree = [self.process.pid, *descendants(self.process.pid)]
            fresh = [pid for pid in tree if pid not in frozen]
            if not fresh:
                break
            for pid in fresh:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            frozen.extend(fresh)
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.rc = self.process.wait(timeout=30)
        wait_gone(frozen)
        return frozen


def descendants(root: int) -> list[int]:
    """Every live process below ``root``, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found: list[int] = []
    frontier = [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found.extend(children)
        frontier = children
    return found


def wait_gone(pids: list[int], timeout: float = 10) -> None:
    """Killed children re-parented to init are reaped by it; wait until /proc no longer lists them."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                break
            if state == "Z":
                break
            time.sleep(0.01)


def run_to_end(playbook: Path, outputs: Path, env: dict[str, str] | None = None, verbosity: int = 4) -> Run:
    return Run(playbook, outputs, env, verbosity).wait()


def module_running(run: Run) -> bool:
    """Whether the module itself (AnsiballZ's payload) runs yet: the moment kill times are measured from, so that
    the controller's start-up time, which varies with the machine's load, does not move them."""
    for pid in descendants(run.process.pid):
        try:
            if b"AnsiballZ_" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def timed_run(
    playbook: Path,
    outputs: Path,
    first_commit: Callable[[], bool],
    last_commit: Callable[[], bool],
    env: dict[str, str] | None = None,
) -> tuple[Run, float, float]:
    """An uninterrupted run, watched: (run, seconds from the module's start to the first committed batch, and to the
    last one)."""
    run = Run(playbook, outputs, env)
    start = first = last = None
    while run.process.poll() is None:
        now = time.monotonic()
        if start is None and module_running(run):
            start = now
        if start is not None and first is None and first_commit():
            first = now - start
        if first is not None and last is None and last_commit():
            last = now - start
        time.sleep(0.01)
    run.wait()
    assert start is not None and first is not None and last is not None, "the run was too short to time"
    return run, first, last


def kill_at(playbook: Path, outputs: Path, delay: float, env: dict[str, str] | None = None) -> tuple[Run, bool]:
    """Start a run and SIGKILL it ``delay`` seconds after its module started; returns (run, whether it was still
    running when killed)."""
    run = Run(playbook, outputs, env)
    while run.process.poll() is None and not module_running(run):
        time.sleep(0.005)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and run.process.poll() is None:
        time.sleep(min(0.005, max(deadline - time.monotonic(), 0)))
    alive = run.process.poll() is None
    run.kill()
    return run, alive
