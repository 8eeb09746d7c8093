# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the AWS KMS connection layer shared by the aws_kms_* modules.

One botocore client per run (clients are thread-safe), botocore's own retry modes and paginators, and one
place where botocore's exceptions become KeyopsError subclasses. Every key reference (key id, key ARN, alias
name, alias ARN) is resolved once with DescribeKey; later calls use the key id and results carry the ARN.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from ansible.module_utils.basic import env_fallback

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    AccessDenied,
    BackendUnavailable,
    Conflict,
    IntegrityError,
    InvalidInput,
    KeyNotFound,
    KeyopsError,
    MissingLibrary,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.naming import parse_key_name
from ansible_collections.keyops.runbooks.plugins.module_utils.records import KeyRecord, finding, iso_utc, parse_time

try:
    # botocore's own session makes the same client as boto3's, without importing boto3's resource layer and
    # s3transfer (about 0.1 s at every module start).
    import botocore.config
    import botocore.exceptions
    import botocore.session

    BOTO_IMPORT_ERROR: str | None = None
    BOTO_ERRORS: tuple[type[Exception], ...] = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
except ImportError:
    BOTO_IMPORT_ERROR = traceback.format_exc()
    BOTO_ERRORS = ()

BACKEND = "aws_kms"

AWS_ARGSPEC: dict[str, Any] = {
    "region": {"type": "str", "fallback": (env_fallback, ["AWS_REGION", "AWS_DEFAULT_REGION"])},
    "profile": {"type": "str", "fallback": (env_fallback, ["AWS_PROFILE"])},
    "access_key": {"type": "str", "no_log": True, "fallback": (env_fallback, ["AWS_ACCESS_KEY_ID"])},
    "secret_key": {"type": "str", "no_log": True, "fallback": (env_fallback, ["AWS_SECRET_ACCESS_KEY"])},
    "session_token": {"type": "str", "no_log": True, "fallback": (env_fallback, ["AWS_SESSION_TOKEN"])},
    "endpoint_url": {"type": "str", "fallback": (env_fallback, ["AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL"])},
    "retry_mode": {"type": "str", "default": "adaptive", "choices": ["adaptive", "standard"]},
    "max_attempts": {"type": "int", "default": 10},
}
AWS_REQUIRED_TOGETHER = [["access_key", "secret_key"]]

# KeyState as AWS spells it, to the KeyRecord state.
STATE_MAP = {
    "Enabled": "enabled",
    "Disabled": "disabled",
    "PendingDeletion": "pending_deletion",
    "PendingReplicaDeletion": "pending_deletion",
    "PendingImport": "disabled",
    "Unavailable": "disabled",
    "Creating": "disabled",
    "Updating": "enabled",
}
DEFAULT_USAGE = {
    "SYMMETRIC_DEFAULT": "ENCRYPT_DECRYPT",
    "RSA": "ENCRYPT_DECRYPT",
    "ECC": "SIGN_VERIFY",
    "HMAC": "GENERATE_VERIFY_MAC",
    "SM2": "SIGN_VERIFY",
    "ML": "SIGN_VERIFY",
}
ROTATION_PERIOD_RANGE = (90, 2560)
DELETION_WINDOW_RANGE = (7, 30)

# Error codes KMS answers with, grouped by what an operator has to do about them.
_DENIED = {
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "AuthFailure",
}
_THROTTLED = {"ThrottlingException", "Throttling", "RequestLimitExceeded", "TooManyRequestsException"}
_UNAVAILABLE = {
    "KMSInternalException",
    "DependencyTimeoutException",
    "ServiceUnavailable",
    "InternalFailure",
    "CustomKeyStoreInvalidStateException",
    "CloudHsmClusterInvalidConfigurationException",
}
_BAD_INPUT = {
    "ValidationException",
    "InvalidArnException",
    "MalformedPolicyDocumentException",
    "InvalidAliasNameException",
    "TagException",
    "UnsupportedOperationException",
    "InvalidKeyUsageException",
    "InvalidMarkerException",
    "InvalidGrantTokenException",
}


def key_usage_for(key_spec: str) -> str:
    return DEFAULT_USAGE.get(key_spec, DEFAULT_USAGE.get(key_spec.split("_", 1)[0], "ENCRYPT_DECRYPT"))


def length_of(key_spec: str | None) -> int | str | None:
    """Bits for symmetric, RSA and HMAC specs; the curve name for elliptic curves."""
    if not key_spec:
        return None
    if key_spec == "SYMMETRIC_DEFAULT":
        return 256
    family, _unused, size = key_spec.partition("_")
    if family in ("RSA", "HMAC") and size.isdigit():
        return int(size)
    if key_spec.startswith("ECC_NIST_"):
        return "P-" + key_spec.rsplit("P", 1)[-1]
    if key_spec == "ECC_SECG_P256K1":
        return "secp256k1"
    return key_spec


def alias_name(value: str) -> str:
    """``NAME``, ``alias/NAME`` or an alias ARN, as ``alias/NAME``."""
    text = value.strip()
    if text.startswith("arn:") and ":alias/" in text:
        text = "alias/" + text.split(":alias/", 1)[1]
    return text if text.startswith("alias/") else f"alias/{text}"


def is_alias_ref(value: str) -> bool:
    return value.startswith("alias/") or (value.startswith("arn:") and ":alias/" in value)


def map_error(error: Exception, action: str, key_ref: str | None, operation: str = "") -> KeyopsError:
    """Turn a botocore exception into the KeyopsError an operator can act on. Never copies the raw reply."""
    if isinstance(error, KeyopsError):
        return error
    exceptions = botocore.exceptions
    if isinstance(error, exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        api = operation or error.operation_name
        if code == "NotFoundException":
            return KeyNotFound(
                action,
                key_ref,
                "KMS has no such key or alias in this region and account",
                "Check the key id, key ARN or alias (alias/NAME) and the region or profile",
                error_code=code,
            )
        if code in _DENIED:
            return AccessDenied(
                action,
                key_ref,
                f"KMS denied {api} ({code})",
                f"Grant kms:{api} on this key to the caller (key policy or IAM), or use a profile that has it",
                error_code=code,
            )
        if code == "DisabledException":
            return Conflict(
                action,
                key_ref,
                "the key is disabled",
                "Enable it first (keyops.runbooks.aws_kms_key with enabled=true)",
                error_code=code,
            )
        if code == "KMSInvalidStateException":
            return Conflict(
                action,
                key_ref,
                f"the key's state does not allow {api} (pending deletion, pending import or unavailable)",
                "Check the key's state with keyops.runbooks.aws_kms_key_info",
                error_code=code,
            )
        if code in _THROTTLED or (code == "LimitExceededException" and "rate" in str(error).lower()):
            return BackendUnavailable(
                action,
                key_ref,
                f"KMS kept throttling {api} after every retry",
                "Lower max_workers, or raise max_attempts",
                error_code=code,
            )
        if code == "LimitExceededException":
            return Conflict(
                action,
                key_ref,
                f"an account quota of KMS refused {api}",
                "Delete unused keys or aliases, or ask AWS for a higher quota",
                error_code=code,
            )
        if code in ("InvalidCiphertextException", "IncorrectKeyException"):
            return IntegrityError(
                action,
                key_ref,
                f"KMS refused the ciphertext ({code})",
                "Check that the stored ciphertext is intact and recorded under the right key",
                error_code=code,
            )
        if code == "AlreadyExistsException":
            return Conflict(action, key_ref, "the alias already exists", "Pick another alias", error_code=code)
        if code in _BAD_INPUT:
            return InvalidInput(
                action,
                key_ref,
                f"KMS refused the request to {api} as invalid ({code})",
                "Check the options given for this key",
                error_code=code,
            )
        if code in _UNAVAILABLE or (isinstance(status, int) and status >= 500):
            return BackendUnavailable(
                action,
                key_ref,
                f"KMS failed {api} with a server error ({code or status})",
                "Retry later; if it persists, check the KMS endpoint's health",
                error_code=code,
            )
        return BackendUnavailable(
            action,
            key_ref,
            f"KMS answered {api} with {code or status}",
            "Check the request and the endpoint",
            error_code=code,
        )
    if isinstance(error, (exceptions.NoCredentialsError, exceptions.PartialCredentialsError)):
        return AccessDenied(
            action,
            key_ref,
            "no usable AWS credentials were found",
            "Set access_key and secret_key, or profile, or the AWS_* environment variables",
        )
    if isinstance(error, exceptions.ProfileNotFound):
        return InvalidInput(
            action,
            key_ref,
            "the AWS profile does not exist",
            "Set profile to a profile in the AWS config or credentials file",
        )
    if isinstance(error, exceptions.NoRegionError):
        return InvalidInput(action, key_ref, "no AWS region is set", "Set region, or AWS_REGION")
    if isinstance(error, exceptions.ParamValidationError):
        return InvalidInput(
            action, key_ref, "botocore rejected a parameter before sending it", "Check the options given for this key"
        )
    if isinstance(error, (exceptions.EndpointConnectionError, exceptions.ConnectionError)):
        return BackendUnavailable(
            action,
            key_ref,
            "the KMS endpoint could not be reached",
            "Check endpoint_url, the region and the network path to KMS",
        )
    if isinstance(error, exceptions.BotoCoreError):
        return BackendUnavailable(
            action, key_ref, f"botocore failed ({type(error).__name__})", "Check the connection options"
        )
    raise error


@dataclasses.dataclass
class KeySnapshot:
    """What KMS says about one key. Never key material."""

    arn: str
    key_id: str
    region: str
    account: str
    key_spec: str
    key_usage: str
    origin: str
    manager: str
    key_state: str
    enabled: bool
    description: str = ""
    created: str | None = None
    deletion_date: str | None = None
    aliases: list[str] = dataclasses.field(default_factory=list)
    tags: dict[str, str] | None = None
    policy: dict[str, Any] | None = None
    rotation_status: str = "unknown"
    rotation_period_days: int | None = None
    last_rotated: str | None = None
    rotations: int | None = None
    multi_region: bool = False
    warnings: list[str] = dataclasses.field(default_factory=list)
    # Facts whose read was denied: unknown, which is not the same as absent.
    denied: set[str] = dataclasses.field(default_factory=set)

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> KeySnapshot:
        arn = meta["Arn"]
        parts = arn.split(":")
        key_spec = meta.get("KeySpec") or meta.get("CustomerMasterKeySpec") or "SYMMETRIC_DEFAULT"
        return cls(
            arn=arn,
            key_id=meta["KeyId"],
            region=parts[3],
            account=parts[4],
            key_spec=key_spec,
            key_usage=meta.get("KeyUsage") or key_usage_for(key_spec),
            origin=meta.get("Origin", "AWS_KMS"),
            manager=meta.get("KeyManager", "CUSTOMER"),
            key_state=meta.get("KeyState", "Enabled"),
            enabled=bool(meta.get("Enabled")),
            description=meta.get("Description") or "",
            created=iso_utc(meta.get("CreationDate")),
            deletion_date=iso_utc(meta.get("DeletionDate")),
            multi_region=bool(meta.get("MultiRegion")),
        )

    @property
    def state(self) -> str:
        return STATE_MAP.get(self.key_state, "disabled")

    @property
    def pending_deletion(self) -> bool:
        return self.key_state in ("PendingDeletion", "PendingReplicaDeletion")

    @property
    def aws_managed(self) -> bool:
        return self.manager == "AWS"

    @property
    def rotation_supported(self) -> bool:
        """AWS rotates only symmetric encryption keys whose material KMS generated."""
        return self.key_spec == "SYMMETRIC_DEFAULT" and self.origin == "AWS_KMS"

    @property
    def rotation_enabled(self) -> bool | None:
        return {"enabled": True, "disabled": False}.get(self.rotation_status)

    @property
    def key_class(self) -> str | None:
        tags = self.tags or {}
        if tags.get("key-class"):
            return tags["key-class"]
        for alias in self.aliases:
            parsed = parse_key_name(alias.split("/", 1)[1])
            if parsed["valid"]:
                return parsed["key_class"]
        return None

    def summary(self) -> dict[str, Any]:
        """States for diffs and audit events: ids, states and configuration, never secrets."""
        return {
            "arn": self.arn,
            "key_id": self.key_id,
            "state": self.state,
            "enabled": self.enabled,
            "aliases": list(self.aliases),
            "key_spec": self.key_spec,
            "key_usage": self.key_usage,
            "rotation_enabled": self.rotation_enabled,
            "rotation_period_days": self.rotation_period_days,
            "last_rotated": self.last_rotated,
            "deletion_date": self.deletion_date,
        }

    def record(self) -> KeyRecord:
        tags = self.tags or {}
        name = self.aliases[0].split("/", 1)[1] if self.aliases else self.key_id
        findings = []
        if self.rotation_status == "unknown":
            findings.append(
                finding(
                    "rotation_status_unknown",
                    "medium",
                    "the rotation status could not be read (access denied); it is not known",
                )
            )
        if self.pending_deletion:
            findings.append(
                finding("pending_deletion", "high", f"the key is scheduled for deletion on {self.deletion_date}")
            )
        if self.rotation_status == "disabled" and self.key_class in ("master-kek", "kek"):
            findings.append(finding("rotation_disabled", "high", "automatic rotation is off for a key-encryption key"))
        return KeyRecord(
            id=self.arn,
            name=name,
            backend=BACKEND,
            location=f"{self.region}/{self.account}",
            key_class=self.key_class,
            owner=tags.get("owner"),
            purpose=tags.get("purpose"),
            algorithm=self.key_spec,
            length_bits=length_of(self.key_spec),
            created=self.created,
            last_rotated=self.last_rotated,
            rotation_period_days=self.rotation_period_days if self.rotation_status == "enabled" else None,
            expires=None,
            state=self.state,
            versions=(self.rotations + 1) if self.rotations is not None else None,
            exportable=False,
            findings=findings,
            extra={
                "arn": self.arn,
                "key_id": self.key_id,
                "aliases": list(self.aliases),
                "tags": dict(tags),
                "key_spec": self.key_spec,
                "key_usage": self.key_usage,
                "origin": self.origin,
                "manager": self.manager,
                "key_state": self.key_state,
                "deletion_date": self.deletion_date,
                "rotation_status": self.rotation_status,
                "rotation_enabled": self.rotation_enabled,
                "description": self.description,
                "multi_region": self.multi_region,
            },
        )


class KmsClient:
    """A KMS connection built from the AWS_ARGSPEC options."""

    def __init__(self, params: dict[str, Any], max_pool_connections: int = 10) -> None:
        if BOTO_IMPORT_ERROR:
            raise MissingLibrary("boto3", BOTO_IMPORT_ERROR)
        config = botocore.config.Config(
            retries={"mode": params.get("retry_mode") or "adaptive", "max_attempts": params.get("max_attempts") or 10},
            max_pool_connections=max(10, max_pool_connections),
        )
        try:
            session = botocore.session.Session(profile=params.get("profile"))
            self.client = session.create_client(
                "kms",
                region_name=params.get("region"),
                endpoint_url=params.get("endpoint_url") or None,
                aws_access_key_id=params.get("access_key"),
                aws_secret_access_key=params.get("secret_key"),
                aws_session_token=params.get("session_token"),
                config=config,
            )
        except BOTO_ERRORS as error:
            raise map_error(error, "Connect to AWS KMS", None) from error
        self.region = self.client.meta.region_name
        self._resolved: dict[str, dict[str, Any]] = {}

    def call(self, operation: str, action: str, key_ref: str | None, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self.client, operation)(**kwargs)
        except BOTO_ERRORS as error:
            raise map_error(error, action, key_ref, _api_name(operation)) from error

    def paginate(
        self, operation: str, result_key: str, action: str, key_ref: str | None, **kwargs: Any
    ) -> list[dict[str, Any]]:
        try:
            paginator = self.client.get_paginator(operation)
            return [item for page in paginator.paginate(**kwargs) for item in page.get(result_key, [])]
        except BOTO_ERRORS as error:
            raise map_error(error, action, key_ref, _api_name(operation)) from error

    # Keys and their facts

    def describe(self, key_ref: str, action: str = "Resolve key") -> dict[str, Any]:
        """KeyMetadata for any of the four reference forms (cached for the run)."""
        if not key_ref or not str(key_ref).strip():
            raise InvalidInput(
                action,
                None,
                "the key reference is empty",
                "Give a key id, key ARN, alias name (alias/NAME) or alias ARN",
            )
        ref = str(key_ref).strip()
        if ref not in self._resolved:
            meta = self.call("describe_key", action, ref, KeyId=ref)["KeyMetadata"]
            self._resolved[ref] = meta
            self._resolved[meta["Arn"]] = meta
        return self._resolved[ref]

    def resolve_arn(self, key_ref: str, action: str = "Resolve key") -> str:
        return self.describe(key_ref, action)["Arn"]

    def forget(self, key_ref: str) -> None:
        self._resolved.pop(key_ref, None)

    def find_alias(self, name: str) -> dict[str, Any] | None:
        wanted = alias_name(name)
        for alias in self.paginate("list_aliases", "Aliases", "List aliases", wanted):
            if alias["AliasName"] == wanted:
                return alias
        return None

    def aliases_by_key(self, key_id: str | None = None) -> dict[str, list[str]]:
        kwargs = {"KeyId": key_id} if key_id else {}
        found: dict[str, list[str]] = {}
        for alias in self.paginate("list_aliases", "Aliases", "List aliases", key_id, **kwargs):
            if alias.get("TargetKeyId"):
                found.setdefault(alias["TargetKeyId"], []).append(alias["AliasName"])
        return {key: sorted(names) for key, names in found.items()}

    def snapshot(
        self, key_ref: str, *, policy: bool = False, aliases: list[str] | None = None, action: str = "Read key"
    ) -> KeySnapshot:
        """Read everything the modules compare or report about one key. A denied read of an optional fact
        becomes a warning and 'unknown', never a guessed value."""
        meta = self.describe(key_ref, action)
        snap = KeySnapshot.from_metadata(meta)
        arn, key_id = snap.arn, snap.key_id
        snap.aliases = aliases if aliases is not None else self.aliases_by_key(key_id).get(key_id, [])
        snap.tags = self._optional(
            snap,
            "tags",
            lambda: {
                tag["TagKey"]: tag["TagValue"]
                for tag in self.paginate("list_resource_tags", "Tags", action, arn, KeyId=key_id)
            },
        )
        if policy:
            snap.policy = self._optional(snap, "key policy", lambda: self._policy(key_id, arn, action))
        self._read_rotation(snap, action)
        return snap

    def _policy(self, key_id: str, arn: str, action: str) -> dict[str, Any] | None:
        try:
            text = self.client.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]
        except botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") == "NotFoundException":
                return None
            raise map_error(error, action, arn, "GetKeyPolicy") from error
        try:
            return json.loads(text)
        except ValueError:
            return {"unparsable_policy": True}

    def _optional(self, snap: KeySnapshot, what: str, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except AccessDenied:
            snap.denied.add(what)
            snap.warnings.append(f"Reading the {what} of key '{snap.arn}' was denied; it is reported as unknown.")
            return None

    def _read_rotation(self, snap: KeySnapshot, action: str) -> None:
        if not snap.rotation_supported or snap.pending_deletion:
            snap.rotation_status = "not_applicable"
        else:
            try:
                status = self.call("get_key_rotation_status", action, snap.arn, KeyId=snap.key_id)
                snap.rotation_status = "enabled" if status.get("KeyRotationEnabled") else "disabled"
                snap.rotation_period_days = (
                    status.get("RotationPeriodInDays") if status.get("KeyRotationEnabled") else None
                )
            except AccessDenied:
                snap.denied.add("rotation status")
                snap.rotation_status = "unknown"
                snap.warnings.append(
                    f"Reading the rotation status of key '{snap.arn}' was denied; it is reported "
                    "as unknown, not as disabled."
                )
        if snap.key_spec != "SYMMETRIC_DEFAULT" or snap.origin not in ("AWS_KMS", "EXTERNAL"):
            return
        try:
            rotations = self.paginate("list_key_rotations", "Rotations", action, snap.arn, KeyId=snap.key_id)
        except AccessDenied:
            snap.warnings.append(
                f"Reading the rotation history of key '{snap.arn}' was denied; the last rotation date is unknown."
            )
            return
        except (Conflict, InvalidInput):
            return
        snap.rotations = len(rotations)
        dates = [parse_time(item.get("RotationDate")) for item in rotations if item.get("RotationDate")]
        snap.last_rotated = iso_utc(max(dates)) if dates else None

    def inventory(
        self,
        keys: Iterable[str] | None = None,
        tags: dict[str, str] | None = None,
        customer_managed_only: bool = False,
        max_workers: int = 8,
    ) -> tuple[list[KeySnapshot], list[str]]:
        """Every key in the region (or the named ones), described in parallel with a bounded pool."""
        alias_map = self.aliases_by_key()
        if keys:
            targets = [self.describe(ref, "Read key")["KeyId"] for ref in keys]
            targets = list(dict.fromkeys(targets))
        else:
            targets = [item["KeyId"] for item in self.paginate("list_keys", "Keys", "List keys", None)]

        warnings: list[str] = []

        def read(key_id: str) -> KeySnapshot | None:
            try:
                return self.snapshot(key_id, aliases=alias_map.get(key_id, []))
            except AccessDenied:
                warnings.append(f"Describing key '{key_id}' was denied; it is left out of the inventory.")
            except KeyNotFound:
                if keys:
                    raise
                # Deleted between ListKeys and DescribeKey: nothing left to report.
            return None

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
            snapshots = [snap for snap in pool.map(read, targets) if snap is not None]
        warnings.extend(warning for snap in snapshots for warning in snap.warnings)
        selected = []
        for snap in snapshots:
            if customer_managed_only and snap.aws_managed:
                continue
            if tags and (snap.tags is None or any(snap.tags.get(name) != str(value) for name, value in tags.items())):
                continue
            selected.append(snap)
        return selected, warnings


def _api_name(operation: str) -> str:
    return "".join(part.capitalize() for part in operation.split("_"))


def connect(params: dict[str, Any], max_pool_connections: int = 10) -> KmsClient:
    return KmsClient(params, max_pool_connections)


# The options of aws_kms_key_info; key_inventory validates each of its KMS sources against them too.
KEY_INFO_ARGSPEC: dict[str, Any] = {
    **AWS_ARGSPEC,
    "keys": {"type": "list", "elements": "str", "default": [], "no_log": False},
    "tags": {"type": "dict"},
    "customer_managed_only": {"type": "bool", "default": False},
    "max_workers": {"type": "int", "default": 8},
}


def key_info(params: dict[str, Any]) -> dict[str, Any]:
    """What aws_kms_key_info returns, plus ``warnings`` (keys left out) for the caller to hand to module.warn."""
    if params["max_workers"] < 1:
        raise InvalidInput("Read keys", None, "max_workers must be 1 or more", "Set max_workers, for example 8")
    started = time.monotonic()
    client = connect(params, max_pool_connections=params["max_workers"])
    snapshots, warnings = client.inventory(
        params["keys"], params.get("tags"), params["customer_managed_only"], params["max_workers"]
    )
    records = [snap.record().to_dict() for snap in snapshots]
    return {
        "changed": False,
        "keys": records,
        "count": len(records),
        "seconds": round(time.monotonic() - started, 3),
        "warnings": warnings,
    }
