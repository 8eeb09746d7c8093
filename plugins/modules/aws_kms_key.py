#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: aws_kms_key
short_description: Create, configure, rotate, disable and schedule deletion of customer managed AWS KMS keys
version_added: 0.1.0
description:
  - Creates a customer managed KMS key under an alias that follows the naming rule, with key spec, usage,
    description, tags (owner, purpose, key class) and key policy.
  - Enables or disables automatic rotation with a period, rotates on demand (optionally only when the last
    rotation is older than a number of days), enables or disables the key, schedules its deletion with a 7-30 day
    window and cancels a scheduled deletion.
  - The key is found by O(key) (any reference form) or, when O(key) is not given, by O(alias); a key that does
    not exist is created under O(alias).
  - Scheduling deletion is under dual control, and so is every change to a key of class C(master-kek) (from
    O(key_class) or the key's C(key-class) tag).
options:
  key:
    description:
      - An existing key, as key id, key ARN, alias name (C(alias/NAME)) or alias ARN.
      - The module fails when it does not exist; use O(alias) alone to create a key.
    type: str
  alias:
    description:
      - The alias of the key, C(alias/NAME) or C(NAME). Without O(key), the key this alias points to, or the
        alias a new key is created under.
      - A new alias must follow the naming rule C(ENV-PURPOSE-TYPE-YYYYMMDD) unless O(policy) sets
        C(naming_rule=false). With O(key), an alias pointing to another key is moved to this one.
    type: str
  state:
    description:
      - V(present) creates the key when missing and applies the other options.
      - V(absent) schedules deletion after O(deletion_window_days). A key already pending deletion is left as is.
    type: str
    choices: [present, absent]
    default: present
  enabled:
    description: Enable (V(true)) or disable (V(false)) the key. Unset leaves it as it is.
    type: bool
  key_spec:
    description:
      - The key spec of a new key. The policy approves V(SYMMETRIC_DEFAULT), V(RSA_3072), V(RSA_4096),
        V(ECC_NIST_P256), V(ECC_NIST_P384) and V(HMAC_256); others need O(allow_unapproved_algorithm).
      - Defaults to V(SYMMETRIC_DEFAULT) on creation. A key spec never changes; a different value for an existing
        key fails.
    type: str
  key_usage:
    description: The key usage of a new key. Defaults to the usual one for O(key_spec).
    type: str
    choices: [ENCRYPT_DECRYPT, SIGN_VERIFY, GENERATE_VERIFY_MAC, KEY_AGREEMENT]
  description:
    description: The key's description.
    type: str
  tags:
    description: Tags to set on the key (name to value).
    type: dict
  purge_tags:
    description: Remove tags that are not in O(tags), O(owner), O(purpose) or O(key_class).
    type: bool
    default: false
  owner:
    description: Sets the C(owner) tag.
    type: str
  purpose:
    description: Sets the C(purpose) tag.
    type: str
  key_class:
    description:
      - Sets the C(key-class) tag, and is the class the dual-control rules use.
    type: str
    choices: [master-kek, kek, dek, signing, transport, tls-cert]
  key_policy:
    description:
      - The key policy document (a dict or a JSON string). Compared as parsed JSON, so formatting differences do
        not count as changes.
    type: json
  rotation_enabled:
    description: Turn automatic rotation on or off. Only symmetric keys with KMS-generated material rotate.
    type: bool
  rotation_period_days:
    description:
      - The automatic rotation period, 90 to 2560 days. Setting it implies O(rotation_enabled=true).
    type: int
  rotate_now:
    description:
      - Rotate the key material on demand.
      - Without O(rotate_if_older_than_days) every run rotates (not idempotent).
    type: bool
    default: false
  rotate_if_older_than_days:
    description:
      - With O(rotate_now), rotate only when the last rotation (automatic or on demand) is at least this many
        days old, or the key was never rotated. Re-runs then change nothing.
    type: int
  deletion_window_days:
    description: The waiting period before deletion when O(state=absent), 7 to 30 days.
    type: int
    default: 30
  cancel_deletion:
    description:
      - Cancel a scheduled deletion. KMS leaves the key disabled afterwards; add O(enabled=true) to enable it.
      - Without it, O(state=present) on a key pending deletion fails rather than undo a deletion silently.
    type: bool
    default: false
  allow_unapproved_algorithm:
    description: Create a key with a key spec the policy does not approve (a warning is returned).
    type: bool
    default: false
  policy:
    description: Overrides of the key-management policy for this run (same shape as the collection's default).
    type: dict
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.aws
  - keyops.runbooks.audit
attributes:
  check_mode:
    support: full
    details: The plan is computed by reading the key; nothing changes.
  diff_mode:
    support: full
    details: Before and after of state, aliases, tags, key policy, rotation and deletion date.
  idempotent:
    support: partial
    details: Idempotent except O(rotate_now) without O(rotate_if_older_than_days), which rotates on every run.
notes:
  - KMS does not report the rotation period on every endpoint (moto does not); when it is not reported the
    module cannot confirm or correct the period and returns a warning.
  - Keys that AWS manages (C(alias/aws/...)) are read but never changed; the module fails with a clear message.
  - Creating a key or an alias is eventually consistent in AWS; the module reads the key back by its id.
seealso:
  - module: keyops.runbooks.aws_kms_key_info
  - module: keyops.runbooks.aws_kms_reencrypt
author:
  - keyops maintainers (@keyops)
"""

EXAMPLES = r"""
- name: Create the payments KEK with yearly automatic rotation
  keyops.runbooks.aws_kms_key:
    alias: alias/prod-payments-kek-20261203
    description: Wraps the payments data keys
    owner: payments-team
    purpose: payments
    key_class: kek
    rotation_period_days: 365
    change_ref: CHG-2041

- name: Rotate on demand unless rotated in the last 30 days
  keyops.runbooks.aws_kms_key:
    key: alias/prod-payments-kek-20261203
    rotate_now: true
    rotate_if_older_than_days: 30

- name: Disable the retired key
  keyops.runbooks.aws_kms_key:
    key: arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab
    enabled: false

- name: Schedule deletion of the retired key (dual control)
  keyops.runbooks.aws_kms_key:
    key: alias/prod-payments-kek-20231203
    state: absent
    deletion_window_days: 30
    change_ref: CHG-2042
    approvals: "{{ verified.approvals }}"

- name: Cancel the deletion and enable the key again
  keyops.runbooks.aws_kms_key:
    key: alias/prod-payments-kek-20231203
    cancel_deletion: true
    enabled: true
"""

RETURN = r"""
arn:
  description: The resolved key ARN (null when check mode plans a creation or nothing exists).
  returned: always
  type: str
  sample: arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab
key_id:
  description: The key id.
  returned: always
  type: str
  sample: 1234abcd-12ab-34cd-56ef-1234567890ab
key:
  description: The key after the run as a KeyRecord, with the AWS facts (arn, aliases, tags, key_spec, origin,
    manager, rotation_status, deletion_date) added.
  returned: when the key exists
  type: dict
  sample: {"id": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
           "name": "prod-payments-kek-20261203", "backend": "aws_kms", "state": "enabled",
           "rotation_status": "enabled", "algorithm": "SYMMETRIC_DEFAULT"}
actions:
  description: The steps taken (or planned in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: [create, alias, rotation]
audit_events:
  description: One audit event per step (outcome C(planned) in check mode), or one C(verify) event when nothing
    changed.
  returned: always
  type: list
  elements: dict
  sample: [{"action": "create", "backend": "aws_kms", "key_ref": "alias/prod-payments-kek-20261203",
            "outcome": "changed", "check_mode": false}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import AUDIT_ARGSPEC
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.aws_kms import (
    AWS_ARGSPEC,
    AWS_REQUIRED_TOGETHER,
    connect,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.kms_key import KEY_ARGSPEC, manage_key


def handle(module: AnsibleModule) -> dict:
    client = connect(module.params)
    return manage_key(client, module.params, module.check_mode, module.warn)


def main() -> None:
    module = AnsibleModule(
        argument_spec={**AWS_ARGSPEC, **AUDIT_ARGSPEC, **KEY_ARGSPEC},
        required_one_of=[["key", "alias"]],
        required_together=AWS_REQUIRED_TOGETHER,
        supports_check_mode=True,
    )
    run_module(module, handle)


if __name__ == "__main__":
    main()
