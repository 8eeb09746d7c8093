#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vault_transit_restore
short_description: Restore a transit key from an age-encrypted backup and check it against the backup
description:
  - Decrypts a backup written by M(keyops.runbooks.vault_transit_backup) in memory with the escrow identity,
    restores it under O(name) (a scratch name for restore tests), reads the key back and compares its type,
    latest version and minimum versions with the backup. A difference fails the run.
  - An empty, truncated or altered backup, or the wrong identity, fails before anything is restored.
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.vault
  - keyops.runbooks.audit
options:
  path:
    description: The encrypted backup file.
    type: path
    required: true
  name:
    description: The name to restore the key under, a single path segment (no slash).
    type: str
    required: true
  mount:
    description: Where the transit engine is mounted.
    type: str
    default: transit
  identity:
    description:
      - The escrow identity as a string - age secret keys (C(AGE-SECRET-KEY-1...)), one a line, or an unencrypted
        OpenSSH private key. For identities recovered in memory, for example from Shamir shares. Never logged.
    type: str
  identity_file:
    description: A file with the escrow identity instead of O(identity).
    type: path
  force:
    description: Overwrite an existing key of that name that differs from the backup.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Decrypts and checks the backup and reads the target name; restores nothing.
  diff_mode:
    support: full
    details: Type, latest and minimum versions of the target key before and after.
  idempotent:
    support: full
    details: A key of that name that already matches the backup is left alone.
seealso:
  - module: keyops.runbooks.vault_transit_backup
"""

EXAMPLES = r"""
- name: Restore test - the escrowed payments KEK under a scratch name
  keyops.runbooks.vault_transit_restore:
    path: /srv/escrow/vault/transit-prod-payments-kek-20261203-v3.backup.age
    name: restoretest-payments-kek
    identity: "{{ recovered_identity }}"
    change_ref: CHG-2051
"""

RETURN = r"""
key_ref:
  description: The restored key as C(<mount>/<name>).
  returned: always
  type: str
  sample: transit/restoretest-payments-kek
source_name:
  description: The name of the key the backup was taken from.
  returned: always
  type: str
  sample: prod-payments-kek-20261203
expected:
  description: Type, latest and minimum versions as the backup holds them.
  returned: always
  type: dict
  sample: {type: aes256-gcm96, latest_version: 3, min_decryption_version: 1, min_encryption_version: 0,
           min_available_version: 0}
after:
  description: The same facts read back from the server after the restore (as planned in check mode).
  returned: always
  type: dict
  sample: {type: aes256-gcm96, latest_version: 3, min_decryption_version: 1, min_encryption_version: 0,
           min_available_version: 0}
matches:
  description: Whether the key read back matches the backup (null in check mode when nothing exists yet).
  returned: always
  type: bool
  sample: true
audit_events:
  description: One C(restore) event.
  returned: always
  type: list
  elements: dict
  sample: [{action: restore, backend: vault_transit, key_ref: transit/restoretest-payments-kek, outcome: changed}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import AUDIT_ARGSPEC, audit_event
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import (
    VAULT_ARGSPEC,
    VAULT_REQUIRED_IF,
    connect,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_backup import parse_identities, restore_key
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_transit import validate_name


def handle(module: AnsibleModule) -> dict:
    params = module.params
    mount, name = validate_name(params["name"], params["mount"])
    identities = parse_identities(params["identity"], params["identity_file"])
    vault = connect(params, f"{mount}/{name}")
    result = restore_key(vault, mount, name, params["path"], identities, params["force"], module.check_mode)
    outcome = ("planned" if module.check_mode else "changed") if result["changed"] else "unchanged"
    result["audit_events"] = [
        audit_event(
            "restore",
            "vault_transit",
            result["key_ref"],
            outcome,
            module.check_mode,
            result["before"],
            result["after"],
            params["change_ref"],
            params["approvals"],
            {"outcome_reason": f"matches={result['matches']}"},
        )
    ]
    result["diff"] = {"before": result.pop("before"), "after": result["after"]}
    return result


def main() -> None:
    argument_spec = dict(
        VAULT_ARGSPEC,
        **AUDIT_ARGSPEC,
        path=dict(type="path", required=True),
        name=dict(type="str", required=True),
        mount=dict(type="str", default="transit"),
        identity=dict(type="str", no_log=True),
        identity_file=dict(type="path"),
        force=dict(type="bool", default=False),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_if=VAULT_REQUIRED_IF,
        required_one_of=[("identity", "identity_file")],
        mutually_exclusive=[("identity", "identity_file")],
        supports_check_mode=True,
    )
    run_module(module, handle)


if __name__ == "__main__":
    main()
