# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Follow a long async task (rewrap, re-encrypt) and print done / total, rate and ETA while it runs."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

ARGUMENT_SPEC = {
    "jid": {"type": "str", "required": True},
    "progress_file": {"type": "str"},
    "label": {"type": "str", "default": "job"},
    "interval": {"type": "float", "default": 2.0},
    "timeout": {"type": "int", "default": 86400},
    "cleanup": {"type": "bool", "default": True},
}
# What the async wrapper adds to a module's result; the task's own result is the rest.
_ASYNC_FIELDS = ("ansible_job_id", "started", "finished", "results_file", "stdout", "stderr", "stdout_lines")


def progress_line(label: str, progress: dict[str, Any]) -> str:
    done = int(progress.get("done") or 0)
    total = int(progress.get("total") or 0)
    failed = int(progress.get("failed") or 0)
    share = f" ({100 * done // total}%)" if total else ""
    rate = progress.get("rate_per_s", progress.get("rate_per_second"))
    eta = progress.get("eta_s")
    line = f"{label}: {done}/{total}{share} done"
    if failed:
        line += f", {failed} failed"
    if rate is not None:
        line += f", {float(rate):.0f}/s"
    if eta is not None and not progress.get("finished"):
        line += f", ETA {float(eta):.0f} s"
    return line


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True

    def _status(self, jid: str, task_vars: dict[str, Any], mode: str = "status") -> dict[str, Any]:
        # The same folder the async wrapper wrote to, as ansible.builtin.async_status's own action finds it.
        async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
        return self._execute_module(
            module_name="ansible.builtin.async_status",
            module_args={"jid": jid, "mode": mode, "_async_dir": async_dir},
            task_vars=task_vars,
        )

    def _progress(self, path: str | None, task_vars: dict[str, Any]) -> dict[str, Any] | None:
        if not path:
            return None
        answer = self._execute_module(
            module_name="ansible.builtin.slurp", module_args={"src": path}, task_vars=task_vars
        )
        if answer.get("failed") or "content" not in answer:
            return None
        try:
            return json.loads(base64.b64decode(answer["content"]))
        except ValueError:
            return None

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        _spec, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        deadline = time.monotonic() + args["timeout"]
        last_line = None
        progress = None
        while True:
            status = self._status(args["jid"], task_vars)
            if status.get("finished") or (status.get("failed") and "finished" not in status):
                break
            progress = self._progress(args["progress_file"], task_vars) or progress
            if progress:
                line = progress_line(args["label"], progress)
                if line != last_line:
                    display.display(f"  {line}")
                    last_line = line
            if time.monotonic() >= deadline:
                result.update(
                    failed=True,
                    msg=f"Follow {args['label']} failed: still running after {args['timeout']} s. It goes on in the "
                    f"background (job {args['jid']}); follow it again or raise timeout",
                )
                return result
            time.sleep(args["interval"])

        final = self._progress(args["progress_file"], task_vars) or progress
        if final and progress_line(args["label"], dict(final, finished=True)) != last_line:
            display.display(f"  {progress_line(args['label'], dict(final, finished=True))}")
        if args["cleanup"]:
            self._status(args["jid"], task_vars, mode="cleanup")
        job = {key: value for key, value in status.items() if key not in _ASYNC_FIELDS}
        result.update(job)
        result["progress"] = final
        result.pop("invocation", None)
        return result
