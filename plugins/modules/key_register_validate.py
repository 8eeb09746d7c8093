#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: key_register_validate
short_description: Check the key register YAML against its schema, with the line and field of every error
version_added: 0.1.0
author: keyops maintainers (@keyops)
description:
  - Reads the key register (the YAML file that says which keys the company believes it has) and checks every entry
    against the schema documented in C(docs/inventory.md) - required fields, types, key classes, backends, unknown
    or misspelt fields, entries registered twice.
  - "Reports every error at once, each as C(line N, field 'X' (key 'name'): what is wrong), so a pull request that
    breaks the register can be fixed in one go."
options:
  path:
    description: The register YAML file.
    type: path
    required: true
  fail_on_error:
    description:
      - Fail the task when the register has any schema error.
      - With V(false), return the errors in RV(errors) and RV(valid=false) instead.
    type: bool
    default: true
extends_documentation_fragment:
  - keyops.runbooks.attributes
attributes:
  check_mode:
    support: full
    details: Only reads.
  diff_mode:
    support: none
  idempotent:
    support: full
seealso:
  - module: keyops.runbooks.key_inventory_report
"""

EXAMPLES = r"""
- name: Check the register before the inventory runs
  keyops.runbooks.key_register_validate:
    path: /srv/keyops/key-register.yml

- name: Collect register errors for a pull-request comment
  keyops.runbooks.key_register_validate:
    path: key-register.yml
    fail_on_error: false
  register: register_check
"""

RETURN = r"""
valid:
  description: Whether the register has no schema error.
  returned: always
  type: bool
  sample: false
errors:
  description: Every schema error, in line order.
  returned: always
  type: list
  elements: dict
  sample:
    - {line: 14, field: key_clas, key: prod-payments-kek-20261203,
       message: "is not a register field; did you mean 'key_class'?"}
count:
  description: How many entries are valid.
  returned: always
  type: int
  sample: 24
keys:
  description: The valid entries, with the line each starts on.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: prod-payments-kek-20261203, backend: vault_transit, location: transit, key_class: kek, owner: payments,
       custodians: [alice, bob], purpose: wraps payment data keys, algorithm: aes256-gcm96,
       rotation_period_days: 365, backup_location: "s3://keyops-backups/vault", key_id: null,
       data_key_stores: [], notes: null, line: 3}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.inventory_report import register_validation


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "fail_on_error": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    run_module(module, lambda current: register_validation(current.params))


if __name__ == "__main__":
    main()
