#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: escrow_restore_test
short_description: Restore test of a backup bundle - recover the escrow key from K shares, restore, check, clean up
description:
  - Verifies the bundle against its manifest (changed, missing, added files).
  - Proves that one share fewer than the threshold recovers nothing, then recovers the escrow key from the
    custodians' shares in O(custodian_identities). The escrow key lives only in this module's memory - it is never
    written, returned or logged.
  - Restores each transit backup into a new scratch transit mount (O(scratch_mount)) on the server of O(url), checks
    type and latest version and runs the known-answer canaries made before the backup
    (M(keyops.runbooks.vault_transit_canary)) - decrypt, verify a signature, recompute an HMAC - then removes the
    scratch mount.
  - Unwraps each HSM blob into the scratch token O(scratch_token_label) under the same backup KEK, runs the
    known-answer check (key check value and canary round trip, or sign/verify against the backed-up public key), then
    destroys the restored objects.
  - Raft snapshots are checked for integrity (SHA-256); KMS keys, which cannot be exported, are listed with their
    recorded recovery status.
  - Writes C(restore-test-<bundle id>.json) and C(.md) into O(report_dir) - pass/fail per key, timings, the time to
    recover and what was cleaned up - and fails, after writing them, when anything did not pass.
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.vault
  - keyops.runbooks.audit
options:
  bundle_dir:
    description: The bundle folder, for example as fetched by M(keyops.runbooks.backup_bundle) with C(state=fetched).
    type: path
    required: true
  custodian_identities:
    description:
      - The custodians taking part, each C({name, identity_file}) or C({name, identity}) with their own age secret key
        or unencrypted OpenSSH private key. At least the bundle's threshold must be given.
      - C(identity) is never logged; prefer C(identity_file) readable only by the runner, or an AWX credential.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The custodian's name as in the bundle's C(escrow.json).
        type: str
        required: true
      identity:
        description: The custodian's identity as a string. Never logged.
        type: str
      identity_file:
        description: A file holding the custodian's identity.
        type: path
  scratch_mount:
    description: The scratch transit mount to create, restore into and remove. Default - C(transit-restore-<random>).
    type: str
  scratch_token_label:
    description:
      - The scratch PKCS#11 token HSM blobs are unwrapped into; it must hold the backup KEK (the same key, for
        example through the vendor's cloning) and no key of the bundle.
      - Falls back to E(KEYOPS_PKCS11_SCRATCH_TOKEN_LABEL).
      - Without it, HSM keys are reported as skipped.
    type: str
  pkcs11_module:
    description: The PKCS#11 library. Falls back to E(KEYOPS_PKCS11_MODULE).
    type: path
  scratch_token_pin:
    description: The scratch token's user PIN. Falls back to E(KEYOPS_PKCS11_PIN). Never logged.
    type: str
  unwrapping_key_label:
    description:
      - Label of the unwrapping key on the scratch token; defaults to the wrapping key's label in the HSM manifest.
    type: str
  report_dir:
    description: Where the report files are written (0600; folder 0700).
    type: path
    required: true
  force:
    description: Run the test again even when a passing report of this same bundle (same manifest) is in O(report_dir).
    type: bool
    default: false
attributes:
  check_mode:
    support: partial
    details: Verifies the manifest and reports what would be restored; recovers and restores nothing, writes no report.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - Scratch targets are removed at the end, so the estate is as before.
      - A bundle with a passing report is not tested again unless O(force=true).
notes:
  - The token needs C(sudo)-free rights to mount and unmount the scratch mount (C(sys/mounts/<scratch_mount>)) and to
    restore and use keys in it.
  - Raft snapshots are not restored (that needs a second server unsealed with the original unseal keys); only their
    integrity is checked.
seealso:
  - module: keyops.runbooks.escrow_key
  - module: keyops.runbooks.backup_bundle
  - module: keyops.runbooks.vault_transit_canary
"""

EXAMPLES = r"""
- name: Quarterly restore test of the latest bundle, with two of the three custodians
  keyops.runbooks.escrow_restore_test:
    bundle_dir: "{{ fetched.bundle_dir }}"
    custodian_identities:
      - {name: a.haddad, identity_file: /run/keyops/custodians/a.haddad.agekey}
      - {name: m.okafor, identity_file: /run/keyops/custodians/m.okafor.agekey}
    scratch_token_label: dr-scratch
    report_dir: /srv/keyops/outputs/restore-tests
    change_ref: CHG-2102
  register: restore_test
"""

RETURN = r"""
passed:
  description:
    - Whether everything passed - manifest intact, K-1 refused, escrow key recovered, every key restored and
      checked, scratch targets removed.
  returned: always
  type: bool
  sample: true
bundle_id:
  description: The bundle tested.
  returned: always
  type: str
  sample: "20261203"
report:
  description: The report as written (no secret in it).
  returned: always
  type: dict
  sample: {passed: true, counts: {keys: 3, passed: 3, failed: 0, skipped: 0}, time_to_recover_seconds: 2.4}
report_paths:
  description: The JSON and Markdown report files.
  returned: unless in check mode
  type: list
  elements: str
  sample: [/srv/keyops/outputs/restore-tests/restore-test-20261203.json]
audit_events:
  description: One C(restore) event per key (outcome C(success) or C(failure)).
  returned: always
  type: list
  elements: dict
  sample: [{action: restore, backend: vault_transit, key_ref: transit-restore-1a2b3c4d/prod-export-transport-20261203,
    outcome: success}]
"""

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.keyops.runbooks.plugins.module_utils import backup_bundle, restore_drill
from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import AUDIT_ARGSPEC, audit_event
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import (
    VAULT_ARGSPEC,
    VAULT_REQUIRED_IF,
    check_mount,
    connect,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import IntegrityError


def _events(report: dict, params: dict, check_mode: bool) -> list:
    events = []
    for key in report["keys"]:
        if key.get("passed") is None:
            continue
        outcome = "planned" if check_mode else ("success" if key["passed"] else "failure")
        events.append(
            audit_event(
                "restore",
                key["backend"],
                key.get("target") or key["key_ref"],
                outcome,
                check_mode,
                None,
                {"latest_version": key.get("latest_version"), "location": key.get("target")},
                params["change_ref"],
                params["approvals"],
                {
                    "outcome_reason": "restore test: " + ("passed" if key["passed"] else "failed"),
                    "path": report["bundle_id"],
                },
            )
        )
    return events


def handle(module: AnsibleModule) -> dict:
    params = module.params
    if params["scratch_mount"]:
        check_mount(params["scratch_mount"], option="scratch_mount")
    if module.check_mode:
        verification = backup_bundle.verify_bundle(params["bundle_dir"])
        manifest = verification.pop("manifest")
        report = {
            "bundle_id": manifest["bundle_id"],
            "manifest_check": verification,
            "passed": None,
            "keys": [dict(key, passed=None) for key in manifest["keys"]],
        }
        return {
            "changed": True,
            "passed": None,
            "bundle_id": manifest["bundle_id"],
            "report": report,
            "audit_events": [],
        }

    verification = backup_bundle.verify_bundle(params["bundle_dir"])
    previous = restore_drill.previous_pass(
        params["report_dir"], verification["manifest"]["bundle_id"], verification["manifest_sha256"]
    )
    if previous and not params["force"]:
        return {
            "changed": False,
            "passed": True,
            "bundle_id": previous["bundle_id"],
            "report": previous,
            "report_paths": list(restore_drill.report_paths(params["report_dir"], previous["bundle_id"])),
            "audit_events": [],
        }

    pkcs11 = None
    if params["scratch_token_label"]:
        pkcs11 = {
            "pkcs11_module": params["pkcs11_module"],
            "token_label": params["scratch_token_label"],
            "user_pin": params["scratch_token_pin"],
            "unwrapping_key_label": params["unwrapping_key_label"],
        }
    report = restore_drill.run(
        params["bundle_dir"], params["custodian_identities"], lambda: connect(params), pkcs11, params["scratch_mount"]
    )
    paths = restore_drill.write_report(params["report_dir"], report)
    events = _events(report, params, False)
    if not report["passed"]:
        raise IntegrityError(
            "Restore test",
            None,
            f"bundle {report['bundle_id']} did not pass (failed keys: {', '.join(report['failed']) or 'none'}; "
            f"manifest intact: {report['manifest_check']['ok']}; escrow key recovered: {report['recovery']['passed']}; "
            f"K-1 refused: {report['k_minus_1']['refused']}); see {paths[1]}",
            "Treat this bundle as unrecoverable: take a new backup and find out what damaged it",
            report=report,
            report_paths=list(paths),
            audit_events=events,
        )
    return {
        "changed": True,
        "passed": True,
        "bundle_id": report["bundle_id"],
        "report": report,
        "report_paths": list(paths),
        "audit_events": events,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            VAULT_ARGSPEC,
            **AUDIT_ARGSPEC,
            bundle_dir=dict(type="path", required=True),
            custodian_identities=dict(
                type="list",
                elements="dict",
                required=True,
                options=dict(
                    name=dict(type="str", required=True),
                    identity=dict(type="str", no_log=True),
                    identity_file=dict(type="path"),
                ),
                required_one_of=[("identity", "identity_file")],
                mutually_exclusive=[("identity", "identity_file")],
            ),
            scratch_mount=dict(type="str"),
            scratch_token_label=dict(
                type="str", no_log=False, fallback=(env_fallback, ["KEYOPS_PKCS11_SCRATCH_TOKEN_LABEL"])
            ),
            pkcs11_module=dict(type="path", fallback=(env_fallback, ["KEYOPS_PKCS11_MODULE"])),
            scratch_token_pin=dict(type="str", no_log=True, fallback=(env_fallback, ["KEYOPS_PKCS11_PIN"])),
            unwrapping_key_label=dict(type="str", no_log=False),
            report_dir=dict(type="path", required=True),
            force=dict(type="bool", default=False),
        ),
        required_if=VAULT_REQUIRED_IF,
        supports_check_mode=True,
    )
    run_module(module, handle)


if __name__ == "__main__":
    main()
