"""SoftHSM2 tokens of this test session's own, so destructive tests never touch the lab's token.

Set-up and oracles use python-pkcs11, pkcs11-tool and cryptography directly, never the code under test.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

pkcs11 = pytest.importorskip("pkcs11")
from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass  # noqa: E402
from pkcs11.util.ec import encode_named_curve_parameters  # noqa: E402

SOFTHSM_MODULE = next(
    (
        path
        for path in ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
        if os.path.exists(path)
    ),
    None,
)
SOURCE, TARGET, DUPLICATE = "kt-source", "kt-target", "kt-twin"
CONF = """directories.tokendir = {tokens}
objectstore.backend = file
log.level = ERROR
slots.removable = false
"""


class Hsm:
    """The session's SoftHSM2: a source token, a target (scratch) token and two tokens sharing one label."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.conf = os.path.join(root, "softhsm2.conf")
        self.pin = "pin-" + secrets.token_hex(8)
        self.so_pin = "so-" + secrets.token_hex(8)
        self.module = SOFTHSM_MODULE
        os.makedirs(os.path.join(root, "tokens"))
        with open(self.conf, "w") as stream:
            stream.write(CONF.format(tokens=os.path.join(root, "tokens")))
        for label in (SOURCE, TARGET, DUPLICATE, DUPLICATE):
            subprocess.run(
                [
                    "softhsm2-util",
                    "--init-token",
                    "--free",
                    "--label",
                    label,
                    "--so-pin",
                    self.so_pin,
                    "--pin",
                    self.pin,
                ],
                env={**os.environ, "SOFTHSM2_CONF": self.conf},
                check=True,
                capture_output=True,
            )
        self.lib = pkcs11.lib(self.module)

    def connection(self, token: str = SOURCE, **overrides: Any) -> dict[str, Any]:
        return {"pkcs11_module": self.module, "token_label": token, "user_pin": self.pin, **overrides}

    def restricted_conf(self, *mechanisms: str) -> str:
        """A config for the same tokens with mechanisms switched off (SoftHSM2 ignores the first listed name)."""
        path = os.path.join(self.root, f"restricted-{'-'.join(mechanisms)}.conf")
        with open(path, "w") as stream:
            stream.write(CONF.format(tokens=os.path.join(self.root, "tokens")))
            stream.write("slots.mechanisms = -" + ",".join((mechanisms[0], *mechanisms)) + "\n")
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
                name, _, value = line.strip().partition(":")
                objects[-1][name.strip()] = value.strip()
        return objects


@pytest.fixture(scope="session")
def hsm() -> Iterator[Hsm]:
    if SOFTHSM_MODULE is None or shutil.which("softhsm2-util") is None or shutil.which("pkcs11-tool") is None:
        pytest.skip("softhsm2 and opensc are needed (scripts/bootstrap.sh installs them from bindep.txt)")
    root = tempfile.mkdtemp(prefix="keyops-softhsm-")
    saved = {
        name: os.environ.get(name)
        for name in ("SOFTHSM2_CONF", "KEYOPS_PKCS11_MODULE", "KEYOPS_PKCS11_TOKEN_LABEL", "KEYOPS_PKCS11_PIN")
    }
    # SoftHSM2 reads SOFTHSM2_CONF when the library is first loaded: set it before python-pkcs11 loads it.
    os.environ["SOFTHSM2_CONF"] = os.path.join(root, "softhsm2.conf")
    os.environ.pop("KEYOPS_PKCS11_MODULE", None)
    os.environ.pop("KEYOPS_PKCS11_TOKEN_LABEL", None)
    os.environ.pop("KEYOPS_PKCS11_PIN", None)
    try:
        yield Hsm(root)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(root, ignore_errors=True)


TODAY = dt.datetime.now(dt.timezone.utc).date()


@pytest.fixture(scope="session")
def transport(hsm: Hsm) -> dict[str, str]:
    """Wrapping keys on both tokens, set up the way a lab can (a real estate uses the vendor's cloning).

    - the same AES KEK on source and target, created from one random value that exists only in this fixture;
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
