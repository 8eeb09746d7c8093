#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: x509_acme_revoke
short_description: Revoke certificates over ACME with a reason, and confirm the revocation
version_added: 0.1.0
description:
  - Revokes each certificate in O(certificates) at the ACME server that issued it (RFC 8555 section 7.6), signed
    with the account key that ordered it, with the RFC 5280 reason O(reason).
  - Confirmed means - the ACME server accepted the revocation (or answered that the certificate was already
    revoked), and, when O(acme_management_url) is given, that status source reports the serial as revoked with the
    requested reason code. A status source that disagrees fails the task.
  - O(reason=keyCompromise) is compromise response and is under dual control - refused without a quorum of verified
    O(approvals) (see the policy's C(approval_required_actions)). Other reasons follow the policy's rule for C(revoke),
    which is not dual-controlled by default.
options:
  certificates:
    description: The certificates to revoke.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Name for results and audit events. Defaults to O(certificates[].cert_path).
        type: str
      cert_path:
        description: The certificate file (PEM, the first certificate is revoked; or DER).
        type: path
        required: true
  reason:
    description: RFC 5280 revocation reason.
    type: str
    choices: [unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn]
    default: unspecified
  acme_management_url:
    description:
      - Base URL of a status source that answers C(GET <url>/cert-status-by-serial/<serial>) with the certificate's
        status, as Pebble's management interface does. Used to confirm the revocation and to make check mode know
        which certificates are already revoked.
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
    support: partial
    details:
      - Plans without contacting the ACME server.
      - Only with O(acme_management_url) does check mode know that a certificate is already revoked; without it every
        certificate is planned as a revocation.
  diff_mode:
    support: none
    details: Results and audit events carry the before and after revocation state.
  idempotent:
    support: full
    details: A certificate the server reports as already revoked is left unchanged.
notes:
  - OCSP and CRL checks are not made; with a public CA, confirm through its OCSP responder after the run.
  - The account key that ordered the certificate must be given; revocation signed with the certificate's own key is
    not offered.
seealso:
  - module: keyops.runbooks.x509_acme_renew
  - module: keyops.runbooks.x509_inventory
author: Keyops Runbooks Maintainers (@keyops-runbooks)
"""

EXAMPLES = r"""
- name: Revoke the compromised web certificate (compromise response, two approvals)
  keyops.runbooks.x509_acme_revoke:
    acme_directory: https://acme.internal.example.com/directory
    acme_ca_bundle: /etc/ssl/certs/corporate-roots.pem
    account_key_path: /etc/keyops/acme/account.key
    reason: keyCompromise
    change_ref: INC-77
    approvals: "{{ verified.approvals }}"
    certificates:
      - name: prod-web-tls-20261203
        cert_path: /etc/nginx/tls/www.crt.20261203T180631Z.bak
  register: revocation

- name: Retire a certificate no longer in use
  keyops.runbooks.x509_acme_revoke:
    acme_directory: https://acme.internal.example.com/directory
    account_key_path: /etc/keyops/acme/account.key
    reason: cessationOfOperation
    change_ref: CHG-2042
    certificates:
      - cert_path: /etc/nginx/tls/old-portal.crt
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
    serial:
      description: Serial number, lower-case hex.
      type: str
      sample: 4340ac51a0ad97a5
    fingerprint_sha256:
      description: SHA-256 fingerprint of the certificate.
      type: str
      sample: 1f2e3d4c5b6a79880f1e2d3c4b5a69788f9e0d1c2b3a49586f7e8d9c0b1a2938
    changed:
      description: Revoked by this run (or would be, in check mode).
      type: bool
      sample: true
    revoked:
      description: Known to be revoked after the run; null in check mode when unknown.
      type: bool
      sample: true
    reason:
      description: The reason asked for.
      type: str
      sample: keyCompromise
    confirmed:
      description:
        - How the revocation was confirmed - C(acme) (V(revoked) or V(already_revoked), the ACME server's answer),
          C(status_source), C(status) and C(reason_code) from O(acme_management_url) when given.
        - Null in check mode.
      type: dict
      sample: {acme: revoked, status_source: acme_management_url, status: revoked, reason_code: 1}
audit_events:
  description: One C(revoke) event per certificate, without key material.
  returned: always
  type: list
  elements: dict
  sample:
    - action: revoke
      backend: x509
      key_ref: prod-web-tls-20261203
      outcome: changed
      check_mode: false
      before: {serial: 4340ac51a0ad97a5, revoked: false}
      after: {serial: 4340ac51a0ad97a5, revoked: true, revocation_reason: keyCompromise}
      change_ref: INC-77
      approvals: [{approver: alice, digest: 5e8f0c}, {approver: bob, digest: 5e8f0c}]
      detail: {key_class: tls-cert, revocation_reason: keyCompromise, outcome_reason: revoked}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.acme_client import ACME_ARGSPEC, REVOCATION_REASONS
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import AUDIT_ARGSPEC
from ansible_collections.keyops.runbooks.plugins.module_utils.cert_lifecycle import revoke_certificates


def handle(module: AnsibleModule) -> dict:
    return revoke_certificates(module.params, module.check_mode)


def main() -> None:
    argument_spec = dict(
        ACME_ARGSPEC,
        **AUDIT_ARGSPEC,
        certificates=dict(
            type="list",
            elements="dict",
            required=True,
            options=dict(name=dict(type="str"), cert_path=dict(type="path", required=True)),
        ),
        reason=dict(type="str", choices=list(REVOCATION_REASONS), default="unspecified"),
        acme_management_url=dict(type="str"),
        policy=dict(type="dict", default={}),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, handle)


if __name__ == "__main__":
    main()
