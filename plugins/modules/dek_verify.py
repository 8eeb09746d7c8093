#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: dek_verify
short_description: Prove that every dependent data key decrypts under the new key material, and the old refuses
description:
  - For each entry of O(checks), reads every data key recorded under the key in the store and checks two things
    - that it is wrapped by the new material (a transit ciphertext's C(vault:vN:) prefix is O(checks[].key_version);
    a KMS C(Decrypt) answer's C(KeyId) is O(checks[].key)) - and that it actually decrypts (transit batch decrypt,
    KMS C(Decrypt)).
  - The plaintext data keys exist only in memory inside one batch's answer and are dropped unread; only counts
    leave the module.
  - Each entry of O(probes) tries to encrypt a random probe under old material (a transit version, a KMS key) and
    passes only when the backend refuses.
  - Fails (with the counts and the first failing ids) unless everything verified, so nothing is retired on an
    unverified store; O(fail_on_unverified=false) only reports.
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.vault
  - keyops.runbooks.aws
options:
  checks:
    description: The stores to verify.
    type: list
    elements: dict
    default: []
    suboptions:
      backend:
        description: Which backend wraps the data keys.
        type: str
        choices: [vault_transit, aws_kms]
        required: true
      mount:
        description: Transit mount.
        type: str
        default: transit
      name:
        description: Transit key name.
        type: str
      key_version:
        description: The transit version every data key must be wrapped under.
        type: int
      key:
        description: The KMS key every data key must decrypt under (any reference form).
        type: str
      old_key_refs:
        description: KMS key references no data key may still be recorded under.
        type: list
        elements: str
      store:
        description: The store, as the O(checks[].store) option of M(keyops.runbooks.vault_transit_rewrap).
        type: dict
        required: true
      store_key_ref:
        description: What the store's C(key_ref) column holds for the key.
        type: str
      label:
        description: A name for the check in results and reports.
        type: str
  probes:
    description: Old material that must refuse to encrypt - C(backend), and C(mount), C(name), C(key_version)
      (transit) or C(key) (KMS).
    type: list
    elements: dict
    default: []
  fail_on_unverified:
    description: Fail when any check or probe does not pass.
    type: bool
    default: true
  max_workers:
    description: Concurrent KMS C(Decrypt) calls.
    type: int
    default: 16
  change_ref:
    description: The change or incident reference for the audit events.
    type: str
attributes:
  check_mode:
    support: full
    details: Only reads and decrypts; runs the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
notes:
  - A probe of a transit version encrypts nothing when the version is refused; if the old version still encrypts,
    the probe's ciphertext is discarded unread and the probe fails.
seealso:
  - module: keyops.runbooks.vault_transit_rewrap
  - module: keyops.runbooks.aws_kms_reencrypt
"""

EXAMPLES = r"""
- name: Verify every payments data key decrypts under version 4, and version 3 no longer encrypts
  keyops.runbooks.dek_verify:
    checks:
      - backend: vault_transit
        name: prod-payments-kek-20261203
        key_version: 4
        store: {type: sqlite, path: /srv/app/data_keys.sqlite}
    probes:
      - {backend: vault_transit, name: prod-payments-kek-20261203, key_version: 3}
    change_ref: INC-77
"""

RETURN = r"""
verified:
  description: Whether every check and probe passed.
  returned: always
  type: bool
  sample: true
summary:
  description: One sentence per check and probe, for reports.
  returned: always
  type: list
  elements: str
  sample: ["transit/prod-payments-kek-20261203 data_keys.sqlite#data_keys: 5000 of 5000 data keys decrypt under the new
            material", "transit/prod-payments-kek-20261203 v3: refuses to encrypt"]
checks:
  description: Per check - C(total), C(at_version), C(other_version), C(decrypted), C(failed), C(verified) and the
    first failing ids with reasons.
  returned: always
  type: list
  elements: dict
  sample: [{key_ref: transit/prod-payments-kek-20261203, total: 5000, decrypted: 5000, verified: true}]
probes:
  description: Per probe - whether the old material refused to encrypt, and the backend's reason.
  returned: always
  type: list
  elements: dict
  sample: [{key_ref: transit/prod-payments-kek-20261203, key_version: 3, refused: true}]
counts:
  description: Data keys checked, decrypted, failed and not under the new material.
  returned: always
  type: dict
  sample: {data_keys: 5000, decrypted: 5000, failed: 0, not_under_new_material: 0}
audit_events:
  description: One C(verify) event per check and per probe.
  returned: always
  type: list
  elements: dict
  sample: [{action: verify, backend: vault_transit, outcome: success}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.backends import aws_kms, vault
from ansible_collections.keyops.runbooks.plugins.module_utils.compromise import verify


def handle(module: AnsibleModule) -> dict:
    connections: dict = {}

    def connect_vault():
        connections.setdefault("vault", vault.connect(module.params))
        return connections["vault"]

    def connect_kms():
        connections.setdefault("kms", aws_kms.connect(module.params, module.params["max_workers"]))
        return connections["kms"]

    return verify(module.params, connect_vault, connect_kms)


def main() -> None:
    check_options = dict(
        backend=dict(type="str", required=True, choices=["vault_transit", "aws_kms"]),
        mount=dict(type="str", default="transit"),
        name=dict(type="str"),
        key_version=dict(type="int", no_log=False),
        key=dict(type="str", no_log=False),
        old_key_refs=dict(type="list", elements="str", no_log=False),
        store=dict(type="dict", required=True),
        store_key_ref=dict(type="str", no_log=False),
        label=dict(type="str"),
    )
    argument_spec = dict(
        vault.VAULT_ARGSPEC,
        **aws_kms.AWS_ARGSPEC,
        checks=dict(type="list", elements="dict", default=[], options=check_options),
        probes=dict(type="list", elements="dict", default=[]),
        fail_on_unverified=dict(type="bool", default=True),
        max_workers=dict(type="int", default=16),
        change_ref=dict(type="str"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, handle)


if __name__ == "__main__":
    main()
