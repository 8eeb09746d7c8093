#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: compromise_plan
short_description: Plan the whole response to a compromised key - contain, re-key, retire, revoke - for approval
description:
  - Reads the KeyRecords the *_info modules returned (O(sources)), the key register and the data-key stores it
    names, and decides every step of the response for each compromised key in O(keys).
  - Vault transit - rotate (new material), set C(min_encryption_version) to the new version so old versions stop
    encrypting at once while they still decrypt, re-wrap each store, verify, raise C(min_decryption_version),
    optionally trim the old versions.
  - AWS KMS - create a successor key (same spec, usage and tags) under a new dated alias, move the compromised
    key's aliases to it so new encryption uses it at once, re-encrypt each store to it, verify, disable the old
    key and schedule its deletion.
  - PKCS#11 - a dated successor, the old key end-dated; what the token cannot know goes to C(needs_human).
  - Certificates in O(certificates) - revocation with reason keyCompromise, through Vault PKI (by serial, read
    from the certificate file when given) or ACME.
  - Returns C(audit_events) with outcome C(planned) for every step, each marked C(requires_approval), which
    M(keyops.runbooks.change_plan) turns into the plan two approvers sign.
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
options:
  keys:
    description: The compromised keys, each a name or a dict with C(key) and the options below.
    type: list
    elements: raw
    required: true
    suboptions:
      key:
        description: The key (name, C(<mount>/<name>), ARN, alias or PKCS#11 label). After a KMS key's alias moved,
          name it by ARN.
        type: str
        required: true
      successor_alias:
        description: The alias of a KMS key's successor; a dated name following the naming rule when left out.
        type: str
      aliases:
        description: The compromised KMS key's aliases before they were moved (a resumed run passes the ones the
          first run recorded).
        type: list
        elements: str
      trim:
        description: Also trim a transit key's compromised versions once every data key is verified under the new
          one (destroys them; backups holding old ciphertexts can no longer be restored). Defaults to O(trim).
        type: bool
      deletion_window_days:
        description: Waiting period of the old KMS key's scheduled deletion. Defaults to O(deletion_window_days).
        type: int
  sources:
    description: Registered results of the *_info modules.
    type: list
    elements: raw
    required: true
  register_path:
    description: The key register (C(key_class), C(data_key_stores)).
    type: path
  certificates:
    description: Certificates that depend on the compromised material, to revoke - C(name), C(issuer)
      (V(vault_pki) or V(acme)), C(cert_path), C(serial) (Vault PKI, when there is no file), C(mount).
    type: list
    elements: dict
    default: []
  trim:
    description: The default of O(keys[].trim) for keys that do not set it.
    type: bool
    default: false
  deletion_window_days:
    description: The default of O(keys[].deletion_window_days).
    type: int
    default: 30
  since:
    description: When the response started (from its journal); a key rotated after it is already contained.
    type: str
  as_of:
    description: The date the successor names carry (today when left out).
    type: str
  change_ref:
    description: The incident reference written into the planned events.
    type: str
extends_documentation_fragment:
  - keyops.runbooks.attributes
attributes:
  check_mode:
    support: full
    details: Only reads.
  diff_mode:
    support: none
  idempotent:
    support: full
seealso:
  - module: keyops.runbooks.compromise_snapshot
  - module: keyops.runbooks.dek_verify
  - module: keyops.runbooks.change_plan
"""

EXAMPLES = r"""
- name: Plan the response to a compromised transit KEK
  keyops.runbooks.compromise_plan:
    keys:
      - key: transit/prod-payments-kek-20261203
    sources: ["{{ transit_keys }}"]
    register_path: /srv/keyops/key-register.yml
    certificates:
      - {name: payments-api, issuer: vault_pki, cert_path: /etc/ssl/payments-api.pem}
    change_ref: INC-77
  register: response
"""

RETURN = r"""
vault_transit:
  description: Per transit key - C(rotate), C(target_version), C(compromised_versions), C(stores) and what to raise.
  returned: always
  type: list
  elements: dict
  sample: [{key_ref: transit/prod-payments-kek-20261203, rotate: true, target_version: 4,
            compromised_versions: [1, 2, 3]}]
aws_kms:
  description: Per KMS key - its aliases, the successor alias (and ARN once it exists) and C(stores).
  returned: always
  type: list
  elements: dict
  sample: [{arn: "arn:aws:kms:...", aliases: [prod-orders-kek-20261203], successor_alias: prod-orders-r2-kek-20261203}]
pkcs11:
  description: Per PKCS#11 key - label, id and token.
  returned: always
  type: list
  elements: dict
  sample: [{label: prod-master-kek-20261203, cka_id: "0001", token_label: keyops-lab}]
certificates:
  description: C(vault_pki) (serials) and C(acme) (files) to revoke.
  returned: always
  type: dict
  sample: {vault_pki: [{name: payments-api, serial: "1f:2d:..", mount: pki}], acme: []}
lock_keys:
  description: Every key the response changes, for M(keyops.runbooks.key_lock).
  returned: always
  type: list
  elements: str
  sample: [transit/prod-payments-kek-20261203]
resolved_keys:
  description: The keys as resolved (transit C(key_ref), KMS ARN with its aliases and successor alias, PKCS#11
    id); a resumed response passes them back as O(keys), since a moved alias no longer names the old key.
  returned: always
  type: list
  elements: dict
  sample: [{key: "arn:aws:kms:...", aliases: [prod-orders-kek-20261203], successor_alias: prod-orders-r2-kek-20261203}]
requires_approval:
  description: Always true - a compromise response is dual-controlled.
  returned: always
  type: bool
  sample: true
needs_human:
  description: What the response cannot do by itself.
  returned: always
  type: list
  elements: str
  sample: ["transit/prod-payments-kek-20261203: versions 1..3 are disabled for decryption but still exist; ..."]
counts:
  description: Keys, dependent data keys and certificates.
  returned: always
  type: dict
  sample: {keys: 1, data_keys: 5000, certificates: 1}
audit_events:
  description: One C(planned) event per step.
  returned: always
  type: list
  elements: dict
  sample: [{action: rotate, backend: vault_transit, outcome: planned, check_mode: true}]
steps:
  description: The planned steps, one readable line each, in order.
  returned: always
  type: list
  elements: str
  sample: ["2. rotate vault_transit transit/prod-payments-kek-20261203: {'latest_version': 3} -> {'latest_version': 4}"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.runbook_plan import CompromisePlanner


def main() -> None:
    argument_spec = dict(
        keys=dict(type="list", elements="raw", required=True, no_log=False),
        sources=dict(type="list", elements="raw", required=True),
        register_path=dict(type="path"),
        certificates=dict(type="list", elements="dict", default=[]),
        since=dict(type="str"),
        as_of=dict(type="str"),
        trim=dict(type="bool", default=False),
        deletion_window_days=dict(type="int", default=30),
        change_ref=dict(type="str"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, lambda m: CompromisePlanner(m.params).plan())


if __name__ == "__main__":
    main()
