"""The reliability and security suite: faults, concurrency, secrets, files, bad input, dual control, audit.

Quick form by default (a few fault trials, seconds to a couple of minutes); `--full` is the nightly form (at least
20 fault trials per operation). Every test belongs to an area (`pytest.mark.area("faults")`); at the end the suite
prints one line per area with its trials, how many passed and the figures the tests measured (tests/reliability/
tally.py).

The suite runs against a lab of its own (port base KEYOPS_RELIABILITY_PORT_BASE, default 25200): the outage tests
stop and restart its servers, which must never disturb a session or demo lab.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import run_lab, start_lab
from tests.reliability import tally

DEFAULT_PORT_BASE = 25200
QUICK_TRIALS = 2
FULL_TRIALS = 20
# A whole runbook run takes tens of seconds: one trial each in the quick form.
QUICK_RUNBOOK_TRIALS = 1


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        default=False,
        help="reliability suite: the nightly form (at least 20 fault trials per operation)",
    )
    parser.addoption(
        "--fault-seed",
        type=int,
        default=int(os.environ.get("KEYOPS_FAULT_SEED", "20261203")),
        help="seed of the fault-injection kill times (KEYOPS_FAULT_SEED)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "area(name): the reliability area a test counts towards")
    # Hypothesis reads its settings when a test module is imported: load the profile before collection.
    from hypothesis import HealthCheck, settings

    for name, examples in (("reliability-quick", 150), ("reliability-full", 1500)):
        settings.register_profile(
            name, max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow]
        )
    settings.load_profile("reliability-full" if config.getoption("--full", default=False) else "reliability-quick")


def fault_trials(config: pytest.Config) -> int:
    return FULL_TRIALS if config.getoption("--full", default=False) else QUICK_TRIALS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "trial" in metafunc.fixturenames:
        metafunc.parametrize("trial", range(fault_trials(metafunc.config)), ids=lambda n: f"trial{n:02d}")
    if "runbook_trial" in metafunc.fixturenames:
        full = metafunc.config.getoption("--full", default=False)
        count = FULL_TRIALS if full else QUICK_RUNBOOK_TRIALS
        metafunc.parametrize("runbook_trial", range(count), ids=lambda n: f"trial{n:02d}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The secrets sweep reads what every other test left behind: it runs last."""
    items.sort(key=lambda item: item.path.name == "test_secrets_sweep.py")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("area")
    if marker is None:
        return
    area = marker.args[0]
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        tally.test_outcome(area, report.outcome)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist, a worker hands its counts to the controller, which prints the summary."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["keyops_reliability"] = json.dumps(tally.export())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    data = getattr(node, "workeroutput", {}).get("keyops_reliability")
    if data:
        tally.merge(json.loads(data))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = tally.summary_lines()
    if not lines:
        return
    terminalreporter.section("reliability summary")
    for line in lines:
        terminalreporter.write_line(line)
    target = os.environ.get("KEYOPS_RELIABILITY_SUMMARY")
    if target:
        Path(target).write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A seeded lab owned by this suite; the environment variables of its env.sh are set for the session."""
    lab_dir = tmp_path_factory.mktemp("reliability-lab")
    preferred = int(os.environ.get("KEYOPS_RELIABILITY_PORT_BASE", DEFAULT_PORT_BASE))
    port_base = start_lab(lab_dir, preferred)
    try:
        seeded = run_lab("seed", lab_dir, port_base)
        if seeded.returncode != 0:
            pytest.fail(f"reliability lab seed failed:\n{seeded.stdout}\n{seeded.stderr}")
        state = json.loads((lab_dir / "lab.json").read_text())
        info = {**state, **state["env"], "seed": json.loads((lab_dir / "seed.json").read_text())}
        with pytest.MonkeyPatch.context() as patch:
            for name, value in state["env"].items():
                patch.setenv(name, value)
            yield info
    finally:
        run_lab("down", lab_dir, port_base)


@pytest.fixture(scope="session")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Everything the suite's runs leave behind (stdout at -vvvv, audit sinks, reports, temp dirs): the secrets
    sweep reads this folder at the end."""
    return tmp_path_factory.mktemp("reliability-outputs")
