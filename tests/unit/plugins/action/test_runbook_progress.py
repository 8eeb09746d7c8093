"""The progress line an operator reads while a re-wrap runs."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.keyops.runbooks.plugins.action.runbook_progress import progress_line


@pytest.mark.parametrize(
    ("progress", "line"),
    [
        (
            {"done": 2500, "total": 5000, "rate_per_s": 1234.4, "eta_s": 2.1},
            "rewrap: 2500/5000 (50%) done, 1234/s, ETA 2 s",
        ),
        ({"done": 10, "total": 0}, "rewrap: 10/0 done"),
        (
            {"done": 5000, "total": 5000, "rate_per_s": 9000, "eta_s": 0, "finished": True},
            "rewrap: 5000/5000 (100%) done, 9000/s",
        ),
        (
            {"done": 900, "total": 1000, "failed": 3, "rate_per_second": 80.0},
            "rewrap: 900/1000 (90%) done, 3 failed, 80/s",
        ),
    ],
)
def test_progress_line(progress: dict[str, Any], line: str) -> None:
    assert progress_line("rewrap", progress) == line
