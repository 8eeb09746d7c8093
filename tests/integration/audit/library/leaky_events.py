#!/usr/bin/python
"""Test-only fault injector: a module whose audit_events carry a secret in fields the event schema does not allow.

The secret is derived from ``seed`` inside the module (``LEAK-`` + the seed reversed), so it never appears as an
argument; only the module's own result carries it.
"""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(argument_spec={"seed": {"type": "str", "required": True}}, supports_check_mode=True)
    secret = "LEAK-" + module.params["seed"][::-1]
    event = {
        "action": "rotate",
        "backend": "vault_transit",
        "key_ref": "transit/leaky",
        "outcome": "changed",
        "check_mode": False,
        "plaintext": secret,
        "before": {"latest_version": 1, "key_material": secret},
        "after": {"latest_version": 2, "versions": {"2": {"key": secret}}},
        "approvals": [{"approver": "alice", "token": secret}],
        "detail": {"path": secret * 20},
    }
    module.exit_json(changed=True, audit_events=[event])


if __name__ == "__main__":
    main()
