# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the forensic snapshot of compromised keys, and the proof that dependent data moved off them.

``take_snapshot`` records, once per incident, what the keys looked like when the response began: metadata and
versions, the policies and grants that can use them, the audit events that name them, each file hashed and listed
in a manifest. It never overwrites an earlier snapshot of the same incident: that is the state at the time.

``verify`` decrypts every dependent data key under the new material and checks it is wrapped by it (a transit
ciphertext's version prefix, a KMS answer's KeyId). Plaintexts exist only inside one batch's answer in memory and
are dropped unread; counts leave this module, nothing else. Probes check that the old material refuses to encrypt.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import secrets
from collections.abc import Callable
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.audit import audit_event
from ansible_collections.keyops.runbooks.plugins.module_utils.canonical import canonical_json, sha256_hex
from ansible_collections.keyops.runbooks.plugins.module_utils.dek_store import WHOLE, DataKey, open_store
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import IntegrityError, KeyopsError
from ansible_collections.keyops.runbooks.plugins.module_utils.records import iso_utc, utc_now
from ansible_collections.keyops.runbooks.plugins.module_utils.runbook_journal import safe_file_name, write_atomic
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_transit import ciphertext_version

VERIFY_BATCH = 250
MAX_LISTED = 50
_SECRET_FIELDS = {"keys", "public_key", "certificate_chain", "backup", "plaintext", "ciphertext"}


# ---------------------------------------------------------------------------------------------------------------
# Snapshot
# ---------------------------------------------------------------------------------------------------------------


def _transit_metadata(vault: Any, mount: str, name: str) -> dict[str, Any]:
    ref = f"{mount}/{name}"
    with vault.call("Read transit key", ref):
        data = dict(vault.transit.read_key(name, mount_point=mount)["data"])
    versions = data.pop("keys", {}) or {}
    # Symmetric keys map a version to its creation time; asymmetric ones to public key facts: keep times only.
    data["version_times"] = {
        str(version): (value.get("creation_time") if isinstance(value, dict) else iso_utc(value))
        for version, value in versions.items()
    }
    return {field: value for field, value in data.items() if field not in _SECRET_FIELDS}


def _vault_policies(vault: Any, mount: str, name: str) -> list[dict[str, Any]]:
    """ACL policies whose text names the key's paths (or a wildcard over its mount): who can use it."""
    with vault.call("List Vault policies", f"{mount}/{name}"):
        names = vault.client.sys.list_acl_policies()["data"]["keys"]
    found = []
    for policy in names:
        with vault.call("Read Vault policy", f"{mount}/{name}"):
            text = vault.client.sys.read_acl_policy(policy)["data"]["policy"] or ""
        lines = [line.strip() for line in text.splitlines() if f"{mount}/" in line and "path" in line]
        matching = [line for line in lines if name in line or "*" in line or "+" in line]
        if matching:
            found.append({"policy": policy, "paths": matching, "sha256": sha256_hex(text.encode("utf-8"))})
    return found


def _kms_metadata(kms: Any, arn: str) -> dict[str, Any]:
    meta = kms.call("describe_key", "Describe key", arn, KeyId=arn)["KeyMetadata"]
    aliases = kms.paginate("list_aliases", "Aliases", "List aliases", arn, KeyId=arn)
    grants = kms.paginate("list_grants", "Grants", "List grants", arn, KeyId=arn)
    policy = kms.call("get_key_policy", "Read key policy", arn, KeyId=arn, PolicyName="default").get("Policy")
    try:
        rotations = kms.paginate("list_key_rotations", "Rotations", "List key rotations", arn, KeyId=arn)
    except KeyopsError:
        rotations = []
    return json.loads(
        json.dumps(
            {
                "metadata": meta,
                "aliases": [alias.get("AliasName") for alias in aliases],
                "grants": grants,
                "key_policy": json.loads(policy) if policy else None,
                "rotations": rotations,
            },
            default=iso_utc,
        )
    )


def recent_events(audit_path: str | None, refs: list[str], limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` audit events whose key_ref names one of ``refs``."""
    if not audit_path or not os.path.exists(audit_path):
        return []
    found: list[dict[str, Any]] = []
    with open(audit_path, encoding="utf-8") as stream:
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            ref = str(event.get("key_ref") or "")
            if any(wanted and (wanted in ref) for wanted in refs):
                found.append(event)
                if len(found) > limit:
                    found.pop(0)
    return found


def take_snapshot(
    params: dict[str, Any], connect_vault: Callable[[], Any], connect_kms: Callable[[], Any], check_mode: bool
) -> dict[str, Any]:
    folder = params["output_dir"]
    manifest_path = os.path.join(folder, "manifest.json")
    if os.path.exists(manifest_path):
        with open(manifest_path, encoding="utf-8") as stream:
            manifest = json.load(stream)
        return {
            "changed": False,
            "manifest": manifest,
            "manifest_path": manifest_path,
            "taken_before": True,
            "audit_events": [],
        }

    documents: dict[str, Any] = {}
    events = []
    for item in params.get("vault_transit") or []:
        mount, name = item.get("mount") or "transit", item["name"]
        vault = connect_vault()
        documents[f"vault_transit_{name}"] = {
            "backend": "vault_transit",
            "key_ref": f"{mount}/{name}",
            "metadata": _transit_metadata(vault, mount, name),
            "policies": _vault_policies(vault, mount, name),
            "audit_events": recent_events(params.get("audit_path"), [f"{mount}/{name}", name], params["event_limit"]),
        }
    for item in params.get("aws_kms") or []:
        arn = item["arn"]
        documents[f"aws_kms_{arn.rsplit('/', 1)[-1]}"] = {
            "backend": "aws_kms",
            "key_ref": arn,
            **_kms_metadata(connect_kms(), arn),
            "audit_events": recent_events(
                params.get("audit_path"), [arn, *item.get("aliases", [])], params["event_limit"]
            ),
        }
    for item in params.get("pkcs11") or []:
        documents[f"pkcs11_{item['label']}"] = {
            "backend": "pkcs11",
            "key_ref": item["label"],
            "record": item,
            "audit_events": recent_events(params.get("audit_path"), [item["label"]], params["event_limit"]),
        }

    files = []
    for name, document in documents.items():
        body = json.dumps(document, indent=2, sort_keys=True, default=str).encode("utf-8") + b"\n"
        path = os.path.join(folder, safe_file_name(name) + ".json")
        if not check_mode:
            write_atomic(path, body)
        files.append(
            {
                "file": os.path.basename(path),
                "sha256": sha256_hex(body),
                "key_ref": document["key_ref"],
                "audit_events": len(document["audit_events"]),
            }
        )
        events.append(
            audit_event(
                "snapshot",
                document["backend"],
                document["key_ref"],
                "planned" if check_mode else "success",
                check_mode,
                after={"path": os.path.basename(path)},
                change_ref=params.get("change_ref"),
                detail={"count": len(document["audit_events"])},
            )
        )
    manifest = {"taken": iso_utc(utc_now()), "change_ref": params.get("change_ref"), "files": files}
    manifest["digest"] = sha256_hex(canonical_json(manifest))
    if not check_mode:
        write_atomic(manifest_path, json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8") + b"\n")
    return {
        "changed": True,
        "manifest": manifest,
        "manifest_path": manifest_path,
        "taken_before": False,
        "audit_events": events,
    }


# ---------------------------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------------------------


def _note(failures: list[dict[str, Any]], item_id: str, reason: str) -> None:
    if len(failures) < MAX_LISTED:
        failures.append({"id": item_id, "reason": reason})


def _decrypt_transit(vault: Any, mount: str, name: str, items: list[DataKey]) -> list[str | None]:
    """Per item, None when it decrypted, else the server's reason. The plaintexts are dropped here."""
    from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import call_batch, clean_message

    batch = [{"ciphertext": item.ciphertext, **({"context": item.context} if item.context else {})} for item in items]
    with vault.call("Decrypt data keys to verify them", f"{mount}/{name}"):
        answer = call_batch(vault.transit.decrypt_data, name, None, batch_input=batch, mount_point=mount)
    results = (answer.get("data") or {}).get("batch_results") or []
    outcome = [clean_message(str(result["error"])) if result.get("error") else None for result in results]
    del answer, results
    return outcome + ["no answer"] * (len(items) - len(outcome))


def verify_transit(vault: Any, check: dict[str, Any]) -> dict[str, Any]:
    mount, name, version = check.get("mount") or "transit", check["name"], int(check["key_version"])
    ref = check.get("store_key_ref") or f"{mount}/{name}"
    counts = {"total": 0, "at_version": 0, "other_version": 0, "decrypted": 0, "failed": 0}
    failures: list[dict[str, Any]] = []
    with open_store(check["store"]) as store:
        for items, _cursor in store.batches(VERIFY_BATCH, WHOLE, key_ref=ref):
            counts["total"] += len(items)
            for item in items:
                if ciphertext_version(item.ciphertext) == version:
                    counts["at_version"] += 1
                else:
                    counts["other_version"] += 1
                    _note(failures, item.id, f"wrapped under version {ciphertext_version(item.ciphertext)}")
            for item, error in zip(items, _decrypt_transit(vault, mount, name, items), strict=True):
                if error is None:
                    counts["decrypted"] += 1
                else:
                    counts["failed"] += 1
                    _note(failures, item.id, error)
    return {"key_ref": f"{mount}/{name}", "store_key_ref": ref, "key_version": version, **counts, "failures": failures}


def verify_kms(kms: Any, check: dict[str, Any], workers: int) -> dict[str, Any]:
    expected = kms.resolve_arn(check["key"], "Verify data keys")
    ref = check.get("store_key_ref") or expected
    counts = {"total": 0, "at_version": 0, "other_version": 0, "decrypted": 0, "failed": 0}
    failures: list[dict[str, Any]] = []

    def one(item: DataKey) -> str | None:
        kwargs: dict[str, Any] = {"CiphertextBlob": base64.b64decode(item.ciphertext)}
        if item.context:
            kwargs["EncryptionContext"] = json.loads(item.context)
        try:
            answer = kms.call("decrypt", "Decrypt data key to verify it", expected, **kwargs)
        except KeyopsError as error:
            return error.reason
        key_id = answer.get("KeyId")
        del answer
        return None if key_id == expected else f"decrypted by {key_id}, not the new key"

    with open_store(check["store"]) as store, concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for items, _cursor in store.batches(VERIFY_BATCH, WHOLE, key_ref=ref):
            counts["total"] += len(items)
            for item, error in zip(items, pool.map(one, items), strict=True):
                if error is None:
                    counts["decrypted"] += 1
                    counts["at_version"] += 1
                else:
                    counts["failed"] += 1
                    counts["other_version"] += 1
                    _note(failures, item.id, error)
        old = sum(store.count(key_ref=old_ref) for old_ref in check.get("old_key_refs") or [])
    counts["other_version"] += old
    if old:
        _note(failures, "*", f"{old} data key(s) are still recorded under the old key")
    return {"key_ref": expected, "store_key_ref": ref, **counts, "failures": failures}


def probe_transit(vault: Any, probe: dict[str, Any]) -> dict[str, Any]:
    """Try to encrypt a random probe under an old version: the answer must be a refusal."""
    mount, name, version = probe.get("mount") or "transit", probe["name"], int(probe["key_version"])
    plaintext = base64.b64encode(secrets.token_bytes(16)).decode("ascii")
    try:
        with vault.call("Probe old key version", f"{mount}/{name}"):
            vault.transit.encrypt_data(name, plaintext, key_version=version, mount_point=mount)
    except KeyopsError as error:
        return {"key_ref": f"{mount}/{name}", "key_version": version, "refused": True, "reason": error.reason}
    return {
        "key_ref": f"{mount}/{name}",
        "key_version": version,
        "refused": False,
        "reason": "the old version still encrypts",
    }


def probe_kms(kms: Any, probe: dict[str, Any]) -> dict[str, Any]:
    try:
        kms.call("encrypt", "Probe old key", probe["key"], KeyId=probe["key"], Plaintext=secrets.token_bytes(16))
    except KeyopsError as error:
        return {"key_ref": probe["key"], "refused": True, "reason": error.reason}
    return {"key_ref": probe["key"], "refused": False, "reason": "the old key still encrypts"}


def verify(params: dict[str, Any], connect_vault: Callable[[], Any], connect_kms: Callable[[], Any]) -> dict[str, Any]:
    results = []
    for check in params.get("checks") or []:
        if check["backend"] == "vault_transit":
            outcome = verify_transit(connect_vault(), check)
        else:
            outcome = verify_kms(connect_kms(), check, params["max_workers"])
        outcome["label"] = check.get("label") or outcome["key_ref"]
        outcome["verified"] = outcome["total"] == outcome["decrypted"] == outcome["at_version"] and not (
            outcome["failed"] or outcome["other_version"]
        )
        results.append(outcome)
    probes = []
    for probe in params.get("probes") or []:
        probes.append(
            probe_transit(connect_vault(), probe)
            if probe["backend"] == "vault_transit"
            else probe_kms(connect_kms(), probe)
        )

    events = [
        audit_event(
            "verify",
            "vault_transit" if "key_version" in item else "aws_kms",
            item["key_ref"],
            "success" if item["verified"] else "failure",
            False,
            after={"total": item["total"], "location": item["label"]},
            change_ref=params.get("change_ref"),
            detail={"count": item["decrypted"], "failed": item["failed"], "skipped": item["other_version"]},
        )
        for item in results
    ]
    events += [
        audit_event(
            "verify",
            "vault_transit" if "key_version" in probe else "aws_kms",
            probe["key_ref"],
            "success" if probe["refused"] else "failure",
            False,
            change_ref=params.get("change_ref"),
            detail={"outcome_reason": "old material refuses to encrypt" if probe["refused"] else probe["reason"]},
        )
        for probe in probes
    ]
    verified = all(item["verified"] for item in results) and all(probe["refused"] for probe in probes)
    summary = [
        f"{item['label']}: {item['decrypted']} of {item['total']} data keys decrypt under the new material"
        + ("" if item["verified"] else f" - NOT verified ({item['failed']} failed, {item['other_version']} not moved)")
        for item in results
    ] + [
        f"{probe['key_ref']}"
        + (f" v{probe['key_version']}" if "key_version" in probe else "")
        + (": refuses to encrypt" if probe["refused"] else ": STILL ENCRYPTS")
        for probe in probes
    ]
    result = {
        "changed": False,
        "verified": verified,
        "summary": summary,
        "checks": results,
        "probes": probes,
        "counts": {
            "data_keys": sum(item["total"] for item in results),
            "decrypted": sum(item["decrypted"] for item in results),
            "failed": sum(item["failed"] for item in results),
            "not_under_new_material": sum(item["other_version"] for item in results),
        },
        "audit_events": events,
    }
    if not verified and params.get("fail_on_unverified", True):
        bad = [item["label"] for item in results if not item["verified"]] + [
            f"{probe['key_ref']} (still encrypts)" for probe in probes if not probe["refused"]
        ]
        stores_ok = all(item["verified"] for item in results)
        raise IntegrityError(
            "Verify data keys",
            ", ".join(bad)[:200],
            f"{result['counts']['failed']} data key(s) failed to decrypt and "
            f"{result['counts']['not_under_new_material']} are not under the new material"
            + ("" if all(probe["refused"] for probe in probes) else "; old key material still encrypts"),
            "Nothing was retired. Run the re-key step again (it resumes), then verify again; the failures list names "
            "the data keys"
            if not stores_ok
            else "Stop the old material encrypting (min_encryption_version, or disable the key), then verify again",
            checks=results,
            probes=probes,
            audit_events=events,
        )
    return result
