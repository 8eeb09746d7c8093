# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: known-answer canaries for transit keys, made before a backup and checked after a restore.

A canary's plaintext is derived from a public label (bundle id and key reference), so nothing secret is stored: the
file keeps the ciphertext (encryption keys), the signature (signing keys) or the HMAC (HMAC keys), and the SHA-256 of
the plaintext. A restored key that decrypts to that plaintext, verifies that signature or gives that HMAC is the
backed-up key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import Vault
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import IntegrityError, KeyNotFound
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_backup import write_private
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_transit import key_ref, key_state, read_key

FORMAT = "keyops-canaries/1"
_SIGNING = ("ecdsa", "ed25519", "rsa")


def canary_plaintext(label: str, ref: str) -> bytes:
    return hashlib.sha256(f"keyops-canary/{label}/{ref}".encode()).digest()


def operation_for(key_type: str) -> str:
    if key_type == "hmac":
        return "hmac"
    if key_type.startswith(_SIGNING):
        return "sign"
    return "encrypt"


def read_canaries(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        return {"format": FORMAT, "canaries": []}
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    if document.get("format") != FORMAT:
        raise IntegrityError("Read canaries", None, f"{path} is not a {FORMAT} file", "Use the bundle's canary file")
    return document


def make_canaries(
    vault: Vault, mount: str, names: list[str], label: str, path: str, check_mode: bool
) -> dict[str, Any]:
    """One canary per key at its latest version; a key that already has one for this label and version is kept."""
    document = read_canaries(path)
    kept = {(item["key_ref"], item["version"]): item for item in document["canaries"] if item["label"] == label}
    canaries, made = [], []
    for name in names:
        ref = key_ref(mount, name)
        state = key_state(read_key(vault, mount, name))
        if not state["exists"]:
            raise KeyNotFound("Make canary", ref, "the key does not exist", "Check names and mount")
        version = state["latest_version"]
        if (ref, version) in kept:
            canaries.append(kept[(ref, version)])
            continue
        operation = operation_for(state["type"])
        entry = {
            "key_ref": ref,
            "server": vault.url,
            "name": name,
            "type": state["type"],
            "version": version,
            "label": label,
            "operation": operation,
            "plaintext_sha256": hashlib.sha256(canary_plaintext(label, ref)).hexdigest(),
        }
        made.append(ref)
        if not check_mode:
            entry["value"] = _compute(vault, mount, name, ref, operation, canary_plaintext(label, ref))
        canaries.append(entry)
    changed = bool(made)
    if changed and not check_mode:
        others = [
            item for item in document["canaries"] if item["key_ref"] not in {entry["key_ref"] for entry in canaries}
        ]
        document = {"format": FORMAT, "canaries": others + canaries}
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        write_private(path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
    return {"changed": changed, "made": made, "canaries": [_public(item) for item in canaries], "path": path}


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {key: item[key] for key in ("key_ref", "server", "type", "version", "operation") if key in item}


def _compute(vault: Vault, mount: str, name: str, ref: str, operation: str, plaintext: bytes) -> str:
    encoded = base64.b64encode(plaintext).decode()
    with vault.call("Make canary", ref):
        if operation == "encrypt":
            return vault.transit.encrypt_data(name, plaintext=encoded, mount_point=mount)["data"]["ciphertext"]
        if operation == "sign":
            return vault.transit.sign_data(name, hash_input=encoded, mount_point=mount)["data"]["signature"]
        return vault.transit.generate_hmac(name, hash_input=encoded, mount_point=mount)["data"]["hmac"]


def check_canary(vault: Vault, mount: str, name: str, canary: dict[str, Any]) -> dict[str, Any]:
    """Run one canary against a (restored) key; returns ``{check, passed}`` and never the plaintext."""
    ref = key_ref(mount, name)
    plaintext = canary_plaintext(canary["label"], canary["key_ref"])
    encoded = base64.b64encode(plaintext).decode()
    operation = canary["operation"]
    try:
        with vault.call("Check canary", ref):
            if operation == "encrypt":
                answer = vault.transit.decrypt_data(name, ciphertext=canary["value"], mount_point=mount)
                passed = (
                    hashlib.sha256(base64.b64decode(answer["data"]["plaintext"])).hexdigest()
                    == canary["plaintext_sha256"]
                )
                check = "decrypt the canary made before the backup"
            elif operation == "sign":
                answer = vault.transit.verify_signed_data(
                    name, hash_input=encoded, signature=canary["value"], mount_point=mount
                )
                fresh = vault.transit.sign_data(name, hash_input=encoded, mount_point=mount)["data"]["signature"]
                again = vault.transit.verify_signed_data(name, hash_input=encoded, signature=fresh, mount_point=mount)
                passed = bool(answer["data"]["valid"]) and bool(again["data"]["valid"])
                check = "verify the canary signature made before the backup, then sign and verify anew"
            else:
                answer = vault.transit.generate_hmac(name, hash_input=encoded, mount_point=mount)
                passed = answer["data"]["hmac"] == canary["value"]
                check = "recompute the canary HMAC made before the backup"
    except IntegrityError:
        raise
    except Exception as error:
        return {"check": f"canary {operation}", "passed": False, "error": type(error).__name__}
    return {"check": check, "passed": passed, "version": canary["version"]}
