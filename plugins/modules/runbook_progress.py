#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: runbook_progress
short_description: Follow a long async runbook task and show done / total, rate and ETA while it runs
description:
  - Waits for a task started with C(async) and C(poll=0) - a rewrap or re-encrypt of many data keys - and prints a
    progress line (done / total, per cent, rate per second, ETA) each time the task's O(progress_file) changes.
  - Returns the finished task's own result (counts, histograms, C(audit_events)), so the audit callback records
    its events and later tasks read it as if the task had run in the foreground. A failed task fails this one
    with its message.
  - An action plugin - it runs on the controller and reads the job status and the progress file on the target
    with M(ansible.builtin.async_status) and M(ansible.builtin.slurp).
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
options:
  jid:
    description: The job id of the async task (C(ansible_job_id) of its registered result).
    type: str
    required: true
  progress_file:
    description: The task's progress file (the C(progress_file) option of M(keyops.runbooks.vault_transit_rewrap)
      and M(keyops.runbooks.aws_kms_reencrypt)).
    type: str
  label:
    description: What the progress lines call the job, for example C(rewrap transit/prod-payments-kek).
    type: str
    default: job
  interval:
    description: Seconds between two looks at the job.
    type: float
    default: 2.0
  timeout:
    description: Give up following after this many seconds (the job goes on in the background).
    type: int
    default: 86400
  cleanup:
    description: Remove the job's status file once it finished.
    type: bool
    default: true
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.attributes.ACTION_PLUGIN
attributes:
  check_mode:
    support: full
    details: Only reads.
  diff_mode:
    support: none
  idempotent:
    support: full
  action:
    support: full
    details: Runs on the controller.
seealso:
  - module: keyops.runbooks.vault_transit_rewrap
  - module: keyops.runbooks.aws_kms_reencrypt
"""

EXAMPLES = r"""
- name: Re-wrap the payments data keys in the background
  keyops.runbooks.vault_transit_rewrap:
    name: prod-payments-kek-20261203
    store: {type: sqlite, path: /srv/app/data_keys.sqlite}
    progress_file: /var/tmp/rewrap-payments.json
  async: 7200
  poll: 0
  register: rewrap_job

- name: Follow the rewrap until it finishes
  keyops.runbooks.runbook_progress:
    jid: "{{ rewrap_job.ansible_job_id }}"
    progress_file: /var/tmp/rewrap-payments.json
    label: rewrap transit/prod-payments-kek-20261203
  register: rewrap
"""

RETURN = r"""
progress:
  description: The last progress the job wrote (counts and rate, never a ciphertext).
  returned: always
  type: dict
  sample: {done: 5000, total: 5000, failed: 0, rate_per_s: 41234.5, eta_s: null, finished: true}
"""
