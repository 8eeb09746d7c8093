#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: key_inventory_report
short_description: One key inventory across every backend, reconciled with the key register and checked against policy
version_added: 0.1.0
author: keyops maintainers (@keyops)
description:
  - Takes the KeyRecords returned by the C(*_info) modules (M(keyops.runbooks.vault_transit_key_info),
    M(keyops.runbooks.aws_kms_key_info), M(keyops.runbooks.pkcs11_key_info)), M(keyops.runbooks.x509_inventory) and
    M(keyops.runbooks.key_material_scan), and builds one inventory with the same fields for every key.
  - Reconciles it with the key register (O(register_path)) - keys registered but not found
    (V(missing_from_backend)), keys found but not registered (V(not_in_register)), and drift in owner, algorithm,
    key class and rotation period (V(drift_owner), V(drift_algorithm), V(drift_key_class), V(drift_rotation)).
  - Evaluates the policy (approved algorithms and sizes, cryptoperiods per key class after NIST SP 800-57, the naming
    rule, export and deletion protection, automatic rotation of KEKs, certificate expiry and signatures) and merges
    those findings with the ones the sources reported, one finding per code and key.
  - Writes C(key-inventory.csv) (the DESIGN.md columns in order), C(key-inventory.json) and a self-contained
    C(key-inventory.html) (summary, findings by severity, keys due in the next O(due_window_days) days, charts of
    certificate expiries and key ages) under O(output_dir).
  - Never reads key material; the reports hold ids, names, algorithms, dates and states only.
options:
  sources:
    description:
      - Registered results of the inventory modules, as they come (a skipped task is ignored), or lists of KeyRecords.
      - A result that names its C(backend) counts that backend as inventoried even when it found no key.
    type: list
    elements: raw
    default: []
  records:
    description: More KeyRecords (dicts with at least C(id), C(name) and C(backend)).
    type: list
    elements: dict
    default: []
  backends:
    description:
      - Backends this run inventoried, in addition to those seen in O(sources) and O(records).
      - Register entries of a backend that was not inventoried are reported as unverified, never as missing.
    type: list
    elements: str
    choices: [vault_transit, aws_kms, pkcs11, x509, file]
    default: []
  register_path:
    description:
      - The key register YAML (schema in C(docs/inventory.md)). A schema error fails the module with its line and
        field.
      - Without it, no reconciliation is done and no V(not_in_register) finding is raised.
    type: path
  policy:
    description:
      - "Overrides of the policy defaults (C(plugins/module_utils/policy.py), same shape as C(DEFAULT_POLICY)); dicts
        merge one level deep, so C({cryptoperiod_days: {dek: 365}}) changes only the DEK period."
    type: dict
    default: {}
  output_dir:
    description: Folder to write the reports to. Without it, nothing is written and only the result is returned.
    type: path
  formats:
    description: Which reports to write.
    type: list
    elements: str
    choices: [csv, json, html]
    default: [csv, json, html]
  due_window_days:
    description:
      - Keys due for rotation (and certificates due for renewal) within this many days are listed.
      - Defaults to the policy's C(rotation_due_window_days) (90).
    type: int
  fail_on:
    description:
      - Fail the task (after writing the reports) when any finding has this severity or a higher one.
      - V(none) never fails on findings.
    type: str
    choices: [none, info, low, medium, high, critical]
    default: none
  title:
    description: Title of the HTML report.
    type: str
    default: Key inventory
  as_of:
    description: Evaluate cryptoperiods and expiries as of this ISO 8601 time instead of now (to reproduce a report).
    type: str
  return_records:
    description: Also return every inventory record in RV(records) (large for big estates; the JSON report has them).
    type: bool
    default: false
extends_documentation_fragment:
  - keyops.runbooks.attributes
attributes:
  check_mode:
    support: full
    details: Builds the whole inventory and reports whether the files would change, without writing them.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - Files are rewritten only when the inventory's content differs from the last run's (the digest in the JSON
        report ignores the generation time).
      - Key ages change by the day, so a run on another day may report a change.
notes:
  - Reconciliation matches a register entry to a record by backend and name (a KMS C(alias/) prefix is ignored, a
    C(key_id) in the register matches the backend id), then by location, compared by path segments so C(transit)
    matches C(http://127.0.0.1:8200/transit).
  - Cryptoperiods are measured from C(last_rotated), else C(created), else the date in a compliant key name.
seealso:
  - module: keyops.runbooks.key_register_validate
  - name: Inventory and the key register
    description: docs/inventory.md in this collection.
    link: https://example.invalid/keyops/runbooks/docs/inventory.md
"""

EXAMPLES = r"""
- name: Read the Vault transit keys
  keyops.runbooks.vault_transit_key_info:
    mount_point: transit
  register: vault_keys

- name: Write the inventory and fail the pipeline on high findings
  keyops.runbooks.key_inventory_report:
    sources:
      - "{{ vault_keys }}"
    register_path: /srv/keyops/key-register.yml
    output_dir: /srv/keyops/reports/2026-12
    fail_on: high

- name: Evaluate with a stricter DEK cryptoperiod, without writing anything
  keyops.runbooks.key_inventory_report:
    sources: ["{{ vault_keys }}"]
    policy:
      cryptoperiod_days:
        dek: 365
  register: inventory
"""

RETURN = r"""
counts:
  description: Totals of the inventory.
  returned: always
  type: dict
  sample:
    keys: 42
    by_backend: {aws_kms: 8, pkcs11: 6, vault_transit: 14, x509: 14}
    by_class: {dek: 10, kek: 9, master-kek: 3, signing: 6, tls-cert: 14}
    by_state: {enabled: 40, pending_deletion: 1, expired: 1}
    findings: 17
    by_severity: {critical: 1, high: 6, medium: 8, low: 2, info: 0}
    by_code: {cert_expired: 1, rotation_overdue: 2}
    compliant_keys: 30
    not_in_register: 2
    missing_from_backend: 1
    unverified_register_entries: 0
    drift: 3
    due_for_rotation: 5
    backends_scanned: [aws_kms, pkcs11, vault_transit, x509]
findings:
  description: Every finding with the key it is about, most severe first.
  returned: always
  type: list
  elements: dict
  sample:
    - code: exportable_master_key
      severity: critical
      message: the master key is exportable; master keys must never leave the backend
      key: prod-root-kek-20260101
      backend: vault_transit
      location: transit
      id: prod-root-kek-20260101
missing_from_backend:
  description: Register entries that no backend holds (name, backend, location, register line).
  returned: always
  type: list
  elements: dict
  sample: [{name: prod-billing-kek-20250101, backend: aws_kms, location: us-east-1, register_line: 40}]
unverified_register_entries:
  description: Register entries of backends this run did not inventory.
  returned: always
  type: list
  elements: dict
  sample: []
due_for_rotation:
  description: Keys to rotate and certificates to renew within RV(due_window_days), soonest first.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: prod-payments-kek-20251210, backend: vault_transit, location: transit, key_class: kek,
       owner: payments, due: "2027-01-09T00:00:00Z", days_left: 37, action: rotate}
due_window_days:
  description: The window RV(due_for_rotation) covers.
  returned: always
  type: int
  sample: 90
paths:
  description: The report files, by format (also in check mode, where they are not written).
  returned: when O(output_dir) is set
  type: dict
  sample: {csv: /srv/reports/key-inventory.csv, json: /srv/reports/key-inventory.json,
           html: /srv/reports/key-inventory.html}
content_digest:
  description: SHA-256 of the inventory's content (generation time excluded); equal digests mean equal reports.
  returned: always
  type: str
  sample: 3f1a0c5e9b7d2a4c6e8f0a1b3c5d7e9f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d
as_of:
  description: The time the inventory was evaluated at.
  returned: always
  type: str
  sample: "2026-12-03T18:00:00Z"
records:
  description: Every inventory record (KeyRecord fields, then extras such as custodians and register_line).
  returned: when O(return_records=true)
  type: list
  elements: dict
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.inventory_report import (
    REPORT_ARGSPEC,
    run_inventory_report,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={"sources": {"type": "list", "elements": "raw", "default": []}, **REPORT_ARGSPEC},
        supports_check_mode=True,
    )
    run_module(module, run_inventory_report)


if __name__ == "__main__":
    main()
