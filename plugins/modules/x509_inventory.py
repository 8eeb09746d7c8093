#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: x509_inventory
short_description: Find X.509 certificates in files and on TLS endpoints and report their expiry and weaknesses
version_added: 0.1.0
description:
  - Scans files and directories (recursively, with include and exclude globs) for certificates in PEM (every
    certificate block of a file, wherever it sits among other text), DER and PKCS#12, and connects to TLS endpoints
    (with SNI) to read the chain each one serves, all in one call with a bounded pool of O(workers).
  - Returns one KeyRecord (backend C(x509)) per certificate found, with the certificate's subject, SANs, issuer,
    serial, validity, days left, key type and size or curve, signature algorithm, self-signed flag, SHA-256
    fingerprint and source (file and block index, or endpoint, SNI and position in the served chain).
  - For an endpoint's leaf certificate it also says whether the served chain is in order, is complete and verifies
    to O(ca_bundle), and whether the certificate covers the name asked for.
  - Findings per certificate - V(cert_expired), V(cert_expiring) (within O(expiry_window_days)), V(not_yet_valid),
    V(key_too_short) (RSA below C(min_rsa_bits), or C(min_rsa_bits_tls) for TLS certificates),
    V(algorithm_not_approved), V(weak_signature) (SHA-1 or MD5), V(name_mismatch), V(incomplete_chain),
    V(untrusted_chain), V(chain_order), V(unreadable_field), and the collection's other policy checks (for example
    V(cert_validity_too_long)).
  - A file, PEM block, extension or endpoint that cannot be read is reported in RV(errors) for that source and the
    scan goes on; the good certificates beside it are still reported.
  - All times are UTC and come from the certificates, never from the machine's time zone. Not-after is inclusive.
  - Read-only. It never changes anything and never returns key material (private keys in PEM files and PKCS#12
    bundles are skipped or discarded unread).
options:
  paths:
    description:
      - Files and directories to scan. A named file is always read (unless O(exclude) matches it); a directory's
        files are read when their name or path matches O(include).
    type: list
    elements: path
    default: []
  include:
    description:
      - Globs for the files to read inside directories, matched against the file name and against the full path.
    type: list
    elements: str
    default: ['*.pem', '*.crt', '*.cer', '*.cert', '*.der', '*.p12', '*.pfx', '*.chain', '*.bundle']
  exclude:
    description:
      - Globs for files and directories to skip, matched against the name and against the full path.
    type: list
    elements: str
    default: []
  recurse:
    description:
      - Descend into sub-directories of O(paths).
    type: bool
    default: true
  follow_symlinks:
    description:
      - Follow symbolic links to files and directories while walking. Off by default so a link loop cannot trap
        the scan.
    type: bool
    default: false
  max_file_bytes:
    description:
      - Files larger than this are reported as an error instead of being read.
    type: int
    default: 10485760
  pkcs12_passwords:
    description:
      - Passwords to try, in order, on PKCS#12 files (C(.p12), C(.pfx), or DER that looks like PKCS#12). An empty
        password and no password are always tried first.
    type: list
    elements: str
    default: []
  endpoints:
    description:
      - TLS endpoints to connect to. The handshake accepts any certificate (expired, weak, self-signed) so it can
        report it; nothing is sent after the handshake.
    type: list
    elements: dict
    default: []
    suboptions:
      host:
        description: Host name or IP address to connect to.
        type: str
        required: true
      port:
        description: TCP port.
        type: int
        default: 443
      server_name:
        description:
          - Server name sent with SNI, which picks the certificate on servers that host several names.
          - Also the name the certificate must cover unless O(endpoints[].names) is given. Defaults to no SNI, and
            O(endpoints[].host) as the name to cover.
        type: str
      names:
        description: Names the served certificate must cover (all of them), for V(name_mismatch).
        type: list
        elements: str
      timeout:
        description: Seconds for the connection and handshake. Defaults to O(timeout).
        type: float
  timeout:
    description:
      - Default seconds for each endpoint's connection and handshake.
    type: float
    default: 5
  ca_bundle:
    description:
      - PEM file of trusted CA certificates. Served chains are checked against it; without it the chain is still
        checked for completeness, and RV(records[].chain_verified) is null.
    type: path
  expiry_window_days:
    description:
      - A certificate expiring within this many days gets the V(expiring) finding.
      - Defaults to the policy's C(certificate_renewal_window_days) (30).
    type: int
  as_of:
    description:
      - Evaluate validity as of this time (ISO 8601; a time without zone is read as UTC) instead of now, for
        example to see what will have expired by the end of a change freeze.
    type: str
  workers:
    description:
      - Size of the pool that reads files and connects to endpoints concurrently.
    type: int
    default: 16
  fail_on_errors:
    description:
      - Fail the task when any source had an error. By default errors are only reported in RV(errors).
    type: bool
    default: false
  policy:
    description:
      - Policy overrides (same shape as the collection's default policy). Used here - C(min_rsa_bits) (3072),
        C(min_rsa_bits_tls) (2048, the minimum for TLS server and client certificates), C(approved_curves),
        C(weak_signature_hashes), C(certificate_renewal_window_days).
    type: dict
    default: {}
extends_documentation_fragment:
  - keyops.runbooks.attributes
attributes:
  check_mode:
    support: full
    details: Read-only; check mode runs the same scan.
  diff_mode:
    support: none
    details: Nothing changes, so there is no diff.
  idempotent:
    support: full
    details: Never changes anything. Two runs differ only where the clock moved (days left, findings near a boundary).
notes:
  - Chain verification follows issuer names and checks each signature up to a certificate in O(ca_bundle). It does not
    apply the Web PKI's other rules (expiry, key size and names have findings of their own; name constraints, policy
    OIDs and revocation are not checked).
  - Encrypted PEM private keys and PKCS#12 keys are never decrypted for their own sake; a PKCS#12 password is only used
    to reach the certificates.
  - SHA-1 and MD5 certificates cannot be issued with current C(cryptography), but they are read and reported.
seealso:
  - module: keyops.runbooks.x509_acme_renew
  - module: keyops.runbooks.x509_acme_revoke
author: Keyops Runbooks Maintainers (@keyops-runbooks)
"""

EXAMPLES = r"""
- name: Inventory the certificates on the web tier and its public endpoints
  keyops.runbooks.x509_inventory:
    paths:
      - /etc/nginx/tls
      - /etc/ssl/private/legacy.p12
    exclude: ['*/archive/*']
    pkcs12_passwords: ["{{ legacy_p12_password }}"]
    endpoints:
      - host: 10.0.4.20
        port: 443
        server_name: www.example.com
      - host: 10.0.4.20
        port: 443
        server_name: api.example.com
    ca_bundle: /etc/ssl/certs/corporate-roots.pem
  register: certificates

- name: Fail when anything expires within the change freeze
  ansible.builtin.assert:
    that:
      - certificates.records | selectattr('days_left', 'lt', 45) | list | length == 0
    fail_msg: "{{ certificates.records | selectattr('days_left', 'lt', 45) | map(attribute='location') | list }}"

- name: Check the whole estate as of the end of the year
  keyops.runbooks.x509_inventory:
    paths: [/etc/pki]
    as_of: "2027-12-31T23:59:59Z"
    policy:
      min_rsa_bits_tls: 3072
  register: year_end
"""

RETURN = r"""
records:
  description:
    - One KeyRecord per certificate found. A certificate found in two places gives two records with the same
      C(id).
    - The KeyRecord columns come first (C(id) is C(sha256:<fingerprint>), C(location) the source, C(created) not
      before, C(expires) not after, C(next_rotation_due) when renewal is due, C(state) V(expired) or V(enabled)),
      then the certificate fields below.
  returned: always
  type: list
  elements: dict
  contains:
    subject:
      description: Subject as an RFC 4514 string.
      type: str
      sample: CN=www.lab.internal,O=KeyOps Lab
    sans:
      description:
        - Subject alternative names (C(DNS:), C(IP:), C(email:), C(URI:)).
        - Null when the extension cannot be parsed.
      type: list
      elements: str
      sample: [DNS:www.lab.internal, IP:127.0.0.1]
    issuer:
      description: Issuer as an RFC 4514 string.
      type: str
      sample: CN=KeyOps Lab Issuing CA 1,O=KeyOps Lab
    serial:
      description: Serial number in lower-case hex.
      type: str
      sample: 4340ac51a0ad97a5
    not_before:
      description: Start of validity, UTC.
      type: str
      sample: "2026-11-23T18:03:31Z"
    not_after:
      description: End of validity, UTC, inclusive.
      type: str
      sample: "2027-02-21T18:03:31Z"
    days_left:
      description: Whole days from O(as_of) (or now) to not-after, rounded down; negative once expired.
      type: int
      sample: 79
    key_type:
      description: V(RSA), V(EC), V(Ed25519), V(Ed448) or V(DSA).
      type: str
      sample: EC
    key_size:
      description: Key size in bits.
      type: int
      sample: 256
    curve:
      description: Curve name for EC and EdDSA keys, else null.
      type: str
      sample: secp256r1
    signature_algorithm:
      description: Signature algorithm name.
      type: str
      sample: ecdsa-with-SHA256
    signature_hash:
      description: Hash of the signature, lower case.
      type: str
      sample: sha256
    self_signed:
      description: Subject equals issuer and the certificate's own key verifies its signature.
      type: bool
      sample: false
    is_ca:
      description: Basic constraints say CA.
      type: bool
      sample: false
    fingerprint_sha256:
      description: SHA-256 of the DER certificate, lower-case hex.
      type: str
      sample: 3f0c9a7d1e2b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5
    source:
      description:
        - Where it was found. Files - C(type=file), C(path), C(format) (pem, der, pkcs12), C(block) (index among
          the file's certificates). Endpoints - C(type=endpoint), C(host), C(port), C(server_name) (the SNI sent),
          C(position) in the chain as served (0 is the leaf), C(served_chain) (fingerprints in served order).
      type: dict
      sample: {type: file, path: /etc/nginx/tls/www.pem, format: pem, block: 0}
    names_asked:
      description: Names the certificate was checked against (endpoint leaves only).
      type: list
      elements: str
      sample: [www.lab.internal]
    name_matches:
      description: Whether the certificate covers every name asked for; null when no name was asked.
      type: bool
      sample: true
    chain_in_order:
      description: Each served certificate is issued by the next one (endpoint leaves only, else null).
      type: bool
      sample: true
    chain_complete:
      description:
        - Every issuer up to a trust anchor or a self-signed root was served or is in O(ca_bundle).
        - Endpoint leaves only, else null.
      type: bool
      sample: true
    chain_verified:
      description: The served chain verifies to O(ca_bundle); null without a bundle or for non-leaf records.
      type: bool
      sample: true
    chain_problem:
      description: Why the chain is incomplete or does not verify.
      type: str
      sample: null
    errors:
      description: Fields of this certificate that could not be read (for example an unparseable extension).
      type: list
      elements: str
      sample: []
    findings:
      description: Problems found, each C(code), C(severity), C(message).
      type: list
      elements: dict
      sample:
        - {code: cert_expiring, severity: medium, message: "expires on 2026-12-15T18:03:31Z, 11 day(s) left"}
errors:
  description:
    - Sources (or blocks of a source) that could not be read, each with C(source), C(kind) (file or endpoint),
      C(message) and C(block).
  returned: always
  type: list
  elements: dict
  sample:
    - source: "127.0.0.1:1 (SNI dead.lab.internal)"
      kind: endpoint
      message: "connection refused: nothing listens on that port"
      block: null
summary:
  description: Counts of files and endpoints scanned, certificates, errors, findings per code, and the seconds taken.
  returned: always
  type: dict
  sample: {files: 1000, endpoints: 200, certificates: 1600, errors: 0, findings: {cert_expired: 3}, seconds: 2.4}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.x509 import INVENTORY_ARGSPEC, inventory_scan


def main() -> None:
    module = AnsibleModule(argument_spec=INVENTORY_ARGSPEC, supports_check_mode=True)
    run_module(module, lambda current: inventory_scan(current.params))


if __name__ == "__main__":
    main()
