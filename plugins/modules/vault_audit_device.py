#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vault_audit_device
short_description: Enable the Vault or OpenBao file audit device, so the backend keeps its own audit log
description:
  - Makes sure a C(file) audit device is enabled at O(path) and writes to O(file_path), or is disabled.
  - The device is never enabled with C(log_raw); a device found with it is refused, because it would write
    tokens and plaintexts into the server's log. The server HMACs secrets in its log instead.
  - Audit devices cannot be changed in place; a device with other options is disabled and enabled again.
version_added: 0.1.0
author: keyops maintainers (@keyops)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.vault
  - keyops.runbooks.audit
options:
  path:
    description: Where the device is mounted (C(sys/audit/<path>)).
    type: str
    default: file
  file_path:
    description:
      - The file the server writes to, on the server's host, or V(stdout). Required with O(state=present).
    type: str
  mode:
    description: The log file's mode, as the server sets it.
    type: str
    default: "0600"
  description:
    description: A description shown with the device.
    type: str
  state:
    description: V(present) enables the device, V(absent) disables it (its log file stays).
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    support: full
    details: The plan comes from the list of enabled devices; nothing is written.
  diff_mode:
    support: full
    details: Whether the device exists, its type and file before and after.
  idempotent:
    support: full
notes:
  - OpenBao accepts audit devices through the API only with C(unsafe_allow_api_audit_creation = true) in its
    configuration; otherwise declare the device in the configuration file, and use this module in check mode to
    verify it is there.
  - Once enabled, a server that cannot write to any of its audit devices refuses every request.
seealso:
  - module: keyops.runbooks.audit_sink_check
  - name: OpenBao file audit device
    description: The device's options.
    link: https://openbao.org/docs/audit/file/
"""

EXAMPLES = r"""
- name: Keep the server's own audit log next to the collection's
  keyops.runbooks.vault_audit_device:
    file_path: /var/log/openbao/audit.log
    change_ref: CHG-2041

- name: Verify the device is there without changing anything
  keyops.runbooks.vault_audit_device:
    file_path: /var/log/openbao/audit.log
  check_mode: true
  register: audit_device
  failed_when: audit_device is changed
"""

RETURN = r"""
steps:
  description: What was done (or would be, in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: [enable]
device:
  description: The device after the run (as planned in check mode).
  returned: always
  type: dict
  sample: {exists: true, type: file, path: /var/log/openbao/audit.log, device_path: file}
audit_events:
  description: One C(configure) event for the device.
  returned: always
  type: list
  elements: dict
  sample: [{action: configure, backend: vault, key_ref: sys/audit/file, outcome: changed, check_mode: false,
            before: {exists: false}, after: {exists: true, type: file, path: /var/log/openbao/audit.log},
            change_ref: CHG-2041, approvals: [], detail: {count: 1}}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import AUDIT_ARGSPEC
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import (
    VAULT_ARGSPEC,
    VAULT_REQUIRED_IF,
    connect,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_audit import manage_audit_device


def handle(module: AnsibleModule) -> dict:
    vault = connect(module.params, f"sys/audit/{module.params['path']}")
    return manage_audit_device(vault, module.params, module.check_mode)


def main() -> None:
    argument_spec = dict(
        VAULT_ARGSPEC,
        **AUDIT_ARGSPEC,
        path=dict(type="str", default="file"),
        file_path=dict(type="str"),
        mode=dict(type="str", default="0600"),
        description=dict(type="str"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_if=[*VAULT_REQUIRED_IF, ("state", "present", ["file_path"])],
        supports_check_mode=True,
    )
    run_module(module, handle)


if __name__ == "__main__":
    main()
