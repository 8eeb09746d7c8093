# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: a backup bundle folder, its manifest, and its off-site copy (a folder or an S3 bucket with Object Lock).

A bundle holds only encrypted material: transit backups encrypted to the escrow recipient, raft snapshots sealed by
their server's keys, HSM blobs wrapped under the HSM's backup KEK, the escrow record and the custodians' encrypted
shares, canary ciphertexts, and the KMS status. ``manifest.json`` lists every file with its SHA-256 and size, the
keys it covers (ids, versions), the custodians and threshold, and when it was made.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import traceback
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.canonical import sha256_file
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    AccessDenied,
    BackendUnavailable,
    IntegrityError,
    InvalidInput,
    KeyNotFound,
    MissingLibrary,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.escrow import ESCROW_FILE, read_escrow
from ansible_collections.keyops.runbooks.plugins.module_utils.records import iso_utc, parse_time, utc_now
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_backup import write_private

try:
    import boto3
    import botocore.exceptions
except ImportError:
    BOTO_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    BOTO_IMPORT_ERROR = None

MANIFEST = "manifest.json"
KMS_STATUS = "kms-status.json"
FORMAT = "keyops-backup-bundle/1"
LATEST = "latest.json"
KMS_NOTE = (
    "AWS KMS never exports key material: these keys are not in the bundle. Recovery relies on AWS's own durability, "
    "on multi-Region replica keys (multi_region), or, for imported material (origin EXTERNAL), on the copy the "
    "operator keeps of it."
)


# ---------------------------------------------------------------------------------------------------------------
# What the bundle covers, from the registered results of the backup modules


CONTEXT = ("server", "token", "wrapping_key")


def _results(source: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(result, context) pairs from a registered result, a looped one (``results``), or ``{result, server, token,
    wrapping_key}`` - the context a registered result does not carry."""
    if not isinstance(source, dict):
        return []
    context = {key: source.get(key) for key in CONTEXT}
    if isinstance(source.get("result"), dict):
        source = source["result"]
    if source.get("skipped"):
        return []
    if isinstance(source.get("results"), list):
        return [(item, context) for item in source["results"] if isinstance(item, dict) and not item.get("skipped")]
    return [(source, context)]


def _relative(bundle_dir: str, path: str | None) -> str | None:
    if not path:
        return None
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(bundle_dir))
    return None if relative.startswith("..") else relative


def keys_from_sources(bundle_dir: str, sources: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(keys in the bundle, keys left out with the reason), from the backup modules' registered results."""
    keys: list[dict[str, Any]] = []
    left_out: list[dict[str, Any]] = []
    canaries: list[dict[str, Any]] = []
    for source in sources:
        for result, args in _results(source):
            for backup in result.get("backups") or []:
                keys.append(
                    {
                        "backend": "vault_transit",
                        "server": args.get("server"),
                        "key_ref": backup["key_ref"],
                        "type": backup.get("type"),
                        "latest_version": backup.get("latest_version"),
                        "file": _relative(bundle_dir, backup.get("path")),
                        "protection": "age, encrypted to the escrow recipient",
                    }
                )
            if result.get("snapshot_sha256"):
                keys.append(
                    {
                        "backend": "vault_raft",
                        "server": args.get("server"),
                        "key_ref": f"{args.get('server')} (every key on the server)",
                        "file": _relative(bundle_dir, result.get("path")),
                        "protection": "raft snapshot, sealed by the server's own barrier keys",
                    }
                )
            for entry in result.get("backed_up") or []:
                keys.append(
                    {
                        "backend": "pkcs11",
                        "token": args.get("token"),
                        "key_ref": entry["label"],
                        "id": entry.get("id"),
                        "object_class": entry.get("object_class"),
                        "algorithm": entry.get("algorithm"),
                        "file": _relative(bundle_dir, os.path.join(result.get("backup_dir") or "", entry["file"])),
                        "protection": f"wrapped under the HSM key {args.get('wrapping_key')}",
                    }
                )
            for entry in result.get("not_wrapped") or []:
                left_out.append(
                    {
                        "backend": "pkcs11",
                        "token": args.get("token"),
                        "key_ref": entry.get("label"),
                        "reason": entry.get("reason"),
                    }
                )
            canaries += [
                dict(entry, server=entry.get("server") or args.get("server")) for entry in result.get("canaries") or []
            ]
    for key in keys:
        if key["backend"] == "vault_transit":
            key["canaries"] = sum(1 for item in canaries if item["key_ref"] == key["key_ref"])
        elif key["backend"] == "vault_raft":
            key["canaries"] = sum(1 for item in canaries if item["server"] == key["server"])

    # Sorted, so the same backup gives the same manifest whatever order a backend listed its keys in.
    def order(item: dict[str, Any]) -> tuple[str, ...]:
        return (item["backend"], str(item.get("token") or item.get("server") or ""), str(item["key_ref"]))

    return sorted(keys, key=order), sorted(left_out, key=order)


def kms_status(kms_keys: list[dict[str, Any]]) -> dict[str, Any]:
    """What can be said about KMS keys instead of backing them up (they cannot be exported)."""
    entries = []
    for key in kms_keys:
        origin, multi_region = key.get("origin") or "AWS_KMS", bool(key.get("multi_region"))
        if multi_region:
            recovery = "multi-Region key: replicas in other Regions hold the same material"
        elif origin == "EXTERNAL":
            recovery = "imported material: recoverable only from the operator's own copy of it"
        elif origin == "AWS_CLOUDHSM":
            recovery = "custom key store: recoverable with the CloudHSM cluster's backups"
        else:
            recovery = "single-Region AWS_KMS material: no export, no copy; AWS durability only"
        entries.append(
            {
                "id": key.get("id") or key.get("arn"),
                "name": key.get("name"),
                "state": key.get("state"),
                "key_spec": key.get("key_spec") or key.get("algorithm"),
                "origin": origin,
                "multi_region": multi_region,
                "rotation_enabled": key.get("rotation_enabled"),
                "exportable": False,
                "recovery": recovery,
            }
        )
    return {"note": KMS_NOTE, "keys": sorted(entries, key=lambda item: str(item["id"]))}


# ---------------------------------------------------------------------------------------------------------------
# Manifest


def list_files(bundle_dir: str) -> list[str]:
    found = []
    for folder, _dirs, names in os.walk(bundle_dir):
        for name in names:
            relative = os.path.relpath(os.path.join(folder, name), bundle_dir)
            if relative != MANIFEST and not name.startswith(".keyops-"):
                found.append(relative)
    return sorted(found)


def file_entries(bundle_dir: str) -> list[dict[str, Any]]:
    return [
        {
            "path": relative,
            "sha256": sha256_file(os.path.join(bundle_dir, relative)),
            "bytes": os.path.getsize(os.path.join(bundle_dir, relative)),
        }
        for relative in list_files(bundle_dir)
    ]


def read_manifest(bundle_dir: str) -> dict[str, Any] | None:
    path = os.path.join(bundle_dir, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        if manifest.get("format") != FORMAT:
            raise ValueError(manifest.get("format"))
        return manifest
    except (OSError, ValueError, AttributeError) as error:
        raise IntegrityError(
            "Read bundle manifest",
            None,
            f"{path} is not a {FORMAT} manifest",
            "Fetch the bundle again from the off-site copy",
        ) from error


def build_manifest(
    bundle_dir: str, bundle_id: str, sources: list[Any], kms_keys: list[dict[str, Any]] | None, check_mode: bool
) -> dict[str, Any]:
    """Write kms-status.json and manifest.json unless the manifest already describes these same files."""
    if not os.path.isdir(bundle_dir):
        raise KeyNotFound(
            "Write bundle manifest", None, f"{bundle_dir} does not exist", "Run the backup steps first (bundle_dir)"
        )
    escrow = read_escrow(bundle_dir)
    if escrow is None:
        raise InvalidInput(
            "Write bundle manifest",
            None,
            f"{bundle_dir} has no {ESCROW_FILE}: the backups in it could not be recovered by anyone",
            "Create the escrow key with keyops.runbooks.escrow_key before the backups",
        )
    changed = False
    if kms_keys is not None:
        status = (json.dumps(kms_status(kms_keys), indent=2, sort_keys=True) + "\n").encode()
        path = os.path.join(bundle_dir, KMS_STATUS)
        current = None
        if os.path.exists(path):
            with open(path, "rb") as handle:
                current = handle.read()
        if current != status:
            changed = True
            if not check_mode:
                write_private(path, status)
    keys, left_out = keys_from_sources(bundle_dir, sources)
    manifest = {
        "format": FORMAT,
        "bundle_id": bundle_id,
        "escrow": {
            "recipient": escrow["recipient"],
            "scheme": escrow.get("scheme"),
            "threshold": escrow["threshold"],
            "shares": escrow["shares"],
            "custodians": [item["name"] for item in escrow["custodians"]],
        },
        "keys": keys,
        "left_out": left_out,
        "kms": kms_status(kms_keys or []) if kms_keys is not None else None,
        "files": file_entries(bundle_dir),
    }
    existing = read_manifest(bundle_dir)
    if existing is not None:
        comparable = {key: value for key, value in existing.items() if key != "created"}
        if comparable == manifest and not changed:
            return {"changed": False, "manifest": existing}
    manifest["created"] = iso_utc(utc_now())
    if not check_mode:
        write_private(
            os.path.join(bundle_dir, MANIFEST), (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        )
    return {"changed": True, "manifest": manifest}


def verify_bundle(bundle_dir: str) -> dict[str, Any]:
    """Compare every file with the manifest: which are changed, missing or not listed."""
    manifest = read_manifest(bundle_dir)
    if manifest is None:
        raise KeyNotFound(
            "Verify bundle", None, f"{bundle_dir} has no {MANIFEST}", "Point at a bundle written by backup_bundle"
        )
    listed = {entry["path"]: entry for entry in manifest["files"]}
    present = set(list_files(bundle_dir))
    changed = sorted(
        path
        for path in listed
        if path in present and sha256_file(os.path.join(bundle_dir, path)) != listed[path]["sha256"]
    )
    missing = sorted(set(listed) - present)
    added = sorted(present - set(listed))
    return {
        "ok": not (changed or missing or added),
        "changed": changed,
        "missing": missing,
        "added": added,
        "files": len(listed),
        "manifest": manifest,
        "manifest_sha256": sha256_file(os.path.join(bundle_dir, MANIFEST)),
    }


# ---------------------------------------------------------------------------------------------------------------
# Off-site copies: a folder, or S3 with Object Lock


# A bundle id becomes a folder name under dest_dir (and an S3 key part): one plain segment, never a path.
_BUNDLE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def checked_bundle_id(bundle_id: str, where: str) -> str:
    """Refuse an id that would leave the destination folder (a tampered latest.json, a hostile survey answer)."""
    if not _BUNDLE_ID.match(bundle_id or ""):
        raise InvalidInput(
            "Check backup bundle id",
            None,
            f"the bundle id {bundle_id[:80]!r} from {where} is not a plain folder name "
            "(letters, digits, '-', '_', '.'; no slash, not '..')",
            "Set bundle_id to the bundle's folder name; a latest.json naming anything else has been tampered with",
        )
    return bundle_id


def copy_to_dir(bundle_dir: str, dest_root: str, bundle_id: str, check_mode: bool) -> dict[str, Any]:
    target = os.path.join(dest_root, checked_bundle_id(bundle_id, "bundle_id"))
    copied = []
    for relative in [*list_files(bundle_dir), MANIFEST]:
        source, destination = os.path.join(bundle_dir, relative), os.path.join(target, relative)
        if os.path.exists(destination) and sha256_file(destination) == sha256_file(source):
            continue
        copied.append(relative)
        if not check_mode:
            os.makedirs(os.path.dirname(destination), mode=0o700, exist_ok=True)
            with open(source, "rb") as handle:
                write_private(destination, handle.read())
    return {"changed": bool(copied), "location": target, "copied": copied}


class Bucket:
    """One S3 bucket through boto3, with its Object Lock setting read once."""

    def __init__(self, params: dict[str, Any], bucket: str) -> None:
        if BOTO_IMPORT_ERROR:
            raise MissingLibrary("boto3", BOTO_IMPORT_ERROR)
        self.name = bucket
        self.client = boto3.session.Session(
            aws_access_key_id=params.get("access_key"),
            aws_secret_access_key=params.get("secret_key"),
            aws_session_token=params.get("session_token"),
            profile_name=params.get("profile"),
            region_name=params.get("region"),
        ).client("s3", endpoint_url=params.get("s3_endpoint_url") or None)

    def call(self, action: str, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, operation)(Bucket=self.name, **kwargs)
        except botocore.exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise KeyNotFound(
                    action,
                    None,
                    f"s3://{self.name}/{kwargs.get('Key', '')} does not exist",
                    "Check bucket and prefix, or that a backup was uploaded",
                ) from error
            if code in ("NoSuchBucket",):
                raise KeyNotFound(action, None, f"bucket {self.name} does not exist", "Check bucket") from error
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise AccessDenied(
                    action,
                    None,
                    f"S3 refused access to bucket {self.name} ({code})",
                    "Check the AWS credentials and the bucket policy",
                ) from error
            raise BackendUnavailable(
                action,
                None,
                f"S3 answered {code or 'an error'} for bucket {self.name}",
                "Check s3_endpoint_url, the region and the bucket",
            ) from error
        except botocore.exceptions.BotoCoreError as error:
            raise BackendUnavailable(
                action,
                None,
                f"S3 could not be reached ({type(error).__name__})",
                "Check s3_endpoint_url, the region and the network path to S3",
            ) from error

    def object_lock(self) -> bool:
        try:
            answer = self.client.get_object_lock_configuration(Bucket=self.name)
        except botocore.exceptions.ClientError as error:
            if "ObjectLockConfigurationNotFound" in str(error.response.get("Error", {}).get("Code", "")):
                return False
            self.call("Read Object Lock setting", "get_object_lock_configuration")
            return False
        return (answer.get("ObjectLockConfiguration") or {}).get("ObjectLockEnabled") == "Enabled"

    def head_sha256(self, key: str) -> str | None:
        try:
            answer = self.client.head_object(Bucket=self.name, Key=key)
        except botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            self.call("Read backup object", "head_object", Key=key)
            return None
        return (answer.get("Metadata") or {}).get("sha256")


def upload(
    params: dict[str, Any], bundle_dir: str, bundle_id: str, prefix: str, retention_days: int, check_mode: bool
) -> dict[str, Any]:
    """Put every file not already there (same SHA-256), in Object Lock compliance mode when the bucket has it."""
    checked_bundle_id(bundle_id, "bundle_id")
    bucket = Bucket(params, params["bucket"])
    locked = bucket.object_lock()
    if not locked and params.get("require_object_lock"):
        raise InvalidInput(
            "Upload backup bundle",
            None,
            f"bucket {bucket.name} has no Object Lock, so the bundle could be overwritten or deleted",
            "Use a bucket created with Object Lock, or set require_object_lock=false",
        )
    until = utc_now() + dt.timedelta(days=retention_days)
    uploaded = []
    for relative in [*list_files(bundle_dir), MANIFEST]:
        key = f"{prefix}/{bundle_id}/{relative}"
        path = os.path.join(bundle_dir, relative)
        digest = sha256_file(path)
        if bucket.head_sha256(key) == digest:
            continue
        uploaded.append(relative)
        if check_mode:
            continue
        extra: dict[str, Any] = {"Metadata": {"sha256": digest}}
        if locked:
            extra.update(ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)
        with open(path, "rb") as handle:
            bucket.call("Upload backup bundle", "put_object", Key=key, Body=handle.read(), **extra)
    manifest_sha256 = sha256_file(os.path.join(bundle_dir, MANIFEST))
    created = (read_manifest(bundle_dir) or {}).get("created")
    latest = {"bundle_id": bundle_id, "manifest_sha256": manifest_sha256, "created": created}
    pointer = json.dumps(latest, sort_keys=True).encode()
    latest_key = f"{prefix}/{LATEST}"
    current = None
    try:
        current = json.loads(bucket.client.get_object(Bucket=bucket.name, Key=latest_key)["Body"].read())
    except (botocore.exceptions.ClientError, ValueError):
        current = None
    # Only a newer bundle (or this one, changed) moves the pointer: re-running an older backup never takes it back.
    newer_there = (
        isinstance(current, dict)
        and current.get("bundle_id") != bundle_id
        and (parse_time(current.get("created")) or dt.datetime.min.replace(tzinfo=dt.timezone.utc))
        > (parse_time(created) or dt.datetime.min.replace(tzinfo=dt.timezone.utc))
    )
    if current != latest and not newer_there:
        uploaded.append(LATEST)
        if not check_mode:
            bucket.call("Upload backup bundle", "put_object", Key=latest_key, Body=pointer)
    return {
        "changed": bool(uploaded),
        "location": f"s3://{bucket.name}/{prefix}/{bundle_id}/",
        "uploaded": uploaded,
        "object_lock": locked,
        "retain_until": iso_utc(until) if locked else None,
    }


def fetch_from_bucket(params: dict[str, Any], prefix: str, bundle_id: str | None, dest: str) -> dict[str, Any]:
    bucket = Bucket(params, params["bucket"])
    if not bundle_id:
        answer = bucket.call("Find the latest backup bundle", "get_object", Key=f"{prefix}/{LATEST}")
        bundle_id = checked_bundle_id(json.loads(answer["Body"].read())["bundle_id"], f"{prefix}/{LATEST}")
    target = os.path.join(dest, checked_bundle_id(bundle_id, "bundle_id"))
    paginator = bucket.client.get_paginator("list_objects_v2")
    keys = []
    try:
        for page in paginator.paginate(Bucket=bucket.name, Prefix=f"{prefix}/{bundle_id}/"):
            keys += [item["Key"] for item in page.get("Contents", [])]
    except botocore.exceptions.ClientError:
        bucket.call("List backup bundle", "list_objects_v2", Prefix=f"{prefix}/{bundle_id}/")
    if not keys:
        raise KeyNotFound(
            "Fetch backup bundle",
            None,
            f"s3://{bucket.name}/{prefix}/{bundle_id}/ holds no files",
            "Check the bundle id, or run the backup first",
        )
    if os.path.isdir(target):
        shutil.rmtree(target)
    for key in keys:
        relative = key[len(f"{prefix}/{bundle_id}/") :]
        if not relative or relative.startswith("/") or ".." in relative.split("/"):
            continue
        body = bucket.call("Fetch backup bundle", "get_object", Key=key)["Body"].read()
        os.makedirs(os.path.dirname(os.path.join(target, relative)), mode=0o700, exist_ok=True)
        write_private(os.path.join(target, relative), body)
    return {"bundle_id": bundle_id, "bundle_dir": target, "source": f"s3://{bucket.name}/{prefix}/{bundle_id}/"}


def latest_in_dir(root: str) -> str:
    """The bundle folder under ``root`` whose manifest is the newest."""
    best: tuple[Any, str] | None = None
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        path = os.path.join(root, name, MANIFEST)
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    created = parse_time(json.load(handle).get("created"))
            except (OSError, ValueError):
                continue
            if created and (best is None or created > best[0]):
                best = (created, name)
    if best is None:
        raise KeyNotFound(
            "Find the latest backup bundle", None, f"{root} holds no bundle with a manifest", "Run the backup first"
        )
    return best[1]


def fetch_from_dir(root: str, bundle_id: str | None, dest: str) -> dict[str, Any]:
    bundle_id = checked_bundle_id(bundle_id or latest_in_dir(root), "bundle_id")
    source = os.path.join(root, bundle_id)
    if not os.path.isfile(os.path.join(source, MANIFEST)):
        raise KeyNotFound(
            "Fetch backup bundle", None, f"{source} holds no bundle manifest", "Check the bundle id and source_dir"
        )
    target = os.path.join(dest, bundle_id)
    if os.path.abspath(target) != os.path.abspath(source):
        if os.path.isdir(target):
            shutil.rmtree(target)
        shutil.copytree(source, target)
        os.chmod(target, 0o700)
    return {"bundle_id": bundle_id, "bundle_dir": target, "source": source}
