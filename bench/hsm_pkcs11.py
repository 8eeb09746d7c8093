"""PKCS#11 figures on SoftHSM2: time to inventory 500 key objects, and to back up and restore 100 keys.

    .venv/bin/python bench/hsm_pkcs11.py --objects 500 --keys 100

Runs in a SoftHSM2 of its own (a temporary token folder and SOFTHSM2_CONF), never the lab's. The keys are made
here with python-pkcs11 (key generation is not what is measured). Each figure is taken twice: through the real
ansible-playbook (what an operator waits for, start-up included) and by calling the module's own code in this
process. The baseline for the inventory is OpenSC's `pkcs11-tool --list-objects` on the same token.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, ".build", "collections"))

MODULE = next(
    path
    for path in ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
    if os.path.exists(path)
)


def timed(what: str, action: Any) -> Any:
    start = time.perf_counter()
    result = action()
    print(f"{what:<62} {time.perf_counter() - start:8.2f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=500, help="key objects on the inventory token")
    parser.add_argument("--keys", type=int, default=100, help="keys to back up and restore (a fifth are EC pairs)")
    options = parser.parse_args()

    root = tempfile.mkdtemp(prefix="keyops-bench-pkcs11-")
    conf = os.path.join(root, "softhsm2.conf")
    os.makedirs(os.path.join(root, "tokens"))
    with open(conf, "w") as stream:
        stream.write(f"directories.tokendir = {root}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = conf
    pin = secrets.token_hex(8)
    try:
        run(options, root, pin)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(options: argparse.Namespace, root: str, pin: str) -> None:
    import pkcs11
    from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass
    from pkcs11.util.ec import encode_named_curve_parameters

    from ansible_collections.keyops.runbooks.plugins.module_utils.backends import pkcs11 as p11
    from tests.support.playbook import run_module

    for label in ("bench-inventory", "bench-source", "bench-target"):
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", pin + "so", "--pin", pin],
            check=True,
            capture_output=True,
        )
    lib = pkcs11.lib(MODULE)
    flags = {Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True}

    def make(token: str, secret_keys: int, pairs: int, prefix: str) -> None:
        with lib.get_token(token_label=token).open(rw=True, user_pin=pin) as session:
            for index in range(secret_keys):
                session.generate_key(
                    KeyType.AES,
                    256,
                    label=f"{prefix}-k{index:04d}-dek-20261203",
                    id=index.to_bytes(4, "big"),
                    store=True,
                    template=flags,
                )
            params = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
            )
            for index in range(pairs):
                params.generate_keypair(
                    label=f"{prefix}-p{index:04d}-sign-20261203",
                    id=(100000 + index).to_bytes(4, "big"),
                    store=True,
                    capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                    private_template=flags,
                )

    pairs = options.objects // 10
    timed(
        f"set-up: {options.objects - 2 * pairs} AES keys + {pairs} EC pairs on the inventory token",
        lambda: make("bench-inventory", options.objects - 2 * pairs, pairs, "inv"),
    )
    backup_pairs = options.keys // 5
    timed(
        f"set-up: {options.keys - backup_pairs} AES keys + {backup_pairs} EC pairs on the source token",
        lambda: make("bench-source", options.keys - backup_pairs, backup_pairs, "bak"),
    )
    kek = secrets.token_bytes(32)
    for token in ("bench-source", "bench-target"):
        with lib.get_token(token_label=token).open(rw=True, user_pin=pin) as session:
            session.create_object(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: KeyType.AES,
                    Attribute.VALUE: kek,
                    Attribute.TOKEN: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.WRAP: True,
                    Attribute.UNWRAP: True,
                    Attribute.ENCRYPT: True,
                    Attribute.LABEL: "bench-backup-kek-20261203",
                }
            )
    connection = {"pkcs11_module": MODULE, "user_pin": pin}
    print()

    timed(
        "baseline: pkcs11-tool --list-objects (500 objects)",
        lambda: subprocess.run(
            [
                "pkcs11-tool",
                "--module",
                MODULE,
                "--token-label",
                "bench-inventory",
                "--login",
                "--pin",
                pin,
                "--list-objects",
            ],
            check=True,
            capture_output=True,
        ),
    )

    def inventory_in_process() -> int:
        token = p11.Token(dict(connection, token_label="bench-inventory"))
        with token.session() as session:
            return len([p11.key_record(token, key) for key in p11.list_keys(session)])

    count = timed("pkcs11_key_info code in this process", inventory_in_process)
    result = timed(
        "pkcs11_key_info through ansible-playbook",
        lambda: run_module("keyops.runbooks.pkcs11_key_info", dict(connection, token_label="bench-inventory")),
    )
    assert result["count"] == count == options.objects, (result.get("msg"), count)
    print(f"{'':<62} ({count} records)")
    print()

    folder = os.path.join(root, "backup")
    backup = timed(
        f"pkcs11_key_backup of {options.keys} keys through ansible-playbook",
        lambda: run_module(
            "keyops.runbooks.pkcs11_key_backup",
            dict(
                connection,
                token_label="bench-source",
                backup_dir=folder,
                wrapping_key_label="bench-backup-kek-20261203",
            ),
        ),
    )
    assert len(backup.get("backed_up", [])) == options.keys, backup.get("msg")
    restore = timed(
        f"pkcs11_key_restore of {options.keys} keys + known-answer checks, ansible-playbook",
        lambda: run_module(
            "keyops.runbooks.pkcs11_key_restore", dict(connection, token_label="bench-target", backup_dir=folder)
        ),
    )
    restored = restore.get("restored", [])
    assert len(restored) == options.keys and all(item["known_answer"]["passed"] for item in restored), restore.get(
        "msg"
    )
    again = timed(
        "pkcs11_key_restore rerun (every key present: known-answer only)",
        lambda: run_module(
            "keyops.runbooks.pkcs11_key_restore", dict(connection, token_label="bench-target", backup_dir=folder)
        ),
    )
    assert again["changed"] is False
    ping = timed(
        "ansible-playbook start-up alone (ansible.builtin.ping)", lambda: run_module("ansible.builtin.ping", {})
    )
    assert ping.get("ping") == "pong"


if __name__ == "__main__":
    main()
