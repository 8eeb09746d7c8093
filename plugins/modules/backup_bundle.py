#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_bundle
short_description: Write a backup bundle's manifest and store it off-site, or fetch and verify the latest bundle
description:
  - V(present) - writes C(kms-status.json) from O(kms_keys) (KMS keys cannot be exported, so their multi-Region and
    origin status is recorded instead) and C(manifest.json) - the SHA-256 and size of every file, the keys covered
    (ids, versions) taken from the backup modules' registered results in O(sources), the escrow recipient,
    custodians and threshold, and the time. Then copies the bundle to O(bucket) (S3, in Object Lock compliance mode
    when the bucket has Object Lock) and/or to O(dest_dir).
  - V(fetched) - copies a bundle (O(bundle_id), or the latest) from O(bucket) or O(source_dir) into O(dest_dir) and
    verifies it against its manifest.
  - V(verified) - verifies O(bundle_dir) against its manifest - changed, missing and added files.
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
options:
  state:
    description: What to do.
    type: str
    choices: [present, fetched, verified]
    default: present
  bundle_dir:
    description: The bundle folder (V(present), V(verified)).
    type: path
  bundle_id:
    description:
      - The bundle's id, also its folder name off-site. With V(present) defaults to the name of O(bundle_dir);
        with V(fetched), empty means the latest bundle.
    type: str
  sources:
    description:
      - Registered results of the modules that wrote into the bundle - M(keyops.runbooks.vault_transit_backup),
        M(keyops.runbooks.vault_raft_snapshot), M(keyops.runbooks.pkcs11_key_backup),
        M(keyops.runbooks.vault_transit_canary) - looped ones included. The manifest's key list comes from them.
    type: list
    elements: raw
    default: []
  kms_keys:
    description: The C(keys) of M(keyops.runbooks.aws_kms_key_info); recorded in C(kms-status.json).
    type: list
    elements: dict
  bucket:
    description: An S3 bucket to store the bundle in (V(present)) or fetch it from (V(fetched)).
    type: str
  prefix:
    description: Key prefix in O(bucket); bundles go to C(<prefix>/<bundle id>/), the latest id to
      C(<prefix>/latest.json).
    type: str
    default: bundles
  retention_days:
    description: Object Lock retention (compliance mode) of the uploaded files, when the bucket has Object Lock.
    type: int
    default: 365
  require_object_lock:
    description: Refuse to upload to a bucket without Object Lock.
    type: bool
    default: false
  s3_endpoint_url:
    description: An S3 endpoint other than AWS's (for example the lab's moto server). Falls back to
      E(AWS_ENDPOINT_URL_S3), then E(AWS_ENDPOINT_URL).
    type: str
  region:
    description: The bucket's region. Falls back to E(AWS_REGION), then E(AWS_DEFAULT_REGION).
    type: str
  profile:
    description: An AWS profile. Falls back to E(AWS_PROFILE).
    type: str
  access_key:
    description: The AWS access key id. Falls back to E(AWS_ACCESS_KEY_ID).
    type: str
  secret_key:
    description: The AWS secret access key. Falls back to E(AWS_SECRET_ACCESS_KEY).
    type: str
  session_token:
    description: The session token of temporary credentials. Falls back to E(AWS_SESSION_TOKEN).
    type: str
  dest_dir:
    description:
      - V(present) - a folder (for example a mounted off-site share) to copy the bundle to, as C(<dest_dir>/<bundle
        id>/).
      - V(fetched) - where the fetched bundle is put, as C(<dest_dir>/<bundle id>/).
    type: path
  source_dir:
    description: V(fetched) - the folder holding bundles (one sub-folder each), when not fetching from O(bucket).
    type: path
  fail_on_mismatch:
    description: V(fetched) and V(verified) - fail when a file is changed, missing or added. With V(false) the result
      only reports it.
    type: bool
    default: true
extends_documentation_fragment:
  - keyops.runbooks.attributes
attributes:
  check_mode:
    support: full
    details: V(present) reports what would be written and uploaded; V(fetched) still fetches (into O(dest_dir)) and
      verifies, since that changes nothing anywhere else.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: A manifest that already describes the same files is kept (with its time); files already off-site with the
      same SHA-256 are not sent again. V(fetched) replaces the local copy each run and reports no change.
notes:
  - moto (the lab's S3) accepts Object Lock settings; real S3 also needs the bucket created with Object Lock.
  - The manifest is not signed; a tampered file is still caught by the restore test, since every backup is
    authenticated encryption (age) or carries its own checks. The evidence package is signed.
seealso:
  - module: keyops.runbooks.escrow_key
  - module: keyops.runbooks.escrow_restore_test
"""

EXAMPLES = r"""
- name: Write the manifest and store the bundle in the Object Lock bucket
  keyops.runbooks.backup_bundle:
    bundle_dir: /srv/keyops/backups/20261203
    sources: ["{{ transit_backup }}", "{{ raft_snapshot }}", "{{ hsm_backup }}", "{{ canaries }}"]
    kms_keys: "{{ kms_info.keys }}"
    bucket: keyops-backups
    retention_days: 2555

- name: Fetch the latest bundle for the restore test
  keyops.runbooks.backup_bundle:
    state: fetched
    bucket: keyops-backups
    dest_dir: /var/tmp/keyops-restore
  register: fetched
"""

RETURN = r"""
bundle_id:
  description: The bundle's id.
  returned: always
  type: str
  sample: "20261203"
bundle_dir:
  description: The local bundle folder (the fetched copy with V(fetched)).
  returned: always
  type: str
  sample: /var/tmp/keyops-restore/20261203
manifest:
  description: The manifest (file list, keys, escrow facts - public only).
  returned: always
  type: dict
  sample: {bundle_id: "20261203", escrow: {threshold: 2, custodians: [a.haddad, m.okafor, s.lindqvist]}, files: []}
verification:
  description: With V(fetched) and V(verified), the files that are C(changed), C(missing) or C(added), and C(ok).
  returned: when state is fetched or verified
  type: dict
  sample: {ok: false, changed: [vault/transit-prod-export-transport-20261203-v1.backup.age], missing: [], added: []}
offsite:
  description: Where the bundle was stored (C(location), C(uploaded) or C(copied) files, C(object_lock),
    C(retain_until)).
  returned: when state is present
  type: list
  elements: dict
  sample: [{location: 's3://keyops-backups/bundles/20261203/', object_lock: true, uploaded: [manifest.json]}]
source:
  description: Where the bundle was fetched from.
  returned: when state is fetched
  type: str
  sample: s3://keyops-backups/bundles/20261203/
"""

import os

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.keyops.runbooks.plugins.module_utils import backup_bundle as bundle
from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import IntegrityError, InvalidInput


def _check(verification: dict, bundle_dir: str, fail: bool) -> dict:
    if fail and not verification["ok"]:
        raise IntegrityError(
            "Verify backup bundle",
            None,
            f"{bundle_dir} does not match its manifest (changed: {verification['changed'] or 'none'}, "
            f"missing: {verification['missing'] or 'none'}, added: {verification['added'] or 'none'})",
            "Do not rely on this copy; fetch the bundle again or use an older one",
            verification={key: value for key, value in verification.items() if key != "manifest"},
        )
    return verification


def handle(module: AnsibleModule) -> dict:
    params = module.params
    state = params["state"]
    if state == "fetched":
        if not params["dest_dir"] or not (params["bucket"] or params["source_dir"]):
            raise InvalidInput(
                "Fetch backup bundle", None, "state=fetched needs dest_dir and bucket or source_dir", "Set them"
            )
        os.makedirs(params["dest_dir"], mode=0o700, exist_ok=True)
        if params["bucket"]:
            fetched = bundle.fetch_from_bucket(params, params["prefix"], params["bundle_id"], params["dest_dir"])
        else:
            fetched = bundle.fetch_from_dir(params["source_dir"], params["bundle_id"], params["dest_dir"])
        verification = _check(
            bundle.verify_bundle(fetched["bundle_dir"]), fetched["bundle_dir"], params["fail_on_mismatch"]
        )
        manifest = verification.pop("manifest")
        return dict(fetched, changed=False, manifest=manifest, verification=verification)

    if not params["bundle_dir"]:
        raise InvalidInput("Backup bundle", None, f"state={state} needs bundle_dir", "Set bundle_dir")
    bundle_dir = params["bundle_dir"]
    if state == "verified":
        verification = _check(bundle.verify_bundle(bundle_dir), bundle_dir, params["fail_on_mismatch"])
        manifest = verification.pop("manifest")
        return {
            "changed": False,
            "bundle_dir": bundle_dir,
            "bundle_id": manifest["bundle_id"],
            "manifest": manifest,
            "verification": verification,
        }

    bundle_id = params["bundle_id"] or os.path.basename(os.path.normpath(bundle_dir))
    written = bundle.build_manifest(bundle_dir, bundle_id, params["sources"], params["kms_keys"], module.check_mode)
    offsite = []
    changed = written["changed"]
    if params["bucket"] and not (module.check_mode and written["changed"]):
        done = bundle.upload(
            params, bundle_dir, bundle_id, params["prefix"], params["retention_days"], module.check_mode
        )
        offsite.append(done)
        changed = changed or done["changed"]
    elif params["bucket"]:
        offsite.append({"location": f"s3://{params['bucket']}/{params['prefix']}/{bundle_id}/", "changed": True})
    if params["dest_dir"]:
        done = bundle.copy_to_dir(bundle_dir, params["dest_dir"], bundle_id, module.check_mode)
        offsite.append(done)
        changed = changed or done["changed"]
    return {
        "changed": changed,
        "bundle_id": bundle_id,
        "bundle_dir": bundle_dir,
        "manifest": written["manifest"],
        "offsite": offsite,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="present", choices=["present", "fetched", "verified"]),
            bundle_dir=dict(type="path"),
            bundle_id=dict(type="str"),
            sources=dict(type="list", elements="raw", default=[]),
            kms_keys=dict(type="list", elements="dict", no_log=False),
            bucket=dict(type="str"),
            prefix=dict(type="str", default="bundles"),
            retention_days=dict(type="int", default=365),
            require_object_lock=dict(type="bool", default=False),
            s3_endpoint_url=dict(type="str", fallback=(env_fallback, ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])),
            region=dict(type="str", fallback=(env_fallback, ["AWS_REGION", "AWS_DEFAULT_REGION"])),
            profile=dict(type="str", fallback=(env_fallback, ["AWS_PROFILE"])),
            access_key=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_ACCESS_KEY_ID"])),
            secret_key=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_SECRET_ACCESS_KEY"])),
            session_token=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_SESSION_TOKEN"])),
            dest_dir=dict(type="path"),
            source_dir=dict(type="path"),
            fail_on_mismatch=dict(type="bool", default=True),
        ),
        required_together=[("access_key", "secret_key")],
        supports_check_mode=True,
    )
    run_module(module, handle)


if __name__ == "__main__":
    main()
