# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check the audit sinks from the controller, with the callback's own options: that is where events are sent from."""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase
from ansible.plugins.loader import callback_loader

from ansible_collections.keyops.runbooks.plugins.module_utils.audit_sinks import AuditSettings, AuditTrail

CALLBACK = "keyops.runbooks.audit"
ARGUMENT_SPEC = {
    "sinks": {"type": "list", "elements": "str"},
    "required_sinks": {"type": "list", "elements": "str"},
    "fail_closed": {"type": "bool"},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        _unused, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)

        callback = callback_loader.get(CALLBACK)
        callback.set_options(var_options=task_vars or {})
        settings = AuditSettings.from_options(callback.get_option)
        for name in ARGUMENT_SPEC:
            if args.get(name) is not None:
                setattr(settings, name, args[name])

        problems = settings.problems()
        checks = AuditTrail(settings).check()
        required = {"spool", *settings.required}
        down = [check for check in checks if not check.ok]
        result.update(
            changed=False,
            fail_closed=settings.fail_closed,
            problems=problems,
            sinks=[{"name": c.sink, "ok": c.ok, "detail": c.reason, "spooled": c.spooled} for c in checks],
        )
        for check in checks:
            if check.spooled:
                result.setdefault("warnings", []).append(
                    f"audit sink '{check.sink}' has {check.spooled} spooled event(s); they are sent with the next event"
                )

        blocking = [check for check in down if check.sink in required]
        if settings.fail_closed and (blocking or problems):
            reasons = [f"sink '{check.sink}' is down: {check.reason}" for check in blocking] + problems
            result.update(
                failed=True,
                msg="Check audit sinks failed: "
                + "; ".join(reasons)
                + ". Bring the sink back or fix the keyops_audit_* option named; fail_closed keeps every change "
                "from running until then",
            )
        else:
            result.setdefault("warnings", []).extend(
                [f"audit sink '{check.sink}' is down: {check.reason}" for check in down] + problems
            )
        return result
