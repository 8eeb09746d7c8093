"""SoftHSM2 tokens of this test session's own, inside the lab's SoftHSM2, so destructive tests never touch the
lab's tokens. Set-up and oracles use python-pkcs11, pkcs11-tool and cryptography directly, never the code under
test. The fixtures that use this live in conftest.py.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import subprocess
import tempfile
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

# Unique per session: the lab may be a reused one, and its token folder outlives this session.
SUFFIX = secrets.token_hex(3)
SOURCE, TARGET, DUPLICATE = f"kt-source-{SUFFIX}", f"kt-target-{SUFFIX}", f"kt-twin-{SUFFIX}"
TODAY = dt.datetime.now(dt.timezone.utc).date()


class Hsm:
    """A source token, a target (scratch) token and two tokens sharing one label, in the lab's SoftHSM2."""

    def __init__(self, lab: dict[str, Any]) -> None:
        self.conf = lab["SOFTHSM2_CONF"]
        self.module = lab["KEYOPS_PKCS11_MODULE"]
        self.root = tempfile.mkdtemp(prefix="keyops-pkcs11-")
        self.pin = "pin-" + secrets.token_hex(8)
        self.so_pin = "so-" + secrets.token_hex(8)
        for label in (SOURCE, TARGET, DUPLICATE, DUPLICATE):
            self._softhsm("--init-token", "--free", "--label", label, "--so-pin", self.so_pin, "--pin", self.pin)
        self.lib = pkcs11.lib(self.module)
        # SoftHSM2 lists the tokens it found at C_Initialize: rescan, in case this process loaded it before.
        self.lib.reinitialize()
        self.serials = [
            token.serial.decode() for token in self.lib.get_tokens() if token.label in (SOURCE, TARGET, DUPLICATE)
        ]

    def _softhsm(self, *arguments: str) -> None:
        subprocess.run(
            ["softhsm2-util", *arguments],
            env={**os.environ, "SOFTHSM2_CONF": self.conf},
            check=True,
            capture_output=True,
        )

    def remove_tokens(self) -> None:
        for serial in self.serials:
            self._softhsm("--delete-token", "--serial", serial)

    def connection(self, token: str = SOURCE, **overrides: Any) -> dict[str, Any]:
        return {"pkcs11_module": self.module, "token_label": token, "user_pin": self.pin, **overrides}

    def restricted_conf(self, mechanism: str) -> str:
        """The lab's config with one mechanism switched off (SoftHSM2 drops the first name listed, so twice)."""
        path = os.path.join(self.root, f"restricted-{mechanism}.conf")
        with open(self.conf) as source, open(path, "w") as stream:
            stream.write(source.read())
            stream.write(f"\nslots.mechanisms = -{mechanism},{mechanism}\n")
        return path

    def session(self, token: str = SOURCE) -> Any:
        return self.lib.get_token(token_label=token).open(rw=True, user_pin=self.pin)

    def objects(self, token: str = SOURCE) -> list[dict[str, str]]:
        """The token's objects as pkcs11-tool (OpenSC) lists them: an oracle independent of python-pkcs11."""
        done = subprocess.run(
            [
                "pkcs11-tool",
                "--module",
                self.module,
                "--token-label",
                token,
                "--login",
                "--pin",
                self.pin,
                "--list-objects",
            ],
            env={**os.environ, "SOFTHSM2_CONF": self.conf},
            capture_output=True,
            text=True,
            check=True,
        )
        objects: list[dict[str, str]] = []
        for line in done.stdout.splitlines():
            if re.match(r"^(Secret|Private|Public) Key Object", line):
                objects.append({"kind": line.split(";")[0].strip(), "type": line.split(";", 1)[-1].strip()})
            elif objects and ":" in line and line.startswith("  "):
                name, _unused, value = line.strip().partition(":")
                objects[-1][name.strip()] = value.strip()
        return objects


def make_transport(hsm: Hsm) -> dict[str, str]:
    """Wrapping keys on both tokens, set up the way a lab can (a real estate uses the vendor's cloning).

    - the same AES KEK on source and target, created from one random value that exists only here;
    - an RSA transport key pair made on the target, whose public half is imported into the source.
    """
    kek_label = f"lab-backup-kek-{TODAY:%Y%m%d}"
    transport_label = f"lab-target-transport-{TODAY:%Y%m%d}"
    value = secrets.token_bytes(32)
    template = {
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: KeyType.AES,
        Attribute.VALUE: value,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.WRAP: True,
        Attribute.UNWRAP: True,
        Attribute.ENCRYPT: True,
        Attribute.DECRYPT: True,
        Attribute.LABEL: kek_label,
        Attribute.ID: b"\x4b\x45\x4b\x01",
    }
    with hsm.session(SOURCE) as source, hsm.session(TARGET) as target:
        source.create_object(template)
        target.create_object(template)
        public, _private = target.generate_keypair(
            KeyType.RSA,
            3072,
            label=transport_label,
            id=b"\x54\x01",
            store=True,
            capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP | MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
        )
        source.create_object(
            {
                Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                Attribute.KEY_TYPE: KeyType.RSA,
                Attribute.TOKEN: True,
                Attribute.LABEL: transport_label,
                Attribute.ID: b"\x54\x01",
                Attribute.MODULUS: public[Attribute.MODULUS],
                Attribute.PUBLIC_EXPONENT: public[Attribute.PUBLIC_EXPONENT],
                Attribute.WRAP: True,
                Attribute.ENCRYPT: True,
                Attribute.VERIFY: True,
            }
        )
    return {"kek": kek_label, "transport": transport_label}


def make_keys(hsm: Hsm, token: str, specs: list[tuple[str, str, bool]]) -> None:
    """Create keys directly with python-pkcs11: (label, algorithm, extractable)."""
    with hsm.session(token) as session:
        for label, algorithm, extractable in specs:
            flags = {Attribute.EXTRACTABLE: extractable, Attribute.SENSITIVE: True, Attribute.TOKEN: True}
            key_id = bytes.fromhex(secrets.token_hex(4))
            if algorithm == "AES-256":
                session.generate_key(KeyType.AES, 256, label=label, id=key_id, store=True, template=flags)
            elif algorithm == "RSA-3072":
                session.generate_keypair(
                    KeyType.RSA,
                    3072,
                    label=label,
                    id=key_id,
                    store=True,
                    capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                    private_template=flags,
                )
            else:
                curve = {"EC-P256": "secp256r1", "EC-P384": "secp384r1"}[algorithm]
                params = session.create_domain_parameters(
                    KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(curve)}, local=True
                )
                params.generate_keypair(
                    label=label,
                    id=key_id,
                    store=True,
                    capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                    private_template=flags,
                )
