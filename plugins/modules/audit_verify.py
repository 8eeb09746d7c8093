#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: audit_verify
short_description: Verify the hash chain of a keyops audit log and report the first broken link
description:
  - Recomputes every event's SHA-256 over its canonical JSON and checks that each event links to the one before
    it (C(prev_hash)), from the first event of the first run to the last one.
  - Names the first break and what it most likely is - an edited, deleted, inserted or reordered event, or an
    unreadable line.
  - With O(anchor_path), also checks each run summary (anchor) written to a second sink; a log cut after its last
    anchored event (C(truncated)) or rewritten from some point on (C(anchor_mismatch)) shows there.
  - The same check runs from a shell with C(scripts/keyops-audit-verify).
version_added: 0.1.0
author: keyops maintainers (@keyops)
options:
  path:
    description: The audit log, as the C(keyops.runbooks.audit) callback writes it, or a syslog file holding them.
    type: path
    required: true
  anchor_path:
    description:
      - A file holding the anchors - the C(anchor) sink's file, or the syslog server's file that received them.
    type: path
  start_hash:
    description:
      - The hash the first event links to. Default, 64 zeros (a log that starts the chain). Give the last hash of
        the previous file to verify a rotated log on its own.
    type: str
  fail_on_broken:
    description: Fail the task when the chain is broken. With V(false) the result only reports it.
    type: bool
    default: true
extends_documentation_fragment:
  - keyops.runbooks.attributes
attributes:
  check_mode:
    support: full
    details: Only reads.
  diff_mode:
    support: none
  idempotent:
    support: full
notes:
  - The chain shows that the log is the one written, in order, but not that it is complete after the last
    anchor; keep the anchor sink apart from the log (syslog, HEC or the S3 archive).
seealso:
  - module: keyops.runbooks.audit_sink_check
"""

EXAMPLES = r"""
- name: Verify the audit log against the anchors the syslog server received
  keyops.runbooks.audit_verify:
    path: outputs/audit/audit.jsonl
    anchor_path: /var/log/keyops/audit.log
  delegate_to: localhost

- name: Report a broken chain without failing
  keyops.runbooks.audit_verify:
    path: outputs/audit/audit.jsonl
    fail_on_broken: false
  register: audit_chain
"""

RETURN = r"""
ok:
  description: Whether every event and every anchor checked out.
  returned: always
  type: bool
  sample: true
count:
  description: How many events were verified before the first break (all of them when RV(ok)).
  returned: always
  type: int
  sample: 42
runs:
  description: How many runs those events belong to.
  returned: always
  type: int
  sample: 3
last_hash:
  description: The hash of the last verified event.
  returned: always
  type: str
  sample: 9f2c0e...
anchors_checked:
  description: How many anchors were compared with the log.
  returned: always
  type: int
  sample: 3
first_broken:
  description:
    - The first break, or null. C(code) is one of C(edited), C(deleted), C(inserted), C(reordered), C(malformed),
      C(truncated), C(anchor_mismatch).
  returned: always
  type: dict
  sample: {line: 7, seq: 4, run_id: 5d0c..., code: edited, reason: "the event's content does not match its hash"}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import GENESIS_HASH, verify_log
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import IntegrityError, InvalidInput


def handle(module: AnsibleModule) -> dict:
    params = module.params
    try:
        report = verify_log(params["path"], params["anchor_path"], params["start_hash"] or GENESIS_HASH)
    except OSError as error:
        raise InvalidInput(
            "Verify audit log",
            None,
            f"cannot read {error.filename} ({error.strerror})",
            "Set path (and anchor_path) to files readable on the host the task runs on",
        ) from error
    broken = report["first_broken"]
    if broken and params["fail_on_broken"]:
        where = f"line {broken['line']}" if broken["line"] else f"run {broken['run_id']}"
        raise IntegrityError(
            f"Verify audit log {params['path']}",
            None,
            f"the chain breaks at {where} (seq {broken['seq']}, {broken['code']}): {broken['reason']}",
            "Treat the log as tampered with; compare it with the copies in the syslog, HEC or S3 sinks",
            **report,
        )
    return dict(report, changed=False)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            anchor_path=dict(type="path"),
            start_hash=dict(type="str"),
            fail_on_broken=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    run_module(module, handle)


if __name__ == "__main__":
    main()
