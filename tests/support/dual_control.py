"""Real dual-control approvals for integration tests: plan, sign as two demo approvers, verify.

Modules re-verify approvals on their own (plan, digest, action in the plan, SSH signatures), so a test that acts
under dual control needs approvals of a plan that holds that action. ``approve(planned)`` makes them from the
check-mode results (or bare planned audit events) of the tasks, with the demo approvers of
``approvals.create_demo_approvers``; ``TRUSTED_ENV`` / ``trusted_policy()`` tell the modules where the approvers'
allowed-signers and approvers files are.
"""

from __future__ import annotations

import functools
import os
import tempfile
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils import approvals

REQUESTER = "operator@keyops.lab"
APPROVERS = ("alice", "bob")


@functools.lru_cache(maxsize=1)
def demo_approvers() -> dict[str, Any]:
    """alice, bob (every class) and carol (kek/dek/tls-cert), made once per test process."""
    folder = tempfile.mkdtemp(prefix="keyops-test-approvers-")
    return dict(approvals.create_demo_approvers(folder), folder=folder)


def trusted_env() -> dict[str, str]:
    """The environment a module reads the trusted approver files from (run_module(..., env=trusted_env()))."""
    demo = demo_approvers()
    return {
        approvals.ALLOWED_SIGNERS_ENV: demo["allowed_signers"],
        approvals.APPROVERS_FILE_ENV: demo["approvers_file"],
    }


def trusted_policy(**policy: Any) -> dict[str, Any]:
    """The same files as policy values (a module's policy option)."""
    demo = demo_approvers()
    return {"allowed_signers": demo["allowed_signers"], "approvers_file": demo["approvers_file"], **policy}


def approve(
    planned: list[dict[str, Any]],
    who: tuple[str, ...] = APPROVERS,
    change_ref: str = "CHG-TEST",
    policy: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Approvals, as approval_verify returns them, of the plan made from check-mode results or planned events."""
    results = [item if "audit_events" in item or "results" in item else {"audit_events": [item]} for item in planned]
    plan = approvals.build_plan(approvals.planned_actions(results, policy), REQUESTER, change_ref)
    assert plan["requires_approval"], f"nothing in the plan is dual-controlled: {plan['actions']}"
    demo = demo_approvers()
    plan_path = os.path.join(demo["folder"], f"plan-{plan['digest'][:16]}.json")
    approvals.write_private_file(plan_path, approvals.plan_bytes(plan))
    signatures = [
        approvals.sign_plan(plan_path, demo["keys"][f"{name}@keyops.lab"], f"{name}@keyops.lab") for name in who
    ]
    outcome = approvals.verify_ssh_approvals(
        plan_path, signatures, demo["allowed_signers"], approvals.load_approvers(demo["approvers_file"]), len(who)
    )
    return outcome["approvals"]


def planned_event(action: str, backend: str, key_ref: str, key_class: str | None = None, **detail: Any) -> dict:
    """A planned audit event, as a module's check-mode run writes it (for plans made without running one)."""
    return {
        "action": action,
        "backend": backend,
        "key_ref": key_ref,
        "outcome": "planned",
        "check_mode": True,
        "detail": {"key_class": key_class, **detail} if key_class else dict(detail),
    }
