#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: key_material_scan
short_description: Find private keys, keystores and hard-coded symmetric keys in files
version_added: 0.1.0
description:
  - Walks the given paths on the managed host and finds key material sitting in files, the keys a key register
    usually misses.
  - Finds PEM and OpenSSH private keys (encrypted or not), PKCS#8 DER, PKCS#12 files, Java keystores (JKS and
    JCEKS), JSON Web Key sets with private or symmetric keys, and symmetric keys written in configuration files
    as base64 or hex strings of a key's length under names that say key, secret, kek, dek, encryption or master.
  - For configuration files, C(detect-secrets) confirms each candidate as a secret; the collection's own rules
    decide from the name and the decoded length that it is a key.
  - Returns one KeyRecord per finding, with backend V(file). The key values are parsed in memory only; they are
    never returned, logged or written; a SHA-256 fingerprint of the public part (or of a symmetric key) identifies
    each key instead.
author:
  - Keyops Runbooks Maintainers (@keyops-runbooks)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.attributes.INFO_MODULE
options:
  paths:
    description: Files or directories to scan. Directories are walked recursively.
    type: list
    elements: path
    required: true
  include:
    description:
      - Glob patterns a file's path or name must match to be scanned. All files when empty.
    type: list
    elements: str
    default: []
  exclude:
    description:
      - Glob patterns of files and directories to leave out, matched against the path and the name.
    type: list
    elements: str
    default: ['*.git', 'node_modules', '__pycache__']
  max_size:
    description: Files larger than this many bytes are skipped.
    type: int
    default: 1048576
  use_detector:
    description:
      - Confirm configuration-file candidates with C(detect-secrets). When V(false), or when the library is
        missing on the host (a warning says so), name and length alone decide.
    type: bool
    default: true
  policy:
    description: Overrides of the key-management policy, for example C(min_rsa_bits).
    type: dict
    default: {}
notes:
  - Symbolic links are followed only while they stay inside the scanned tree; links out of it, dangling links and
    directory loops are reported in RV(errors) and skipped.
  - A PKCS#12 file that needs a password, or any encrypted key, is reported as protected without its algorithm
    where the format hides it; OpenSSH keys and Java keystores show their public part in clear, so their algorithm
    and fingerprint are reported even when the private part is encrypted.
  - Runs on the managed host; it needs the Python library C(cryptography) there, and uses C(pyjks) and
    C(detect-secrets) when present.
seealso:
  - module: keyops.runbooks.key_inventory_report
  - module: keyops.runbooks.x509_inventory
"""

EXAMPLES = r"""
- name: Find key material under the application and configuration folders
  keyops.runbooks.key_material_scan:
    paths:
      - /etc/payments
      - /opt/payments/config
    exclude:
      - "*.git"
      - "*/cache/*"
  register: file_keys

- name: Fail the pipeline on any unencrypted private key readable by every user
  ansible.builtin.assert:
    that: >-
      file_keys.records | map(attribute='findings') | flatten
      | selectattr('code', 'equalto', 'world_readable_private_key') | list | length == 0
    fail_msg: A private key on this host is readable by every user
"""

RETURN = r"""
records:
  description: One KeyRecord per key found, with backend V(file). Never holds the key itself.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: C(file://HOST/PATH:LINE), plus C(#ENTRY) for keystore entries.
      type: str
    path:
      description: The file.
      type: str
    line:
      description: The line where the key starts, when the format has lines.
      type: int
    kind:
      description: >-
        V(pkcs8), V(pem_private_key), V(openssh_private_key), V(pkcs8_der), V(pkcs12), V(jks), V(jceks), V(jwk)
        or V(symmetric_key_in_config).
      type: str
    algorithm:
      description: RSA, EC, DSA, Ed25519, oct, symmetric, or null when the format hides it.
      type: str
    length_bits:
      description: Key size in bits, or the curve name.
      type: raw
    protected:
      description: Whether a passphrase protects the key; null when the format does not tell.
      type: bool
    file_owner:
      description: The file's owner.
      type: str
    file_mode:
      description: The file's permission bits, octal.
      type: str
    fingerprint_sha256:
      description: SHA-256 of the public key (DER SubjectPublicKeyInfo), of a JWK thumbprint, or of a symmetric key.
      type: str
    findings:
      description: >-
        Policy findings: V(world_readable_private_key), V(unencrypted_private_key), V(hardcoded_symmetric_key),
        V(weak_algorithm).
      type: list
      elements: dict
  sample:
    - id: file://app01/etc/payments/app.conf:12
      name: app.conf:DATA_ENCRYPTION_KEY
      backend: file
      kind: symmetric_key_in_config
      algorithm: symmetric
      length_bits: 256
      file_mode: "0644"
      findings:
        - code: hardcoded_symmetric_key
          severity: high
          message: a 256-bit key is written in clear under 'DATA_ENCRYPTION_KEY'
errors:
  description: Sources that could not be scanned, each with the reason. The scan goes on past them.
  returned: always
  type: list
  elements: dict
  sample:
    - source: /etc/payments/link-to-root
      error: "symlink points out of the scanned tree: skipped"
files_scanned:
  description: How many files were read.
  returned: always
  type: int
  sample: 10000
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils import key_scan
from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module


def scan_files(module: AnsibleModule) -> dict:
    result = key_scan.scan_files(module.params)
    for warning in result.pop("warnings"):
        module.warn(warning)
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=key_scan.SCAN_ARGSPEC, supports_check_mode=True)
    run_module(module, scan_files)


if __name__ == "__main__":
    main()
