#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vault_raft_snapshot
short_description: Save a raft snapshot of a Vault or OpenBao server to a file, or restore one into a server
description:
  - O(state=saved) streams a snapshot of a server with raft integrated storage to O(path) (0600, written
    atomically) and returns its SHA-256.
  - O(state=restored) sends the snapshot at O(path) to a server and waits until it is active again.
  - A snapshot stays sealed by the keys of the server that took it; only a server unsealed with them can read
    it, so the file never holds key material in the clear.
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.vault
  - keyops.runbooks.audit
options:
  path:
    description: The snapshot file.
    type: path
    required: true
  state:
    description: V(saved) takes a snapshot, V(restored) restores one.
    type: str
    choices: [saved, restored]
    default: saved
  force:
    description:
      - With O(state=saved), take a new snapshot even when O(path) exists.
      - With O(state=restored), restore into a cluster other than the one that took the snapshot (the
        server then needs the original unseal keys).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Checks the file and reports what would happen; takes or restores nothing.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: Saving is skipped when O(path) exists; a restore always replaces the server's state.
notes:
  - The token needs C(sudo) on C(sys/storage/raft/snapshot) (and C(sys/storage/raft/snapshot-force) for O(force)).
  - A restore rolls back every key on the server to the snapshot; plan it as a change with approvals.
seealso:
  - module: keyops.runbooks.vault_transit_backup
"""

EXAMPLES = r"""
- name: Save a snapshot before the rotation window
  keyops.runbooks.vault_raft_snapshot:
    url: "{{ raft_addr }}"
    path: /srv/backup/vault/raft-{{ change_ref }}.snap
    change_ref: CHG-2041

- name: Roll the server back to the snapshot
  keyops.runbooks.vault_raft_snapshot:
    url: "{{ raft_addr }}"
    path: /srv/backup/vault/raft-CHG-2041.snap
    state: restored
    change_ref: CHG-2041
"""

RETURN = r"""
path:
  description: The snapshot file.
  returned: always
  type: str
  sample: /srv/backup/vault/raft-CHG-2041.snap
snapshot_sha256:
  description: SHA-256 of the snapshot file.
  returned: unless a snapshot would be taken in check mode
  type: str
  sample: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
bytes:
  description: Size of the snapshot file.
  returned: unless a snapshot would be taken in check mode
  type: int
  sample: 48213
audit_events:
  description: One C(snapshot) (saved) or C(restore) (restored) event.
  returned: always
  type: list
  elements: dict
  sample: [{action: snapshot, backend: vault_raft, key_ref: "http://127.0.0.1:8200", outcome: changed}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.approvals import require_approvals
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import AUDIT_ARGSPEC, audit_event
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import (
    VAULT_ARGSPEC,
    VAULT_REQUIRED_IF,
    connect,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_raft import restore_snapshot, save_snapshot


def handle(module: AnsibleModule) -> dict:
    params = module.params
    vault = connect(params)
    if params["state"] == "saved":
        action = "snapshot"
        result = save_snapshot(vault, params["path"], params["force"], module.check_mode)
    else:
        action = "restore"
        require_approvals("restore", vault.url, None, params["approvals"], module.check_mode)
        result = restore_snapshot(vault, params["path"], params["force"], module.check_mode)
    outcome = ("planned" if module.check_mode else "changed") if result["changed"] else "unchanged"
    result["audit_events"] = [
        audit_event(
            action,
            "vault_raft",
            vault.url,
            outcome,
            module.check_mode,
            None,
            {"path": result["path"], "fingerprint_sha256": result.get("snapshot_sha256")},
            params["change_ref"],
            params["approvals"],
        )
    ]
    return result


def main() -> None:
    argument_spec = dict(
        VAULT_ARGSPEC,
        **AUDIT_ARGSPEC,
        path=dict(type="path", required=True),
        state=dict(type="str", default="saved", choices=["saved", "restored"]),
        force=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, required_if=VAULT_REQUIRED_IF, supports_check_mode=True)
    run_module(module, handle)


if __name__ == "__main__":
    main()
