"""Dual control, collected: every way around the two-person rule is refused, with its reason.

The approval rules (tests/unit/plugins/module_utils/test_approvals.py: real ssh-keygen signatures) are run again
here as one table with the plan-level and AWX kinds, then the module gate itself: a master key changed through a
real module with approvals that are missing, single, unverified, of two different plans or from one person twice
must be refused and the key left as it was (hvac reads it back).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils import approvals
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import IntegrityError, PolicyViolation
from tests.reliability import tally
from tests.reliability.inproc import call
from tests.support.vault_deks import vault_client
from tests.unit.plugins.module_utils.test_approvals import (  # noqa: F401 - estate is a fixture
    AWX_CASES,
    BYPASSES,
    NOW,
    estate,
    event,
    make_plan,
    sign,
    verify,
)

pytestmark = [pytest.mark.area("dual-control")]


def _expired(e: dict[str, Any], folder: str) -> None:
    plan_path, _ = make_plan(folder)
    verify(e, plan_path, [sign(e, plan_path, "alice"), sign(e, plan_path, "bob")], now=NOW + dt.timedelta(hours=25))


def _other_digest(e: dict[str, Any], folder: str) -> None:
    plan_path, _ = make_plan(folder)
    verify(e, plan_path, [sign(e, plan_path, "alice"), sign(e, plan_path, "bob")], expected_digest="0" * 64)


def _edited_by_hand(e: dict[str, Any], folder: str) -> None:
    plan_path, plan = make_plan(folder)
    signatures = [sign(e, plan_path, "alice"), sign(e, plan_path, "bob")]
    plan["actions"][0]["after"]["latest_version"] = 9
    Path(plan_path).write_bytes(approvals.plan_bytes(plan))
    verify(e, plan_path, signatures)


def _same_team(e: dict[str, Any], folder: str) -> None:
    plan_path, _ = make_plan(folder, events=[event("destroy", key_class="kek")])
    verify(e, plan_path, [sign(e, plan_path, "bob"), sign(e, plan_path, "carol")], distinct_teams=True)


def _unclassified(e: dict[str, Any], folder: str) -> None:
    plan_path, _ = make_plan(folder, events=[event("destroy", key_class=None)])
    verify(e, plan_path, [sign(e, plan_path, "alice"), sign(e, plan_path, "carol")])


def _one_key_two_principals(e: dict[str, Any], folder: str) -> None:
    plan_path, _ = make_plan(folder)
    verify(e, plan_path, [sign(e, plan_path, "alice")], signers=e["shared_signers"], quorum=1)


def _malformed_expiry(e: dict[str, Any], folder: str) -> None:
    """An allowed-signers entry whose valid-before is no date (month 13): ssh-keygen skips it; so must we, cleanly."""
    lines = Path(e["signers"]).read_text().splitlines()
    edited = [
        re.sub(r'valid-before="[^"]*"', 'valid-before="20261340"', line) if line.startswith("alice@") else line
        for line in lines
    ]
    signers = Path(folder) / "allowed_signers"
    signers.write_text("\n".join(edited) + "\n")
    plan_path, _ = make_plan(folder)
    verify(e, plan_path, [sign(e, plan_path, "alice"), sign(e, plan_path, "bob")], signers=str(signers))


def _from_table(setup: Callable[..., Any]) -> Callable[[dict[str, Any], str], None]:
    def attack(e: dict[str, Any], folder: str) -> None:
        plan_path, signatures = setup(e, folder)
        verify(e, plan_path, signatures)

    return attack


def _awx(case: str, offered: list[dict[str, Any]], job: str | None) -> Callable[[dict[str, Any], str], None]:
    def attack(e: dict[str, Any], folder: str) -> None:
        requester = "bob" if case == "requester approves" else "operator"
        events = [event("destroy", key_class="kek")] if case == "same team" else None
        _, plan = make_plan(folder, requester=requester, events=events)
        approvals.verify_awx_approvals(plan, offered, job, e["approvers"], 2, now=NOW)

    return attack


KINDS: list[tuple[str, Callable[[dict[str, Any], str], None], str]] = [
    *[(f"ssh: {name}", _from_table(setup), reason) for name, setup, reason in BYPASSES],
    ("plan: expired", _expired, "no longer count"),
    ("plan: not the one the apply run recomputed", _other_digest, "recomputed"),
    ("plan: edited by hand after signing", _edited_by_hand, "was edited after it was made"),
    ("plan: same team twice when teams must differ", _same_team, "already approved"),
    ("plan: unclassified key, approver not allowed for every class", _unclassified, "key class unclassified"),
    ("ssh: one key listed under two principals", _one_key_two_principals, "listed for several principals"),
    ("ssh: approver entry with an expiry that is no date", _malformed_expiry, "no principal allowed to sign"),
    *[(f"awx: {case}", _awx(case, offered, job), reason) for case, offered, job, reason in AWX_CASES if reason],
]


@pytest.mark.parametrize(("kind", "attack", "reason"), KINDS, ids=[row[0] for row in KINDS])
def test_every_bypass_kind_is_refused_with_its_reason(
    estate: dict[str, Any],  # noqa: F811 - the fixture imported above
    kind: str,
    attack: Callable[[dict[str, Any], str], None],
    reason: str,
    tmp_path: Path,
) -> None:
    tally.add("dual-control", "bypass kinds")
    with pytest.raises((PolicyViolation, IntegrityError)) as refused:
        attack(estate, str(tmp_path))

    assert reason in refused.value.message, refused.value.message
    tally.add("dual-control", "refused")


def verified(approver: str, digest: str = "a" * 64, **extra: Any) -> dict[str, Any]:
    return {"approver": approver, "digest": digest, "verified": True, "source": "ssh", **extra}


GATE = [
    ("gate: no approvals", []),
    ("gate: one approval", [verified("alice@keyops.lab")]),
    ("gate: one approver twice", [verified("alice@keyops.lab"), verified("alice@keyops.lab")]),
    ("gate: approvals of two different plans", [verified("alice@keyops.lab"), verified("bob@keyops.lab", "b" * 64)]),
    (
        "gate: approvals not verified",
        [{**verified("alice@keyops.lab"), "verified": False}, {**verified("bob@keyops.lab"), "verified": False}],
    ),
    ("gate: approvals without a digest", [verified("alice@keyops.lab", ""), verified("bob@keyops.lab", "")]),
]


@pytest.fixture(scope="module")
def master_key(lab: dict[str, Any]) -> str:
    client = vault_client(lab["VAULT_ADDR"], lab["VAULT_TOKEN"])
    name = "prod-gate-kek-20261203"
    client.adapter.post(f"/v1/transit/keys/{name}", json={"type": "aes256-gcm96"})
    return name


@pytest.mark.lab
@pytest.mark.parametrize(("kind", "offered"), GATE, ids=[row[0] for row in GATE])
def test_the_module_gate_refuses_a_master_key_change_without_a_quorum(
    lab: dict[str, Any], master_key: str, kind: str, offered: list[dict[str, Any]]
) -> None:
    tally.add("dual-control", "bypass kinds")
    client = vault_client(lab["VAULT_ADDR"], lab["VAULT_TOKEN"])
    before = client.secrets.transit.read_key(master_key)["data"]["latest_version"]

    result, failure = call(
        "vault_transit_key", {"name": master_key, "key_class": "master-kek", "rotate": True, "approvals": offered}
    )

    after = client.secrets.transit.read_key(master_key)["data"]["latest_version"]
    assert failure is None, failure
    assert result.get("failed") and "dual control" in result["msg"], result.get("msg")
    assert after == before, "the key was rotated without a quorum"
    tally.add("dual-control", "refused")
