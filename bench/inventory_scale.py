"""How long the whole key inventory takes for the lab, and for an estate ten times larger.

Run: .venv/bin/python bench/inventory_scale.py [--factor 10] [--port-base 26600]

Starts a lab of its own in a temporary folder (never touches a demo or test lab), seeds it, and times
playbooks/inventory.yml end to end (every source module, reconciliation, policy, CSV/JSON/HTML). Then it grows the
estate: FACTOR-1 more copies of every seeded Vault transit key, KMS key, PKCS#11 key and certificate file, each
with a register entry, and times the playbook again. The lab's seven TLS endpoints are not multiplied. Last, it
times key_inventory_report alone on the grown records, through ansible-playbook. Prints one line per figure and
the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, ".build", "collections"), os.path.join(ROOT, "lab")]

from ansible_collections.keyops.runbooks.plugins.module_utils.naming import parse_key_name  # noqa: E402
from tests.support.playbook import lab_estate, run_module, run_playbook  # noqa: E402

LAB = os.path.join(ROOT, "lab", "keyops_lab.py")
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")


def copy_name(name: str, number: int) -> str:
    parts = parse_key_name(name)
    if not parts["valid"]:
        return f"{name}-x{number}"
    return f"{parts['env']}-{parts['purpose']}-x{number}-{parts['type']}-{parts['date'].replace('-', '')}"


def lab(command: str, lab_dir: str, port_base: int) -> None:
    environment = {**os.environ, "KEYOPS_LAB_DIR": lab_dir, "KEYOPS_LAB_PORT_BASE": str(port_base)}
    done = subprocess.run([PYTHON, LAB, command], env=environment, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"lab {command} failed: {done.stderr.strip() or done.stdout.strip()}")


def grow_vault(env: dict[str, str], seed: dict[str, Any], copies: int) -> int:
    import hvac

    client = hvac.Client(url=env["VAULT_ADDR"], token=env["VAULT_TOKEN"])
    made = 0
    for key in seed["vault_transit"]["keys"]:
        for number in range(1, copies + 1):
            params: dict[str, Any] = {"type": key["type"], "auto_rotate_period": f"{key['auto_rotate_days'] * 24}h"}
            if key["type"] == "hmac":
                params["key_size"] = 32
            for flag in ("exportable", "allow_plaintext_backup"):
                if key.get(flag):
                    params[flag] = True
            name = copy_name(key["name"], number)
            client.adapter.post(f"/v1/transit/keys/{name}", json=params)
            if key.get("deletion_allowed"):
                client.secrets.transit.update_key_configuration(name, deletion_allowed=True, mount_point="transit")
            made += 1
    return made


def grow_kms(env: dict[str, str], seed: dict[str, Any], copies: int) -> int:
    import boto3

    kms = boto3.client(
        "kms",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    made = 0
    for key in seed["aws_kms"]["keys"]:
        for number in range(1, copies + 1):
            tags = [] if key["owner"] is None else [{"TagKey": "owner", "TagValue": key["owner"]}]
            metadata = kms.create_key(KeyUsage=key["usage"], KeySpec=key["spec"], Tags=tags)["KeyMetadata"]
            kms.create_alias(AliasName=f"alias/{copy_name(key['alias'], number)}", TargetKeyId=metadata["KeyId"])
            if key["rotation_days"]:
                kms.enable_key_rotation(KeyId=metadata["KeyId"])
            made += 1
    return made


def grow_pkcs11(env: dict[str, str], seed: dict[str, Any], copies: int) -> int:
    os.environ["SOFTHSM2_CONF"] = env["SOFTHSM2_CONF"]
    import pkcs11
    from pkcs11 import Attribute, KeyType, MechanismFlag
    from pkcs11.util.ec import encode_named_curve_parameters

    token = pkcs11.lib(env["KEYOPS_PKCS11_MODULE"]).get_token(token_label=env["KEYOPS_PKCS11_TOKEN_LABEL"])
    made = 0
    with token.open(rw=True, user_pin=env["KEYOPS_PKCS11_PIN"]) as session:
        for key in seed["pkcs11"]["keys"]:
            for number in range(1, copies + 1):
                label = copy_name(key["label"], number)
                private = {Attribute.EXTRACTABLE: key["extractable"], Attribute.SENSITIVE: True, Attribute.TOKEN: True,
                           Attribute.PRIVATE: True}  # fmt: skip
                key_id = bytes.fromhex(f"{number:02x}{key['id']}")
                if key["type"] == "aes":
                    session.generate_key(KeyType.AES, 256, id=key_id, label=label, store=True, template=private)
                elif key["type"] == "rsa":
                    session.generate_keypair(KeyType.RSA, key["bits"], id=key_id, label=label, store=True,
                                             capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                                             private_template=private)  # fmt: skip
                else:
                    curve = {Attribute.EC_PARAMS: encode_named_curve_parameters(key["curve"])}
                    session.create_domain_parameters(KeyType.EC, curve, local=True).generate_keypair(
                        id=key_id, label=label, store=True, private_template=private,
                        capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY)  # fmt: skip
                made += 1
    return made


def grow_certificates(seed: dict[str, Any], copies: int) -> dict[str, str]:
    moved = {}
    for cert in seed["certificates"]["files"]:
        source = Path(cert["file"])
        for number in range(1, copies + 1):
            target = source.with_name(f"{source.stem}-x{number}{source.suffix}")
            shutil.copy2(source, target)
            moved[str(target)] = str(source)
    return moved


def grown_register(register: str, copies: int, target: str) -> int:
    entries = yaml.safe_load(Path(register).read_text())["keys"]
    grown = list(entries)
    for entry in entries:
        for number in range(1, copies + 1):
            if entry["backend"] == "x509":
                path = Path(entry["location"])
                grown.append(dict(entry, location=str(path.with_name(f"{path.stem}-x{number}{path.suffix}"))))
            else:
                grown.append(dict(entry, name=copy_name(entry["name"], number)))
    Path(target).write_text(yaml.safe_dump({"keys": grown}, sort_keys=False))
    return len(grown)


def timed_inventory(env: dict[str, str], output: str, register: str) -> tuple[float, dict[str, Any]]:
    os.environ.update(env)
    started = time.monotonic()
    estate = lab_estate(env["KEYOPS_LAB_DIR"], inventory_output_dir=output, inventory_register_path=register)
    run = run_playbook(os.path.join(ROOT, "playbooks", "inventory.yml"), extra_vars=estate)
    seconds = time.monotonic() - started
    if run.rc != 0:
        raise SystemExit(f"inventory failed:\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}")
    return seconds, json.loads(Path(output, "key-inventory.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--port-base", type=int, default=26600)
    args = parser.parse_args()
    copies = args.factor - 1

    work = tempfile.mkdtemp(prefix="keyops-inventory-bench-")
    lab_dir = os.path.join(work, "lab")
    try:
        lab("up", lab_dir, args.port_base)
        lab("seed", lab_dir, args.port_base)
        state = json.loads(Path(lab_dir, "lab.json").read_text())
        env = {key: str(value) for key, value in state["env"].items()}
        seed = json.loads(Path(lab_dir, "seed.json").read_text())

        first, document = timed_inventory(env, os.path.join(work, "x1"), env["KEYOPS_LAB_REGISTER"])
        print(f"lab estate: {document['summary']['keys']} records, {first:.1f} s for the whole inventory")

        started = time.monotonic()
        made = grow_vault(env, seed, copies) + grow_kms(env, seed, copies) + grow_pkcs11(env, seed, copies)
        made += len(grow_certificates(seed, copies))
        register = os.path.join(work, "register-grown.yml")
        entries = grown_register(env["KEYOPS_LAB_REGISTER"], copies, register)
        took = time.monotonic() - started
        print(f"grown by {made} keys and certificate files, {entries} register entries ({took:.0f} s)")

        grown, document = timed_inventory(env, os.path.join(work, f"x{args.factor}"), register)
        records = document["records"]
        print(f"{args.factor}x estate: {len(records)} records, {grown:.1f} s for the whole inventory "
              f"({grown / first:.2f}x the lab's time)")  # fmt: skip

        module_args = {"records": records, "register_path": register, "output_dir": os.path.join(work, "report-only"),
                       "as_of": document["as_of"]}  # fmt: skip
        started = time.monotonic()
        result = run_module("keyops.runbooks.key_inventory_report", module_args)
        alone = time.monotonic() - started
        assert not result.get("failed"), result.get("msg")
        print(f"key_inventory_report alone on the {args.factor}x records: {alone:.1f} s (through ansible-playbook)")
    finally:
        try:
            lab("down", lab_dir, args.port_base)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
