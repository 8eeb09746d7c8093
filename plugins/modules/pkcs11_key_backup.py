#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: pkcs11_key_backup
short_description: Wrap extractable HSM keys under a wrapping key and write them with a manifest
description:
  - Wraps every extractable secret and private key on the token (or those named in O(labels)) under a wrapping
    key that is on the token, and writes one blob a key plus C(manifest.json) into O(backup_dir). Files are
    mode 0600, written atomically; the folder is made 0700.
  - The manifest records, per key, label, CKA_ID, class, algorithm, dates, the SHA-256 of its blob, a key check
    value for AES keys and the public key (SubjectPublicKeyInfo) for key pairs, so a restore can prove it got the
    same key back.
  - Keys that cannot be wrapped are listed in RV(not_wrapped) with the reason. A non-extractable key needs the HSM
    vendor's own backup or cloning procedure, and the reason says so.
  - A mechanism the token does not offer, or refuses with the requested parameters, fails the module with its
    name. Nothing falls back to another mechanism.
  - Keys of class C(master-kek) need O(approvals) (policy action C(backup)).
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.pkcs11
  - keyops.runbooks.audit
options:
  backup_dir:
    description: Folder for the blobs and the manifest. Created when missing.
    type: path
    required: true
  wrapping_key_label:
    description:
      - Label of the wrapping key on the token. With V(aes_key_wrap_pad) an AES key with CKA_WRAP; with
        V(rsa_oaep) an RSA public key with CKA_WRAP (for example the restore target's transport key).
    type: str
    required: true
  wrapping_key_id:
    description: CKA_ID (hex) of the wrapping key, when its label alone is not unique.
    type: str
  mechanism:
    description:
      - V(aes_key_wrap_pad) is CKM_AES_KEY_WRAP_PAD (RFC 5649) and wraps secret and private keys.
      - V(rsa_oaep) is CKM_RSA_PKCS_OAEP and wraps secret keys only; private keys are listed in RV(not_wrapped).
    type: str
    choices: [aes_key_wrap_pad, rsa_oaep]
    default: aes_key_wrap_pad
  oaep_hash:
    description:
      - Hash and MGF1 hash for V(rsa_oaep). SoftHSM2 accepts only V(sha1) for wrapping; other values fail there
        with the mechanism named.
    type: str
    choices: [sha1, sha256, sha384, sha512]
    default: sha256
  labels:
    description: Only keys with these labels. All keys on the token by default.
    type: list
    elements: str
  force:
    description: Wrap and write again even when O(backup_dir) already holds an intact backup of the same keys.
    type: bool
    default: false
  policy:
    description: Overrides of the key-management policy.
    type: dict
attributes:
  check_mode:
    support: full
    details: Reads the token and the existing manifest and reports what would be written; writes nothing.
  diff_mode:
    support: full
    details: Before and after list the keys in the manifest (label, id, class).
  idempotent:
    support: full
    details: >-
      A backup folder whose manifest covers the same keys (same labels, ids, check values and public keys) under
      the same wrapping key and mechanism, with every blob intact, is left alone.
notes:
  - The wrapped blobs are as secret as the wrapping key is well kept. Keep backup folders on storage with access
    control; a blob is useless without the KEK that stays in the HSM.
  - Public keys without their private key are not backed up (they hold no secret).
seealso:
  - module: keyops.runbooks.pkcs11_key_restore
  - module: keyops.runbooks.pkcs11_key_info
"""

EXAMPLES = r"""
- name: Back up every extractable key under the backup KEK
  keyops.runbooks.pkcs11_key_backup:
    token_label: prod-hsm-a
    wrapping_key_label: prod-backup-kek-20261203
    backup_dir: /srv/keyops/backups/hsm-a/2026-12-03
    change_ref: CHG-2101
  register: hsm_backup

- name: Wrap two secret keys for another HSM under its transport key (RSA-OAEP)
  keyops.runbooks.pkcs11_key_backup:
    token_label: prod-hsm-a
    wrapping_key_label: prod-hsm-b-transport-20261203
    mechanism: rsa_oaep
    oaep_hash: sha256
    labels: [prod-payments-kek-20261203, prod-ledger-dek-20261203]
    backup_dir: /srv/keyops/transfer/hsm-b
"""

RETURN = r"""
backup_dir:
  description: The folder written.
  returned: always
  type: str
  sample: /srv/keyops/backups/hsm-a/2026-12-03
manifest:
  description: Path of the manifest.
  returned: always
  type: str
  sample: /srv/keyops/backups/hsm-a/2026-12-03/manifest.json
mechanism:
  description: The PKCS#11 mechanism used.
  returned: always
  type: str
  sample: CKM_AES_KEY_WRAP_PAD
backed_up:
  description: The keys in the backup (no blob content). C(sha256) is missing in check mode.
  returned: always
  type: list
  elements: dict
  sample:
    - {label: prod-payments-kek-20261203, id: 5e1f0a2b3c4d5e6f, object_class: secret_key, algorithm: AES-256,
       file: prod-payments-kek-20261203.5e1f0a2b3c4d5e6f.secret_key.wrapped, sha256: 9f2c..., kcv: 1a2b3c}
not_wrapped:
  description: Keys that were not wrapped, with the reason.
  returned: always
  type: list
  elements: dict
  sample:
    - {label: prod-root-kek-20261203, id: 01, object_class: secret_key,
       reason: "the token will never let it out (CKA_EXTRACTABLE is false), so only the HSM vendor's own backup..."}
audit_events:
  description: One C(backup) event per key, outcome C(skipped) for keys left out.
  returned: always
  type: list
  elements: dict
  sample: [{action: backup, backend: pkcs11, outcome: changed, key_ref: "pkcs11:token=...", detail: {}}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import AUDIT_ARGSPEC
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.pkcs11 import (
    OAEP_HASHES,
    PKCS11_ARGSPEC,
    WRAP_MECHANISMS,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.pkcs11_ops import backup_handler


def main() -> None:
    argument_spec = dict(
        backup_dir=dict(type="path", required=True),
        wrapping_key_label=dict(type="str", required=True, no_log=False),
        wrapping_key_id=dict(type="str", no_log=False),
        mechanism=dict(type="str", default="aes_key_wrap_pad", choices=list(WRAP_MECHANISMS)),
        oaep_hash=dict(type="str", default="sha256", choices=list(OAEP_HASHES)),
        labels=dict(type="list", elements="str"),
        force=dict(type="bool", default=False),
        policy=dict(type="dict"),
        **PKCS11_ARGSPEC,
        **AUDIT_ARGSPEC,
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, backup_handler)


if __name__ == "__main__":
    main()
