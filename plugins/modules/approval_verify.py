#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: approval_verify
short_description: Verify the approvals of a change plan against the dual-control rules
version_added: 0.1.0
description:
  - Checks approvers' SSH signatures over a change plan file (made with C(ssh-keygen -Y sign -n keyops-plan)) against
    an allowed-signers file and the rules, and returns the approvals that count, in the shape every key-changing
    module takes in its O(ignore:approvals) option.
  - "The rules: a quorum of distinct approvers (O(quorum), 2 by default); none of them the plan's requester; each in
    the approvers file and allowed there for every key class the dual-controlled actions touch; each key inside its
    C(valid-after)/C(valid-before) window in the allowed-signers file; the plan not expired; every signature over this
    exact plan file, whose digest is the one the apply run recomputed (O(digest)); one approver and one key count once."
  - With O(source=awx) the approvals are the approvers of an AWX workflow's approval nodes, passed in
    O(awx_approvals) from the apply job; the same rules apply to them.
  - With O(state=denied) it records that the plan was denied or that its approval timed out (a C(deny) audit event).
  - Every refusal says why, per offered approval; every offered approval becomes an C(approve) audit event.
options:
  source:
    description:
      - Where the approvals come from. V(ssh) verifies signature files; V(awx) takes the approvers of an AWX
        workflow's approval nodes.
    type: str
    choices: [ssh, awx]
    default: ssh
  state:
    description:
      - V(verified) verifies the approvals and fails unless they reach the quorum. V(denied) records a denial.
    type: str
    choices: [verified, denied]
    default: verified
  plan_path:
    description:
      - The plan file the approvers signed, as written by M(keyops.runbooks.change_plan). Required with O(source=ssh).
    type: path
  plan:
    description:
      - The plan as a dict (the C(keyops_plan) artifact an AWX plan job passed on with C(set_stats)).
      - Used with O(source=awx) and O(state=denied).
    type: dict
  signatures:
    description:
      - The approvers' signature files over O(plan_path), one per approver.
    type: list
    elements: path
    default: []
  allowed_signers:
    description:
      - The allowed-signers file (ssh-keygen(1), ALLOWED SIGNERS) listing each approver's principal and public key,
        with C(namespaces="keyops-plan") and C(valid-before) to bound the key's use.
    type: path
  approvers_file:
    description:
      - YAML mapping each approver's principal to its C(team), the C(key_classes) it may approve (C(*) for all, and the
        only way to approve actions on unclassified keys), an optional C(name) and C(awx_user).
      - Required with O(state=verified).
    type: path
  digest:
    description:
      - The plan digest the apply run recomputed (RV(keyops.runbooks.change_plan#module:digest) with
        C(state=verify)). When set, the plan must have exactly this digest.
    type: str
  quorum:
    description:
      - How many distinct approvers must approve. Defaults to the policy's C(approval_quorum) (2).
    type: int
  require_distinct_teams:
    description:
      - Count at most one approver per team. Defaults to the policy's C(approval_distinct_teams) when set, else
        V(false) for O(source=ssh) and V(true) for O(source=awx).
    type: bool
  awx_workflow_job_id:
    description:
      - The AWX workflow job the apply job runs in (AWX sets the C(awx_workflow_job_id) extra var). Required with
        O(source=awx).
    type: str
  awx_approvals:
    description:
      - The approvals of the workflow's approval nodes, each C({approver, team, node, approved_at}) with the AWX user
        name that approved the node.
    type: list
    elements: dict
    default: []
  denied_by:
    description:
      - With O(state=denied), who denied the plan, when known.
    type: str
  denial_reason:
    description:
      - With O(state=denied), why, for example C(approval node timed out).
    type: str
  change_ref:
    description:
      - The change reference written into the audit events when the plan does not carry one.
    type: str
  policy:
    description:
      - Policy overrides (same shape as the collection's default policy).
    type: dict
    default: {}
extends_documentation_fragment:
  - keyops.runbooks.attributes
attributes:
  check_mode:
    support: full
    details: Verification only reads; it runs the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
notes:
  - SSH signatures carry no time of signing; RV(approvals)'s C(signed_at) is the signature file's modification time, for
    the record only. Expiry is enforced by the plan's C(expires) and the keys' C(valid-before) instead.
  - With O(source=awx), AWX enforces that the approval nodes were approved before the apply job ran; the names in
    O(awx_approvals) are taken as given (the dual_control role reads them from the controller's API when it has a
    controller credential). The rules above are then applied to those names.
  - The key-changing modules re-verify the returned approvals with the allowed-signers and approvers files they
    trust - the environment variables C(KEYOPS_ALLOWED_SIGNERS) and C(KEYOPS_APPROVERS_FILE), else the policy's
    C(allowed_signers) and C(approvers_file) - not with the files given here. AWX approvals carry no signature; the
    modules accept them only when their policy sets C(accept_awx_approvals=true).
  - Allowed-signers entries must name their principals literally; wildcard principals and certificate authorities
    are accepted by ssh-keygen but cannot be matched to an approvers-file entry.
requirements:
  - ssh-keygen (OpenSSH 8.9 or later) on the host that runs the module, for O(source=ssh).
seealso:
  - module: keyops.runbooks.change_plan
author: keyops maintainers (@keyops)
"""

EXAMPLES = r"""
- name: Verify two approvers' signatures over the approved plan
  keyops.runbooks.approval_verify:
    plan_path: /srv/keyops/plans/CHG-2041.json
    signatures:
      - /srv/keyops/plans/CHG-2041.json.alice@example.com.sig
      - /srv/keyops/plans/CHG-2041.json.bob@example.com.sig
    allowed_signers: /etc/keyops/allowed_signers
    approvers_file: /etc/keyops/approvers.yml
    digest: "{{ recomputed.digest }}"
  register: approved

- name: Rotate the master key under the verified approvals
  keyops.runbooks.vault_transit_key:
    name: prod-payments-kek-20261203
    rotate: true
    change_ref: CHG-2041
    approvals: "{{ approved.approvals }}"

- name: Record that the change was denied in AWX
  keyops.runbooks.approval_verify:
    state: denied
    source: awx
    plan: "{{ keyops_plan }}"
    approvers_file: /etc/keyops/approvers.yml
    awx_workflow_job_id: "{{ awx_workflow_job_id }}"
    denial_reason: approval node denied or timed out
"""

RETURN = r"""
approvals:
  description:
    - The approvals that count, ready for the O(ignore:approvals) option of the key-changing modules. Pass them
      unchanged.
    - Each carries what a module needs to check it again on its own before a dual-controlled action (all public
      data, no secret) - C(plan_text) (the exact plan file the approvers signed) and C(plan_path); C(principal); for
      C(source=ssh) the C(signature) text; for C(source=awx) C(awx_workflow_job_id) and C(node). The module recomputes
      the plan's digest, checks its expiry and that it holds the module's own action on that key, re-verifies each
      signature with C(ssh-keygen -Y verify) against its trusted allowed-signers file and applies the same rules.
      C(verified) is informational; no module trusts it.
  returned: always
  type: list
  elements: dict
  sample: [{approver: alice@example.com, principal: alice@example.com, name: Alice, team: security,
            key_fingerprint: "SHA256:t7U6du3JXqcQ0tWkTkoutT48ioKaVlatDEkWUFajm5o", digest: a74d6716...,
            signed_at: "2026-12-03T18:06:12Z", source: ssh, verified: true,
            plan_path: /srv/keyops/plans/CHG-2041.json, plan_text: "{\"actions\":[...],...}\n",
            signature: "-----BEGIN SSH SIGNATURE-----\n...\n-----END SSH SIGNATURE-----\n"}]
rejected:
  description: Every offered approval that does not count, and why.
  returned: always
  type: list
  elements: dict
  sample: [{signature: CHG-2041.json.carol.sig, principal: carol@example.com,
            reason: "not allowed to approve changes to key class master-kek (approvers file)"}]
digest:
  description: The digest of the approved plan.
  returned: always
  type: str
  sample: a74d67160ccfa9ffbfc43ad8c6faaf7921b7ac0eeb14a4dbf5cca611a1e36889
requester:
  description: Who asked for the change (the plan's requester).
  returned: when O(state=verified)
  type: str
  sample: operator@example.com
change_ref:
  description: The plan's change reference.
  returned: when O(state=verified)
  type: str
  sample: CHG-2041
required:
  description: Whether the plan holds any dual-controlled action (when not, zero approvals pass).
  returned: when O(state=verified)
  type: bool
  sample: true
quorum:
  description: The number of distinct approvers that was needed.
  returned: when O(state=verified)
  type: int
  sample: 2
verified_at:
  description: When the approvals were verified (ISO 8601, UTC).
  returned: when O(state=verified)
  type: str
  sample: "2026-12-03T18:10:00Z"
denied:
  description: True when the module recorded a denial.
  returned: when O(state=denied)
  type: bool
  sample: true
awx_workflow_job_id:
  description: The AWX workflow job the approvals came from.
  returned: when O(source=awx)
  type: str
  sample: "4711"
audit_events:
  description: One C(approve) event per offered approval (success or refused, with the reason), or one C(deny) event.
  returned: always, and in the failure result when the approvals are refused
  type: list
  elements: dict
  sample: [{action: approve, backend: keyops, key_ref: plan/a74d6716..., outcome: success, check_mode: false,
            approvals: [{approver: alice@example.com, digest: a74d6716..., source: ssh}],
            detail: {plan_digest: a74d6716...}}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._dual_control import approval_verify as handle
from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "source": {"type": "str", "choices": ["ssh", "awx"], "default": "ssh"},
            "state": {"type": "str", "choices": ["verified", "denied"], "default": "verified"},
            "plan_path": {"type": "path"},
            "plan": {"type": "dict"},
            "signatures": {"type": "list", "elements": "path", "default": []},
            "allowed_signers": {"type": "path"},
            "approvers_file": {"type": "path"},
            "digest": {"type": "str"},
            "quorum": {"type": "int"},
            "require_distinct_teams": {"type": "bool"},
            "awx_workflow_job_id": {"type": "str"},
            "awx_approvals": {"type": "list", "elements": "dict", "default": []},
            "denied_by": {"type": "str"},
            "denial_reason": {"type": "str"},
            "change_ref": {"type": "str"},
            "policy": {"type": "dict", "default": {}},
        },
        mutually_exclusive=[("plan_path", "plan")],
        required_if=[("state", "verified", ("approvers_file",))],
        supports_check_mode=True,
    )
    run_module(module, handle)


if __name__ == "__main__":
    main()
