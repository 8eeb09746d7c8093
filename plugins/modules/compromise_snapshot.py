#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: compromise_snapshot
short_description: Record the forensic state of compromised keys before anything about them changes
description:
  - For each compromised key, writes one JSON file to O(output_dir) - Vault transit - the key's configuration and
    the creation time of every version, and the ACL policies whose paths reach it; AWS KMS - the key metadata,
    aliases, grants, key policy and rotations; PKCS#11 - the key's attributes as the inventory read them.
  - Each file also holds the most recent audit events (from the local audit log O(audit_path)) that name the key.
  - A C(manifest.json) lists the files with their SHA-256 and a digest over the list.
  - The snapshot is the state when the response began, so it is taken once per folder; a rerun finds the manifest
    and changes nothing.
  - Holds no key material, token, plaintext or ciphertext - versions, times, policies and ids only.
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.vault
  - keyops.runbooks.aws
options:
  output_dir:
    description: The incident's snapshot folder.
    type: path
    required: true
  vault_transit:
    description: Transit keys (C(mount), C(name)), as M(keyops.runbooks.compromise_plan) lists them.
    type: list
    elements: dict
    default: []
  aws_kms:
    description: KMS keys (C(arn), C(aliases)), as M(keyops.runbooks.compromise_plan) lists them.
    type: list
    elements: dict
    default: []
  pkcs11:
    description: PKCS#11 keys as M(keyops.runbooks.compromise_plan) lists them.
    type: list
    elements: dict
    default: []
  audit_path:
    description: The local audit log (JSON lines) the recent events are taken from.
    type: path
  event_limit:
    description: How many of the most recent events naming each key to keep.
    type: int
    default: 500
  change_ref:
    description: The incident reference.
    type: str
attributes:
  check_mode:
    support: full
    details: Reads everything and returns the manifest it would write; writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: An existing manifest in O(output_dir) is kept as it is.
notes:
  - Which tokens carry a matching policy is not resolved (Vault lists no token by policy); the policies are.
seealso:
  - module: keyops.runbooks.compromise_plan
"""

EXAMPLES = r"""
- name: Snapshot the compromised KEK
  keyops.runbooks.compromise_snapshot:
    output_dir: /srv/keyops/outputs/compromise/INC-77/snapshot
    vault_transit:
      - {mount: transit, name: prod-payments-kek-20261203}
    audit_path: /var/log/keyops/audit.jsonl
    change_ref: INC-77
"""

RETURN = r"""
manifest:
  description: The files written, with their SHA-256, and the manifest's digest.
  returned: always
  type: dict
  sample: {taken: "2026-12-03T18:00:00Z", digest: 9b1c..., files: [{file: vault_transit_prod-payments-kek.json,
           sha256: 4f2a..., key_ref: transit/prod-payments-kek-20261203, audit_events: 12}]}
manifest_path:
  description: The manifest file.
  returned: always
  type: str
  sample: /srv/keyops/outputs/compromise/INC-77/snapshot/manifest.json
taken_before:
  description: Whether an earlier run had already taken the snapshot.
  returned: always
  type: bool
  sample: false
audit_events:
  description: One C(snapshot) event per key.
  returned: always
  type: list
  elements: dict
  sample: [{action: snapshot, backend: vault_transit, key_ref: transit/prod-payments-kek-20261203, outcome: success}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.backends import aws_kms, vault
from ansible_collections.keyops.runbooks.plugins.module_utils.compromise import take_snapshot


def handle(module: AnsibleModule) -> dict:
    connections: dict = {}

    def connect_vault():
        connections.setdefault("vault", vault.connect(module.params))
        return connections["vault"]

    def connect_kms():
        connections.setdefault("kms", aws_kms.connect(module.params))
        return connections["kms"]

    return take_snapshot(module.params, connect_vault, connect_kms, module.check_mode)


def main() -> None:
    argument_spec = dict(
        vault.VAULT_ARGSPEC,
        **aws_kms.AWS_ARGSPEC,
        output_dir=dict(type="path", required=True),
        vault_transit=dict(type="list", elements="dict", default=[]),
        aws_kms=dict(type="list", elements="dict", default=[]),
        pkcs11=dict(type="list", elements="dict", default=[]),
        audit_path=dict(type="path"),
        event_limit=dict(type="int", default=500),
        change_ref=dict(type="str"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, handle)


if __name__ == "__main__":
    main()
