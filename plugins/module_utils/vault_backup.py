# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: transit key backups encrypted at once to escrow recipients (age format), and their restore.

The plaintext backup Vault returns only ever lives in memory: it is checked, encrypted with pyrage to the
recipients' age (X25519) or SSH public keys and only the age file is written (0600, temp file + rename).
A restore decrypts in memory, restores under a given name and reads the key back to compare it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tempfile
import traceback
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import Vault
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    Conflict,
    IntegrityError,
    InvalidInput,
    MissingLibrary,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_transit import key_ref, key_state, read_key

try:
    import pyrage
except ImportError:
    PYRAGE_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    PYRAGE_IMPORT_ERROR = None

# The key type numbers inside an OpenBao transit backup (keysutil.KeyType).
BACKUP_TYPES = {
    0: "aes256-gcm96",
    1: "ecdsa-p256",
    2: "ed25519",
    3: "rsa-2048",
    4: "rsa-4096",
    5: "chacha20-poly1305",
    6: "ecdsa-p384",
    7: "ecdsa-p521",
    8: "aes128-gcm96",
    9: "rsa-3072",
    10: "hmac",
}
# The PEM label ssh-keygen writes around an OpenSSH private key: its presence picks the SSH identity parser.
OPENSSH_KEY_LABEL = "OPENSSH PRIVATE KEY-----"
COMPARED = ("type", "latest_version", "min_decryption_version", "min_encryption_version", "min_available_version")


def _require_pyrage() -> None:
    if PYRAGE_IMPORT_ERROR:
        raise MissingLibrary("pyrage", PYRAGE_IMPORT_ERROR)


def parse_recipients(recipients: list[str]) -> list[Any]:
    _require_pyrage()
    parsed = []
    for text in recipients:
        text = text.strip()
        try:
            if text.startswith("age1"):
                parsed.append(pyrage.x25519.Recipient.from_str(text))
            elif text.startswith(("ssh-ed25519 ", "ssh-rsa ")):
                parsed.append(pyrage.ssh.Recipient.from_str(text))
            else:
                raise ValueError(text[:12])
        except Exception as error:
            raise InvalidInput(
                "Read escrow recipient",
                None,
                f"'{text[:24]}...' is not an age (age1...) or ssh-ed25519/ssh-rsa public key",
                "Fix recipients",
            ) from error
    if not parsed:
        raise InvalidInput(
            "Read escrow recipients",
            None,
            "no recipient was given",
            "Set recipients to the escrow holders' age or SSH public keys",
        )
    return parsed


def parse_identities(identity: str | None, identity_file: str | None) -> list[Any]:
    """age secret keys (AGE-SECRET-KEY-1...) or an unencrypted OpenSSH private key, from a string or a file."""
    _require_pyrage()
    text = identity or ""
    if identity_file:
        try:
            with open(identity_file, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as error:
            raise InvalidInput(
                "Read escrow identity",
                None,
                f"cannot read identity_file ({error.strerror})",
                "Set identity_file to a readable age identity file",
            ) from error
    try:
        if OPENSSH_KEY_LABEL in text:
            return [pyrage.ssh.Identity.from_buffer(text.encode())]
        identities = [
            pyrage.x25519.Identity.from_str(line.strip())
            for line in text.splitlines()
            if line.strip().startswith("AGE-SECRET-KEY-")
        ]
    except Exception as error:
        raise InvalidInput(
            "Read escrow identity",
            None,
            "the identity is not a valid age secret key or OpenSSH key",
            "Pass the escrow identity in identity or identity_file",
        ) from error
    if not identities:
        raise InvalidInput(
            "Read escrow identity",
            None,
            "no age secret key (AGE-SECRET-KEY-1...) was found",
            "Pass the escrow identity in identity or identity_file",
        )
    return identities


def check_backup(backup: str | None, ref: str) -> dict[str, Any]:
    """Decode a transit backup and return its policy facts; an empty or truncated backup fails."""
    try:
        document = json.loads(base64.b64decode(backup or "", validate=True))
        policy = document["policy"]
        versions = sorted(int(version) for version in policy["keys"])
    except (binascii.Error, ValueError, KeyError, TypeError) as error:
        raise IntegrityError(
            "Check backup",
            ref,
            "the backup is empty or truncated (not a complete transit backup)",
            "Take the backup again; do not keep this one",
        ) from error
    if not versions or int(policy.get("latest_version") or 0) not in versions:
        raise IntegrityError(
            "Check backup",
            ref,
            "the backup holds no key versions, or not the latest one",
            "Take the backup again; do not keep this one",
        )
    return {
        "name": policy.get("name"),
        "type": BACKUP_TYPES.get(policy.get("type"), f"type-{policy.get('type')}"),
        "latest_version": int(policy["latest_version"]),
        "versions": versions,
        "min_decryption_version": int(policy.get("min_decryption_version") or 0),
        "min_encryption_version": int(policy.get("min_encryption_version") or 0),
        "min_available_version": int(policy.get("min_available_version") or 0),
    }


def write_private(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(prefix=".keyops-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def backup_path(dest: str, mount: str, name: str, version: int) -> str:
    return os.path.join(dest, f"{mount.replace('/', '_')}-{name}-v{version}.backup.age")


def backup_key(
    vault: Vault, mount: str, name: str, dest: str, recipients: list[Any], force: bool, check_mode: bool
) -> dict[str, Any]:
    """Back up one key to ``dest`` unless a backup of its latest version is already there."""
    ref = key_ref(mount, name)
    data = read_key(vault, mount, name)
    if data is None:
        raise InvalidInput("Back up transit key", ref, "the key does not exist", "Check names and mount")
    state = key_state(data)
    if not (state["exportable"] and state["allow_plaintext_backup"]):
        raise Conflict(
            "Back up transit key",
            ref,
            "the key does not allow backups (exportable and allow_plaintext_backup are both needed)",
            "Set both with keyops.runbooks.vault_transit_key "
            "(allow_irreversible=true, approved change), or escrow this key another way",
        )
    path = backup_path(dest, mount, name, state["latest_version"])
    entry: dict[str, Any] = {
        "key_ref": ref,
        "path": path,
        "latest_version": state["latest_version"],
        "type": state["type"],
        "recipients": len(recipients),
    }
    if os.path.exists(path) and not force:
        with open(path, "rb") as handle:
            entry.update(changed=False, backup_sha256=hashlib.sha256(handle.read()).hexdigest())
        return entry
    entry["changed"] = True
    if check_mode:
        return entry

    with vault.call("Back up transit key", ref):
        backup = vault.transit.backup_key(name, mount_point=mount)["data"]["backup"]
    facts = check_backup(backup, ref)
    if facts["latest_version"] != state["latest_version"]:
        raise IntegrityError(
            "Back up transit key",
            ref,
            f"the backup holds version {facts['latest_version']}, the "
            f"key {state['latest_version']} (rotated meanwhile?)",
            "Run the backup again",
        )
    sealed = pyrage.encrypt(backup.encode(), recipients)
    del backup
    write_private(path, sealed)
    entry.update(backup_sha256=hashlib.sha256(sealed).hexdigest(), bytes=len(sealed), versions=facts["versions"])
    return entry


def open_backup(path: str, identities: list[Any], ref: str) -> tuple[str, dict[str, Any]]:
    """Decrypt an age backup in memory and check it; returns the plaintext backup and its facts."""
    try:
        with open(path, "rb") as handle:
            sealed = handle.read()
    except OSError as error:
        raise InvalidInput(
            "Read backup", ref, f"cannot read '{path}' ({error.strerror})", "Set path to the backup file"
        ) from error
    if not sealed:
        raise IntegrityError("Read backup", ref, f"'{path}' is empty", "Restore from another copy of the backup")
    try:
        backup = pyrage.decrypt(sealed, identities).decode()
    except Exception as error:
        raise IntegrityError(
            "Decrypt backup",
            ref,
            f"'{path}' cannot be decrypted with the identity given "
            "(wrong identity, or the file is truncated or altered)",
            "Pass the escrow identity the backup was made for, or use another copy",
        ) from error
    return backup, check_backup(backup, ref)


def restore_key(
    vault: Vault, mount: str, name: str, path: str, identities: list[Any], force: bool, check_mode: bool
) -> dict[str, Any]:
    """Restore under ``name``; an existing key that already matches the backup is left alone."""
    ref = key_ref(mount, name)
    backup, facts = open_backup(path, identities, ref)
    expected = {field: facts[field] for field in COMPARED}
    current = key_state(read_key(vault, mount, name))
    before = {field: current.get(field) for field in COMPARED} if current["exists"] else {"exists": False}
    result: dict[str, Any] = {
        "key_ref": ref,
        "path": path,
        "source_name": facts["name"],
        "expected": expected,
        "before": before,
    }
    if current["exists"] and before == expected:
        result.update(changed=False, matches=True, after=before)
        return result
    if current["exists"] and not force:
        raise Conflict(
            "Restore transit key",
            ref,
            "a different key of that name exists",
            "Restore to a scratch name, or set force=true to overwrite it",
        )
    result["changed"] = True
    if check_mode:
        result.update(after=expected, matches=None)
        return result

    with vault.call("Restore transit key", ref):
        vault.transit.restore_key(backup, name=name, force=force, mount_point=mount)
    del backup
    restored = key_state(read_key(vault, mount, name))
    after = {field: restored.get(field) for field in COMPARED}
    result.update(after=after, matches=after == expected)
    if after != expected:
        differing = ", ".join(field for field in COMPARED if after.get(field) != expected[field])
        raise IntegrityError(
            "Restore transit key",
            ref,
            f"the restored key differs from the backup in {differing}",
            "Inspect the restored key; do not rely on this backup",
            after=after,
            expected=expected,
        )
    return result
