#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vault_transit_key
short_description: Create, rotate, configure, trim and delete a Vault or OpenBao transit key
description:
  - Manages the lifecycle of one transit key - creation with an approved type, rotation now or when the
    latest version is older than a number of days, automatic rotation, minimum decryption and encryption
    versions, deletion protection, trimming old versions, and deletion.
  - The plan is computed by reading the key first, so check mode shows the real plan and a repeated run
    changes nothing.
  - Raising O(min_decryption_version), trimming and deleting are refused while a data-key store given in
    O(dek_stores) still holds ciphertexts that the change would make undecryptable.
  - Trimming, raising the minimum decryption version, deletion, making a key exportable, and any change to a
    C(master-kek) need verified approvals (O(approvals)) when the policy says so.
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.vault
  - keyops.runbooks.audit
options:
  name:
    description: The key's name, a single path segment (no slash).
    type: str
    required: true
  mount:
    description: Where the transit engine is mounted.
    type: str
    default: transit
  state:
    description: V(present) creates and configures the key, V(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
  type:
    description:
      - The key type for a new key (default V(aes256-gcm96)). Types outside the policy's approved list
        (aes256-gcm96, rsa-3072, rsa-4096, ecdsa-p256, ecdsa-p384, ed25519, hmac by default) are refused
        unless O(allow_unapproved_algorithm=true).
      - When given for an existing key of another type, the module fails instead of changing anything.
    type: str
  key_size:
    description: The size in bytes of a new V(hmac) key (32 to 512).
    type: int
  derived:
    description: Create the key with key derivation (every use then needs a context). Creation only.
    type: bool
  allow_unapproved_algorithm:
    description: Create a key of a type the policy does not approve, with a warning. Record the exception.
    type: bool
    default: false
  rotate:
    description: Rotate the key now, on every run (not idempotent by design).
    type: bool
    default: false
  rotate_older_than_days:
    description: Rotate when the latest version is at least this many days old. Idempotent.
    type: int
  auto_rotate_period:
    description: Let the server rotate the key on this period, in seconds or as C(720h) / C(90d). V(0) turns it off.
    type: str
  min_decryption_version:
    description: The oldest version that may still decrypt. Raising it is dual-controlled and guarded.
    type: int
  min_encryption_version:
    description: The oldest version that may encrypt; V(0) means the latest.
    type: int
  deletion_allowed:
    description: Whether the key may be deleted.
    type: bool
  exportable:
    description:
      - Allow exporting the key material. Cannot be undone, so it needs O(allow_irreversible=true), and an
        approval under the policy's V(export) rule.
    type: bool
  allow_plaintext_backup:
    description:
      - Allow a plaintext backup of the key (needed, with O(exportable), for M(keyops.runbooks.vault_transit_backup)).
        Cannot be undone, so it needs O(allow_irreversible=true).
    type: bool
  allow_irreversible:
    description: Accept O(exportable) or O(allow_plaintext_backup), which can never be turned off again.
    type: bool
    default: false
  trim_to_version:
    description: Delete every version below this one for good (the key's C(min_available_version)).
    type: int
  key_class:
    description: The key's class when its name does not say it; a V(master-kek) needs approvals for any change.
    type: str
    choices: [master-kek, kek, dek, signing, transport, tls-cert]
  policy:
    description: Overrides of the key-management policy (same shape as the collection's default policy).
    type: dict
  dek_stores:
    description:
      - The data-key stores to check before raising O(min_decryption_version), trimming or deleting; each has
        the suboptions of the rewrap module's store option.
      - Data keys are matched on their C(key_ref) column, C(<mount>/<name>).
    type: list
    elements: dict
    suboptions:
      type:
        description: V(sqlite), V(jsonl) or V(url).
        type: str
        choices: [sqlite, jsonl, url]
        default: sqlite
      path:
        description: The SQLite or JSON lines file.
        type: path
      url:
        description: A database URL (C(sqlite:///path)).
        type: str
      table:
        description: The table that holds the data keys.
        type: str
        default: data_keys
      id_column:
        description: The column with each data key's id.
        type: str
        default: id
      key_ref_column:
        description: The column with the reference of the wrapping key.
        type: str
        default: key_ref
      ciphertext_column:
        description: The column with the wrapped data key.
        type: str
        default: ciphertext
      context_column:
        description: The column with the derivation context.
        type: str
        default: context
  store_key_ref:
    description: What the stores' C(key_ref) column holds for this key, when it is not C(<mount>/<name>).
    type: str
  skip_dek_store_check:
    description: Raise, trim or delete without a store check, for keys that wrap no stored data keys.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: The plan comes from reading the key and scanning the data-key stores; nothing is written.
  diff_mode:
    support: full
    details: Versions, version creation times and configuration flags before and after; never key material.
  idempotent:
    support: partial
    details: Every option is idempotent except O(rotate=true), which rotates on every run.
notes:
  - Vault returns no version creation times for V(hmac) keys, so O(rotate_older_than_days) never rotates them.
  - The store check reads the whole store; for very large stores run it once in check mode during planning.
seealso:
  - module: keyops.runbooks.vault_transit_key_info
  - module: keyops.runbooks.vault_transit_rewrap
"""

EXAMPLES = r"""
- name: Create the payments KEK with monthly automatic rotation
  keyops.runbooks.vault_transit_key:
    name: prod-payments-kek-20261203
    auto_rotate_period: 720h
    deletion_allowed: false
    change_ref: CHG-2041

- name: Rotate the KEK when its latest version is older than 90 days
  keyops.runbooks.vault_transit_key:
    name: prod-payments-kek-20261203
    rotate_older_than_days: 90

- name: Retire old versions once every data key is rewrapped
  keyops.runbooks.vault_transit_key:
    name: prod-payments-kek-20261203
    min_decryption_version: 3
    trim_to_version: 3
    dek_stores:
      - type: sqlite
        path: /srv/app/data_keys.sqlite
    change_ref: CHG-2042
    approvals: "{{ verified.approvals }}"
"""

RETURN = r"""
key_ref:
  description: The key as C(<mount>/<name>).
  returned: always
  type: str
  sample: transit/prod-payments-kek-20261203
actions:
  description: The steps taken (or planned in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: [rotate, configure]
key:
  description: The key's versions and configuration after the run (as planned in check mode).
  returned: always
  type: dict
  sample: {exists: true, type: aes256-gcm96, latest_version: 3, versions: [1, 2, 3], min_decryption_version: 1,
           min_encryption_version: 0, min_available_version: 0, deletion_allowed: false, exportable: false,
           allow_plaintext_backup: false, auto_rotate_period: 2592000, derived: false,
           version_times: {"1": "2026-12-03T10:00:00Z"}}
dek_store_check:
  description: Per store, how many data keys sit below the version the change removes (all zero, or the run fails).
  returned: when a store was checked
  type: dict
  sample: {"sqlite:/srv/app/data_keys.sqlite#data_keys": 0}
audit_events:
  description: One event per step (or a C(verify) event when nothing changed).
  returned: always
  type: list
  elements: dict
  sample: [{action: rotate, backend: vault_transit, key_ref: transit/prod-payments-kek-20261203, outcome: changed,
            check_mode: false, before: {latest_version: 2}, after: {latest_version: 3}, change_ref: CHG-2041,
            approvals: [], detail: {key_class: kek}}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import AUDIT_ARGSPEC
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import (
    VAULT_ARGSPEC,
    VAULT_REQUIRED_IF,
    connect,
    emit_warnings,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.dek_store import STORE_ARGSPEC
from ansible_collections.keyops.runbooks.plugins.module_utils.records import KEY_CLASSES
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_transit import manage_key


def handle(module: AnsibleModule) -> dict:
    vault = connect(module.params, module.params["name"])
    return emit_warnings(module, manage_key(vault, module.params, module.check_mode))


def main() -> None:
    store = STORE_ARGSPEC["store"]
    argument_spec = dict(
        VAULT_ARGSPEC,
        **AUDIT_ARGSPEC,
        name=dict(type="str", required=True),
        mount=dict(type="str", default="transit"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        type=dict(type="str"),
        key_size=dict(type="int"),
        derived=dict(type="bool"),
        allow_unapproved_algorithm=dict(type="bool", default=False),
        rotate=dict(type="bool", default=False),
        rotate_older_than_days=dict(type="int"),
        auto_rotate_period=dict(type="str"),
        min_decryption_version=dict(type="int"),
        min_encryption_version=dict(type="int"),
        deletion_allowed=dict(type="bool"),
        exportable=dict(type="bool"),
        allow_plaintext_backup=dict(type="bool"),
        allow_irreversible=dict(type="bool", default=False),
        trim_to_version=dict(type="int"),
        key_class=dict(type="str", choices=list(KEY_CLASSES)),
        policy=dict(type="dict"),
        dek_stores=dict(type="list", elements="dict", options=store["options"], required_if=store["required_if"]),
        store_key_ref=dict(type="str", no_log=False),
        skip_dek_store_check=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, required_if=VAULT_REQUIRED_IF, supports_check_mode=True)
    run_module(module, handle)


if __name__ == "__main__":
    main()
