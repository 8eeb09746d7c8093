#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rotation_plan
short_description: Decide which keys and certificates a rotation run changes, and plan every step for approval
description:
  - Reads the KeyRecords the *_info modules returned (O(sources)) and the key register, and selects the keys to
    rotate - those named in O(keys), or else every key whose last rotation plus the shorter of its register period
    and the policy's cryptoperiod for its class lies before O(as_of).
  - For each selected key it decides every step and returns them per backend for the rotation role - Vault transit
    (rotate, re-wrap each data-key store the register lists, then raise C(min_decryption_version)), AWS KMS
    (rotate on demand, re-encrypt each store), PKCS#11 (a dated successor, the old key end-dated).
  - It opens each data-key store to count the data keys per version, and finds which form of the key's reference
    the store's C(key_ref) column uses (C(<mount>/<name>), the key name alone, an ARN, an alias).
  - Keys whose automatic rotation differs from the register are listed in C(schedule_fixes); register
    certificates in PEM files are listed for M(keyops.runbooks.x509_acme_renew), which renews the due ones.
  - Returns C(audit_events) with outcome C(planned) for every step, which M(keyops.runbooks.change_plan) turns
    into the change plan; C(requires_approval) says whether any step is dual-controlled (a C(master-kek), raising
    C(min_decryption_version) under the default policy).
  - With O(since) (the run's start, from its journal) a key whose newest version is newer than O(since) was
    rotated by this run already and is not rotated again, so a cut run resumes without a second rotation.
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
options:
  sources:
    description: Registered results of M(keyops.runbooks.vault_transit_key_info),
      M(keyops.runbooks.aws_kms_key_info) and M(keyops.runbooks.pkcs11_key_info) (looped results too).
    type: list
    elements: raw
    required: true
  register_path:
    description: The key register (its C(rotation_period_days), C(key_class) and C(data_key_stores) are used).
    type: path
  keys:
    description: Keys (name, C(<mount>/<name>), ARN, alias or label) or register certificates to rotate now, due
      or not. Empty selects what is due.
    type: list
    elements: str
    default: []
  backends:
    description: The backends this run rotates.
    type: list
    elements: str
    choices: [vault_transit, aws_kms, pkcs11, x509]
    default: [vault_transit, aws_kms, pkcs11, x509]
  as_of:
    description: Select what is due at this time (ISO 8601) instead of now, for planning a change window ahead.
    type: str
  since:
    description: When this run started (from its journal); keys rotated after it are not rotated again.
    type: str
  raise_min_decryption:
    description: Raise C(min_decryption_version) of a transit key once its stores are re-wrapped.
    type: bool
    default: true
  certificates:
    description: Per-certificate overrides by register name - C(issuer) (V(acme), or V(vault_pki) to leave it to
      the Vault PKI task), C(cert_path), C(key_path), C(names).
    type: list
    elements: dict
    default: []
  change_ref:
    description: The change reference written into the planned events.
    type: str
  policy:
    description: Policy overrides (cryptoperiods, which actions need approval).
    type: dict
extends_documentation_fragment:
  - keyops.runbooks.attributes
attributes:
  check_mode:
    support: full
    details: Only reads; the same plan in check mode and in a real run.
  diff_mode:
    support: none
  idempotent:
    support: full
notes:
  - A transit key with no data-key store in the register is rotated, but its C(min_decryption_version) is left
    alone and listed in C(needs_human) - nobody can know its ciphertexts are all re-wrapped.
  - KMS keys other than C(SYMMETRIC_DEFAULT) with KMS-made material cannot be rotated by KMS; they are listed in
    C(needs_human).
seealso:
  - module: keyops.runbooks.change_plan
  - module: keyops.runbooks.vault_transit_rewrap
  - module: keyops.runbooks.aws_kms_reencrypt
"""

EXAMPLES = r"""
- name: Select what is due and plan it
  keyops.runbooks.rotation_plan:
    sources: ["{{ transit_keys }}", "{{ kms_keys }}", "{{ hsm_keys }}"]
    register_path: /srv/keyops/key-register.yml
    change_ref: CHG-2041
  register: rotation

- name: Plan the rotation of two named keys
  keyops.runbooks.rotation_plan:
    sources: ["{{ transit_keys }}", "{{ kms_keys }}"]
    register_path: /srv/keyops/key-register.yml
    keys: [prod-payments-kek-20261203, alias/prod-orders-kek-20261203]
"""

RETURN = r"""
vault_transit:
  description: Transit keys to rotate, with C(rotate), C(target_version), C(raise_min_decryption) and C(stores)
    (store options, C(store_key_ref), C(total), C(pending), C(histogram)).
  returned: always
  type: list
  elements: dict
  sample: [{key_ref: transit/prod-payments-kek-20261203, rotate: true, latest_version: 3, target_version: 4,
            raise_min_decryption: true, stores: [{label: "data_keys.sqlite#data_keys", total: 5000, pending: 5000}]}]
aws_kms:
  description: KMS keys to rotate, with C(rotate) and C(stores).
  returned: always
  type: list
  elements: dict
  sample: [{arn: "arn:aws:kms:us-east-1:123456789012:key/09b3...", rotate: true, stores: []}]
pkcs11:
  description: PKCS#11 keys to give a dated successor.
  returned: always
  type: list
  elements: dict
  sample: [{label: prod-master-kek-20261203, key_class: master-kek, requires_approval: true}]
schedule_fixes:
  description: Keys whose automatic rotation is set to the register's period.
  returned: always
  type: list
  elements: dict
  sample: [{backend: vault_transit, key_ref: transit/prod-reports-kek-20261203, auto_rotate_period: 90d}]
certificates:
  description: Register certificates for M(keyops.runbooks.x509_acme_renew) (C(force) when named).
  returned: always
  type: list
  elements: dict
  sample: [{name: billing.lab.internal, cert_path: /srv/certs/billing.pem, key_path: /srv/certs/billing.key}]
lock_keys:
  description: Every key this run changes, for M(keyops.runbooks.key_lock).
  returned: always
  type: list
  elements: str
  sample: [transit/prod-payments-kek-20261203]
requires_approval:
  description: Whether any planned step is under dual control.
  returned: always
  type: bool
  sample: true
approval_keys:
  description: The keys with a dual-controlled step.
  returned: always
  type: list
  elements: str
  sample: [transit/prod-payments-kek-20261203]
needs_human:
  description: What the run cannot do by itself, one sentence each.
  returned: always
  type: list
  elements: str
  sample: ["prod-partner-transport-20261203 (arn:...): KMS cannot rotate RSA_2048 / AWS_KMS key material; ..."]
skipped:
  description: Keys left out, and why.
  returned: always
  type: list
  elements: dict
  sample: [{key: transit/prod-webhooks-hmac-20261203, reason: not in the register}]
counts:
  description: Keys, data keys, schedule fixes and certificates in the plan.
  returned: always
  type: dict
  sample: {keys: 1, data_keys: 5000, schedule_fixes: 1, certificates_checked: 5}
audit_events:
  description: One C(planned) event per step, for M(keyops.runbooks.change_plan).
  returned: always
  type: list
  elements: dict
  sample: [{action: rotate, backend: vault_transit, key_ref: transit/prod-payments-kek-20261203, outcome: planned,
            check_mode: true}]
steps:
  description: The planned steps, one readable line each.
  returned: always
  type: list
  elements: str
  sample: ["1. rotate vault_transit transit/prod-payments-kek-20261203: {'latest_version': 3} -> {'latest_version': 4}"]
as_of:
  description: The time what is due was judged at.
  returned: always
  type: str
  sample: "2026-12-03T18:00:00Z"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.runbook_plan import RotationPlanner


def main() -> None:
    argument_spec = dict(
        sources=dict(type="list", elements="raw", required=True),
        register_path=dict(type="path"),
        keys=dict(type="list", elements="str", default=[], no_log=False),
        backends=dict(
            type="list",
            elements="str",
            default=["vault_transit", "aws_kms", "pkcs11", "x509"],
            choices=["vault_transit", "aws_kms", "pkcs11", "x509"],
        ),
        as_of=dict(type="str"),
        since=dict(type="str"),
        raise_min_decryption=dict(type="bool", default=True),
        certificates=dict(type="list", elements="dict", default=[]),
        change_ref=dict(type="str"),
        policy=dict(type="dict"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, lambda m: RotationPlanner(m.params).plan())


if __name__ == "__main__":
    main()
