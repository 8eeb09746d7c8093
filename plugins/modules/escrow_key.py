#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: escrow_key
short_description: Make a backup bundle's escrow key, split into custodian shares (K of N), never whole on disk
description:
  - Makes an age X25519 identity in memory, splits its secret with SLIP-39 (the shamir-mnemonic library) into one
    share per custodian with O(threshold) needed to recover it, and encrypts each share at once to that custodian's
    own age or SSH public key.
  - Writes C(share-<custodian>.age) for each custodian and C(escrow.json) (the escrow recipient, threshold, custodians
    and the SHA-256 of each share file) into O(bundle_dir), all 0600, atomically; the folder is made 0700.
  - Returns only the escrow recipient (public key). The identity itself is never written, returned or logged; the
    backups are encrypted to the recipient, and only O(threshold) custodians together can recover it
    (M(keyops.runbooks.escrow_restore_test)).
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.audit
options:
  bundle_dir:
    description: The backup bundle folder. Made when missing.
    type: path
    required: true
  custodians:
    description:
      - The custodians, each C({name, recipient}) with an age (C(age1...)) or SSH (C(ssh-ed25519 ...)) public key, or
        a string C(<name> <public key>).
      - Each custodian should make their own key pair and hand over only the public key.
    type: list
    elements: raw
    required: true
  threshold:
    description: How many custodians are needed to recover the escrow key; at least 2 and at most the custodians.
    type: int
    default: 2
attributes:
  check_mode:
    support: full
    details: Reports whether an escrow key would be made; makes none.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A bundle that already has an escrow key for the same custodians and threshold, with every share file intact,
        is left alone.
      - A bundle with an escrow key for other custodians is refused (its backups may be encrypted to that key).
notes:
  - Every escrow key belongs to one bundle; a new bundle gets a new escrow key, so custodians keep only their own
    long-lived identity, never a share of an old key.
seealso:
  - module: keyops.runbooks.escrow_restore_test
  - module: keyops.runbooks.vault_transit_backup
"""

EXAMPLES = r"""
- name: Make the escrow key of tonight's bundle, 2 of 3 custodians
  keyops.runbooks.escrow_key:
    bundle_dir: /srv/keyops/backups/20261203
    threshold: 2
    custodians:
      - {name: a.haddad, recipient: age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p}
      - {name: m.okafor, recipient: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKq3m3xvSk8f4sQk8cKk9t7Y0Jw1uQ3u6m7x0kq8yZ"}
      - "s.lindqvist age1lggyhqrw2nlhcxprm67z43rta597azn8gknawjehu9d9dl0jq3yqqvfafg"
    change_ref: CHG-2050
  register: escrow
"""

RETURN = r"""
recipient:
  description: The escrow recipient (age public key) to encrypt the backups to; null in check mode for a new key.
  returned: always
  type: str
  sample: age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
threshold:
  description: Shares needed to recover the escrow key.
  returned: always
  type: int
  sample: 2
custodians:
  description: One entry per custodian with the share file (relative to O(bundle_dir)) and its SHA-256.
  returned: always
  type: list
  elements: dict
  sample: [{name: a.haddad, recipient: age1ql3z..., share_file: share-a.haddad.age, share_sha256: 9f2c...}]
escrow_file:
  description: Path of C(escrow.json).
  returned: always
  type: str
  sample: /srv/keyops/backups/20261203/escrow.json
audit_events:
  description: One C(create) event for the escrow key.
  returned: always
  type: list
  elements: dict
  sample: [{action: create, backend: escrow, key_ref: escrow/20261203, outcome: changed}]
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import AUDIT_ARGSPEC, audit_event
from ansible_collections.keyops.runbooks.plugins.module_utils.escrow import ESCROW_FILE, create_escrow


def handle(module: AnsibleModule) -> dict:
    params = module.params
    done = create_escrow(params["bundle_dir"], params["custodians"], params["threshold"], module.check_mode)
    escrow = done["escrow"]
    ref = f"escrow/{os.path.basename(os.path.normpath(params['bundle_dir']))}"
    outcome = ("planned" if module.check_mode else "changed") if done["changed"] else "unchanged"
    event = audit_event(
        "create",
        "escrow",
        ref,
        outcome,
        module.check_mode,
        None,
        {"exists": True, "recipients": len(escrow["custodians"]), "count": escrow["threshold"]},
        params["change_ref"],
        params["approvals"],
        {"key_class": "kek", "outcome_reason": f"{escrow['threshold']} of {len(escrow['custodians'])} custodians"},
    )
    return {
        "changed": done["changed"],
        "recipient": escrow.get("recipient"),
        "threshold": escrow["threshold"],
        "custodians": escrow["custodians"],
        "escrow_file": os.path.join(params["bundle_dir"], ESCROW_FILE),
        "audit_events": [event],
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            AUDIT_ARGSPEC,
            bundle_dir=dict(type="path", required=True),
            custodians=dict(type="list", elements="raw", required=True),
            threshold=dict(type="int", default=2),
        ),
        supports_check_mode=True,
    )
    run_module(module, handle)


if __name__ == "__main__":
    main()
