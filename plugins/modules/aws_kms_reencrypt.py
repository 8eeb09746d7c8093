#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: aws_kms_reencrypt
short_description: Re-encrypt every data key of a data-key store to a destination AWS KMS key
version_added: 0.1.0
description:
  - Re-encrypts the wrapped data keys of a store with KMS C(ReEncrypt), to a new key or to the same key after
    its rotation, so that no data key depends on old key material or a retired key any more.
  - The store is streamed in batches of O(batch_size). Each batch is re-encrypted concurrently by O(max_workers)
    threads sharing one client (botocore's adaptive retries slow them down when KMS throttles), every answer is
    checked to name the destination key, and the batch is committed atomically with a progress cursor, so a
    killed run resumes after its last committed batch.
  - Data keys under another key are always moved to the destination. Data keys already under the destination
    key are re-encrypted once per destination key material, tracked as a job named after the destination's last
    rotation date; once that job finished, a re-run changes nothing.
  - Stored ciphertexts are the base64 text of the C(CiphertextBlob); the key_ref column holds the key ARN (an
    alias or key id there is resolved) and becomes the destination key ARN. The context column, when set, holds
    the encryption context as a JSON object.
  - Ciphertexts and plaintexts are never logged, returned or written anywhere but the store.
options:
  destination_key:
    description: The key to re-encrypt to, as key id, key ARN, alias name (C(alias/NAME)) or alias ARN.
    type: str
    required: true
  source_keys:
    description:
      - Only data keys recorded under these keys (any reference form). Empty means every data key in the store.
    type: list
    elements: str
    default: []
  batch_size:
    description: Data keys read, re-encrypted and committed together.
    type: int
    default: 500
  max_workers:
    description: Concurrent ReEncrypt calls.
    type: int
    default: 16
  job:
    description:
      - The name progress is recorded under. Defaults to one derived from the destination key ARN and the date of
        its last rotation, so a new rotation starts a new job and a resumed run continues the same one.
    type: str
  progress_file:
    description:
      - A JSON file rewritten after every batch with done, total, failed, rate and ETA (counts only), for
        polling an C(async) run.
    type: path
  policy:
    description: Overrides of the key-management policy for this run (same shape as the collection's default).
    type: dict
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.aws
  - keyops.runbooks.dek_store
  - keyops.runbooks.audit
attributes:
  check_mode:
    support: full
    details: Counts the data keys that would be re-encrypted, by key, without calling ReEncrypt.
  diff_mode:
    support: full
    details: Before and after histograms of data keys by key ARN.
  idempotent:
    support: full
    details: Finished jobs and data keys already under the destination are not redone.
notes:
  - A data key whose ciphertext KMS refuses (corrupt, wrong key, wrong encryption context) keeps its old
    ciphertext; the run goes on, then fails listing the ids. Any other error (denied, throttled beyond the
    retries, unavailable) stops the run after committing the batch's successes; run again to resume.
  - moto, the lab's KMS, does not change key material on rotation, so the lab cannot show old and new material
    apart; the job logic is the same against AWS.
  - Requires approvals when the destination key is of class C(master-kek).
seealso:
  - module: keyops.runbooks.aws_kms_key
  - module: keyops.runbooks.aws_kms_key_info
author:
  - keyops maintainers (@keyops)
"""

EXAMPLES = r"""
- name: Move the payments data keys from the old KEK to its successor
  keyops.runbooks.aws_kms_reencrypt:
    destination_key: alias/prod-payments-kek-20261203
    source_keys:
      - alias/prod-payments-kek-20231203
    store:
      type: sqlite
      path: /srv/payments/keys.sqlite
      table: kms_data_keys
    change_ref: CHG-2041

- name: Re-encrypt under the KEK's new material after rotation, in the background
  keyops.runbooks.aws_kms_reencrypt:
    destination_key: alias/prod-payments-kek-20261203
    store:
      type: sqlite
      path: /srv/payments/keys.sqlite
      table: kms_data_keys
    progress_file: /var/tmp/payments-reencrypt.json
  async: 3600
  poll: 0
  register: reencrypt_job
"""

RETURN = r"""
destination_arn:
  description: The resolved ARN of the destination key.
  returned: always
  type: str
  sample: arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab
job:
  description: The job name progress is recorded under.
  returned: always
  type: str
  sample: aws_kms_reencrypt arn:aws:kms:us-east-1:123456789012:key/1234abcd-... material 2026-12-03T10:00:00Z
partition:
  description: The slice of the store this run worked on (index/count).
  returned: always
  type: str
  sample: 0/1
counts:
  description: Data keys in the slice (total), to do at the start (pending), re-encrypted, failed and skipped.
  returned: always
  type: dict
  sample: {"total": 5000, "pending": 5000, "reencrypted": 5000, "failed": 0, "skipped": 0}
before:
  description: Data keys by key ARN before the run.
  returned: always
  type: dict
  sample: {"arn:aws:kms:us-east-1:123456789012:key/1111aaaa-...": 5000}
after:
  description: Data keys by key ARN after the run (predicted in check mode).
  returned: always
  type: dict
  sample: {"arn:aws:kms:us-east-1:123456789012:key/2222bbbb-...": 5000}
seconds:
  description: Time spent re-encrypting.
  returned: always
  type: float
  sample: 24.8
rate_per_second:
  description: Data keys re-encrypted per second (null when none were).
  returned: always
  type: float
  sample: 201.6
audit_events:
  description: One C(reencrypt) event with the before/after histograms and the counts.
  returned: always
  type: list
  elements: dict
  sample: [{"action": "reencrypt", "backend": "aws_kms", "outcome": "changed", "check_mode": false}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import AUDIT_ARGSPEC
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.aws_kms import (
    AWS_ARGSPEC,
    AWS_REQUIRED_TOGETHER,
    connect,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.dek_store import STORE_ARGSPEC
from ansible_collections.keyops.runbooks.plugins.module_utils.kms_reencrypt import REENCRYPT_ARGSPEC, reencrypt


def handle(module: AnsibleModule) -> dict:
    client = connect(module.params, max_pool_connections=module.params["max_workers"])
    return reencrypt(client, module.params, module.check_mode, module.warn)


def main() -> None:
    module = AnsibleModule(
        argument_spec={**AWS_ARGSPEC, **STORE_ARGSPEC, **AUDIT_ARGSPEC, **REENCRYPT_ARGSPEC},
        required_together=AWS_REQUIRED_TOGETHER,
        supports_check_mode=True,
    )
    run_module(module, handle)


if __name__ == "__main__":
    main()
