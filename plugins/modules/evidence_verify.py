#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: evidence_verify
short_description: Verify an evidence package - the manifest's signature and every file's SHA-256
description:
  - Checks the Ed25519 signature over C(manifest.json) with the signer's public key, then every file against the
    manifest, and names each file that was changed, is missing or was added.
  - Takes the package folder or its tar.gz (unpacked into a temporary folder, regular files only, nothing outside it).
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
options:
  path:
    description: The package folder or its C(.tar.gz).
    type: path
    required: true
  public_key:
    description:
      - The signer's Ed25519 public key (PEM, or an OpenSSH C(ssh-ed25519) line), obtained independently of the
        package - the copy inside the package proves nothing by itself.
    type: path
    required: true
  fail_on_mismatch:
    description: Fail when the signature is bad or any file differs. With V(false) the result only reports it.
    type: bool
    default: true
extends_documentation_fragment:
  - keyops.runbooks.attributes
attributes:
  check_mode:
    support: full
    details: Reads only.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Reads only.
seealso:
  - module: keyops.runbooks.evidence_package
"""

EXAMPLES = r"""
- name: Check the evidence package received from the key custodians
  keyops.runbooks.evidence_verify:
    path: /srv/audit/evidence-20261231.tar.gz
    public_key: /srv/audit/keyops-evidence-signer.pub.pem
"""

RETURN = r"""
ok:
  description: Whether the signature is valid and every file matches.
  returned: always
  type: bool
  sample: false
signature_valid:
  description: Whether the manifest's signature verifies with O(public_key).
  returned: always
  type: bool
  sample: true
changed_files:
  description: Files whose SHA-256 differs from the manifest.
  returned: always
  type: list
  elements: str
  sample: [restore-tests/restore-test-20261203.json]
missing:
  description: Files in the manifest that are not in the package.
  returned: always
  type: list
  elements: str
  sample: []
added:
  description: Files in the package that the manifest does not list.
  returned: always
  type: list
  elements: str
  sample: [notes.txt]
files:
  description: How many files the manifest lists.
  returned: always
  type: int
  sample: 42
package_id:
  description: The package's id from its manifest.
  returned: always
  type: str
  sample: "20261231"
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import IntegrityError
from ansible_collections.keyops.runbooks.plugins.module_utils.evidence import load_public_key, unpack, verify


def handle(module: AnsibleModule) -> dict:
    params = module.params
    key = load_public_key(params["public_key"])
    if os.path.isfile(params["path"]):
        with tempfile.TemporaryDirectory(prefix="keyops-evidence-") as scratch:
            result = verify(unpack(params["path"], scratch), key)
    else:
        result = verify(params["path"], key)
    result = {
        "changed": False,
        "ok": result["ok"],
        "signature_valid": result["signature_valid"],
        "changed_files": result["changed"],
        "missing": result["missing"],
        "added": result["added"],
        "files": result.get("files", 0),
        "package_id": result.get("package_id"),
        "created": result.get("created"),
    }
    if params["fail_on_mismatch"] and not result["ok"]:
        raise IntegrityError(
            f"Verify evidence package {params['path']}",
            None,
            f"signature valid: {result['signature_valid']}; changed: {result['changed_files'] or 'none'}; "
            f"missing: {result['missing'] or 'none'}; added: {result['added'] or 'none'}",
            "Do not accept this package; ask the key custodians for a fresh one",
            **{key: value for key, value in result.items() if key != "changed"},
        )
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            public_key=dict(type="path", required=True, no_log=False),
            fail_on_mismatch=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    run_module(module, handle)


if __name__ == "__main__":
    main()
