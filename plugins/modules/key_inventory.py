#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: key_inventory
short_description: The whole key inventory in one call - every backend read at once, reconciled and reported
version_added: 0.1.0
author: keyops maintainers (@keyops)
description:
  - Reads every source it is pointed at concurrently, in one module process - the transit keys of each Vault or
    OpenBao server, the KMS keys of each AWS region, the key objects of each PKCS#11 token, certificates in files
    and on TLS endpoints, key material left in files - each through the same code as
    M(keyops.runbooks.vault_transit_key_info), M(keyops.runbooks.aws_kms_key_info),
    M(keyops.runbooks.pkcs11_key_info), M(keyops.runbooks.x509_inventory) and M(keyops.runbooks.key_material_scan),
    with those modules' defaults.
  - Then does what M(keyops.runbooks.key_inventory_report) does - checks the key register, reconciles, evaluates the
    policy and writes C(key-inventory.csv), C(key-inventory.json) and C(key-inventory.html) - and returns the same
    result, plus RV(sources) and RV(source_errors).
  - One module start instead of one per source and one for the report, which is most of an inventory's time.
  - A source that cannot be read is reported (RV(source_errors), a warning, and a line in the reports) while the
    others are still inventoried; register entries of its backend that nothing matched are listed as unverified,
    not as missing. O(fail_on_source_errors) fails the run instead, after the reports are written.
  - Tokens, PINs and PKCS#12 passwords are named by environment variable (O(vault_servers[].token_env),
    O(pkcs11_tokens[].user_pin_env), O(pkcs12_password_envs)) and read by the module where it runs; the values
    never pass through task arguments and are masked in everything it returns.
options:
  vault_servers:
    description: Vault or OpenBao servers whose transit keys are read.
    type: list
    elements: dict
    default: []
    suboptions:
      url:
        description: The server address.
        type: str
        required: true
      token_env:
        description:
          - Name of the environment variable that holds the token to read with.
          - Left out, the token comes from E(VAULT_TOKEN) or E(BAO_TOKEN), as for
            M(keyops.runbooks.vault_transit_key_info).
        type: str
      namespace:
        description: The Vault Enterprise namespace.
        type: str
      mounts:
        description: Transit mounts to read; every transit mount when left out.
        type: list
        elements: str
      ca_cert:
        description: CA bundle for the server's TLS certificate.
        type: path
      key_classes:
        description: Key class per key name, for keys whose name does not say it.
        type: dict
  aws_kms:
    description:
      - AWS KMS regions whose keys are read. Credentials come from the usual AWS environment variables or the profile.
    type: list
    elements: dict
    default: []
    suboptions:
      region:
        description: The region.
        type: str
        required: true
      endpoint_url:
        description: A KMS endpoint other than AWS's (a VPC endpoint, or the lab's moto server).
        type: str
      profile:
        description: The AWS profile.
        type: str
      customer_managed_only:
        description: Leave out keys AWS manages.
        type: bool
        default: true
  pkcs11_tokens:
    description: PKCS#11 tokens whose key objects are read (one after the other, sharing the loaded library).
    type: list
    elements: dict
    default: []
    suboptions:
      token_label:
        description: The token's label.
        type: str
        required: true
      token_serial:
        description: The token's serial, when labels are not unique.
        type: str
      module:
        description: The PKCS#11 library; falls back to E(KEYOPS_PKCS11_MODULE).
        type: path
      user_pin_env:
        description:
          - Name of the environment variable that holds the user PIN; the PIN comes from E(KEYOPS_PKCS11_PIN) when
            left out.
        type: str
  x509_paths:
    description: Files and folders searched for certificates (as O(keyops.runbooks.x509_inventory#module:paths)).
    type: list
    elements: path
    default: []
  x509_endpoints:
    description: TLS endpoints whose served certificates are read.
    type: list
    elements: dict
    default: []
    suboptions:
      host:
        description: Host name or address.
        type: str
        required: true
      port:
        description: TCP port.
        type: int
        default: 443
      server_name:
        description:
          - Server name sent with SNI, and the name the certificate must cover unless O(x509_endpoints[].names) is
            given. Defaults to no SNI, and O(x509_endpoints[].host) as the name to cover.
        type: str
      names:
        description: Names the served certificate must cover (all of them), for V(name_mismatch).
        type: list
        elements: str
      timeout:
        description: Seconds for the connection and handshake; 5 when left out, as in M(keyops.runbooks.x509_inventory).
        type: float
  x509_ca_bundle:
    description: CA bundle the served chains are verified against.
    type: path
  pkcs12_password_envs:
    description:
      - Names of environment variables holding passwords to try on PKCS#12 files. An unset variable is an empty
        password.
    type: list
    elements: str
    default: []
  file_scan_paths:
    description: Folders searched for key material left in files (as O(keyops.runbooks.key_material_scan#module:paths)).
    type: list
    elements: path
    default: []
  fail_on_source_errors:
    description:
      - Fail the run, after the reports are written, when any source could not be read.
      - V(false) reports the failed sources and inventories the others.
    type: bool
    default: false
  records:
    description: More KeyRecords (dicts with at least C(id), C(name) and C(backend)).
    type: list
    elements: dict
    default: []
  backends:
    description:
      - Backends this run inventoried, in addition to those of the sources given.
      - Register entries of a backend that was not inventoried are reported as unverified, never as missing.
    type: list
    elements: str
    choices: [vault_transit, aws_kms, pkcs11, x509, file]
    default: []
  register_path:
    description:
      - The key register YAML (schema in C(docs/inventory.md)). It is checked before any source is read; a schema
        error fails the module with the line and field of every error.
      - Without it, no reconciliation is done and no V(not_in_register) finding is raised.
    type: path
  policy:
    description:
      - Overrides of the policy defaults (same shape as C(DEFAULT_POLICY)), used by every source and the report.
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
    description: Fail the task (after writing the reports) when any finding has this severity or a higher one.
    type: str
    choices: [none, info, low, medium, high, critical]
    default: none
  title:
    description: Title of the HTML report.
    type: str
    default: Key inventory
  as_of:
    description: Evaluate cryptoperiods and expiries as of this ISO 8601 time instead of now.
    type: str
  return_records:
    description: Also return every inventory record in RV(records).
    type: bool
    default: false
extends_documentation_fragment:
  - keyops.runbooks.attributes
attributes:
  check_mode:
    support: full
    details: Reads every source and reports whether the report files would change, without writing them.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - Read-only against every backend; the report files are rewritten only when the inventory's content differs.
      - Key ages change by the day, so a run on another day may report a change.
notes:
  - Environment variables named by O(vault_servers[].token_env), O(pkcs11_tokens[].user_pin_env) and
    O(pkcs12_password_envs) are read where the module runs - the controller for C(localhost); on another host, set
    them with the task's C(environment) keyword.
  - Sources run in parallel threads, so the slowest source sets the time; PKCS#11 tokens run one after the other.
  - Only the collection's own errors (unreachable, denied, not found, bad options) make a source fail on its own; an
    unexpected error fails the module as it would the source's C(*_info) module.
seealso:
  - module: keyops.runbooks.key_inventory_report
  - module: keyops.runbooks.vault_transit_key_info
  - module: keyops.runbooks.aws_kms_key_info
  - module: keyops.runbooks.pkcs11_key_info
  - module: keyops.runbooks.x509_inventory
  - module: keyops.runbooks.key_material_scan
  - name: Inventory and the key register
    description: docs/inventory.md in this collection.
    link: https://example.invalid/keyops/runbooks/docs/inventory.md
"""

EXAMPLES = r"""
- name: Inventory Vault, KMS, the HSM and the certificates in one call
  keyops.runbooks.key_inventory:
    vault_servers:
      - url: https://vault.example.com:8200
        token_env: VAULT_TOKEN
    aws_kms:
      - region: eu-central-1
    pkcs11_tokens:
      - token_label: prod-hsm-a
        module: /usr/lib/softhsm/libsofthsm2.so
        user_pin_env: HSM_PIN
    x509_paths: [/etc/pki/tls]
    x509_endpoints:
      - host: 10.0.4.20
        server_name: www.example.com
    register_path: /srv/keyops/key-register.yml
    output_dir: /srv/keyops/reports/2026-12
  register: inventory

- name: Gate a pipeline - fail on high findings or on any source that could not be read
  keyops.runbooks.key_inventory:
    vault_servers:
      - url: https://vault.example.com:8200
    register_path: /srv/keyops/key-register.yml
    output_dir: /srv/keyops/reports/gate
    fail_on: high
    fail_on_source_errors: true
"""

RETURN = r"""
counts:
  description: Totals of the inventory (as M(keyops.runbooks.key_inventory_report) returns them).
  returned: always
  type: dict
  sample:
    keys: 42
    by_backend: {aws_kms: 8, pkcs11: 6, vault_transit: 14, x509: 14}
    findings: 17
    by_severity: {critical: 1, high: 6, medium: 8, low: 2, info: 0}
    missing_from_backend: 1
    unverified_register_entries: 0
    backends_scanned: [aws_kms, pkcs11, vault_transit, x509]
findings:
  description: Every finding with the key it is about, most severe first.
  returned: always
  type: list
  elements: dict
  sample:
    - {code: rotation_overdue, severity: high, message: the key is past its cryptoperiod, key: prod-a-kek-20250101,
       backend: vault_transit, location: "https://vault.example.com:8200/v1/transit", id: prod-a-kek-20250101}
missing_from_backend:
  description: Register entries that no backend holds (name, backend, location, register line).
  returned: always
  type: list
  elements: dict
  sample: [{name: prod-billing-kek-20250101, backend: aws_kms, location: us-east-1, register_line: 40}]
unverified_register_entries:
  description: Register entries of backends this run did not read, or whose source failed, with the reason.
  returned: always
  type: list
  elements: dict
  sample: [{name: prod-hsm-kek-20260101, backend: pkcs11, reason: the pkcs11 source prod-hsm-a could not be read}]
due_for_rotation:
  description: Keys to rotate and certificates to renew within RV(due_window_days), soonest first.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: prod-payments-kek-20251210, backend: vault_transit, key_class: kek, due: "2027-01-09T00:00:00Z",
       days_left: 37, action: rotate}
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
sources:
  description: Each source read, in order - its backend, name, seconds, and the keys it returned or its error.
  returned: always
  type: list
  elements: dict
  sample:
    - {backend: vault_transit, source: "https://vault.example.com:8200", seconds: 0.41, keys: 14}
    - {backend: aws_kms, source: eu-central-1, seconds: 0.93, error: "Read keys failed: ..."}
source_errors:
  description: The sources that could not be read and why (also listed in the JSON and HTML reports).
  returned: always
  type: list
  elements: dict
  sample: [{backend: aws_kms, source: eu-central-1, msg: "List keys failed: KMS is unreachable. Check endpoint_url"}]
records:
  description: Every inventory record (KeyRecord fields, then extras such as custodians and register_line).
  returned: when O(return_records=true)
  type: list
  elements: dict
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.inventory_sources import (
    KEY_INVENTORY_ARGSPEC,
    run_key_inventory,
)


def main() -> None:
    module = AnsibleModule(argument_spec=KEY_INVENTORY_ARGSPEC, supports_check_mode=True)
    run_module(module, run_key_inventory)


if __name__ == "__main__":
    main()
