#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: change_plan
short_description: Write the change plan of a check-mode run, or refuse an apply run whose plan differs
version_added: 0.1.0
description:
  - "Collects the actions a check-mode run would take from the registered results of its tasks (the audit events
    with C(check_mode=true) and outcome C(planned)) into a change plan: the actions with their targets, key classes,
    before and intended after states, the requester, the change reference, when it was made and when it expires,
    and the SHA-256 digest of its canonical JSON form."
  - With O(state=present) it writes the plan file (canonical JSON, mode 0600, written atomically). Approvers sign
    that file with C(ssh-keygen -Y sign -n keyops-plan); see M(keyops.runbooks.approval_verify).
  - With O(state=verify) it is the guard of the apply run, which recomputes the plan from the apply run's own check-mode
    results; the module refuses, saying what differs, when that is not the approved plan.
  - "Which actions need approval is policy (O(policy), defaults in the collection's policy): anything on a master key,
    any export, destroy, schedule deletion, compromise response, trim, raising the minimum decryption version."
options:
  results:
    description:
      - The registered results of the check-mode tasks, one entry per task (a looped task's result with its
        C(results) list is fine).
      - Failed results make the module fail, because a plan is only made from a clean run.
    type: list
    elements: raw
    required: true
  path:
    description:
      - With O(state=present), where to write the plan file.
      - With O(state=verify), the approved plan file to compare with.
    type: path
  approved_plan:
    description:
      - With O(state=verify), the approved plan as a dict instead of a file, for example the C(keyops_plan) artifact an
        AWX plan job passed to the apply job with C(set_stats).
    type: dict
  state:
    description:
      - V(present) writes the plan file; V(verify) compares the recomputed plan with the approved one.
    type: str
    choices: [present, verify]
    default: present
  requester:
    description:
      - Who asks for the change, as the principal used in the approvers' allowed-signers file (or the AWX user name).
        The requester's own approval never counts.
      - Required with O(state=present). With O(state=verify) it defaults to the approved plan's requester.
    type: str
  change_ref:
    description:
      - The change or incident reference the plan is made for, for example C(CHG-2041).
      - Required with O(state=present). With O(state=verify) it defaults to the approved plan's reference.
    type: str
  validity_hours:
    description:
      - How long the plan, and so every approval of it, stays valid.
    type: float
    default: 24
  volatile_fields:
    description:
      - State fields left out of the plan's actions because a check-mode run estimates them from the clock or from
        live traffic (a deletion date, a count of data keys), so the apply run could not reproduce them.
      - The default is C(deletion_date), C(last_rotated), C(not_after), C(end_date), C(count), C(rewrapped),
        C(reencrypted), C(failed), C(skipped), C(total), C(histogram).
    type: list
    elements: str
  policy:
    description:
      - Policy overrides (same shape as the collection's default policy); C(approval_required_actions) and
        C(approval_required_classes) decide which actions need approval.
    type: dict
    default: {}
extends_documentation_fragment:
  - keyops.runbooks.attributes
attributes:
  check_mode:
    support: full
    details: In check mode the plan is computed and returned but not written. Roles run this module with
      C(check_mode=false) so that a check-mode playbook run still writes its plan.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: A plan file that already holds the same digest and has not expired is left untouched, so signatures
      already made over it stay valid.
notes:
  - The plan's actions are what approvals cover. Before a dual-controlled action every key-changing module checks
    that the plan its approvals carry holds that action (the action name of the module's own planned audit event,
    on the same C(key_ref)), so an approval of one plan never covers an action outside it.
  - The digest covers format, requester, change reference, actions, targets, key classes and whether approval is
    needed. C(created) and C(expires) are outside the digest (the apply run cannot reproduce them) but inside the
    signed file, so an approver's signature covers them.
seealso:
  - module: keyops.runbooks.approval_verify
  - name: Dual control guide
    description: How plans are made, signed and applied (docs/dual_control.md in the collection).
    link: https://example.invalid/keyops/runbooks/docs/dual_control.md
author: keyops maintainers (@keyops)
"""

EXAMPLES = r"""
- name: Plan the rotation of a master key in check mode
  keyops.runbooks.vault_transit_key:
    name: prod-payments-kek-20261203
    rotate: true
  check_mode: true
  register: rotate_plan

- name: Write the change plan for the approvers
  keyops.runbooks.change_plan:
    results:
      - "{{ rotate_plan }}"
    path: /srv/keyops/plans/CHG-2041.json
    requester: operator@example.com
    change_ref: CHG-2041
  check_mode: false
  register: plan

- name: Refuse to apply unless the recomputed plan is the approved one
  keyops.runbooks.change_plan:
    results:
      - "{{ rotate_recheck }}"
    path: /srv/keyops/plans/CHG-2041.json
    state: verify
"""

RETURN = r"""
digest:
  description: SHA-256 (hex) of the plan's canonical form, the value approvals are bound to; each module recomputes it
    from the plan its approvals carry.
  returned: always
  type: str
  sample: a74d67160ccfa9ffbfc43ad8c6faaf7921b7ac0eeb14a4dbf5cca611a1e36889
path:
  description: The plan file written or compared.
  returned: when O(path) is set
  type: str
  sample: /srv/keyops/plans/CHG-2041.json
plan:
  description: The whole plan (with O(state=verify), the recomputed one).
  returned: always
  type: dict
  sample: {format: keyops-plan/1, requester: operator@example.com, change_ref: CHG-2041, actions: [],
           targets: [], key_classes: [], requires_approval: false, created: "2026-12-03T18:00:00Z",
           expires: "2026-12-04T18:00:00Z", digest: a74d6716...}
actions:
  description: The planned actions (action, backend, key_ref, key_class, requires_approval, before, after).
  returned: always
  type: list
  elements: dict
  sample: [{action: rotate, backend: vault_transit, key_ref: transit/prod-payments-kek-20261203,
            key_class: master-kek, requires_approval: true, before: {latest_version: 1},
            after: {latest_version: 2}}]
requires_approval:
  description: Whether any planned action is under dual control.
  returned: always
  type: bool
  sample: true
expires:
  description: When the plan and its approvals stop being valid (ISO 8601, UTC).
  returned: always
  type: str
  sample: "2026-12-04T18:00:00Z"
differences:
  description: With O(state=verify), how the recomputed plan differs from the approved one (empty when it matches).
  returned: when O(state=verify)
  type: list
  elements: str
  sample: []
audit_events:
  description: One C(plan) event (O(state=present)) or C(verify) event (O(state=verify)) naming the plan digest.
  returned: always
  type: list
  elements: dict
  sample: [{action: plan, backend: keyops, key_ref: plan/a74d6716..., outcome: success, check_mode: false,
            detail: {plan_digest: a74d6716..., count: 1, requires_approval: true}}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._dual_control import change_plan as handle
from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "results": {"type": "list", "elements": "raw", "required": True},
            "path": {"type": "path"},
            "approved_plan": {"type": "dict"},
            "state": {"type": "str", "choices": ["present", "verify"], "default": "present"},
            "requester": {"type": "str"},
            "change_ref": {"type": "str"},
            "validity_hours": {"type": "float", "default": 24},
            "volatile_fields": {"type": "list", "elements": "str"},
            "policy": {"type": "dict", "default": {}},
        },
        required_if=[("state", "present", ("path", "requester", "change_ref"))],
        mutually_exclusive=[("path", "approved_plan")],
        required_one_of=[("path", "approved_plan")],
        supports_check_mode=True,
    )
    run_module(module, handle)


if __name__ == "__main__":
    main()
