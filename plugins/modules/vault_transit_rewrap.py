#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vault_transit_rewrap
short_description: Re-wrap every data key of a store to the latest (or a given) transit key version
description:
  - Streams the data keys recorded under C(<mount>/<name>) in O(store), sends them to the transit C(rewrap)
    endpoint in batches (C(batch_input) with C(key_version) and C(context) set per item), checks that every
    answer carries the target version prefix and commits each batch atomically with a progress cursor.
  - A run that is killed resumes after its last committed batch - nothing is redone or lost. Data keys already
    at the target version are never sent, so a repeated run changes nothing.
  - Items the server refuses (for example ciphertexts made with associated data, which rewrap cannot carry)
    are reported by id with the reason and never counted as done.
  - Returns counts and a version histogram before and after. Ciphertext and plaintext values are never
    returned or logged.
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.vault
  - keyops.runbooks.dek_store
  - keyops.runbooks.audit
options:
  name:
    description: The transit key that wraps the data keys (a single path segment).
    type: str
    required: true
  mount:
    description: Where the transit engine is mounted.
    type: str
    default: transit
  key_version:
    description: The version to re-wrap to; the latest when left out. Must be a version that may encrypt.
    type: int
  batch_size:
    description:
      - Items per request, fixed. Left out, requests are sized to fit O(max_request_json_strings) (about 332
        items without a context, 199 with one, on a default listener).
      - Raise it only when the server's listener allows larger requests (C(max_request_json_strings)).
    type: int
  max_request_json_strings:
    description: The listener's C(max_request_json_strings), used to size the requests when O(batch_size) is not set.
    type: int
    default: 1000
  job:
    description:
      - The name progress is recorded under in the store; C(rewrap:<mount>/<name>:v<target>) when left out.
      - A run with the same job resumes an unfinished one.
    type: str
  progress_file:
    description:
      - A JSON file (0600) rewritten about once a second with C(done), C(total), C(failed), C(rate_per_s) and
        C(eta_s), for polling a run started with C(async). It never holds a ciphertext.
    type: path
  store_key_ref:
    description: What the store's C(key_ref) column holds for this key, when it is not C(<mount>/<name>).
    type: str
  key_class:
    description: The key's class when its name does not say it; a V(master-kek) needs approvals for the run.
    type: str
    choices: [master-kek, kek, dek, signing, transport, tls-cert]
  policy:
    description: Overrides of the key-management policy.
    type: dict
attributes:
  check_mode:
    support: full
    details: Reads the key and scans the store to count what would be re-wrapped; writes nothing.
  diff_mode:
    support: full
    details: The version histogram before and after.
  idempotent:
    support: full
    details: Data keys already at the target version are skipped.
notes:
  - Data keys are matched on their C(key_ref) column, C(<mount>/<name>) (for example
    C(transit/prod-payments-kek-20261203)) unless O(store_key_ref) says otherwise.
  - Items the server cannot decrypt stay at their version and are listed in RV(failures) (the first 1000) on every
    run until they are dealt with.
seealso:
  - module: keyops.runbooks.vault_transit_key
"""

EXAMPLES = r"""
- name: Re-wrap the payments data keys to the latest KEK version
  keyops.runbooks.vault_transit_rewrap:
    name: prod-payments-kek-20261203
    store:
      type: sqlite
      path: /srv/app/data_keys.sqlite
    progress_file: /var/tmp/rewrap-payments.json
    change_ref: CHG-2041
  async: 7200
  poll: 0
  register: rewrap_job

- name: Re-wrap one AWX slice of a JSON lines store to version 4
  keyops.runbooks.vault_transit_rewrap:
    name: prod-payments-kek-20261203
    key_version: 4
    store:
      type: jsonl
      path: /srv/app/data_keys.jsonl
    partition_index: "{{ awx_job_slice_number | default(1) | int - 1 }}"
    partition_count: "{{ awx_job_slice_count | default(1) | int }}"
"""

RETURN = r"""
key_ref:
  description: The key as C(<mount>/<name>).
  returned: always
  type: str
  sample: transit/prod-payments-kek-20261203
target_version:
  description: The version every data key is re-wrapped to.
  returned: always
  type: int
  sample: 3
job:
  description: The progress job name in the store.
  returned: always
  type: str
  sample: rewrap:transit/prod-payments-kek-20261203:v3
partition:
  description: The slice worked on, C(index/count).
  returned: always
  type: str
  sample: 0/1
total:
  description: Data keys recorded under the key in this slice.
  returned: always
  type: int
  sample: 5000
pending:
  description: Data keys below the target version when the run started.
  returned: always
  type: int
  sample: 3334
rewrapped:
  description: Data keys re-wrapped and committed by this run.
  returned: always
  type: int
  sample: 3334
rewrapped_before_resume:
  description: Data keys an interrupted earlier run of the same job had committed.
  returned: when the store was changed
  type: int
  sample: 0
already_at_target:
  description: Data keys at (or above) the target version when the run started.
  returned: always
  type: int
  sample: 1666
refused:
  description: Data keys the server refused in this run (not counted as re-wrapped).
  returned: always
  type: int
  sample: 0
failures:
  description: The first 1000 refused data keys, by id with the server's reason.
  returned: always
  type: list
  elements: dict
  sample: [{id: dk-000042, reason: "cipher: message authentication failed"}]
conflicts:
  description: Data keys changed by someone else during the run (left as they were).
  returned: always
  type: int
  sample: 0
remaining_below_target:
  description: Data keys still below the target version after the run.
  returned: when the store was changed
  type: int
  sample: 0
resumed:
  description: Whether the run resumed an interrupted one.
  returned: always
  type: bool
  sample: false
histogram_before:
  description: Data keys per version before the run.
  returned: always
  type: dict
  sample: {v1: 1666, v2: 1668, v3: 1666}
histogram_after:
  description: Data keys per version after the run.
  returned: always
  type: dict
  sample: {v3: 5000}
seconds:
  description: Time spent re-wrapping.
  returned: when the store was changed
  type: float
  sample: 0.21
rate_per_s:
  description: Data keys re-wrapped per second.
  returned: when the store was changed
  type: float
  sample: 23810.5
audit_events:
  description: One C(rewrap) event with the histograms and counts.
  returned: always
  type: list
  elements: dict
  sample: [{action: rewrap, backend: vault_transit, key_ref: transit/prod-payments-kek-20261203, outcome: changed}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.approvals import require_approvals
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import AUDIT_ARGSPEC, audit_event
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import (
    VAULT_ARGSPEC,
    VAULT_REQUIRED_IF,
    connect,
    key_class_of,
    validate_name,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.dek_store import STORE_ARGSPEC, open_store, partition_from
from ansible_collections.keyops.runbooks.plugins.module_utils.records import KEY_CLASSES
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_rewrap import RewrapRequest, rewrap_store


def handle(module: AnsibleModule) -> dict:
    params = module.params
    mount, name = validate_name(params["name"], params["mount"])
    request = RewrapRequest(
        mount,
        name,
        params["key_version"],
        params["batch_size"],
        params["max_request_json_strings"],
        params["job"],
        params["progress_file"],
        partition_from(params),
        params["store_key_ref"],
    )
    key_class = key_class_of(name, params["key_class"])
    require_approvals("rewrap", request.ref, key_class, params["approvals"], module.check_mode, params["policy"])
    vault = connect(params, request.ref)
    with open_store(params["store"]) as store:
        result = rewrap_store(vault, store, request, module.check_mode)
    counts = {"total": result["total"], "rewrapped": result["rewrapped"], "failed": result["refused"]}
    outcome = ("planned" if module.check_mode else "changed") if result["changed"] else "unchanged"
    result["audit_events"] = [
        audit_event(
            "rewrap",
            "vault_transit",
            request.ref,
            outcome,
            module.check_mode,
            {"histogram": result["histogram_before"]},
            {"histogram": result["histogram_after"]},
            params["change_ref"],
            params["approvals"],
            dict(counts, key_class=key_class, latest_version=result["target_version"]),
        )
    ]
    result["diff"] = {
        "before": {"histogram": result["histogram_before"]},
        "after": {"histogram": result["histogram_after"]},
    }
    return result


def main() -> None:
    argument_spec = dict(
        VAULT_ARGSPEC,
        **STORE_ARGSPEC,
        **AUDIT_ARGSPEC,
        name=dict(type="str", required=True),
        mount=dict(type="str", default="transit"),
        key_version=dict(type="int", no_log=False),
        batch_size=dict(type="int"),
        max_request_json_strings=dict(type="int", default=1000),
        job=dict(type="str"),
        progress_file=dict(type="path"),
        store_key_ref=dict(type="str", no_log=False),
        key_class=dict(type="str", choices=list(KEY_CLASSES)),
        policy=dict(type="dict"),
    )
    module = AnsibleModule(argument_spec=argument_spec, required_if=VAULT_REQUIRED_IF, supports_check_mode=True)
    run_module(module, handle)


if __name__ == "__main__":
    main()
