#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: runbook_journal
short_description: Record the steps of a runbook run so a cut run resumes, and write its records and report
description:
  - Keeps one journal file per run (a rotation change, an incident) - which steps started, which completed, when,
    with what counts - rewritten atomically at every step boundary.
  - A rerun with the same O(path) opens the same journal; C(completed) lists the steps it may skip, and the times
    of the first run are kept, so the report's timeline covers the whole response, interruptions included.
  - O(state=approved) records the approved plan's digest and who approved it, so a resumed run applies the plan
    that was approved rather than re-planning a half-changed estate.
  - O(state=recorded) stores a per-key record (for example before and after versions, data keys re-wrapped,
    certificate serials) and writes it to O(records_dir) for the evidence package.
  - O(state=reported) writes C(report.json) (with a SHA-256 digest of its own content) and C(report.md) from the
    journal and O(data); O(state=verified) checks a report against its digest.
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
options:
  path:
    description: The journal file (JSON, 0600). Its folder is created when missing.
    type: path
    required: true
  state:
    description: What to record.
    type: str
    choices: [opened, read, step_started, step_done, step_failed, step_skipped, approved, recorded, reported,
      verified]
    default: read
  kind:
    description: The runbook, for a new journal (V(rotation), V(compromise_response)).
    type: str
  run_id:
    description: The run's id (the change or incident reference), for a new journal.
    type: str
  change_ref:
    description: The change or incident reference, for a new journal.
    type: str
  operator:
    description: Who runs this attempt (O(state=opened)).
    type: str
  step:
    description: The step, with the C(step_*) states.
    type: str
  data:
    description:
      - Counts, versions, ids and digests to keep with the step (C(step_*)), the record (O(state=recorded)) or the
        report's summary sections (O(state=reported)). Never key material or ciphertexts.
    type: dict
  key:
    description: The key a record is about (O(state=recorded)).
    type: str
  records_dir:
    description: Folder where O(state=recorded) also writes C(<key>.json).
    type: path
  digest:
    description: The approved plan's digest (O(state=approved)).
    type: str
  plan_path:
    description: The approved plan file (O(state=approved)).
    type: path
  approvals:
    description: The verified approvals (O(state=approved)); only approver, team, key fingerprint, digest and source
      are kept.
    type: list
    elements: dict
  title:
    description: The report's title (O(state=reported)).
    type: str
  report_path:
    description: Where O(state=reported) writes the JSON report (C(report.md) goes beside it), or the report
      O(state=verified) checks. Defaults to C(report.json) beside the journal.
    type: path
extends_documentation_fragment:
  - keyops.runbooks.attributes
attributes:
  check_mode:
    support: full
    details: Computes the journal and report and returns them; writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: Step boundaries are records of time and are written on every call; O(state=reported) rewrites the
      report only when its content differs, so a rerun of a finished run changes nothing there.
seealso:
  - module: keyops.runbooks.key_lock
"""

EXAMPLES = r"""
- name: Open the journal of incident INC-77
  keyops.runbooks.runbook_journal:
    path: /srv/keyops/outputs/compromise/INC-77/journal.json
    state: opened
    kind: compromise_response
    run_id: INC-77
    operator: alice
  register: journal

- name: Mark the snapshot step done
  keyops.runbooks.runbook_journal:
    path: /srv/keyops/outputs/compromise/INC-77/journal.json
    state: step_done
    step: snapshot
    data: {files: 4}
  when: "'snapshot' not in journal.completed"

- name: Write the report
  keyops.runbooks.runbook_journal:
    path: /srv/keyops/outputs/compromise/INC-77/journal.json
    state: reported
    title: Key compromise response INC-77
    data:
      verified: ["5000 of 5000 data keys decrypt under version 4"]
      needs_human: []
"""

RETURN = r"""
journal:
  description: The journal after the call (steps with status, times, attempts and data; plan; records).
  returned: except with O(state=verified)
  type: dict
  sample: {format: keyops-journal/1, kind: compromise_response, run_id: INC-77, started: "2026-12-03T18:00:00Z",
           order: [snapshot], steps: {snapshot: {status: done, attempts: 1}}}
completed:
  description: The steps done (or skipped) so far, in order.
  returned: except with O(state=verified)
  type: list
  elements: str
  sample: [snapshot, contain]
exists:
  description: Whether the journal existed before this call.
  returned: except with O(state=verified)
  type: bool
  sample: true
step:
  description: The step named in O(step) after the call.
  returned: when O(step) is set
  type: dict
  sample: {status: done, started: "2026-12-03T18:00:00Z", ended: "2026-12-03T18:00:02Z", attempts: 1}
record_path:
  description: The record file written.
  returned: with O(state=recorded)
  type: str
  sample: /srv/keyops/outputs/rotation/CHG-2041/records/transit_prod-payments-kek-20261203.json
report:
  description: The report (O(state=reported)).
  returned: with O(state=reported)
  type: dict
  sample: {format: keyops-runbook-report/1, digest: 5b1e..., timeline: []}
report_path:
  description: The JSON report.
  returned: with O(state=reported)
  type: str
  sample: /srv/keyops/outputs/compromise/INC-77/report.json
markdown_path:
  description: The Markdown report.
  returned: with O(state=reported)
  type: str
  sample: /srv/keyops/outputs/compromise/INC-77/report.md
digest:
  description: The report's verified digest (O(state=verified)).
  returned: with O(state=verified)
  type: str
  sample: 5b1e0c...
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.runbook_journal import run_journal

STATES = [
    "opened",
    "read",
    "step_started",
    "step_done",
    "step_failed",
    "step_skipped",
    "approved",
    "recorded",
    "reported",
    "verified",
]


def main() -> None:
    argument_spec = dict(
        path=dict(type="path", required=True),
        state=dict(type="str", default="read", choices=STATES),
        kind=dict(type="str"),
        run_id=dict(type="str"),
        change_ref=dict(type="str"),
        operator=dict(type="str"),
        step=dict(type="str"),
        data=dict(type="dict"),
        key=dict(type="str", no_log=False),
        records_dir=dict(type="path"),
        digest=dict(type="str"),
        plan_path=dict(type="path"),
        approvals=dict(type="list", elements="dict"),
        title=dict(type="str"),
        report_path=dict(type="path"),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[
            ("state", "step_started", ["step"]),
            ("state", "step_done", ["step"]),
            ("state", "step_failed", ["step"]),
            ("state", "step_skipped", ["step"]),
            ("state", "approved", ["digest"]),
            ("state", "recorded", ["key"]),
        ],
    )
    run_module(module, lambda m: run_journal(m.params, m.check_mode))


if __name__ == "__main__":
    main()
