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

# estate is a pytest fixture the imported cases need in this module.
from tests.unit.plugins.module_utils.test_approvals import (  # noqa: F401 # pylint: disable=unused-import
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
    plan_path, _unused = make_plan(folder)
    verify(e, plan_path, [sign(e, plan_path, "alice"), sign(e, plan_path, "bob")], now=NOW + dt.timedelta(hours=25))


def _other_digest(e: dict[str, Any], folder: str) -> None:
    plan_path, _unused = make_plan(folder)
    verify(e, plan_path, [sign(e, plan_path, "alice"), sign(e, plan_path, "bob")], expected_digest="0" * 64)


def _edited_by_hand(e: dict[str, Any], folder: str) -> None:
    plan_path, plan = make_plan(folder)
    signatures = [sign(e, plan_path, "alice"), sign(e, plan_path, "bob")]
    plan["actions"][0]["after"]["latest_version"] = 9
    Path(plan_path).write_bytes(approvals.plan_bytes(plan))
    verify(e, plan_path, signatures)


def _same_team(e: dict[str, Any], folder: str) -> None:
    plan_path, _unused = make_plan(folder, events=[event("destroy", key_class="kek")])
    verify(e, plan_path, [sign(e, plan_path, "bob"), sign(e, plan_path, "carol")], distinct_teams=True)


def _unclassified(e: dict[str, Any], folder: str) -> None:
    plan_path, _unused = make_plan(folder, events=[event("destroy", key_class=None)])
    verify(e, plan_path, [sign(e, plan_path, "alice"), sign(e, plan_path, "carol")])


def _one_key_two_principals(e: dict[str, Any], folder: str) -> None:
    plan_path, _unused = make_plan(folder)
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
    plan_path, _unused = make_plan(folder)
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
        _unused, plan = make_plan(folder, requester=requester, events=events)
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


def forged(approver: str) -> dict[str, Any]:
    return {"approver": approver, "digest": "a" * 64, "verified": True, "source": "ssh"}


class Gate:
    """Real approvals for a master-key rotation, made the way an operator makes them: a check-mode run, a plan from
    change_plan, two ssh-keygen signatures, approval_verify. The gate cases below bend them."""

    def __init__(self, lab: dict[str, Any], folder: Path) -> None:
        self.folder = folder
        self.made = approvals.create_demo_approvers(str(folder / "approvers"))
        self.client = vault_client(lab["VAULT_ADDR"], lab["VAULT_TOKEN"])
        self.key = self.new_key("gate")

    def new_key(self, purpose: str) -> str:
        name = f"prod-{purpose}{len(list(self.folder.iterdir()))}-kek-20261203"
        self.client.adapter.post(f"/v1/transit/keys/{name}", json={"type": "aes256-gcm96"})
        return name

    def args(self, key: str | None = None) -> dict[str, Any]:
        return {"name": key or self.key, "key_class": "master-kek", "rotate": True}

    def approvals(self, key: str | None = None, who: tuple[str, ...] = ("alice", "bob")) -> list[dict[str, Any]]:
        check, failure = call("vault_transit_key", self.args(key), check_mode=True)
        assert failure is None and check.get("changed"), check
        plan_path = str(self.folder / f"plan-{key or self.key}.json")
        plan, failure = call(
            "change_plan",
            {"results": [check], "path": plan_path, "requester": "operator@keyops.lab", "change_ref": "CHG-GATE"},
        )
        assert failure is None and not plan.get("failed"), plan
        signatures = [
            approvals.sign_plan(plan_path, self.made["keys"][f"{name}@keyops.lab"], f"{name}@keyops.lab")
            for name in who
        ]
        verified, failure = call(
            "approval_verify",
            {
                "plan_path": plan_path,
                "signatures": signatures,
                "allowed_signers": self.made["allowed_signers"],
                "approvers_file": self.made["approvers_file"],
                "digest": plan["digest"],
                "quorum": len(who),
            },
        )
        assert failure is None and not verified.get("failed"), verified.get("msg")
        return verified["approvals"]

    def version(self, key: str | None = None) -> int:
        return int(self.client.secrets.transit.read_key(key or self.key)["data"]["latest_version"])


@pytest.fixture(scope="module")
def gate(lab: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Gate:
    return Gate(lab, tmp_path_factory.mktemp("gate"))


@pytest.fixture
def trusted_files(gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the execution environment provides: the files the gate re-verifies approvals against."""
    monkeypatch.setenv("KEYOPS_APPROVERS_FILE", gate.made["approvers_file"])
    monkeypatch.setenv("KEYOPS_ALLOWED_SIGNERS", gate.made["allowed_signers"])


def _edited_plan(gate: Gate) -> list[dict[str, Any]]:
    offered = gate.approvals()
    for approval in offered:
        approval["plan_text"] = approval["plan_text"].replace(gate.key, gate.key.replace("gate", "gatx"))
    return offered


def _swapped_signature(gate: Gate) -> list[dict[str, Any]]:
    offered, other = gate.approvals(), gate.approvals(gate.new_key("other"))
    offered[1]["signature"] = other[1]["signature"]
    return offered


GATE: list[tuple[str, Callable[[Gate], list[dict[str, Any]]]]] = [
    ("gate: no approvals", lambda gate: []),
    ("gate: hand-made 'verified: true' approvals", lambda gate: [forged("alice@keyops.lab"), forged("bob@keyops.lab")]),
    ("gate: one real approval", lambda gate: gate.approvals(who=("alice",))),
    ("gate: one real approval passed twice", lambda gate: [gate.approvals()[0]] * 2),
    ("gate: real approvals of another key's plan", lambda gate: gate.approvals(gate.new_key("other"))),
    ("gate: real approvals with the plan text edited", _edited_plan),
    ("gate: a signature swapped for one over another plan", _swapped_signature),
]


@pytest.mark.lab
@pytest.mark.usefixtures("trusted_files")
@pytest.mark.parametrize(("kind", "offer"), GATE, ids=[row[0] for row in GATE])
def test_the_module_gate_refuses_a_master_key_change_without_a_quorum(
    gate: Gate, kind: str, offer: Callable[[Gate], list[dict[str, Any]]]
) -> None:
    tally.add("dual-control", "bypass kinds")
    offered = offer(gate)
    before = gate.version()

    result, failure = call("vault_transit_key", {**gate.args(), "approvals": offered})

    assert failure is None, failure
    assert result.get("failed") and "dual control" in result["msg"], result.get("msg")
    assert "file is configured" not in result["msg"], result["msg"]
    assert gate.version() == before, "the key was rotated without a quorum"
    tally.add("dual-control", "refused")


@pytest.mark.lab
@pytest.mark.usefixtures("trusted_files")
def test_the_gate_lets_real_approvals_through(gate: Gate) -> None:
    """The control: the same gate with the approvals as made, untouched, rotates the key (so the refusals above
    are for the bending, not for a broken set-up)."""
    key = gate.new_key("control")
    before = gate.version(key)

    result, failure = call("vault_transit_key", {**gate.args(key), "approvals": gate.approvals(key)})

    assert failure is None and not result.get("failed"), result.get("msg")
    assert gate.version(key) == before + 1
