#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: pkcs11_key
short_description: Generate, rotate and destroy keys in an HSM over PKCS#11
description:
  - Generates AES-256 keys and RSA-3072, RSA-4096, EC P-256 and EC P-384 key pairs as token objects (never session
    objects), sensitive and non-extractable unless asked otherwise, with a label, a CKA_ID and start and end dates
    for the cryptoperiod.
  - A key is identified by its label and CKA_ID. Creating is idempotent on that pair. When more than one object of
    a class matches, or another key already has the label or the id, the module fails and lists the candidates;
    it never picks one.
  - Every new key is read back from a fresh session and its class, algorithm, token, sensitive and extractable
    attributes are compared with the request before the module reports success.
  - O(keys[].state=rotated) creates a successor under a new dated label and id, sets the old key's end date to
    today and reports both.
  - O(keys[].state=absent) destroys the key (both halves of a pair) that matches label and id exactly. It is under
    dual control and needs O(approvals).
  - Any change to a key of class C(master-kek) needs O(approvals).
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.pkcs11
  - keyops.runbooks.audit
options:
  keys:
    description: The keys to manage, in order. Modules take lists so a change window does not loop.
    type: list
    elements: dict
    required: true
    suboptions:
      label:
        description:
          - CKA_LABEL. New keys must follow the naming rule C(ENV-PURPOSE-TYPE-YYYYMMDD) unless
            O(policy) sets C(naming_rule) to V(false).
        type: str
        required: true
      id:
        description:
          - CKA_ID as hex.
          - When left out, the first 8 bytes of the SHA-256 of the label are used, so a rerun finds the same key.
          - Required with O(keys[].state=absent), so that only the exact key can be destroyed.
        type: str
      algorithm:
        description:
          - The key to make. Defaults to V(AES-256) for new keys and to the old key's algorithm on rotation.
        type: str
        choices: [AES-256, RSA-3072, RSA-4096, EC-P256, EC-P384]
      state:
        description: V(present) creates, V(rotated) makes a successor, V(absent) destroys.
        type: str
        choices: [present, absent, rotated]
        default: present
      key_class:
        description:
          - The key class; when left out it is read from the label's TYPE (a C(kek) whose purpose contains
            C(master) is a C(master-kek)).
          - Chooses the default cryptoperiod and whether changes need approvals.
        type: str
        choices: [master-kek, kek, dek, signing, transport, tls-cert]
      extractable:
        description: Sets CKA_EXTRACTABLE. Only extractable keys can go into a wrapped backup.
        type: bool
        default: false
      sensitive:
        description: Sets CKA_SENSITIVE on the secret or private key.
        type: bool
        default: true
      start_date:
        description: CKA_START_DATE (YYYY-MM-DD) of a new key. Defaults to today (UTC).
        type: str
      end_date:
        description:
          - CKA_END_DATE (YYYY-MM-DD) of a new key.
          - Defaults to the start date plus O(keys[].cryptoperiod_days), or plus the policy's cryptoperiod of the
            key class.
        type: str
      cryptoperiod_days:
        description: Days from the start date to the end date, overriding the policy's value for the key class.
        type: int
      successor_label:
        description: Label of the successor on rotation. Defaults to the label with today's date.
        type: str
      successor_id:
        description: CKA_ID (hex) of the successor. Defaults to one derived from O(keys[].successor_label).
        type: str
  policy:
    description: Overrides of the key-management policy (same shape as the collection's default policy).
    type: dict
attributes:
  check_mode:
    support: full
    details: Reads the token and reports the real plan, with audit events of outcome C(planned).
  diff_mode:
    support: full
    details: Before and after hold labels, ids, algorithms, object classes and end dates, never key material.
  idempotent:
    support: full
    details: Keys are found by label and CKA_ID; a rotation is done once its successor exists.
notes:
  - SoftHSM2 up to 2.6 cannot read CKA_START_DATE and CKA_END_DATE back from private objects (secret and private
    keys); the dates are written, and on key pairs they can be read from the public key.
    M(keyops.runbooks.pkcs11_key_info) reports such dates as unreadable.
  - A rotation's check for an existing successor is by its label and id; rotating twice on the same day needs an
    explicit O(keys[].successor_label).
  - Object handles listed with a duplicate-match error are only valid in the session that listed them.
seealso:
  - module: keyops.runbooks.pkcs11_key_info
  - module: keyops.runbooks.pkcs11_key_backup
  - module: keyops.runbooks.approval_verify
"""

EXAMPLES = r"""
- name: Create the payments KEK and a signing key pair
  keyops.runbooks.pkcs11_key:
    token_label: prod-hsm-a
    keys:
      - label: prod-payments-kek-20261203
        algorithm: AES-256
      - label: prod-invoices-sign-20261203
        algorithm: EC-P384
    change_ref: CHG-2041

- name: Rotate the payments KEK (the old key's end date becomes today)
  keyops.runbooks.pkcs11_key:
    keys:
      - label: prod-payments-kek-20261203
        state: rotated
    change_ref: CHG-2077

- name: Destroy the retired KEK by exact label and id, under dual control
  keyops.runbooks.pkcs11_key:
    keys:
      - label: prod-payments-kek-20241203
        id: 5e1f0a2b3c4d5e6f
        state: absent
    change_ref: CHG-2090
    approvals: "{{ verified.approvals }}"
"""

RETURN = r"""
keys:
  description: One entry per item of O(keys), in order.
  returned: always
  type: list
  elements: dict
  sample:
    - label: prod-payments-kek-20261203
      id: 5e1f0a2b3c4d5e6f
      uri: "pkcs11:token=prod-hsm-a;object=prod-payments-kek-20261203;id=%5e%1f%0a%2b%3c%4d%5e%6f"
      state: rotated
      action: rotate
      changed: true
      key_class: kek
      previous: {label: prod-payments-kek-20261203, id: 5e1f0a2b3c4d5e6f, end_date: "2027-03-01"}
      successor: {label: prod-payments-kek-20270301, id: 0c9d8e7f6a5b4c3d}
audit_events:
  description: One audit event per key (create, rotate or destroy).
  returned: always
  type: list
  elements: dict
  sample:
    - {action: create, backend: pkcs11, outcome: changed, check_mode: false, key_ref: "pkcs11:token=...",
       before: {exists: false}, after: {exists: true, algorithm: AES-256}, change_ref: CHG-2041, approvals: [],
       detail: {key_class: kek, location: prod-hsm-a}}
token:
  description: The token the module worked on.
  returned: always
  type: dict
  sample: {label: prod-hsm-a, serial: c9999047dde97ad2}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import AUDIT_ARGSPEC
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.pkcs11 import PKCS11_ARGSPEC
from ansible_collections.keyops.runbooks.plugins.module_utils.pkcs11_ops import KEY_ITEM_SPEC, key_handler


def main() -> None:
    argument_spec = dict(
        keys=dict(type="list", elements="dict", required=True, options=KEY_ITEM_SPEC, no_log=False),
        policy=dict(type="dict"),
        **PKCS11_ARGSPEC,
        **AUDIT_ARGSPEC,
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, key_handler)


if __name__ == "__main__":
    main()
