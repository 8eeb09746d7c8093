#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: aws_kms_key_info
short_description: Inventory of the AWS KMS keys in a region as KeyRecords
version_added: 0.1.0
description:
  - Lists every key in the region (or the keys named in O(keys)), with aliases, tags, key spec, origin,
    manager, state, deletion date, rotation status and period, and the last rotation date from the rotation
    history.
  - The rotation status is V(enabled), V(disabled), V(not_applicable) (asymmetric, HMAC, imported or pending
    deletion keys) or V(unknown) when reading it was denied; a denied read is never reported as disabled.
  - Keys are described in parallel by a bounded pool of O(max_workers) threads sharing one client.
options:
  keys:
    description: Only these keys, each as key id, key ARN, alias name (C(alias/NAME)) or alias ARN.
    type: list
    elements: str
    default: []
  tags:
    description: Only keys carrying all of these tags with these values.
    type: dict
  customer_managed_only:
    description: Leave out keys that AWS manages.
    type: bool
    default: false
  max_workers:
    description: How many keys are described at once.
    type: int
    default: 8
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.aws
attributes:
  check_mode:
    support: full
    details: Read only; runs the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
notes:
  - A key whose DescribeKey is denied is left out with a warning; a denied read of tags, key policy or rotation
    status leaves that fact unknown with a warning.
seealso:
  - module: keyops.runbooks.aws_kms_key
author:
  - keyops maintainers (@keyops)
"""

EXAMPLES = r"""
- name: Read every customer managed key in the region
  keyops.runbooks.aws_kms_key_info:
    region: eu-central-1
    customer_managed_only: true
  register: kms_inventory

- name: Read the payments keys by alias and ARN
  keyops.runbooks.aws_kms_key_info:
    keys:
      - alias/prod-payments-kek-20261203
      - arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab

- name: Read the keys the payments team owns
  keyops.runbooks.aws_kms_key_info:
    tags:
      owner: payments-team
"""

RETURN = r"""
keys:
  description:
    - One KeyRecord per key (DESIGN.md field order), with the AWS facts added.
    - C(id) is the key ARN; C(state) is enabled, disabled or pending_deletion; C(versions) is the number of key
      materials (rotations + 1).
  returned: always
  type: list
  elements: dict
  sample: [{"id": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "name": "prod-payments-kek-20261203", "backend": "aws_kms", "location": "us-east-1/123456789012",
            "key_class": "kek", "owner": "payments-team", "algorithm": "SYMMETRIC_DEFAULT", "length_bits": 256,
            "created": "2026-12-03T10:00:00Z", "last_rotated": null, "rotation_period_days": 365,
            "state": "enabled", "arn": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "aliases": ["alias/prod-payments-kek-20261203"], "tags": {"owner": "payments-team"},
            "key_spec": "SYMMETRIC_DEFAULT", "origin": "AWS_KMS", "manager": "CUSTOMER", "key_state": "Enabled",
            "deletion_date": null, "rotation_status": "enabled", "rotation_enabled": true, "findings": []}]
count:
  description: How many keys are returned.
  returned: always
  type: int
  sample: 12
seconds:
  description: How long the inventory took.
  returned: always
  type: float
  sample: 1.4
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.aws_kms import (
    AWS_REQUIRED_TOGETHER,
    KEY_INFO_ARGSPEC,
    key_info,
)


def handle(module: AnsibleModule) -> dict:
    result = key_info(module.params)
    for warning in result.pop("warnings"):
        module.warn(warning)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=KEY_INFO_ARGSPEC, required_together=AWS_REQUIRED_TOGETHER, supports_check_mode=True
    )
    run_module(module, handle)


if __name__ == "__main__":
    main()
