#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vault_pki_cert
short_description: Issue, revoke and list certificates of a Vault or OpenBao PKI engine
description:
  - O(action=issue) issues a certificate from a role with a new private key each time; the key is written 0600
    to O(key_path) and never returned. A certificate at O(cert_path) for the same common name that is valid
    for longer than O(renew_before_days) is kept.
  - O(action=revoke) revokes each serial and confirms it is in the CRL (rotating the CRL when needed) before
    reporting it revoked. An expired certificate is reported with status C(expired), not as revoked.
  - O(action=list) returns every certificate the engine issued, with expiry, as KeyRecords.
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.vault
  - keyops.runbooks.audit
options:
  action:
    description: What to do.
    type: str
    choices: [issue, revoke, list]
    default: issue
  mount:
    description: Where the PKI engine is mounted.
    type: str
    default: pki
  role:
    description: The role to issue from (O(action=issue)).
    type: str
  common_name:
    description: The certificate's common name (O(action=issue)).
    type: str
  alt_names:
    description: DNS subject alternative names.
    type: list
    elements: str
  ip_sans:
    description: IP subject alternative names.
    type: list
    elements: str
  ttl:
    description: The certificate's lifetime, for example C(720h); the role's default when left out.
    type: str
  cert_path:
    description: Where to write the certificate and its chain (PEM, 0644).
    type: path
  key_path:
    description: Where to write the new private key (PEM, 0600). It is never returned.
    type: path
  renew_before_days:
    description:
      - Issue anew when the certificate at O(cert_path) expires within this many days, or within the last third
        of its lifetime when that is shorter.
    type: int
    default: 30
  force:
    description: Issue a new certificate even when the one at O(cert_path) is still good.
    type: bool
    default: false
  serials:
    description: The serials to revoke (O(action=revoke)), as Vault prints them (C(1f:2d:...)).
    type: list
    elements: str
  reason:
    description:
      - The revocation reason, recorded in the result and the audit event.
    type: str
    choices: [unspecified, key_compromise, ca_compromise, affiliation_changed, superseded, cessation_of_operation,
              certificate_hold, privilege_withdrawn]
    default: unspecified
  workers:
    description: Parallel reads for O(action=list).
    type: int
    default: 8
attributes:
  check_mode:
    support: full
    details: Reads the existing certificate, the serials and the CRL; issues and revokes nothing.
  diff_mode:
    support: partial
    details: Serials, common names and expiry of the certificate replaced (issue) or the serials revoked.
  idempotent:
    support: full
    details: A still-good certificate is kept; an already revoked serial is only confirmed in the CRL.
notes:
  - Vault and OpenBao accept no reason code on revocation, so CRL entries carry none; O(reason) is recorded in
    the result and the audit event only.
  - Vault refuses to put an expired certificate on the CRL; such serials come back with status C(expired).
seealso:
  - module: keyops.runbooks.vault_transit_key_info
"""

EXAMPLES = r"""
- name: Issue the API's TLS certificate
  keyops.runbooks.vault_pki_cert:
    role: lab-tls
    common_name: api.lab.internal
    alt_names: [api.lab.internal]
    cert_path: /etc/ssl/api/cert.pem
    key_path: /etc/ssl/api/key.pem

- name: Revoke a compromised certificate
  keyops.runbooks.vault_pki_cert:
    action: revoke
    serials: ["1f:2d:76:88:3c:5f:e5:4a:7a:88:6f:8b:73:95:d0:d6:28:91:c7:ae"]
    reason: key_compromise
    change_ref: INC-77

- name: List every certificate the PKI engine issued
  keyops.runbooks.vault_pki_cert:
    action: list
  register: vault_certs
"""

RETURN = r"""
certificate:
  description: The certificate issued or kept (O(action=issue)); never the private key.
  returned: when O(action=issue)
  type: dict
  sample: {serial: "4d:ef:dd:2c", common_name: api.lab.internal, not_before: "2026-12-03T18:04:24Z",
           not_after: "2027-01-02T18:04:54Z", fingerprint_sha256: "9b1c...", cert_path: /etc/ssl/api/cert.pem,
           key_path: /etc/ssl/api/key.pem}
revocations:
  description:
    - One entry per serial; C(status) is C(revoked), C(already_revoked), C(expired) or (check mode) C(would_revoke).
  returned: when O(action=revoke)
  type: list
  elements: dict
  sample: [{serial: "4d:ef:dd:2c", common_name: api.lab.internal, not_after: "2027-01-02T18:04:54Z",
            reason: key_compromise, status: revoked, revoked: true, crl_confirmed: true, changed: true}]
certificates:
  description: Every issued certificate as a KeyRecord (backend C(x509)) with C(serial), C(revoked), C(not_after).
  returned: when O(action=list)
  type: list
  elements: dict
  sample: [{id: "4d:ef:dd:2c", name: api.lab.internal, backend: x509, key_class: tls-cert,
            expires: "2027-01-02T18:04:54Z", state: enabled, findings: []}]
audit_events:
  description: One C(issue) or C(revoke) event per certificate.
  returned: when O(action) is V(issue) or V(revoke)
  type: list
  elements: dict
  sample: [{action: revoke, backend: x509, key_ref: "pki/4d:ef:dd:2c", outcome: changed}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import AUDIT_ARGSPEC, audit_event
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import (
    VAULT_ARGSPEC,
    VAULT_REQUIRED_IF,
    check_mount,
    connect,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import InvalidInput
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_pki import (
    REASONS,
    inventory,
    issue,
    require_cryptography,
    revoke,
)


def handle(module: AnsibleModule) -> dict:
    params = module.params
    mount = check_mount(params["mount"])
    require_cryptography()
    vault = connect(params)
    check = module.check_mode
    if params["action"] == "list":
        return {
            "changed": False,
            "certificates": inventory(vault, mount, params["renew_before_days"], params["workers"]),
        }
    if params["action"] == "issue":
        result = issue(vault, dict(params, mount=mount), check)
        cert = result["certificate"]
        outcome = ("planned" if check else "changed") if result["changed"] else "unchanged"
        result["audit_events"] = [
            audit_event(
                "issue",
                "x509",
                f"{mount}/{cert.get('serial') or cert['common_name']}",
                outcome,
                check,
                result.get("before"),
                cert,
                params["change_ref"],
                params["approvals"],
                {"key_class": "tls-cert"},
            )
        ]
        result["diff"] = {"before": result.pop("before", None) or {}, "after": cert}
        return result

    if not params["serials"]:
        raise InvalidInput("Revoke certificates", None, "no serial was given", "Set serials")
    revocations, events = [], []
    for serial in params["serials"]:
        entry = revoke(vault, mount, serial, params["reason"], check)
        revocations.append(entry)
        outcome = {
            "revoked": "changed",
            "would_revoke": "planned",
            "already_revoked": "unchanged",
            "expired": "refused",
        }[entry["status"]]
        if entry["status"] == "expired":
            module.warn(
                f"Certificate {entry['serial']} expired on {entry['not_after']}; Vault does not put expired "
                "certificates on the CRL, so it was not revoked."
            )
        events.append(
            audit_event(
                "revoke",
                "x509",
                f"{mount}/{entry['serial']}",
                outcome,
                check,
                None,
                {field: entry[field] for field in ("serial", "revoked", "crl_confirmed")},
                params["change_ref"],
                params["approvals"],
                {
                    "revocation_reason": entry["reason"],
                    "outcome_reason": entry["status"],
                    "not_after": entry["not_after"],
                },
            )
        )
    return {
        "changed": any(entry["changed"] for entry in revocations),
        "revocations": revocations,
        "audit_events": events,
        "diff": {"before": {"revoked": []}, "after": {"revoked": [e["serial"] for e in revocations if e["changed"]]}},
    }


def main() -> None:
    argument_spec = dict(
        VAULT_ARGSPEC,
        **AUDIT_ARGSPEC,
        action=dict(type="str", default="issue", choices=["issue", "revoke", "list"]),
        mount=dict(type="str", default="pki"),
        role=dict(type="str"),
        common_name=dict(type="str"),
        alt_names=dict(type="list", elements="str"),
        ip_sans=dict(type="list", elements="str"),
        ttl=dict(type="str"),
        cert_path=dict(type="path"),
        key_path=dict(type="path", no_log=False),
        renew_before_days=dict(type="int", default=30),
        force=dict(type="bool", default=False),
        serials=dict(type="list", elements="str"),
        reason=dict(type="str", default="unspecified", choices=list(REASONS)),
        workers=dict(type="int", default=8),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[
            *VAULT_REQUIRED_IF,
            ("action", "issue", ["role", "common_name", "cert_path", "key_path"]),
            ("action", "revoke", ["serials"]),
        ],
    )
    run_module(module, handle)


if __name__ == "__main__":
    main()
