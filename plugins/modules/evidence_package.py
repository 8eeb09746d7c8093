#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: evidence_package
short_description: Build the signed evidence package for auditors (folder and tar.gz)
description:
  - Collects into C(<output_dir>/evidence-<package_id>/) the files and folders in O(sources) (inventory reports,
    rotation records, approvals, restore-test reports, compromise reports, the key register, role definitions,
    approvers files), the written procedure in O(docs) as Markdown and rendered to HTML (markdown-it-py), the policy
    in force (C(DEFAULT_POLICY) with O(policy) applied), and the audit log's tail since O(days) days ago, verbatim,
    with the chain verification of the whole log and of the excerpt.
  - Writes C(manifest.json) (SHA-256 and size of every file) and C(manifest.json.sig), an Ed25519 signature of the
    manifest made with O(signing_key), plus the signer's public key; then C(evidence-<package_id>.tar.gz) of the
    folder (sorted, fixed times, so the same content gives the same archive).
  - Files that could hold key material or secrets are never collected, whatever O(sources) says (C(*.age),
    C(*.agekey), C(*.snap), C(*.wrapped), C(*.sqlite), C(*.p12), C(env.sh), C(lab.json), signing keys).
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
options:
  output_dir:
    description: Where the package folder and archive are written.
    type: path
    required: true
  package_id:
    description: The package's id, part of its names; normally the date (C(YYYYMMDD)).
    type: str
    required: true
  sources:
    description:
      - What to collect, each C({path, dest}) - a file or a folder copied to C(dest) inside the package.
      - A source that does not exist is listed in the manifest's C(notes.absent_sources), unless C(required) is true,
        which fails the module.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The file or folder to collect.
        type: path
        required: true
      dest:
        description: Its path inside the package.
        type: str
        required: true
      required:
        description: Fail when O(sources[].path) does not exist.
        type: bool
        default: false
  exclude:
    description: Extra file name patterns (fnmatch) never to collect.
    type: list
    elements: str
    default: []
  docs:
    description: Markdown files of the written procedure, rendered to HTML under C(procedure/).
    type: list
    elements: path
    default: []
  policy:
    description: The policy overrides in force (same shape as C(DEFAULT_POLICY)); written merged as
      C(policy/policy-in-force.json).
    type: dict
  audit_log:
    description: The audit log the C(keyops.runbooks.audit) callback writes. Missing - the package says so in its notes.
    type: path
  audit_anchor_path:
    description: The file holding the audit chain's anchors, checked with the whole log.
    type: path
  days:
    description: The period the package covers; the audit excerpt starts at the first event in it.
    type: int
    default: 90
  signing_key:
    description: The Ed25519 private key (PKCS#8 PEM, unencrypted) that signs the manifest. Read, never copied.
    type: path
    required: true
extends_documentation_fragment:
  - keyops.runbooks.attributes
attributes:
  check_mode:
    support: full
    details: Collects into a temporary folder, which is removed, and reports whether the package would change.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - When the collected content equals the package already there (every file's SHA-256), it is left alone,
        signature and time included.
notes:
  - Verify a package with M(keyops.runbooks.evidence_verify) and the signer's public key, obtained independently of
    the package.
seealso:
  - module: keyops.runbooks.evidence_verify
  - module: keyops.runbooks.audit_verify
"""

EXAMPLES = r"""
- name: Evidence package for the quarter
  keyops.runbooks.evidence_package:
    output_dir: /srv/keyops/outputs/evidence
    package_id: "20261231"
    sources:
      - {path: /srv/keyops/outputs/inventory, dest: inventory}
      - {path: /srv/keyops/outputs/restore-tests, dest: restore-tests}
      - {path: /srv/keyops/register/key-register.yml, dest: register/key-register.yml, required: true}
    docs: [/srv/keyops/docs/procedure.md]
    audit_log: /var/log/keyops/audit.jsonl
    days: 90
    signing_key: /run/keyops/evidence-signing-key.pem
"""

RETURN = r"""
path:
  description: The package folder.
  returned: always
  type: str
  sample: /srv/keyops/outputs/evidence/evidence-20261231
archive:
  description: The tar.gz of the folder.
  returned: always
  type: str
  sample: /srv/keyops/outputs/evidence/evidence-20261231.tar.gz
files:
  description: How many files the manifest lists.
  returned: always
  type: int
  sample: 42
signer:
  description: The SHA-256 fingerprint of the signing key's public half.
  returned: always
  type: str
  sample: SHA256:4c1f0e2d...
audit:
  description: The audit excerpt's facts and chain verification (C(whole_log), C(excerpt)), or C(present=false).
  returned: always
  type: dict
  sample: {present: true, whole_log: {ok: true, count: 120}, excerpt: {ok: true, lines: 80}}
absent_sources:
  description: Optional sources that did not exist.
  returned: always
  type: list
  elements: dict
  sample: [{path: /srv/keyops/outputs/compromise, dest: compromise}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.evidence import build


def handle(module: AnsibleModule) -> dict:
    done = build(module.params, module.check_mode)
    manifest = done["manifest"]
    return {
        "changed": done["changed"],
        "path": done["path"],
        "archive": done["archive"],
        "files": len(manifest["files"]),
        "signer": manifest["signer"]["public_key_fingerprint"],
        "audit": done["audit"],
        "absent_sources": manifest["notes"]["absent_sources"],
        "rendered": done["rendered"],
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            output_dir=dict(type="path", required=True),
            package_id=dict(type="str", required=True),
            sources=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    path=dict(type="path", required=True),
                    dest=dict(type="str", required=True),
                    required=dict(type="bool", default=False),
                ),
            ),
            exclude=dict(type="list", elements="str", default=[]),
            docs=dict(type="list", elements="path", default=[]),
            policy=dict(type="dict"),
            audit_log=dict(type="path"),
            audit_anchor_path=dict(type="path"),
            days=dict(type="int", default=90),
            signing_key=dict(type="path", required=True, no_log=False),
        ),
        supports_check_mode=True,
    )
    run_module(module, handle)


if __name__ == "__main__":
    main()
