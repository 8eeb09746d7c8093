#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vault_transit_key_info
short_description: Inventory every transit key of a Vault or OpenBao server as KeyRecords
description:
  - Lists every key of every transit mount (discovered from the server, or the mounts given) and reads each
    one, with a pool of parallel readers so thousands of keys take seconds.
  - Returns one KeyRecord per key - versions with their creation times, configuration flags and policy findings
    (unapproved type, exportable, plaintext backup allowed, deletion allowed, no automatic rotation, rotation
    overdue, name outside the naming rule).
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.vault
options:
  mounts:
    description: The transit mounts to read; every mount of type transit when left out (needs C(sys/mounts) read).
    type: list
    elements: str
  names:
    description: Only these keys (in every mount read); all keys when left out.
    type: list
    elements: str
  key_classes:
    description: Key class per key name, for keys whose name does not say it (a master KEK, for example).
    type: dict
    default: {}
  policy:
    description: Overrides of the key-management policy used for the findings.
    type: dict
  workers:
    description: Parallel reads.
    type: int
    default: 8
attributes:
  check_mode:
    support: full
    details: Read only.
  diff_mode:
    support: none
  idempotent:
    support: full
notes:
  - Vault returns no version creation times for V(hmac) keys; their C(created) is empty.
seealso:
  - module: keyops.runbooks.vault_transit_key
"""

EXAMPLES = r"""
- name: Inventory every transit key
  keyops.runbooks.vault_transit_key_info:
  register: transit_inventory

- name: Inventory the payments mount, naming the master KEK's class
  keyops.runbooks.vault_transit_key_info:
    mounts: [transit-payments]
    key_classes:
      prod-payments-kek-20261203: master-kek
"""

RETURN = r"""
keys:
  description: One KeyRecord per key (DESIGN.md field order), plus C(key_ref), C(mount), C(version_times) and the
    minimum version and flag settings.
  returned: always
  type: list
  elements: dict
  sample: [{id: "http://127.0.0.1:8200/v1/transit/keys/prod-payments-kek-20261203",
            name: prod-payments-kek-20261203, backend: vault_transit, location: "http://127.0.0.1:8200/v1/transit",
            key_class: kek, algorithm: aes256-gcm96, length_bits: 256, created: "2026-12-03T10:00:00Z",
            last_rotated: "2026-12-03T11:00:00Z", rotation_period_days: 30, versions: 2, state: enabled,
            exportable: false, findings: [], key_ref: transit/prod-payments-kek-20261203,
            version_times: {"1": "2026-12-03T10:00:00Z", "2": "2026-12-03T11:00:00Z"}, min_decryption_version: 1}]
mounts:
  description: The transit mounts read.
  returned: always
  type: list
  elements: str
  sample: [transit]
missing:
  description: Keys listed but gone when read (deleted meanwhile).
  returned: always
  type: list
  elements: dict
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import VAULT_REQUIRED_IF
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_transit import KEY_INFO_ARGSPEC, key_info


def main() -> None:
    module = AnsibleModule(argument_spec=KEY_INFO_ARGSPEC, required_if=VAULT_REQUIRED_IF, supports_check_mode=True)
    run_module(module, lambda current: key_info(current.params))


if __name__ == "__main__":
    main()
