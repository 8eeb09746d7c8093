#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: pkcs11_key_restore
short_description: Unwrap a PKCS#11 key backup into a token and prove each key with a known-answer check
description:
  - Reads a backup written by M(keyops.runbooks.pkcs11_key_backup), checks every blob against the SHA-256 in
    its manifest, and unwraps the keys into the selected token (for restore tests, a scratch token) with the
    label, CKA_ID, extractability and dates the manifest records. Key pairs get their public key back as well.
  - After each key is restored, a fresh session runs a known-answer check. Secret keys encrypt and decrypt a
    random canary and must give the key check value recorded at backup time. Key pairs sign a canary with the
    restored private key; the signature must verify on the token and, outside the token, against the public key
    recorded in the backup. A key that fails is removed again and the module fails.
  - A key already on the target with the same label and id is checked the same way and left alone when it is
    the backed-up key; a different key there is an error.
  - The unwrapping key must be on the target token - the same AES KEK as at backup time (see the collection's
    PKCS#11 guide on how that is arranged) or the private half of the transport key pair for V(rsa_oaep).
  - Keys of class C(master-kek) need O(approvals) (policy action C(restore)).
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.pkcs11
  - keyops.runbooks.audit
options:
  backup_dir:
    description: Folder holding C(manifest.json) and the wrapped blobs.
    type: path
    required: true
  unwrapping_key_label:
    description:
      - Label of the unwrapping key on the target token. Defaults to the wrapping key's label in the manifest.
    type: str
  unwrapping_key_id:
    description: CKA_ID (hex) of the unwrapping key, when its label alone is not unique.
    type: str
  labels:
    description: Only keys with these labels. Every key in the backup by default.
    type: list
    elements: str
  policy:
    description: Overrides of the key-management policy.
    type: dict
attributes:
  check_mode:
    support: full
    details: >-
      Checks the blobs and the unwrapping key, runs the known-answer check on keys already on the target, and
      reports the keys that would be restored.
  diff_mode:
    support: full
    details: Before and after of each key's presence, label, id and algorithm on the target token.
  idempotent:
    support: full
    details: A key already on the target that passes the known-answer check is not restored again.
notes:
  - Restored keys have CKA_LOCAL false and CKA_NEVER_EXTRACTABLE false, as PKCS#11 requires for unwrapped keys.
  - The canary is random per run and never leaves the module.
seealso:
  - module: keyops.runbooks.pkcs11_key_backup
"""

EXAMPLES = r"""
- name: Restore test - unwrap last night's backup into the scratch token
  keyops.runbooks.pkcs11_key_restore:
    token_label: restore-test
    backup_dir: /srv/keyops/backups/hsm-a/2026-12-03
    change_ref: CHG-2102
  register: restore_test

- name: Fail the runbook when any known-answer check did not pass
  ansible.builtin.assert:
    that: restore_test.restored | rejectattr('known_answer.passed', 'defined') | list | length == 0
    fail_msg: A restored key has no known-answer result
"""

RETURN = r"""
restored:
  description: One entry per key in the backup (or in O(labels)).
  returned: always
  type: list
  elements: dict
  sample:
    - label: prod-payments-kek-20261203
      id: 5e1f0a2b3c4d5e6f
      object_class: secret_key
      algorithm: AES-256
      action: restore
      changed: true
      known_answer: {check: encrypt/decrypt canary and key check value, passed: true, kcv: 1a2b3c,
                     kcv_expected: 1a2b3c}
audit_events:
  description: One C(restore) event per key.
  returned: always
  type: list
  elements: dict
  sample: [{action: restore, backend: pkcs11, outcome: changed, key_ref: "pkcs11:token=...", detail: {}}]
token:
  description: The token restored into.
  returned: always
  type: dict
  sample: {label: restore-test, serial: ec0b68b73219edc3}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import AUDIT_ARGSPEC
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.pkcs11 import PKCS11_ARGSPEC
from ansible_collections.keyops.runbooks.plugins.module_utils.pkcs11_ops import restore_handler


def main() -> None:
    argument_spec = dict(
        backup_dir=dict(type="path", required=True),
        unwrapping_key_label=dict(type="str", no_log=False),
        unwrapping_key_id=dict(type="str", no_log=False),
        labels=dict(type="list", elements="str"),
        policy=dict(type="dict"),
        **PKCS11_ARGSPEC,
        **AUDIT_ARGSPEC,
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, restore_handler)


if __name__ == "__main__":
    main()
