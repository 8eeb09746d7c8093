# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the restore test of a backup bundle, inside one module call.

The escrow identity is recovered from the custodians' shares in this process and never leaves it: the transit
backups are decrypted and restored into a scratch transit mount here, each restored key is checked against the
canaries made before the backup, and the scratch mount is removed again. HSM blobs are unwrapped into a scratch
token, checked (key check value, canary round trip, or sign/verify) and destroyed again. The report keeps
pass/fail per key, timings and what was cleaned up; never key material, plaintexts or shares.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils import backup_bundle, canaries, escrow
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import IntegrityError, KeyopsError
from ansible_collections.keyops.runbooks.plugins.module_utils.records import iso_utc, utc_now
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_backup import open_backup, write_private
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_transit import key_state, read_key

REPORT_FORMAT = "keyops-restore-test/1"


class Clock:
    """Seconds per named step, for the report's timings."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.steps: dict[str, float] = {}

    def measure(self, name: str, since: float) -> float:
        self.steps[name] = round(self.steps.get(name, 0.0) + time.monotonic() - since, 3)
        return self.steps[name]

    def total(self) -> float:
        return round(time.monotonic() - self.started, 3)


def _fail(entry: dict[str, Any], error: Exception) -> dict[str, Any]:
    reason = error.message if isinstance(error, KeyopsError) else f"unexpected {type(error).__name__}"
    return dict(entry, passed=False, error=reason)


def k_minus_one_refused(bundle_dir: str, offered: list[dict[str, Any]], threshold: int) -> dict[str, Any]:
    """Prove that fewer shares than the threshold recover nothing."""
    fewer = offered[: threshold - 1]
    try:
        escrow.recover_identity(bundle_dir, fewer)
    except IntegrityError:
        return {"check": f"recover with {len(fewer)} of {threshold} shares", "refused": True, "passed": True}
    return {"check": f"recover with {len(fewer)} of {threshold} shares", "refused": False, "passed": False}


# ---------------------------------------------------------------------------------------------------------------
# Vault transit into a scratch mount


def restore_transit(
    vault: Any, bundle_dir: str, keys: list[dict[str, Any]], identity: Any, scratch_mount: str, clock: Clock
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    entries = [key for key in keys if key["backend"] == "vault_transit"]
    if not entries:
        return [], {}
    canary_list = []
    for folder, _dirs, names in os.walk(bundle_dir):
        for name in names:
            if name.startswith("canaries") and name.endswith(".json"):
                canary_list += canaries.read_canaries(os.path.join(folder, name))["canaries"]
    started = time.monotonic()
    with vault.call("Enable scratch transit mount", scratch_mount):
        vault.client.sys.enable_secrets_engine("transit", path=scratch_mount, description="keyops restore test")
    cleanup = {"target": f"{vault.url} mount {scratch_mount}", "removed": False}
    results = []
    try:
        for key in entries:
            name = key["key_ref"].split("/", 1)[1]
            entry = {
                "backend": "vault_transit",
                "key_ref": key["key_ref"],
                "file": key.get("file"),
                "target": f"{scratch_mount}/{name}",
            }
            begun = time.monotonic()
            try:
                path = os.path.join(bundle_dir, key["file"])
                backup, facts = open_backup(path, [identity], key["key_ref"])
                with vault.call("Restore transit key", entry["target"]):
                    vault.transit.restore_key(backup, name=name, mount_point=scratch_mount)
                del backup
                restored = key_state(read_key(vault, scratch_mount, name))
                entry["versions"] = facts["versions"]
                entry["latest_version"] = restored.get("latest_version")
                checks = [
                    {
                        "check": "type and latest version match the backup",
                        "passed": restored.get("type") == facts["type"]
                        and restored.get("latest_version") == facts["latest_version"],
                    }
                ]
                checks += [
                    canaries.check_canary(vault, scratch_mount, name, canary)
                    for canary in canary_list
                    if canary["key_ref"] == key["key_ref"]
                ]
                if len(checks) == 1:
                    checks.append(
                        {"check": "canary", "passed": False, "error": "the bundle holds no canary for this key"}
                    )
                entry.update(known_answer=checks, passed=all(check["passed"] for check in checks))
            except Exception as error:
                entry = _fail(entry, error)
            entry["seconds"] = round(time.monotonic() - begun, 3)
            results.append(entry)
    finally:
        with vault.call("Remove scratch transit mount", scratch_mount):
            vault.client.sys.disable_secrets_engine(path=scratch_mount)
            mounts = vault.client.sys.list_mounted_secrets_engines()
        listed = mounts.get("data", mounts)
        cleanup["removed"] = f"{scratch_mount}/" not in listed
        clock.measure("vault_transit", started)
    return results, cleanup


# ---------------------------------------------------------------------------------------------------------------
# PKCS#11 into a scratch token


def restore_hsm(
    params: dict[str, Any], bundle_dir: str, keys: list[dict[str, Any]], clock: Clock
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from ansible_collections.keyops.runbooks.plugins.module_utils.backends import pkcs11 as p11

    entries = [key for key in keys if key["backend"] == "pkcs11"]
    if not entries:
        return [], {}
    hsm_dir = os.path.join(bundle_dir, os.path.dirname(entries[0]["file"]))
    manifest = p11.read_manifest(hsm_dir)
    started = time.monotonic()
    token = p11.Token(params)
    cleanup: dict[str, Any] = {"target": f"token {token.label}", "removed": False, "objects_destroyed": 0}
    results = []
    if manifest is None:
        for key in entries:
            results.append(
                dict(
                    backend="pkcs11",
                    key_ref=key["key_ref"],
                    passed=False,
                    error=f"{hsm_dir} has no HSM backup manifest",
                )
            )
        return results, cleanup
    mechanism = manifest["mechanism"]["name"]
    oaep_hash = manifest["mechanism"].get("oaep_hash")
    wrapping = manifest["wrapping_key"]
    restored_objects: list[Any] = []
    with token.session() as session:
        try:
            unwrapping = p11.find_one(
                session,
                params.get("unwrapping_key_label") or wrapping["label"],
                None,
                p11.WRAP_MECHANISMS[mechanism]["unwrapping_class"],
                "unwrapping key",
            )
            for entry in manifest["entries"]:
                key_id = bytes.fromhex(entry["id"])
                result = {
                    "backend": "pkcs11",
                    "key_ref": entry["label"],
                    "id": entry["id"],
                    "object_class": entry["object_class"],
                    "target": f"token {token.label}",
                }
                begun = time.monotonic()
                try:
                    if p11.list_keys(session, label=entry["label"], key_id=key_id):
                        raise IntegrityError(
                            "Restore key",
                            entry["label"],
                            "the scratch token already holds a key with this label and id",
                            "Empty the scratch token before the restore test",
                        )
                    blob = p11.read_blob(hsm_dir, entry)
                    p11.unwrap(unwrapping, entry, blob, mechanism, oaep_hash)
                    if entry["object_class"] == p11.PRIVATE and entry.get("public_key_der"):
                        p11.import_public(
                            session, base64.b64decode(entry["public_key_der"]), entry["label"], key_id, entry
                        )
                    with token.session() as fresh:
                        objects = p11.list_keys(fresh, label=entry["label"], key_id=key_id)
                        result["known_answer"] = [p11.known_answer(fresh, objects, entry)]
                    restored_objects.append((entry["label"], key_id))
                    result["passed"] = all(check["passed"] for check in result["known_answer"])
                except Exception as error:
                    result = _fail(result, error)
                result["seconds"] = round(time.monotonic() - begun, 3)
                results.append(result)
        finally:
            destroyed = 0
            for label, key_id in restored_objects:
                objects = p11.list_keys(session, label=label, key_id=key_id)
                p11.destroy(objects)
                destroyed += len(objects)
            left = sum(len(p11.list_keys(session, label=label, key_id=key_id)) for label, key_id in restored_objects)
            cleanup.update(objects_destroyed=destroyed, removed=left == 0)
    clock.measure("pkcs11", started)
    return results, cleanup


# ---------------------------------------------------------------------------------------------------------------
# The whole test and its report


def report_paths(report_dir: str, bundle_id: str) -> tuple[str, str]:
    stem = os.path.join(report_dir, f"restore-test-{bundle_id}")
    return stem + ".json", stem + ".md"


def previous_pass(report_dir: str, bundle_id: str, manifest_sha256: str) -> dict[str, Any] | None:
    path = report_paths(report_dir, bundle_id)[0]
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            report = json.load(handle)
    except (OSError, ValueError):
        return None
    if report.get("passed") and report.get("manifest_sha256") == manifest_sha256:
        return report
    return None


def run(
    bundle_dir: str,
    custodian_identities: list[dict[str, Any]],
    vault_connect: Any,
    pkcs11_params: dict[str, Any] | None,
    scratch_mount: str | None,
) -> dict[str, Any]:
    """Verify, recover, restore, check, clean up; return the report (nothing secret in it)."""
    clock = Clock()
    report: dict[str, Any] = {"format": REPORT_FORMAT, "started": iso_utc(utc_now()), "bundle_dir": bundle_dir}

    started = time.monotonic()
    verification = backup_bundle.verify_bundle(bundle_dir)
    clock.measure("verify_manifest", started)
    manifest = verification.pop("manifest")
    report.update(
        bundle_id=manifest["bundle_id"],
        bundle_created=manifest.get("created"),
        manifest_sha256=verification["manifest_sha256"],
        manifest_check={key: verification[key] for key in ("ok", "changed", "missing", "added", "files")},
    )
    damaged = set(verification["changed"] + verification["missing"])
    threshold = manifest["escrow"]["threshold"]

    started = time.monotonic()
    report["k_minus_1"] = k_minus_one_refused(bundle_dir, custodian_identities, threshold)
    try:
        identity, recovery = escrow.recover_identity(bundle_dir, custodian_identities)
        report["recovery"] = dict(recovery, passed=True)
    except IntegrityError as error:
        identity = None
        report["recovery"] = dict(error.details.get("recovery") or {}, passed=False, error=error.message)
    clock.measure("recover_escrow_key", started)

    keys, cleanup = [], []
    transit = [key for key in manifest["keys"] if key["backend"] == "vault_transit"]
    if transit and identity is None:
        keys += [
            dict(
                backend="vault_transit",
                key_ref=key["key_ref"],
                passed=False,
                error="not restored: the escrow key could not be recovered",
            )
            for key in transit
        ]
    elif transit:
        vault = vault_connect()
        mount = scratch_mount or f"transit-restore-{uuid.uuid4().hex[:8]}"
        results, done = restore_transit(vault, bundle_dir, transit, identity, mount, clock)
        keys += results
        cleanup.append(done)
    del identity

    if pkcs11_params is not None:
        results, done = restore_hsm(pkcs11_params, bundle_dir, manifest["keys"], clock)
        keys += results
        if done:
            cleanup.append(done)
    else:
        keys += [
            dict(backend="pkcs11", key_ref=key["key_ref"], passed=None, skipped="no scratch token given")
            for key in manifest["keys"]
            if key["backend"] == "pkcs11"
        ]

    for key in manifest["keys"]:
        if key["backend"] == "vault_raft":
            keys.append(
                {
                    "backend": "vault_raft",
                    "key_ref": key["key_ref"],
                    "file": key.get("file"),
                    "passed": key.get("file") not in damaged,
                    "known_answer": [
                        {"check": "snapshot SHA-256 matches the manifest", "passed": key.get("file") not in damaged}
                    ],
                    "note": "integrity only: restoring a raft snapshot needs a second server unsealed with the "
                    "original unseal keys",
                }
            )
    for key in keys:
        if key.get("file") in damaged:
            key.update(passed=False, error=key.get("error") or "the file does not match the manifest")
            key["integrity"] = "changed" if key["file"] in verification["changed"] else "missing"
    kms = manifest.get("kms") or {}
    report.update(
        keys=keys,
        kms=[
            {
                "id": item["id"],
                "name": item.get("name"),
                "recovery": item["recovery"],
                "passed": None,
                "note": "not exportable: status recorded, nothing to restore",
            }
            for item in kms.get("keys", [])
        ],
        left_out=manifest.get("left_out", []),
        cleanup=cleanup,
    )
    failed = [key["key_ref"] for key in keys if key.get("passed") is False]
    report.update(
        passed=bool(
            verification["ok"]
            and report["recovery"]["passed"]
            and report["k_minus_1"]["passed"]
            and not failed
            and all(item["removed"] for item in cleanup)
        ),
        failed=failed,
        counts={
            "keys": len(keys),
            "passed": sum(1 for key in keys if key.get("passed") is True),
            "failed": len(failed),
            "skipped": sum(1 for key in keys if key.get("passed") is None),
        },
        timings=dict(clock.steps, total=clock.total()),
        finished=iso_utc(utc_now()),
    )
    report["time_to_recover_seconds"] = report["timings"]["total"]
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Restore test of backup bundle {report['bundle_id']}",
        "",
        f"- Result: **{'PASS' if report['passed'] else 'FAIL'}**",
        f"- Started {report['started']}, finished {report['finished']}; time to recover "
        f"{report['time_to_recover_seconds']} s",
        f"- Manifest: {'intact' if report['manifest_check']['ok'] else 'NOT intact'} "
        f"({report['manifest_check']['files']} files; changed {report['manifest_check']['changed'] or 'none'}, "
        f"missing {report['manifest_check']['missing'] or 'none'}, "
        f"added {report['manifest_check']['added'] or 'none'})",
        f"- Escrow key: {'recovered' if report['recovery']['passed'] else 'NOT recovered'} from "
        f"{len(report['recovery'].get('custodians_used', []))} custodian share(s), threshold "
        f"{report['recovery'].get('threshold')}; with one share fewer: "
        f"{'refused' if report['k_minus_1']['refused'] else 'NOT refused'}",
        "",
        "| backend | key | target | result | checks | seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key in report["keys"]:
        result = {True: "pass", False: "FAIL", None: "skipped"}[key.get("passed")]
        checks = (
            "; ".join(
                f"{check['check']}: {'ok' if check['passed'] else 'failed'}" for check in key.get("known_answer", [])
            )
            or key.get("error")
            or key.get("skipped", "")
        )
        lines.append(
            f"| {key['backend']} | {key['key_ref']} | {key.get('target', '')} | {result} | {checks} | "
            f"{key.get('seconds', '')} |"
        )
    if report["kms"]:
        lines += ["", "AWS KMS keys (not exportable, nothing to restore):", ""]
        lines += [f"- {item['name'] or item['id']}: {item['recovery']}" for item in report["kms"]]
    lines += ["", "Clean-up:", ""]
    lines += [
        f"- {item['target']}: {'removed' if item['removed'] else 'NOT removed'}"
        + (f" ({item['objects_destroyed']} objects destroyed)" if "objects_destroyed" in item else "")
        for item in report["cleanup"]
    ] or ["- nothing to clean up"]
    lines += ["", "Timings (s): " + ", ".join(f"{name} {value}" for name, value in report["timings"].items()), ""]
    return "\n".join(lines)


def write_report(report_dir: str, report: dict[str, Any]) -> tuple[str, str]:
    os.makedirs(report_dir, mode=0o700, exist_ok=True)
    json_path, md_path = report_paths(report_dir, report["bundle_id"])
    write_private(json_path, (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    write_private(md_path, markdown(report).encode())
    return json_path, md_path
