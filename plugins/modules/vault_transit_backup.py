#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vault_transit_backup
short_description: Back up transit keys, encrypted at once to escrow recipients (age format)
description:
  - Takes a transit backup of each named key and encrypts it in memory with age (pyrage) to the escrow
    recipients' public keys, so plaintext key material never reaches the disk, the output or a log.
  - Writes one file per key and latest version, C(<mount>-<name>-v<version>.backup.age), 0600, atomically.
  - A backup that is empty, truncated or not at the key's latest version fails the run.
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.vault
  - keyops.runbooks.audit
options:
  names:
    description: The keys to back up (single path segments).
    type: list
    elements: str
    required: true
  mount:
    description: Where the transit engine is mounted.
    type: str
    default: transit
  dest:
    description: The directory to write the encrypted backups to. It must exist.
    type: path
    required: true
  recipients:
    description:
      - The escrow recipients - age X25519 public keys (C(age1...)) or SSH public keys (C(ssh-ed25519 ...),
        C(ssh-rsa ...)). Any one of them can decrypt the backup.
    type: list
    elements: str
    required: true
  force:
    description: Take a new backup even when one of the key's latest version is already in O(dest).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Reads each key and reports which backups would be written.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: A key whose latest version already has a backup file in O(dest) is left alone unless O(force=true).
notes:
  - Transit only backs up keys with both C(exportable) and C(allow_plaintext_backup) set, which cannot be undone.
  - The escrow identity is needed to restore; keep it split (for example Shamir shares), not next to the backups.
seealso:
  - module: keyops.runbooks.vault_transit_restore
"""

EXAMPLES = r"""
- name: Escrow the payments KEK to the two custodians
  keyops.runbooks.vault_transit_backup:
    names: [prod-payments-kek-20261203]
    dest: /srv/escrow/vault
    recipients:
      - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKq3m3xvSk8f4sQk8cKk9t7Y0Jw1uQ3u6m7x0kq8yZ custodian-2
    change_ref: CHG-2050
"""

RETURN = r"""
backups:
  description: One entry per key.
  returned: always
  type: list
  elements: dict
  sample: [{key_ref: transit/prod-payments-kek-20261203,
            path: /srv/escrow/vault/transit-prod-payments-kek-20261203-v3.backup.age, latest_version: 3,
            type: aes256-gcm96, recipients: 2, changed: true, backup_sha256: 9f2c..., bytes: 1290,
            versions: [1, 2, 3]}]
audit_events:
  description: One C(backup) event per key.
  returned: always
  type: list
  elements: dict
  sample: [{action: backup, backend: vault_transit, key_ref: transit/prod-payments-kek-20261203, outcome: changed}]
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import AUDIT_ARGSPEC, audit_event
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import (
    VAULT_ARGSPEC,
    VAULT_REQUIRED_IF,
    connect,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import InvalidInput
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_backup import backup_key, parse_recipients
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_transit import validate_name


def handle(module: AnsibleModule) -> dict:
    params = module.params
    targets = [validate_name(name, params["mount"]) for name in params["names"]]
    if not os.path.isdir(params["dest"]):
        raise InvalidInput(
            "Back up transit keys",
            None,
            f"dest '{params['dest']}' is not a directory",
            "Create it (0700) or set dest to an existing directory",
        )
    recipients = parse_recipients(params["recipients"])
    vault = connect(params)
    backups, events = [], []
    for mount, name in targets:
        entry = backup_key(vault, mount, name, params["dest"], recipients, params["force"], module.check_mode)
        backups.append(entry)
        outcome = ("planned" if module.check_mode else "changed") if entry["changed"] else "unchanged"
        events.append(
            audit_event(
                "backup",
                "vault_transit",
                entry["key_ref"],
                outcome,
                module.check_mode,
                None,
                {
                    "latest_version": entry["latest_version"],
                    "backup_sha256": entry.get("backup_sha256"),
                    "path": entry["path"],
                    "recipients": entry["recipients"],
                },
                params["change_ref"],
                params["approvals"],
            )
        )
    return {"changed": any(entry["changed"] for entry in backups), "backups": backups, "audit_events": events}


def main() -> None:
    argument_spec = dict(
        VAULT_ARGSPEC,
        **AUDIT_ARGSPEC,
        names=dict(type="list", elements="str", required=True),
        mount=dict(type="str", default="transit"),
        dest=dict(type="path", required=True),
        recipients=dict(type="list", elements="str", required=True, no_log=False),
        force=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, required_if=VAULT_REQUIRED_IF, supports_check_mode=True)
    run_module(module, handle)


if __name__ == "__main__":
    main()
