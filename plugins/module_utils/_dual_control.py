# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: what the change_plan and approval_verify modules do, below their main()."""

from __future__ import annotations

import os
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils import approvals as dc
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import audit_event
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import InvalidInput, KeyopsError, PolicyViolation
from ansible_collections.keyops.runbooks.plugins.module_utils.policy import merged_policy

BACKEND = "keyops"


def _plan_event(
    action: str,
    plan: dict[str, Any],
    outcome: str,
    check_mode: bool,
    reason: str | None = None,
    approvals: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "plan_digest": plan.get("digest"),
        "count": len(plan.get("actions") or []),
        "requires_approval": plan.get("requires_approval"),
    }
    if reason:
        detail["outcome_reason"] = reason[:256]
    return audit_event(
        action,
        BACKEND,
        f"plan/{plan.get('digest')}",
        outcome,
        check_mode,
        change_ref=plan.get("change_ref"),
        approvals=approvals,
        detail=detail,
    )


def _existing_plan(path: str) -> dict[str, Any] | None:
    if not os.path.exists(path):
        return None
    try:
        plan = dc.load_plan(path)[0]
    except KeyopsError:
        return None
    return plan


def change_plan(module: Any) -> dict[str, Any]:
    params = module.params
    policy = params["policy"]
    volatile = params["volatile_fields"] if params["volatile_fields"] is not None else dc.DEFAULT_VOLATILE_FIELDS
    actions = dc.planned_actions(params["results"], policy, volatile)

    if params["state"] == "verify":
        return _verify_plan(module, actions)

    plan = dc.build_plan(actions, params["requester"], params["change_ref"], params["validity_hours"])
    existing = _existing_plan(params["path"])
    changed = True
    if existing and existing["digest"] == plan["digest"] and not dc.plan_expired(existing):
        # Keep the file as it is: approvers may already have signed these exact bytes.
        plan, changed = existing, False
    elif not module.check_mode:
        dc.write_private_file(params["path"], dc.plan_bytes(plan))
    return {
        "changed": changed,
        "digest": plan["digest"],
        "path": params["path"],
        "plan": plan,
        "actions": plan["actions"],
        "requires_approval": plan["requires_approval"],
        "expires": plan["expires"],
        "audit_events": [_plan_event("plan", plan, "success", module.check_mode)],
    }


def _verify_plan(module: Any, actions: list[dict[str, Any]]) -> dict[str, Any]:
    params = module.params
    if params["approved_plan"] is not None:
        approved = dc.check_plan(params["approved_plan"], "the approved plan passed in approved_plan")
    else:
        approved = dc.load_plan(params["path"])[0]
    recomputed = dc.build_plan(
        actions, params["requester"] or approved.get("requester"), params["change_ref"] or approved.get("change_ref")
    )
    try:
        dc.compare_plan(approved, recomputed)
    except PolicyViolation as error:
        error.details["audit_events"] = [_plan_event("verify", approved, "refused", module.check_mode, error.reason)]
        error.details["digest"] = recomputed["digest"]
        raise
    return {
        "changed": False,
        "digest": recomputed["digest"],
        "path": params["path"],
        "plan": recomputed,
        "actions": recomputed["actions"],
        "requires_approval": recomputed["requires_approval"],
        "expires": approved.get("expires"),
        "differences": [],
        "audit_events": [_plan_event("verify", approved, "success", module.check_mode)],
    }


def approval_verify(module: Any) -> dict[str, Any]:
    params = module.params
    policy = merged_policy(params["policy"])
    quorum = params["quorum"] if params["quorum"] is not None else policy["approval_quorum"]
    distinct_teams = params["require_distinct_teams"]
    if distinct_teams is None:
        distinct_teams = bool(policy.get("approval_distinct_teams", params["source"] == "awx"))

    if params["state"] == "denied":
        return _record_denial(module)

    approvers = dc.load_approvers(params["approvers_file"])
    try:
        if params["source"] == "ssh":
            if not params["plan_path"] or not params["allowed_signers"]:
                raise InvalidInput(
                    "Verify approvals",
                    None,
                    "SSH approvals need the signed plan file and the allowed-signers file",
                    "Set plan_path and allowed_signers",
                )
            outcome = dc.verify_ssh_approvals(
                params["plan_path"],
                params["signatures"],
                params["allowed_signers"],
                approvers,
                quorum,
                distinct_teams,
                params["digest"],
            )
        else:
            plan = params["plan"] if params["plan"] is not None else dc.load_plan(params["plan_path"])[0]
            outcome = dc.verify_awx_approvals(
                plan,
                params["awx_approvals"],
                params["awx_workflow_job_id"],
                approvers,
                quorum,
                distinct_teams,
                params["digest"],
            )
    except PolicyViolation as error:
        error.details["audit_events"] = _approval_events(
            error.details, module.check_mode, error.reason, params["change_ref"]
        )
        raise

    outcome.pop("plan", None)
    outcome["audit_events"] = _approval_events(outcome, module.check_mode, None, params["change_ref"])
    outcome["changed"] = False
    return outcome


def _approval_events(
    outcome: dict[str, Any], check_mode: bool, failure: str | None, change_ref: str | None
) -> list[dict[str, Any]]:
    """One ``approve`` event per offered approval: success when it counts, refused (with why) when not."""
    digest = outcome.get("digest")
    key_ref = f"plan/{digest}"
    ref = outcome.get("change_ref") or change_ref
    events = []
    for approval in outcome.get("approvals") or []:
        detail = {"plan_digest": digest}
        if failure:
            detail["outcome_reason"] = "quorum not met"
        events.append(
            audit_event(
                "approve",
                BACKEND,
                key_ref,
                "refused" if failure else "success",
                check_mode,
                change_ref=ref,
                approvals=[approval],
                detail=detail,
            )
        )
    for item in outcome.get("rejected") or []:
        events.append(
            audit_event(
                "approve",
                BACKEND,
                key_ref,
                "refused",
                check_mode,
                change_ref=ref,
                approvals=[{"approver": item.get("principal"), "principal": item.get("principal")}],
                detail={"plan_digest": digest, "outcome_reason": item["reason"][:256]},
            )
        )
    if not events and failure:
        events.append(
            audit_event(
                "approve",
                BACKEND,
                key_ref,
                "refused",
                check_mode,
                change_ref=ref,
                detail={"plan_digest": digest, "outcome_reason": failure[:256]},
            )
        )
    return events


def _record_denial(module: Any) -> dict[str, Any]:
    params = module.params
    plan = params["plan"]
    if plan is None and params["plan_path"]:
        plan = dc.load_plan(params["plan_path"])[0]
    plan = plan or {}
    digest = plan.get("digest") or params["digest"]
    reason = params["denial_reason"] or "the approval was denied or timed out"
    who = (
        [{"approver": params["denied_by"], "principal": params["denied_by"], "source": params["source"]}]
        if params["denied_by"]
        else []
    )
    event = audit_event(
        "deny",
        BACKEND,
        f"plan/{digest}",
        "refused",
        module.check_mode,
        change_ref=plan.get("change_ref") or params["change_ref"],
        approvals=who,
        detail={"plan_digest": digest, "outcome_reason": reason[:256]},
    )
    return {
        "changed": False,
        "digest": digest,
        "approvals": [],
        "rejected": [],
        "denied": True,
        "audit_events": [event],
        "awx_workflow_job_id": params["awx_workflow_job_id"],
    }
