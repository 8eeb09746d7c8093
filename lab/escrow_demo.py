"""Demo key holders for the backup, restore-test and evidence runbooks: three escrow custodians and the evidence
signing key, made at `up` in the lab's state folder.

In a real estate every custodian makes their own age identity on their own machine and hands over only the public
key; here all three live in one folder (0600 files in a 0700 folder), which is fine for a demo and nothing more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import labpki
import pyrage
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

CUSTODIANS = ("a.haddad", "m.okafor", "s.lindqvist")
THRESHOLD = 2


def make_key_holders(state_dir: Path) -> dict[str, Any]:
    """Write the custodians' identities and the evidence signing key; return them as estate variables."""
    escrow = state_dir / "escrow"
    escrow.mkdir(mode=0o700, parents=True, exist_ok=True)
    custodians, identities = [], []
    for name in CUSTODIANS:
        identity = pyrage.x25519.Identity.generate()
        path = escrow / f"custodian-{name}.agekey"
        labpki.write_private(path, f"# custodian {name}\n{identity}\n".encode())
        custodians.append({"name": name, "recipient": str(identity.to_public())})
        identities.append({"name": name, "identity_file": str(path)})

    signing = ed25519.Ed25519PrivateKey.generate()
    key_path, public_path = state_dir / "evidence" / "signing-key.pem", state_dir / "evidence" / "signing-key.pub.pem"
    labpki.write_private(
        key_path,
        signing.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    public_path.write_bytes(
        signing.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return {
        "keyops_escrow_custodians": custodians,
        "keyops_escrow_threshold": THRESHOLD,
        "keyops_escrow_custodian_identities": identities,
        "keyops_evidence_signing_key": str(key_path),
        "keyops_evidence_public_key": str(public_path),
    }
