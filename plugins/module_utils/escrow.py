# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the escrow key of a backup bundle, held by no one person.

An age X25519 identity is made in memory; its public half (the recipient) encrypts the backups. Its 32-byte secret
is split with SLIP-39 (shamir-mnemonic) into one share per custodian, threshold K of N, and each share is encrypted
at once to that custodian's own age or SSH public key. Only ``escrow.json`` (public facts) and the encrypted
``share-<custodian>.age`` files are written. Recovery takes custodians' identities, decrypts their shares in
memory and combines K of them; the identity it returns must stay inside the calling module.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import traceback
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    Conflict,
    IntegrityError,
    InvalidInput,
    KeyNotFound,
    MissingLibrary,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.records import iso_utc, utc_now
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_backup import (
    parse_identities,
    parse_recipients,
    write_private,
)

try:
    import pyrage
    import shamir_mnemonic
except ImportError:
    ESCROW_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    ESCROW_IMPORT_ERROR = None

ESCROW_FILE = "escrow.json"
FORMAT = "keyops-escrow/1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _require() -> None:
    if ESCROW_IMPORT_ERROR:
        library = "shamir-mnemonic" if "shamir" in ESCROW_IMPORT_ERROR else "pyrage"
        raise MissingLibrary(library, ESCROW_IMPORT_ERROR)


def _polymod(values: list[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for bit in range(5):
            checksum ^= generator[bit] if (top >> bit) & 1 else 0
    return checksum


def age_secret_key(secret: bytes) -> str:
    """Bech32 (BIP 173, as age uses it) of 32 secret bytes: the ``AGE-SECRET-KEY-1...`` text pyrage reads."""
    hrp = "age-secret-key-"
    words, accumulator, bits = [], 0, 0
    for byte in secret:
        accumulator = (accumulator << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            words.append((accumulator >> bits) & 31)
    if bits:
        words.append((accumulator << (5 - bits)) & 31)
    expanded = [ord(char) >> 5 for char in hrp] + [0] + [ord(char) & 31 for char in hrp]
    polymod = _polymod(expanded + words + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - index)) & 31 for index in range(6)]
    return (hrp + "1" + "".join(_BECH32[word] for word in words + checksum)).upper()


def check_custodians(custodians: list[Any], threshold: int) -> list[dict[str, str]]:
    """Custodians as ``{name, recipient}``; a string entry is ``"<name> <public key>"``."""
    parsed: list[dict[str, str]] = []
    for entry in custodians:
        if isinstance(entry, str):
            name, _space, recipient = entry.strip().partition(" ")
            entry = {"name": name, "recipient": recipient.strip()}
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("recipient"):
            raise InvalidInput("Read custodians", None, "each custodian needs a name and a recipient", "Fix custodians")
        if not _NAME.match(str(entry["name"])):
            raise InvalidInput(
                "Read custodians",
                None,
                f"custodian name '{str(entry['name'])[:40]}' is not a plain name (letters, digits, . _ @ -)",
                "Fix custodians",
            )
        parse_recipients([entry["recipient"]])
        parsed.append({"name": str(entry["name"]), "recipient": str(entry["recipient"]).strip()})
    names = [entry["name"] for entry in parsed]
    if len(set(names)) != len(names):
        raise InvalidInput("Read custodians", None, "a custodian is listed twice", "List each custodian once")
    if not 2 <= threshold <= len(parsed) <= 16:
        raise InvalidInput(
            "Split escrow key",
            None,
            f"a threshold of {threshold} with {len(parsed)} custodian(s) does not split knowledge "
            "(need 2 <= threshold <= custodians <= 16)",
            "Set threshold to at least 2 and give at least that many custodians",
        )
    return parsed


def share_file(custodian: str) -> str:
    return f"share-{custodian}.age"


def sha256_path(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def read_escrow(bundle_dir: str) -> dict[str, Any] | None:
    path = os.path.join(bundle_dir, ESCROW_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
        if document.get("format") != FORMAT:
            raise ValueError(document.get("format"))
        return document
    except (OSError, ValueError) as error:
        raise IntegrityError(
            "Read escrow record", None, f"{path} is not a keyops escrow record", "Use another bundle"
        ) from error


def _same(existing: dict[str, Any], custodians: list[dict[str, str]], threshold: int, bundle_dir: str) -> bool:
    recorded = [{"name": item["name"], "recipient": item["recipient"]} for item in existing.get("custodians", [])]
    if recorded != custodians or existing.get("threshold") != threshold:
        return False
    return all(
        os.path.exists(os.path.join(bundle_dir, item["share_file"]))
        and sha256_path(os.path.join(bundle_dir, item["share_file"])) == item["share_sha256"]
        for item in existing["custodians"]
    )


def create_escrow(bundle_dir: str, custodians: list[Any], threshold: int, check_mode: bool) -> dict[str, Any]:
    """Make the escrow key and its encrypted shares in ``bundle_dir``, unless the same escrow is already there."""
    _require()
    parsed = check_custodians(custodians, threshold)
    existing = read_escrow(bundle_dir)
    if existing is not None:
        if _same(existing, parsed, threshold, bundle_dir):
            return {"changed": False, "escrow": existing}
        raise Conflict(
            "Create escrow key",
            None,
            f"{bundle_dir} already holds an escrow key for other custodians or another threshold, or a share "
            "file was changed, and backups in it may be encrypted to that key",
            "Use a new bundle folder (another backup id) for the new custodians",
        )
    if check_mode:
        return {"changed": True, "escrow": {"recipient": None, "threshold": threshold, "custodians": parsed}}

    os.makedirs(bundle_dir, mode=0o700, exist_ok=True)
    secret = os.urandom(32)
    identity = pyrage.x25519.Identity.from_str(age_secret_key(secret))
    recipient = str(identity.to_public())
    groups = shamir_mnemonic.generate_mnemonics(1, [(threshold, len(parsed))], secret)
    del secret, identity
    records = []
    for custodian, mnemonic in zip(parsed, groups[0], strict=False):
        sealed = pyrage.encrypt(mnemonic.encode(), parse_recipients([custodian["recipient"]]))
        path = os.path.join(bundle_dir, share_file(custodian["name"]))
        write_private(path, sealed)
        records.append(
            {
                **custodian,
                "share_file": share_file(custodian["name"]),
                "share_sha256": hashlib.sha256(sealed).hexdigest(),
            }
        )
    del groups
    escrow = {
        "format": FORMAT,
        "recipient": recipient,
        "scheme": "SLIP-39 (shamir-mnemonic), one group",
        "threshold": threshold,
        "shares": len(records),
        "custodians": records,
        "created": iso_utc(utc_now()),
    }
    write_private(os.path.join(bundle_dir, ESCROW_FILE), (json.dumps(escrow, indent=2, sort_keys=True) + "\n").encode())
    return {"changed": True, "escrow": escrow}


def recover_identity(bundle_dir: str, custodian_identities: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """Decrypt the custodians' shares and combine them; fewer than the threshold fails.

    Returns the age identity (keep it inside the calling module) and a summary without any secret.
    """
    _require()
    escrow = read_escrow(bundle_dir)
    if escrow is None:
        raise KeyNotFound(
            "Recover escrow key", None, f"{bundle_dir} has no {ESCROW_FILE}", "Point at a backup bundle folder"
        )
    by_name = {item["name"]: item for item in escrow["custodians"]}
    mnemonics, used, problems = [], [], []
    for offered in custodian_identities:
        if len(used) == escrow["threshold"]:
            break
        name = offered.get("name")
        record = by_name.get(name)
        if record is None:
            problems.append(f"{name}: not a custodian of this bundle")
            continue
        path = os.path.join(bundle_dir, record["share_file"])
        if not os.path.exists(path):
            problems.append(f"{name}: share file {record['share_file']} is missing")
            continue
        try:
            identities = parse_identities(offered.get("identity"), offered.get("identity_file"))
        except InvalidInput as error:
            problems.append(f"{name}: {error.reason}")
            continue
        with open(path, "rb") as handle:
            sealed = handle.read()
        if hashlib.sha256(sealed).hexdigest() != record["share_sha256"]:
            problems.append(f"{name}: share file {record['share_file']} was altered")
            continue
        try:
            mnemonics.append(pyrage.decrypt(sealed, identities).decode())
        except Exception:
            problems.append(f"{name}: the identity given does not open this custodian's share")
            continue
        used.append(name)
    summary = {"threshold": escrow["threshold"], "shares_offered": len(custodian_identities), "custodians_used": used}
    if len(used) < escrow["threshold"]:
        raise IntegrityError(
            "Recover escrow key",
            None,
            f"{len(used)} usable share(s) of the {escrow['threshold']} needed"
            + (f" ({'; '.join(problems)})" if problems else ""),
            f"Bring {escrow['threshold']} custodians with their own identities",
            recovery=dict(summary, problems=problems),
        )
    try:
        secret = shamir_mnemonic.combine_mnemonics(mnemonics)
    except shamir_mnemonic.MnemonicError as error:
        raise IntegrityError(
            "Recover escrow key",
            None,
            "the shares do not combine into one secret (shares of different escrow keys, or a corrupted share)",
            "Check that every custodian gave the share of this bundle",
            recovery=dict(summary, problems=problems),
        ) from error
    del mnemonics
    identity = pyrage.x25519.Identity.from_str(age_secret_key(secret))
    del secret
    if str(identity.to_public()) != escrow["recipient"]:
        raise IntegrityError(
            "Recover escrow key",
            None,
            "the recovered key is not the bundle's escrow key (its public key differs from escrow.json)",
            "Check the shares and escrow.json against the manifest",
            recovery=dict(summary, problems=problems),
        )
    summary["problems"] = problems
    summary["recipient"] = escrow["recipient"]
    return identity, summary
