#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: audit_sink_check
short_description: Check that every audit sink can take events before a playbook changes anything
description:
  - Resolves the options of the C(keyops.runbooks.audit) callback exactly as the callback does (ansible.cfg
    section C([keyops_audit]), C(KEYOPS_AUDIT_*) environment variables, C(keyops_audit_*) variables) and checks
    each configured sink from the controller, where the callback sends from - the local log file and the spool
    folder are writable, the syslog server accepts a TCP (or TLS) connection, the HTTP event collector accepts
    the token, the S3 bucket has Object Lock enabled.
  - With O(fail_closed) (or the callback's C(fail_closed)) the task fails, naming each sink that is down, so a
    playbook that runs it first makes no change without its audit trail. Otherwise it warns.
  - Reports how many events each sink still has spooled.
version_added: 0.1.0
author: keyops maintainers (@keyops)
options:
  sinks:
    description: Check these sinks instead of the callback's C(sinks).
    type: list
    elements: str
  required_sinks:
    description: The sinks that must be up. Default, the callback's C(required_sinks), else every sink.
    type: list
    elements: str
  fail_closed:
    description: Fail when a required sink is down. Default, the callback's C(fail_closed).
    type: bool
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.attributes.ACTION_PLUGIN
attributes:
  action:
    support: full
    details: Runs on the controller as an action plugin.
  check_mode:
    support: full
    details: Only connects and reads; it sends no event.
  diff_mode:
    support: none
  idempotent:
    support: full
notes:
  - Put it first in a play, with C(any_errors_fatal) on the play, so a failed check stops every host.
  - The callback itself also stops a running playbook when a required sink fails mid-run and O(fail_closed) is
    true.
seealso:
  - module: keyops.runbooks.audit_verify
"""

EXAMPLES = r"""
- name: Refuse to start without the audit trail
  keyops.runbooks.audit_sink_check:
    fail_closed: true

- name: Require syslog, and only warn about the HTTP event collector
  keyops.runbooks.audit_sink_check:
    fail_closed: true
    required_sinks: [file, syslog]
"""

RETURN = r"""
sinks:
  description: One entry per sink checked, plus the spool folder.
  returned: always
  type: list
  elements: dict
  sample: [{name: spool, ok: true, detail: /home/ops/.keyops/audit/spool, spooled: 0},
           {name: syslog, ok: false, detail: "cannot connect to tcp://127.0.0.1:514 (Connection refused)", spooled: 3}]
problems:
  description: Settings that can never work, naming the option that fixes them.
  returned: always
  type: list
  elements: str
  sample: []
fail_closed:
  description: Whether a required sink that is down failed the task.
  returned: always
  type: bool
  sample: true
"""
