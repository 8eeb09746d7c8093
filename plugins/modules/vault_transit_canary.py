#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vault_transit_canary
short_description: Make known-answer canaries under transit keys before a backup
description:
  - For each named key, at its latest version, derives a canary plaintext from a public label (O(label) and the key
    reference), and stores in O(path) what only that key can produce from it - the ciphertext (encryption keys), the
    signature (signing keys) or the HMAC (HMAC keys) - with the SHA-256 of the plaintext.
  - M(keyops.runbooks.escrow_restore_test) checks each restored key against these canaries - decrypt, verify or
    recompute - so a restore is proven to give back the very key that was backed up.
  - The file holds no secret (0600 all the same, written atomically).
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.vault
options:
  names:
    description: The transit keys.
    type: list
    elements: str
    required: true
  mount:
    description: Where the transit engine is mounted.
    type: str
    default: transit
  path:
    description: The canary file (JSON). Canaries of other keys already in it are kept.
    type: path
    required: true
  label:
    description: A public label the plaintexts are derived from, normally the backup bundle id.
    type: str
    required: true
attributes:
  check_mode:
    support: full
    details: Reads the keys and the file and reports which canaries would be made.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: A key that already has a canary for O(label) at its latest version is left alone.
notes:
  - The token needs C(update) on C(<mount>/encrypt), C(<mount>/sign) or C(<mount>/hmac) of each key.
seealso:
  - module: keyops.runbooks.escrow_restore_test
  - module: keyops.runbooks.vault_transit_backup
"""

EXAMPLES = r"""
- name: Canaries for the keys about to be backed up
  keyops.runbooks.vault_transit_canary:
    names: [prod-export-transport-20261203]
    path: /srv/keyops/backups/20261203/vault/canaries-vault.json
    label: "20261203"
"""

RETURN = r"""
canaries:
  description: One entry per key; no plaintext and no canary value.
  returned: always
  type: list
  elements: dict
  sample: [{key_ref: transit/prod-export-transport-20261203, operation: encrypt, server: 'http://127.0.0.1:8200',
            type: aes256-gcm96, version: 1}]
made:
  description: The keys that got a new canary.
  returned: always
  type: list
  elements: str
  sample: [transit/prod-export-transport-20261203]
path:
  description: The canary file.
  returned: always
  type: str
  sample: /srv/keyops/backups/20261203/vault/canaries-vault.json
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import (
    VAULT_ARGSPEC,
    VAULT_REQUIRED_IF,
    connect,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.canaries import make_canaries
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_transit import validate_name


def handle(module: AnsibleModule) -> dict:
    params = module.params
    names = [validate_name(name, params["mount"])[1] for name in params["names"]]
    vault = connect(params)
    return make_canaries(vault, params["mount"], names, params["label"], params["path"], module.check_mode)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            VAULT_ARGSPEC,
            names=dict(type="list", elements="str", required=True),
            mount=dict(type="str", default="transit"),
            path=dict(type="path", required=True),
            label=dict(type="str", required=True),
        ),
        required_if=VAULT_REQUIRED_IF,
        supports_check_mode=True,
    )
    run_module(module, handle)


if __name__ == "__main__":
    main()
