#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: pkcs11_key_info
short_description: List every key object on a PKCS#11 token as KeyRecords
description:
  - Returns every key object on the token (secret, private and public keys) as a KeyRecord, with its attributes
    (class, key type, size or curve, label, CKA_ID, extractable, sensitive, never-extractable, local, start and
    end dates).
  - Findings flag labels outside the naming rule, session objects, extractable keys, keys that are not
    sensitive, unapproved algorithms and ended cryptoperiods.
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.pkcs11
options:
  label:
    description: Only objects with exactly this label.
    type: str
  object_classes:
    description: Only these object classes. All three by default.
    type: list
    elements: str
    choices: [secret_key, private_key, public_key]
  policy:
    description: Overrides of the key-management policy (approved algorithms are read from it).
    type: dict
attributes:
  check_mode:
    support: full
    details: Only reads.
  diff_mode:
    support: none
  idempotent:
    support: full
notes:
  - SoftHSM2 up to 2.6 cannot read CKA_START_DATE and CKA_END_DATE back from private objects; such records have
    C(dates_readable=false) and a finding of severity C(info).
seealso:
  - module: keyops.runbooks.pkcs11_key
"""

EXAMPLES = r"""
- name: Inventory the HSM token
  keyops.runbooks.pkcs11_key_info:
    token_label: prod-hsm-a
  register: hsm_inventory

- name: Show the extractable keys
  ansible.builtin.debug:
    msg: "{{ hsm_inventory['keys'] | selectattr('extractable') | map(attribute='name') | list }}"
"""

RETURN = r"""
keys:
  description: One KeyRecord per key object, with the token attributes as extra fields.
  returned: always
  type: list
  elements: dict
  sample:
    - id: "pkcs11:token=prod-hsm-a;object=prod-payments-kek-20261203;id=%5e%1f;type=secret-key"
      name: prod-payments-kek-20261203
      backend: pkcs11
      location: prod-hsm-a (serial c9999047dde97ad2)
      key_class: kek
      algorithm: AES-256
      length_bits: 256
      created: "2026-12-03T00:00:00Z"
      expires: "2028-12-02T00:00:00Z"
      state: enabled
      exportable: false
      findings: []
      object_class: secret_key
      key_type: AES
      cka_id: 5e1f
      extractable: false
      sensitive: true
      never_extractable: true
      local: true
      start_date: "2026-12-03"
      end_date: "2028-12-02"
      dates_readable: true
count:
  description: Number of records.
  returned: always
  type: int
  sample: 42
token:
  description: The token that was read.
  returned: always
  type: dict
  sample: {label: prod-hsm-a, serial: c9999047dde97ad2}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.pkcs11_ops import INFO_ARGSPEC, info_handler


def main() -> None:
    module = AnsibleModule(argument_spec=INFO_ARGSPEC, supports_check_mode=True)
    run_module(module, info_handler)


if __name__ == "__main__":
    main()
