# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the Vault / OpenBao file audit device, so the backend keeps its own log next to ours."""

from __future__ import annotations

from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.audit import audit_event
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import Vault, check_mount
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import InvalidInput, PolicyViolation

DEVICE_TYPE = "file"


def read_device(vault: Vault, path: str) -> dict[str, Any] | None:
    with vault.call("Read audit devices", f"sys/audit/{path}"):
        reply = vault.client.sys.list_enabled_audit_devices()
    devices = reply.get("data", reply) if isinstance(reply, dict) else {}
    device = devices.get(f"{path}/")
    if not device:
        return None
    options = device.get("options") or {}
    return {
        "type": device.get("type"),
        "file_path": options.get("file_path"),
        "mode": options.get("mode"),
        "log_raw": str(options.get("log_raw", "false")).lower() == "true",
        "description": device.get("description"),
    }


def wanted_device(params: dict[str, Any]) -> dict[str, Any]:
    if not params.get("file_path"):
        raise InvalidInput(
            "Enable audit device",
            f"sys/audit/{params['path']}",
            "no file_path was given",
            "Set file_path to the file the server writes its audit log to (or 'stdout')",
        )
    return {
        "type": DEVICE_TYPE,
        "file_path": params["file_path"],
        "mode": params["mode"],
        "log_raw": False,
        "description": params.get("description") or "",
    }


def _differs(current: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    fields = ["type", "file_path", "log_raw"] + (["mode"] if current.get("mode") is not None else [])
    return [name for name in fields if current.get(name) != wanted.get(name)]


def _summary(device: dict[str, Any] | None) -> dict[str, Any]:
    if device is None:
        return {"exists": False}
    return {"exists": True, "type": device.get("type"), "path": device.get("file_path")}


def manage_audit_device(vault: Vault, params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """Make the file audit device at ``path`` exist with the wanted options (or not exist); plan in check mode."""
    path = check_mount(params["path"], option="path")
    key_ref = f"sys/audit/{path}"
    current = read_device(vault, path)
    if current and current.get("log_raw"):
        raise PolicyViolation(
            "Check audit device",
            key_ref,
            "it logs raw request and response bodies (log_raw), which puts tokens and plaintexts in the server's log",
            "Disable that device and run again; this module never enables log_raw",
        )

    steps: list[str] = []
    wanted: dict[str, Any] | None = None
    if params["state"] == "present":
        wanted = wanted_device(params)
        if current is None:
            steps = ["enable"]
        elif _differs(current, wanted):
            # Audit devices cannot be tuned in place: the old one goes, the new one comes, in one run.
            steps = ["disable", "enable"]
    elif current is not None:
        steps = ["disable"]

    if steps and not check_mode:
        if "disable" in steps:
            with vault.call("Disable audit device", key_ref):
                vault.client.sys.disable_audit_device(path)
        if "enable" in steps and wanted is not None:
            options = {"file_path": wanted["file_path"], "mode": wanted["mode"], "log_raw": "false"}
            try:
                with vault.call("Enable audit device", key_ref):
                    vault.client.sys.enable_audit_device(
                        DEVICE_TYPE, description=wanted["description"] or None, path=path, options=options
                    )
            except InvalidInput as error:
                if "declarative" not in error.reason:
                    raise
                raise PolicyViolation(
                    "Enable audit device",
                    key_ref,
                    "this OpenBao server only accepts audit devices declared in its configuration",
                    'Declare it in the server config (audit "file" "<path>" { options { file_path = ... } }) and '
                    "reload, or set unsafe_allow_api_audit_creation = true there",
                ) from error

    after = (dict(wanted) if wanted else None) if steps else current
    changed = bool(steps)
    outcome = ("planned" if check_mode else "changed") if changed else "unchanged"
    event = audit_event(
        "configure",
        "vault",
        key_ref,
        outcome,
        check_mode,
        before=_summary(current),
        after=_summary(after),
        change_ref=params.get("change_ref"),
        approvals=params.get("approvals"),
        detail={"count": len(steps)},
    )
    result: dict[str, Any] = {
        "changed": changed,
        "steps": steps,
        "device": _summary(after) | {"device_path": path},
        "audit_events": [event],
    }
    result["diff"] = {"before": _summary(current), "after": _summary(after)}
    return result
