# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dual control: change plans, plan digests and approval checks."""

from __future__ import annotations

from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import PolicyViolation
from ansible_collections.keyops.runbooks.plugins.module_utils.policy import merged_policy, requires_approval


def require_approvals(
    action: str,
    key_ref: str,
    key_class: str | None,
    approvals: list[dict[str, Any]] | None,
    check_mode: bool,
    policy: dict[str, Any] | None = None,
) -> None:
    """Refuse a dual-controlled action that arrives without a quorum of verified approvals.

    Check mode only plans, so it is never refused: that is how the plan to approve gets made.
    """
    if check_mode or not requires_approval(action, key_class, policy):
        return
    quorum = merged_policy(policy)["approval_quorum"]
    verified = [approval for approval in approvals or [] if approval.get("verified") and approval.get("digest")]
    approvers = {approval.get("approver") for approval in verified}
    digests = {approval.get("digest") for approval in verified}
    if len(approvers) < quorum or len(digests) != 1:
        raise PolicyViolation(
            action.replace("_", " ").capitalize(),
            key_ref,
            f"this action is under dual control and has {len(approvers)} verified approver(s) of {quorum} needed",
            "Run the plan in check mode, have two approvers sign its digest, and pass the approvals returned by "
            "keyops.runbooks.approval_verify",
        )
