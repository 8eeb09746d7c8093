"""What the reliability suite measured, per area, for the one-line-per-area summary at the end of the run.

Tests add measured figures with ``add(area, name, n)``; the conftest hook counts each area's tests and how many
passed. A figure is only ever what a test counted (an occurrence of a secret, a traceback, a lost data key): the
summary prints zeros because the tests found none, never because it assumes them.
"""

from __future__ import annotations

import collections

AREAS = ("faults", "concurrency", "secrets", "files", "bad-input", "dual-control", "audit")

_tests: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
_figures: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)


def add(area: str, name: str, count: int = 1) -> None:
    _figures[area][name] += count


def test_outcome(area: str, outcome: str) -> None:
    _tests[area]["run"] += 1
    _tests[area][outcome] += 1


def figure(area: str, name: str) -> int:
    return _figures[area][name]


def export() -> dict[str, dict[str, dict[str, int]]]:
    """This process's counts, for the pytest-xdist controller to merge (one worker's share of the suite)."""
    return {"tests": {k: dict(v) for k, v in _tests.items()}, "figures": {k: dict(v) for k, v in _figures.items()}}


def merge(data: dict[str, dict[str, dict[str, int]]]) -> None:
    for area, counts in data["tests"].items():
        _tests[area].update(counts)
    for area, counts in data["figures"].items():
        _figures[area].update(counts)


def _line(area: str) -> str:
    tests, got = _tests[area], _figures[area]
    failed = tests["failed"]
    if area == "faults":
        text = (
            f"faults: trials {got['trials']}, passed {got['trials passed']}, killed mid-run {got['killed mid-run']}, "
            f"outages {got['outages']}, data keys verified {got['data keys verified']}, lost {got['lost']}, "
            f"wrapped twice {got['wrapped twice']}, end state differs {got['end state differs']}"
        )
    elif area == "concurrency":
        text = (
            f"concurrency: trials {got['trials']}, passed {got['trials passed']}, races {got['races']}, "
            f"both held at once {got['both held at once']}, waiters told {got['waiters told']}, "
            f"stale locks taken over {got['stale locks taken over']}"
        )
    elif area == "secrets":
        text = (
            f"secrets: canaries {got['canaries']}, files swept {got['files swept']}, "
            f"bytes swept {got['bytes swept']}, occurrences {got['occurrences']}"
        )
    elif area == "files":
        text = (
            f"files: writers {got['writers']}, 0600 {got['0600']}, atomic {got['atomic']}, "
            f"temp files left {got['temp files left']}"
        )
    elif area == "bad-input":
        text = (
            f"bad-input: cases {got['cases']}, clear errors {got['clear errors']}, tracebacks {got['tracebacks']}, "
            f"property examples {got['property examples']}"
        )
    elif area == "dual-control":
        text = f"dual-control: bypass kinds {got['bypass kinds']}, refused {got['refused']}"
    else:
        text = f"audit: tamper kinds {got['tamper kinds']}, detected {got['detected']}"
    suffix = f" (tests {tests['run']}, passed {tests['passed']}" + (f", FAILED {failed}" if failed else "") + ")"
    return text + suffix


def summary_lines() -> list[str]:
    return [_line(area) for area in AREAS if _tests[area]["run"] or _figures[area]]
