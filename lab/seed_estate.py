# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plant the estate of a small SaaS company in a running lab, with each backend's own client.

Never uses the collection's modules: the estate is the independent ground truth the collection is tested
against. The shape (names, counts, versions) is fixed; names carry dates from the real clock. `seed()` returns
the summary that `keyops_lab.py seed` writes to seed.json.
"""

from __future__ import annotations

import base64
import datetime
import os
import random
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import labpki
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

TRANSIT_MOUNT = "transit"
TRANSIT_BATCH = 400  # stays under the default listener's 499-item limit too
TRANSIT_DEKS_BY_VERSION = {1: 2000, 2: 1800, 3: 1200}
KMS_DEK_COUNT = 1000
KMS_WORKERS = 8
DEK_ORDER_SEED = 20261203  # fixed shuffle, so ids interleave key versions the same way on every seed

# Which data-key table each key protects (also in the register's data_key_stores).
TRANSIT_DEK_TABLE = "data_keys"
KMS_DEK_TABLE = "kms_data_keys"

Finding = dict[str, str]

HSM_CURVE_NAMES = {"secp384r1": "EC-P384", "secp256r1": "EC-P256"}
# What the register claims per class (the policy's cryptoperiods); HSM keys have no automatic rotation.
HSM_ROTATION_DAYS = {"master-kek": 365, "transport": 365, "kek": 730, "dek": 730, "signing": 1095}


def _finding(code: str, message: str) -> Finding:
    return {"code": code, "message": message}


def _stamp(day: datetime.datetime) -> str:
    return day.strftime("%Y%m%d")


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------------------------------------------------------
# Vault / OpenBao transit


def transit_plans(today: str, year_ago: str) -> list[dict[str, Any]]:
    """Every transit key on the dev server; `findings` empty means it meets the policy."""
    return [
        {
            "name": f"prod-payments-kek-{year_ago}",
            "type": "aes256-gcm96",
            "auto_rotate_days": 90,
            "versions": 3,
            "key_class": "kek",
            "owner": "payments-platform",
            "purpose": "wraps payment-card data keys",
            "findings": [],
        },
        {
            "name": f"prod-orders-dek-{today}",
            "type": "aes256-gcm96",
            "auto_rotate_days": 30,
            "versions": 2,
            "key_class": "dek",
            "owner": "orders-platform",
            "purpose": "encrypts order PII fields",
            "findings": [],
        },
        {
            "name": f"prod-webhooks-hmac-{today}",
            "type": "hmac",
            "auto_rotate_days": 90,
            "versions": 1,
            "key_class": "signing",
            "owner": "integrations",
            "purpose": "signs outgoing webhooks",
            "findings": [],
        },
        {
            "name": f"prod-api-sign-{today}",
            "type": "ecdsa-p256",
            "auto_rotate_days": 365,
            "versions": 2,
            "key_class": "signing",
            "owner": "identity",
            "purpose": "signs API access tokens",
            "findings": [],
        },
        {
            "name": f"prod-invoices-sign-{today}",
            "type": "rsa-2048",
            "auto_rotate_days": 365,
            "versions": 1,
            "key_class": "signing",
            "owner": "billing",
            "purpose": "signs PDF invoices",
            "findings": [
                _finding("algorithm_not_approved", "rsa-2048 is not approved for new keys"),
                _finding("key_too_short", "rsa-2048 is below the 3072-bit minimum for signing keys"),
            ],
        },
        {
            "name": "legacy-billing-kek",
            "type": "aes128-gcm96",
            "auto_rotate_days": 0,
            "versions": 2,
            "key_class": "kek",
            "owner": "billing",
            "purpose": "wraps billing export keys (legacy)",
            "findings": [
                _finding("name_nonconforming", "name does not follow ENV-PURPOSE-TYPE-YYYYMMDD"),
                _finding("algorithm_not_approved", "aes128-gcm96 is not approved, use aes256-gcm96"),
                _finding("key_too_short", "AES-128 is below the 256-bit minimum"),
                _finding("rotation_disabled", "auto_rotate_period is 0"),
            ],
        },
        {
            "name": f"prod-reports-kek-{today}",
            "type": "aes256-gcm96",
            "auto_rotate_days": 0,
            "versions": 1,
            "key_class": "kek",
            "owner": "data-platform",
            "purpose": "wraps report archive keys",
            "findings": [_finding("rotation_disabled", "auto_rotate_period is 0")],
        },
        {
            "name": f"prod-export-transport-{today}",
            "type": "aes256-gcm96",
            "auto_rotate_days": 90,
            "versions": 1,
            "exportable": True,
            "allow_plaintext_backup": True,
            "key_class": "transport",
            "owner": "data-platform",
            "purpose": "moves keys to the analytics partner",
            "findings": [
                _finding("exportable_key", "exportable is true: key material can leave Vault"),
                _finding("plaintext_backup_allowed", "allow_plaintext_backup is true"),
            ],
        },
        {
            "name": f"staging-batch-kek-{today}",
            "type": "aes256-gcm96",
            "auto_rotate_days": 90,
            "versions": 1,
            "deletion_allowed": True,
            "key_class": "kek",
            "owner": "orders-platform",
            "purpose": "wraps staging batch-job keys",
            "findings": [_finding("deletion_allowed", "deletion_allowed is true: one call destroys every version")],
        },
    ]


def _create_transit_key(client: Any, plan: dict[str, Any], mount: str = TRANSIT_MOUNT) -> None:
    # Raw API call: hvac's create_key refuses key types it does not know (aes128-gcm96, hmac).
    params: dict[str, Any] = {"type": plan["type"], "auto_rotate_period": f"{plan['auto_rotate_days'] * 24}h"}
    if plan["type"] == "hmac":
        params["key_size"] = 32
    for flag in ("exportable", "allow_plaintext_backup"):
        if plan.get(flag):
            params[flag] = True
    client.adapter.post(f"/v1/{mount}/keys/{plan['name']}", json=params)
    for _version in range(plan["versions"] - 1):
        client.secrets.transit.rotate_key(plan["name"], mount_point=mount)
    if plan.get("deletion_allowed"):
        client.secrets.transit.update_key_configuration(plan["name"], deletion_allowed=True, mount_point=mount)


def seed_vault(state: dict[str, Any], today: str, year_ago: str, db_path: Path) -> dict[str, Any]:
    from keyops_lab import vault_client

    environment = state["env"]
    client = vault_client(environment["VAULT_ADDR"], environment["VAULT_TOKEN"])
    plans = transit_plans(today, year_ago)
    for plan in plans:
        _create_transit_key(client, plan)

    kek = plans[0]["name"]
    rows = _wrap_transit_data_keys(client, kek)
    _write_data_keys(db_path, TRANSIT_DEK_TABLE, rows)

    raft = vault_client(environment["KEYOPS_LAB_RAFT_ADDR"], environment["KEYOPS_LAB_RAFT_TOKEN"])
    raft_plan = {
        "name": f"prod-vaultbackup-kek-{today}",
        "type": "aes256-gcm96",
        "auto_rotate_days": 90,
        "versions": 2,
        "key_class": "kek",
        "owner": "security-engineering",
        "purpose": "wraps Vault snapshot archives",
        "findings": [],
    }
    _create_transit_key(raft, raft_plan)

    keys = []
    for plan in plans:
        info = client.secrets.transit.read_key(plan["name"], mount_point=TRANSIT_MOUNT)["data"]
        keys.append({**plan, "latest_version": info["latest_version"], "compliant": not plan["findings"]})
    by_version: dict[str, int] = {}
    for _id, _key_ref, ciphertext in rows:
        version = ciphertext.split(":")[1].removeprefix("v")
        by_version[version] = by_version.get(version, 0) + 1
    return {
        "vault_transit": {"addr": environment["VAULT_ADDR"], "mount": TRANSIT_MOUNT, "keys": keys},
        "vault_raft": {
            "addr": environment["KEYOPS_LAB_RAFT_ADDR"],
            "mount": TRANSIT_MOUNT,
            "keys": [{**raft_plan, "compliant": True}],
        },
        "transit_data_keys": {
            "table": TRANSIT_DEK_TABLE,
            "key_ref": kek,
            "count": len(rows),
            "by_version": dict(sorted(by_version.items())),
        },
    }


def _wrap_transit_data_keys(client: Any, kek: str) -> list[tuple[str, str, str]]:
    """Random 32-byte data keys wrapped under chosen versions of `kek`; the plaintexts are never kept."""
    ciphertexts: list[str] = []
    for version, count in TRANSIT_DEKS_BY_VERSION.items():
        for batch in _chunks(list(range(count)), TRANSIT_BATCH):
            items = [{"plaintext": _b64(os.urandom(32)), "key_version": version} for _item in batch]
            result = client.secrets.transit.encrypt_data(kek, batch_input=items, mount_point=TRANSIT_MOUNT)
            for item in result["data"]["batch_results"]:
                if item.get("error"):
                    raise RuntimeError(f"transit encrypt under {kek} v{version} failed: {item['error']}")
                if not item["ciphertext"].startswith(f"vault:v{version}:"):
                    raise RuntimeError(f"transit ignored key_version {version} for {kek}")
                ciphertexts.append(item["ciphertext"])
    random.Random(DEK_ORDER_SEED).shuffle(ciphertexts)
    return [(f"pay-{index:05d}", kek, ciphertext) for index, ciphertext in enumerate(ciphertexts, start=1)]


def _write_data_keys(db_path: Path, table: str, rows: list[tuple[str, str, str]]) -> None:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db_path) as connection:
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, key_ref TEXT NOT NULL, "
            "ciphertext TEXT NOT NULL, context TEXT)"
        )
        connection.executemany(f"INSERT INTO {table} (id, key_ref, ciphertext, context) VALUES (?, ?, ?, NULL)", rows)


# ---------------------------------------------------------------------------------------------------------------
# AWS KMS (moto)


def kms_plans(today: str) -> list[dict[str, Any]]:
    return [
        {
            "alias": f"prod-orders-kek-{today}",
            "spec": "SYMMETRIC_DEFAULT",
            "usage": "ENCRYPT_DECRYPT",
            "rotation_days": 365,
            "owner": "orders-platform",
            "key_class": "kek",
            "purpose": "wraps order data keys",
            "state": "Enabled",
            "findings": [],
        },
        {
            "alias": f"prod-analytics-kek-{today}",
            "spec": "SYMMETRIC_DEFAULT",
            "usage": "ENCRYPT_DECRYPT",
            "rotation_days": 0,
            "owner": None,
            "key_class": "kek",
            "purpose": "wraps analytics exports",
            "state": "Enabled",
            "findings": [
                _finding("rotation_disabled", "automatic key rotation is off"),
                _finding("missing_tags", "no owner, purpose or key-class tags"),
            ],
        },
        {
            "alias": f"staging-retired-dek-{today}",
            "spec": "SYMMETRIC_DEFAULT",
            "usage": "ENCRYPT_DECRYPT",
            "rotation_days": 365,
            "owner": "orders-platform",
            "key_class": "dek",
            "purpose": "retired staging key",
            "state": "PendingDeletion",
            "findings": [],
        },
        {
            "alias": f"prod-partner-transport-{today}",
            "spec": "RSA_2048",
            "usage": "ENCRYPT_DECRYPT",
            "rotation_days": 0,
            "owner": "integrations",
            "key_class": "transport",
            "purpose": "partners wrap files for us",
            "findings": [
                _finding("algorithm_not_approved", "RSA_2048 is not approved for new keys"),
                _finding("key_too_short", "RSA_2048 is below the 3072-bit minimum"),
            ],
        },
        {
            "alias": f"prod-receipts-sign-{today}",
            "spec": "ECC_NIST_P256",
            "usage": "SIGN_VERIFY",
            "rotation_days": 0,
            "owner": "billing",
            "key_class": "signing",
            "purpose": "signs receipts",
            "state": "Enabled",
            "findings": [],
        },
        {
            "alias": f"prod-crm-kek-{today}",
            "spec": "SYMMETRIC_DEFAULT",
            "usage": "ENCRYPT_DECRYPT",
            "rotation_days": 365,
            "owner": "data-platform",
            "key_class": "kek",
            "purpose": "wraps CRM exports",
            "state": "Disabled",
            "findings": [],
        },
    ]


def seed_kms(state: dict[str, Any], today: str, db_path: Path) -> dict[str, Any]:
    import boto3

    environment = state["env"]
    kms = boto3.client(
        "kms",
        endpoint_url=environment["AWS_ENDPOINT_URL"],
        region_name=environment["AWS_DEFAULT_REGION"],
        aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"],
    )
    plans = kms_plans(today)
    for plan in plans:
        plan.setdefault("state", "Enabled")
        tags = (
            []
            if plan["owner"] is None
            else [
                {"TagKey": "owner", "TagValue": plan["owner"]},
                {"TagKey": "purpose", "TagValue": plan["purpose"]},
                {"TagKey": "key-class", "TagValue": plan["key_class"]},
            ]
        )
        metadata = kms.create_key(Description=plan["purpose"], KeyUsage=plan["usage"], KeySpec=plan["spec"], Tags=tags)[
            "KeyMetadata"
        ]
        plan["key_id"], plan["arn"] = metadata["KeyId"], metadata["Arn"]
        kms.create_alias(AliasName=f"alias/{plan['alias']}", TargetKeyId=plan["key_id"])
        if plan["rotation_days"]:
            kms.enable_key_rotation(KeyId=plan["key_id"], RotationPeriodInDays=plan["rotation_days"])

    kek = plans[0]
    rows = _wrap_kms_data_keys(kms, kek["arn"])
    _write_data_keys(db_path, KMS_DEK_TABLE, rows)

    # State changes last: the data keys above are wrapped while every key is still enabled.
    for plan in plans:
        if plan["state"] == "PendingDeletion":
            kms.schedule_key_deletion(KeyId=plan["key_id"], PendingWindowInDays=7)
        elif plan["state"] == "Disabled":
            kms.disable_key(KeyId=plan["key_id"])

    account = kek["arn"].split(":")[4]
    return {
        "aws_kms": {
            "region": environment["AWS_DEFAULT_REGION"],
            "account": account,
            "keys": [{**plan, "compliant": not plan["findings"]} for plan in plans],
        },
        "kms_data_keys": {"table": KMS_DEK_TABLE, "key_ref": kek["arn"], "count": len(rows)},
    }


def _wrap_kms_data_keys(kms: Any, key_arn: str) -> list[tuple[str, str, str]]:
    def wrap(index: int) -> tuple[str, str, str]:
        blob = kms.encrypt(KeyId=key_arn, Plaintext=os.urandom(32))["CiphertextBlob"]
        return (f"ord-{index:05d}", key_arn, _b64(blob))

    # botocore clients are thread-safe; moto answers each request in its own thread.
    with ThreadPoolExecutor(max_workers=KMS_WORKERS) as pool:
        return list(pool.map(wrap, range(1, KMS_DEK_COUNT + 1)))


# ---------------------------------------------------------------------------------------------------------------
# PKCS#11 (SoftHSM2)


def pkcs11_plans(today: str) -> list[dict[str, Any]]:
    return [
        {
            "label": f"prod-master-kek-{today}",
            "id": "0001",
            "type": "aes",
            "bits": 256,
            "extractable": False,
            "wrap": True,
            "key_class": "master-kek",
            "owner": "security-engineering",
            "purpose": "root of the key hierarchy",
            "findings": [],
        },
        {
            "label": f"prod-backup-transport-{today}",
            "id": "0002",
            "type": "aes",
            "bits": 256,
            "extractable": False,
            "wrap": True,
            "key_class": "transport",
            "owner": "security-engineering",
            "purpose": "wraps HSM key backups",
            "cloned_to_scratch": True,
            "findings": [],
        },
        {
            "label": f"prod-cards-dek-{today}",
            "id": "0003",
            "type": "aes",
            "bits": 256,
            "extractable": True,
            "wrap": False,
            "key_class": "dek",
            "owner": "payments-platform",
            "purpose": "encrypts card vault records; extractable so it can be backed up under the transport key",
            "findings": [],
        },
        {
            "label": f"prod-firmware-sign-{today}",
            "id": "0004",
            "type": "rsa",
            "bits": 3072,
            "extractable": False,
            "wrap": False,
            "key_class": "signing",
            "owner": "platform",
            "purpose": "signs release artefacts",
            "findings": [],
        },
        {
            "label": f"prod-docs-sign-{today}",
            "id": "0005",
            "type": "rsa",
            "bits": 2048,
            "extractable": False,
            "wrap": False,
            "key_class": "signing",
            "owner": "legal",
            "purpose": "signs contracts",
            "findings": [
                _finding("algorithm_not_approved", "RSA-2048 is not approved for new keys"),
                _finding("key_too_short", "RSA-2048 is below the 3072-bit minimum for signing keys"),
            ],
        },
        {
            "label": f"prod-tokens-sign-{today}",
            "id": "0006",
            "type": "ec",
            "curve": "secp384r1",
            "extractable": False,
            "wrap": False,
            "key_class": "signing",
            "owner": "identity",
            "purpose": "signs session tokens",
            "findings": [],
        },
    ]


def _create_cloned_kek(session: Any, plan: dict[str, Any], key_id: bytes, private: dict[Any, Any]) -> dict[Any, Any]:
    """An AES key made from a random value (not on the token), so the same key can be put on the scratch token."""
    import secrets

    from pkcs11 import Attribute, KeyType, ObjectClass

    template = {
        **private,
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: KeyType.AES,
        Attribute.VALUE: secrets.token_bytes(plan["bits"] // 8),
        Attribute.LABEL: plan["label"],
        Attribute.ID: key_id,
        Attribute.ENCRYPT: True,
        Attribute.DECRYPT: True,
        Attribute.WRAP: True,
        Attribute.UNWRAP: True,
    }
    session.create_object(template)
    return template


def seed_pkcs11(state: dict[str, Any], today: str) -> dict[str, Any]:
    environment = state["env"]
    # SoftHSM reads its config when the library initialises: set it before loading.
    os.environ["SOFTHSM2_CONF"] = environment["SOFTHSM2_CONF"]
    import pkcs11
    from pkcs11 import Attribute, KeyType, MechanismFlag
    from pkcs11.util.ec import encode_named_curve_parameters

    library = pkcs11.lib(environment["KEYOPS_PKCS11_MODULE"])
    token = library.get_token(token_label=environment["KEYOPS_PKCS11_TOKEN_LABEL"])
    plans = pkcs11_plans(today)
    with token.open(rw=True, user_pin=environment["KEYOPS_PKCS11_PIN"]) as session:
        for plan in plans:
            private = {
                Attribute.EXTRACTABLE: plan["extractable"],
                Attribute.SENSITIVE: True,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
            }
            key_id = bytes.fromhex(plan["id"])
            if plan.get("cloned_to_scratch"):
                backup_kek = _create_cloned_kek(session, plan, key_id, private)
            elif plan["type"] == "aes":
                usage = MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT
                if plan["wrap"]:
                    usage |= MechanismFlag.WRAP | MechanismFlag.UNWRAP
                session.generate_key(
                    KeyType.AES,
                    plan["bits"],
                    id=key_id,
                    label=plan["label"],
                    store=True,
                    capabilities=usage,
                    template=private,
                )
            elif plan["type"] == "rsa":
                session.generate_keypair(
                    KeyType.RSA,
                    plan["bits"],
                    id=key_id,
                    label=plan["label"],
                    store=True,
                    capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                    private_template=private,
                )
            else:
                parameters = session.create_domain_parameters(
                    KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(plan["curve"])}, local=True
                )
                parameters.generate_keypair(
                    id=key_id,
                    label=plan["label"],
                    store=True,
                    capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                    private_template=private,
                )
    # The scratch token gets the same backup KEK, as an HSM cloning ceremony would give a DR partition, so restore
    # tests can unwrap the backups there; the value existed only in this process.
    scratch = library.get_token(token_label=environment["KEYOPS_PKCS11_SCRATCH_TOKEN_LABEL"])
    with scratch.open(rw=True, user_pin=environment["KEYOPS_PKCS11_PIN"]) as session:
        session.create_object(backup_kek)
    return {
        "pkcs11": {
            "token_label": environment["KEYOPS_PKCS11_TOKEN_LABEL"],
            "scratch_token_label": environment["KEYOPS_PKCS11_SCRATCH_TOKEN_LABEL"],
            "keys": [{**plan, "compliant": not plan["findings"]} for plan in plans],
        }
    }


# ---------------------------------------------------------------------------------------------------------------
# Certificate files


def seed_certificates(state: dict[str, Any]) -> dict[str, Any]:
    environment = state["env"]
    lab_dir = Path(environment["KEYOPS_LAB_DIR"])
    cert_dir = Path(environment["KEYOPS_LAB_CERT_DIR"])
    cert_dir.mkdir(parents=True, exist_ok=True)
    issuer = labpki.load_issuer(lab_dir / "ca" / "intermediate-ca.pem", lab_dir / "ca" / "intermediate-ca.key")
    root_pem = (lab_dir / "ca" / "root-ca.pem").read_bytes()
    now = labpki.utc_now()
    day = datetime.timedelta(days=1)

    # file, format, common name, key algorithm, not before, not after, kind, findings
    plans: list[tuple[str, str, str, str, datetime.datetime, datetime.datetime, str, list[Finding]]] = [
        ("www-valid.pem", "pem", "www.lab.internal", "ec-p256", now - 10 * day, now + 80 * day, "valid", []),
        (
            "billing-expiring.pem",
            "pem",
            "billing.lab.internal",
            "ec-p256",
            now - 70 * day,
            now + 20 * day,
            "expiring",
            [_finding("cert_expiring", "expires in 20 days (under 30)")],
        ),
        (
            "old-portal-expired.pem",
            "pem",
            "old-portal.lab.internal",
            "rsa-2048",
            now - 400 * day,
            now - 35 * day,
            "expired",
            [_finding("cert_expired", "expired 35 days ago")],
        ),
        (
            "legacy-vpn-weak.pem",
            "pem",
            "legacy-vpn.lab.internal",
            "rsa-1024",
            now - 30 * day,
            now + 300 * day,
            "weak",
            [_finding("key_too_short", "RSA-1024 key (SHA-256 signature; cryptography refuses SHA-1)")],
        ),
        (
            "partners-bundle.pem",
            "pem-bundle",
            "partners.lab.internal",
            "rsa-3072",
            now - 5 * day,
            now + 85 * day,
            "valid",
            [],
        ),
        (
            "payments-gateway.der",
            "der",
            "gateway.lab.internal",
            "ec-p256",
            now - 1 * day,
            now + 6 * day,
            "expiring",
            [_finding("cert_expiring", "expires in 6 days (under 30)")],
        ),
        (
            "svc-orders-client.p12",
            "pkcs12",
            "svc-orders.lab.internal",
            "ec-p256",
            now - 2 * day,
            now + 88 * day,
            "valid",
            [],
        ),
    ]
    records = []
    for file_name, file_format, common_name, algorithm, not_before, not_after, kind, findings in plans:
        key = labpki.new_key(algorithm)
        cert = labpki.make_leaf(common_name, key, issuer, not_before, not_after, client_auth=file_format == "pkcs12")
        target = cert_dir / file_name
        if file_format == "pem":
            labpki.write_certs(target, cert)
        elif file_format == "der":
            target.write_bytes(cert.public_bytes(serialization.Encoding.DER))
        elif file_format == "pem-bundle":
            # Like `openssl s_client -showcerts` output: text between the blocks that parsers must skip.
            parts = [
                f"subject=CN={common_name}\nissuer=CN={issuer.cert.subject.rfc4514_string()}\n".encode(),
                labpki.certs_pem(cert),
                b"\n# issuing CA\n",
                labpki.certs_pem(issuer.cert),
                b"\n# root CA\n",
                root_pem,
            ]
            target.write_bytes(b"".join(parts))
        else:
            password = environment["KEYOPS_LAB_P12_PASSWORD"].encode()
            bundle = pkcs12.serialize_key_and_certificates(
                common_name.encode(), key, cert, [issuer.cert], serialization.BestAvailableEncryption(password)
            )
            labpki.write_private(target, bundle)
        records.append(
            {
                "file": str(target),
                "format": file_format,
                "common_name": common_name,
                "key_algorithm": algorithm,
                "not_after": not_after.isoformat(),
                "kind": kind,
                "sha256": labpki.fingerprint(cert),
                "findings": findings,
                "compliant": not findings,
            }
        )
    endpoints = [
        {**item, "compliant": item["kind"] in ("valid", "sni_valid") and item["chain_complete"]}
        for item in state.get("tls_endpoints", [])
    ]
    return {"certificates": {"dir": str(cert_dir), "files": records}, "tls_endpoints": endpoints}


# ---------------------------------------------------------------------------------------------------------------
# The key register (what the company believes it has), with deliberate drift


CUSTODIANS = {
    "payments-platform": ["a.haddad", "m.okafor"],
    "orders-platform": ["l.nguyen", "s.pereira"],
    "security-engineering": ["r.alharbi", "j.schmidt"],
    "data-platform": ["k.tanaka", "e.moreau"],
    "billing": ["d.ivanova", "p.sharma"],
    "identity": ["t.mensah", "c.romero"],
    "integrations": ["b.kowalski", "f.yilmaz"],
    "platform": ["h.lindqvist", "o.adeyemi"],
    "legal": ["n.costa", "y.chen"],
}


def _entry(
    name: str,
    backend: str,
    location: str,
    key_class: str,
    owner: str,
    purpose: str,
    algorithm: str,
    rotation_days: int,
    backup: str,
    stores: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "backend": backend,
        "location": location,
        "key_class": key_class,
        "owner": owner,
        "custodians": list(CUSTODIANS.get(owner, ["security-engineering"])),
        "purpose": purpose,
        "algorithm": algorithm,
        "rotation_period_days": rotation_days,
        "backup_location": backup,
    }
    if stores:
        entry["data_key_stores"] = stores
    return entry


def build_register(summary: dict[str, Any], today: str, db_path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Register entries from what was planted, then the drift: one ghost, one missing, three mismatches."""
    transit = {key["name"]: key for key in summary["vault_transit"]["keys"]}
    payments_kek = summary["transit_data_keys"]["key_ref"]
    missing_name = f"prod-webhooks-hmac-{today}"
    ghost_name = f"prod-settlement-kek-{today}"
    mismatches: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []

    for key in transit.values():
        if key["name"] == missing_name:
            continue  # drift: a real key nobody registered
        algorithm, rotation = key["type"], key["auto_rotate_days"]
        if key["name"] == "legacy-billing-kek":
            algorithm = "aes256-gcm96"
            mismatches.append(
                {
                    "name": key["name"],
                    "code": "drift_algorithm",
                    "field": "algorithm",
                    "register": algorithm,
                    "actual": key["type"],
                }
            )
        if key["name"] == f"prod-reports-kek-{today}":
            rotation = 90
            mismatches.append(
                {
                    "name": key["name"],
                    "code": "drift_rotation",
                    "field": "rotation_period_days",
                    "register": rotation,
                    "actual": key["auto_rotate_days"],
                }
            )
        stores = [{"path": str(db_path), "table": TRANSIT_DEK_TABLE}] if key["name"] == payments_kek else None
        entries.append(
            _entry(
                key["name"],
                "vault_transit",
                TRANSIT_MOUNT,
                key["key_class"],
                key["owner"],
                key["purpose"],
                algorithm,
                rotation,
                "vault raft snapshot s3://keyops-lab-backups/vault/",
                stores,
            )
        )
    entries.append(
        _entry(
            ghost_name,
            "vault_transit",
            TRANSIT_MOUNT,
            "kek",
            "payments-platform",
            "wraps settlement file keys",
            "aes256-gcm96",
            90,
            "vault raft snapshot s3://keyops-lab-backups/vault/",
        )
    )

    kms = summary["aws_kms"]
    location = f"{kms['region']}/{kms['account']}"
    for key in kms["keys"]:
        owner = key["owner"] or "data-platform"
        if key["alias"] == f"prod-orders-kek-{today}":
            owner = "payments-platform"
            mismatches.append(
                {
                    "name": key["alias"],
                    "code": "drift_owner",
                    "field": "owner",
                    "register": owner,
                    "actual": key["owner"],
                }
            )
        stores = (
            [{"path": str(db_path), "table": KMS_DEK_TABLE}]
            if key["arn"] == summary["kms_data_keys"]["key_ref"]
            else None
        )
        entries.append(
            _entry(
                key["alias"],
                "aws_kms",
                location,
                key["key_class"],
                owner,
                key["purpose"],
                key["spec"],
                key["rotation_days"],
                "aws-kms (provider managed)",
                stores,
            )
        )

    hsm = summary["pkcs11"]
    for key in hsm["keys"]:
        # PKCS#11-style names (AES-256, RSA-3072, EC-P384), as the policy's approved list spells them.
        algorithm = f"{key['type'].upper()}-{key['bits']}" if key["type"] != "ec" else HSM_CURVE_NAMES[key["curve"]]
        entries.append(
            _entry(
                key["label"],
                "pkcs11",
                hsm["token_label"],
                key["key_class"],
                key["owner"],
                key["purpose"],
                algorithm,
                HSM_ROTATION_DAYS[key["key_class"]],
                "wrapped under prod-backup-transport in s3://keyops-lab-backups/hsm/",
            )
        )

    for cert in summary["certificates"]["files"]:
        entries.append(
            _entry(
                cert["common_name"],
                "x509",
                cert["file"],
                "tls-cert",
                "platform",
                "TLS for " + cert["common_name"],
                cert["key_algorithm"].upper(),
                90,
                "none (reissue)",
            )
        )

    # The policy's finding codes for these: missing_from_backend, not_in_register, drift_* (in mismatches).
    drift = {
        "in_register_not_in_backend": [ghost_name],
        "in_backend_not_in_register": [missing_name],
        "mismatches": mismatches,
    }
    return entries, drift


# ---------------------------------------------------------------------------------------------------------------


def seed(state: dict[str, Any]) -> dict[str, Any]:
    environment = state["env"]
    now = labpki.utc_now()
    today, year_ago = _stamp(now), _stamp(now - datetime.timedelta(days=365))
    db_path = Path(environment["KEYOPS_LAB_DEK_DB"])
    db_path.parent.mkdir(parents=True, exist_ok=True)

    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "vault": lambda: seed_vault(state, today, year_ago, db_path),
        "kms": lambda: seed_kms(state, today, db_path),
        "pkcs11": lambda: seed_pkcs11(state, today),
        "certificates": lambda: seed_certificates(state),
    }
    summary: dict[str, Any] = {"seeded_at": now.isoformat(), "date_stamp": today}
    # The backends are independent; SQLite writes to the two tables are serialised by its own lock.
    with ThreadPoolExecutor(max_workers=len(steps)) as pool:
        futures = {name: pool.submit(step) for name, step in steps.items()}
        for future in futures.values():
            summary.update(future.result())

    entries, drift = build_register(summary, today, db_path)
    register_path = Path(environment["KEYOPS_LAB_REGISTER"])
    register_path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Key register of the lab company: what it believes it has. Seeded by lab/keyops_lab.py with\n"
        "# deliberate drift from the backends (see seed.json: register.drift).\n"
    )
    register_path.write_text(header + yaml.safe_dump({"keys": entries}, sort_keys=False, width=120))
    summary["register"] = {"path": str(register_path), "entries": len(entries), "drift": drift}
    summary["data_key_db"] = str(db_path)
    summary["non_compliant"] = _non_compliant(summary)
    return summary


def _non_compliant(summary: dict[str, Any]) -> list[dict[str, Any]]:
    items = []
    for backend, section, name_field in (
        ("vault_transit", "vault_transit", "name"),
        ("aws_kms", "aws_kms", "alias"),
        ("pkcs11", "pkcs11", "label"),
    ):
        for key in summary[section]["keys"]:
            if key["findings"]:
                items.append(
                    {"backend": backend, "name": key[name_field], "reasons": [item["code"] for item in key["findings"]]}
                )
    for cert in summary["certificates"]["files"]:
        if cert["findings"]:
            items.append(
                {
                    "backend": "x509",
                    "name": Path(cert["file"]).name,
                    "reasons": [item["code"] for item in cert["findings"]],
                }
            )
    return items


def describe(summary: dict[str, Any]) -> list[str]:
    """Short lines for the terminal: names and counts, nothing secret."""
    transit = summary["transit_data_keys"]
    return [
        f"vault transit: {len(summary['vault_transit']['keys'])} keys; raft: {len(summary['vault_raft']['keys'])} key",
        f"  {transit['count']} data keys under {transit['key_ref']} by version {transit['by_version']} "
        f"(table {transit['table']})",
        f"aws kms: {len(summary['aws_kms']['keys'])} keys; {summary['kms_data_keys']['count']} data keys "
        f"(table {summary['kms_data_keys']['table']})",
        f"pkcs11: {len(summary['pkcs11']['keys'])} keys on token {summary['pkcs11']['token_label']}",
        f"certificates: {len(summary['certificates']['files'])} files in {summary['certificates']['dir']}",
        f"register: {summary['register']['entries']} entries, drift: "
        f"{len(summary['register']['drift']['mismatches'])} mismatches, 1 ghost, 1 unregistered",
        f"non-compliant: {', '.join(item['name'] for item in summary['non_compliant'])}",
    ]
