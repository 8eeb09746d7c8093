#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: x509_acme_renew
short_description: Renew certificates that are due over ACME, with a new private key every time
version_added: 0.1.0
description:
  - For each certificate in O(certificates), decides whether it is due - missing, unreadable, expired, expiring
    within O(renew_within_days), past O(renew_after_lifetime_fraction) of its lifetime, no longer covering
    O(certificates[].names), or O(certificates[].force) - and renews the due ones over ACME (RFC 8555).
  - Every renewal makes a new private key (never reuses the old one), answers the http-01 challenge for each name,
    finalizes the order, backs up the old certificate, key and chain files (0600, C(<file>.<UTC time>.bak)),
    installs the new ones atomically (key 0600; certificate files keep their mode and owner) and reads them back to
    verify that the certificate is the new one, matches the new key and covers the names.
  - Once the CA has issued a certificate nothing discards it. The new key and the issued chain are kept in
    C(<file>.keyops-pending) files (0600) until installed; a failure after issuance (an alternate chain that cannot be
    fetched, a backup or install error) leaves them there and says so. An alternate chain that cannot be fetched is
    a warning and the server's default chain is installed.
  - Many certificates in one call, one after another; one certificate failing does not stop the others, and the task
    fails at the end naming every certificate that failed.
  - The ACME account key is read from O(account_key_path), or made there (EC P-256, 0600) when missing. It is never
    returned.
options:
  certificates:
    description: The certificates to keep renewed.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Name for results and audit events (the register's key name).
          - Defaults to O(certificates[].cert_path).
        type: str
      cert_path:
        description: The certificate file (the leaf alone, PEM).
        type: path
        required: true
      key_path:
        description: The private key file (PEM, PKCS#8, unencrypted, 0600).
        type: path
        required: true
      chain_path:
        description: Where to write the intermediate certificates, if the service wants them apart.
        type: path
      fullchain_path:
        description: Where to write leaf plus intermediates, if the service wants them together.
        type: path
      names:
        description: DNS names or IP addresses the certificate must cover.
        type: list
        elements: str
        required: true
      key_type:
        description: Type of the new private key.
        type: str
        choices: [ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096]
        default: ec-p256
      force:
        description: Renew even when not due.
        type: bool
        default: false
  renew_within_days:
    description:
      - Renew certificates expiring within this many days.
      - Defaults to the policy's C(certificate_renewal_window_days) (30).
    type: int
  renew_after_lifetime_fraction:
    description: Also renew certificates past this fraction of their lifetime (2/3 by default, the usual ACME practice).
    type: float
    default: 0.667
  preferred_chain:
    description:
      - Common name of the root (the issuer of the chain's last certificate) to prefer among the chains the server
        offers. Without it the server's default chain is installed.
    type: str
  http01_webroot:
    description:
      - Folder served at C(http://<name>/) for http-01 validation; the challenge files are written under
        C(.well-known/acme-challenge/) and removed afterwards. Not needed when the server skips validation.
    type: path
  backup:
    description: Keep a copy of the old certificate, key and chain files before replacing them.
    type: bool
    default: true
  acme_timeout:
    description: Seconds to wait for each order to be validated and issued.
    type: int
    default: 90
  as_of:
    description: Decide what is due as of this time (ISO 8601, UTC when no zone is given) instead of now.
    type: str
  policy:
    description: Policy overrides (same shape as the collection's default policy).
    type: dict
    default: {}
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.acme
  - keyops.runbooks.audit
attributes:
  check_mode:
    support: full
    details:
      - Reads the certificate files and reports which would be renewed and why.
      - Contacts no ACME server and writes nothing.
  diff_mode:
    support: full
    details: Before and after are serial, not-after and fingerprint per certificate; after is unknown in check mode.
  idempotent:
    support: full
    details: A renewed certificate is no longer due, so a second run changes nothing (unless O(certificates[].force)).
notes:
  - Only the http-01 challenge is answered. Serving O(http01_webroot) is the web server's job.
  - Reloading the service that uses the certificate is left to a handler; check the served certificate afterwards
    with M(keyops.runbooks.x509_inventory) and compare C(certificates[].new.fingerprint_sha256).
  - Certificates from Vault PKI are issued by the Vault area's module; the rotation role picks ACME or Vault PKI per
    certificate from the key register.
  - Renewal is not under dual control by default; add C(renew) to the policy's C(approval_required_actions) to put it
    there.
seealso:
  - module: keyops.runbooks.x509_inventory
  - module: keyops.runbooks.x509_acme_revoke
  - module: community.crypto.acme_certificate
author: Keyops Runbooks Maintainers (@keyops-runbooks)
"""

EXAMPLES = r"""
- name: Renew the web tier's certificates that are due
  keyops.runbooks.x509_acme_renew:
    acme_directory: https://acme.internal.example.com/directory
    acme_ca_bundle: /etc/ssl/certs/corporate-roots.pem
    account_key_path: /etc/keyops/acme/account.key
    account_email: pki-team@example.com
    terms_agreed: true
    change_ref: CHG-2041
    certificates:
      - name: prod-web-tls-20261203
        cert_path: /etc/nginx/tls/www.crt
        key_path: /etc/nginx/tls/www.key
        fullchain_path: /etc/nginx/tls/www-fullchain.crt
        names: [www.example.com, example.com]
      - name: prod-api-tls-20261203
        cert_path: /etc/nginx/tls/api.crt
        key_path: /etc/nginx/tls/api.key
        chain_path: /etc/nginx/tls/api-chain.crt
        names: [api.example.com]
        key_type: ec-p384
  register: renewal
  notify: Reload nginx

- name: Show what was renewed
  ansible.builtin.debug:
    msg: "{{ renewal.certificates | selectattr('changed') | map(attribute='name') | list }}"
"""

RETURN = r"""
certificates:
  description: One entry per certificate, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The certificate's name.
      type: str
      sample: prod-web-tls-20261203
    changed:
      description: Renewed (or would be, in check mode).
      type: bool
      sample: true
    reason:
      description:
        - Why it is due, or null - V(missing), V(unreadable), V(expired), V(expiring), V(lifetime), V(names_changed),
          V(forced).
      type: str
      sample: expiring
    old:
      description: Serial, not-after and SHA-256 fingerprint of the certificate before; null when there was none.
      type: dict
      sample:
        serial: 6b8b4567327b23c6
        not_after: "2026-12-15T18:03:31Z"
        fingerprint_sha256: 9ab1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1
    new:
      description: Serial, not-after and fingerprint of the installed certificate; null when nothing was renewed.
      type: dict
      sample:
        serial: 4340ac51a0ad97a5
        not_after: "2027-03-03T18:06:29Z"
        fingerprint_sha256: 1f2e3d4c5b6a79880f1e2d3c4b5a69788f9e0d1c2b3a49586f7e8d9c0b1a2938
    backups:
      description: Backup file per role (cert, key, chain, fullchain).
      type: dict
      sample: {cert: /etc/nginx/tls/www.crt.20261203T180631Z.bak, key: /etc/nginx/tls/www.key.20261203T180631Z.bak}
    verified:
      description: What was read back after installing.
      type: dict
      sample: {readable: true, key_matches: true, names_covered: true}
    warnings:
      description: Problems that did not stop the renewal (an alternate chain that could not be fetched).
      type: list
      elements: str
      sample: []
    error:
      description: Why this certificate failed, when it did (the task then fails after trying the others).
      type: str
      sample: null
audit_events:
  description: One C(renew) (or C(issue) for a missing certificate) event per certificate, without key material.
  returned: always
  type: list
  elements: dict
  sample:
    - action: renew
      backend: x509
      key_ref: prod-web-tls-20261203
      outcome: changed
      check_mode: false
      before: {serial: 6b8b4567327b23c6, not_after: "2026-12-15T18:03:31Z"}
      after: {serial: 4340ac51a0ad97a5, not_after: "2027-03-03T18:06:29Z"}
      change_ref: CHG-2041
      approvals: []
      detail: {key_class: tls-cert, outcome_reason: expiring}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.acme_client import ACME_ARGSPEC
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import AUDIT_ARGSPEC
from ansible_collections.keyops.runbooks.plugins.module_utils.cert_lifecycle import KEY_TYPES, renew_certificates


def handle(module: AnsibleModule) -> dict:
    result = renew_certificates(module.params, module.check_mode)
    for warning in result.pop("warning_lines", []):
        module.warn(warning)
    return result


def main() -> None:
    argument_spec = dict(
        ACME_ARGSPEC,
        **AUDIT_ARGSPEC,
        certificates=dict(
            type="list",
            elements="dict",
            required=True,
            options=dict(
                name=dict(type="str"),
                cert_path=dict(type="path", required=True),
                key_path=dict(type="path", required=True, no_log=False),
                chain_path=dict(type="path"),
                fullchain_path=dict(type="path"),
                names=dict(type="list", elements="str", required=True),
                key_type=dict(type="str", choices=list(KEY_TYPES), default="ec-p256"),
                force=dict(type="bool", default=False),
            ),
        ),
        renew_within_days=dict(type="int"),
        renew_after_lifetime_fraction=dict(type="float", default=0.667),
        preferred_chain=dict(type="str"),
        http01_webroot=dict(type="path"),
        backup=dict(type="bool", default=True),
        acme_timeout=dict(type="int", default=90),
        as_of=dict(type="str"),
        policy=dict(type="dict", default={}),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, handle)


if __name__ == "__main__":
    main()
