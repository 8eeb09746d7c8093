"""Secrets: a canary sweep over everything the suite's runs left behind.

The runbook playbooks run here at -vvvv with Ansible's default output (what an operator pastes into a ticket),
against the suite's lab: inventory, backup and escrow, a restore test with the custodians' identities given
inline, and in the full form evidence, rotation and a compromise response with the demo approvers. Together with
every run of the other reliability tests (fault trials, outages, files), their stdout and stderr, audit logs and
spools, reports, bundles, evidence, journals, progress files and temp folders are swept for every secret that went
through them: the Vault and raft tokens, the PKCS#11 PINs, the PKCS#12 password, the custodians' age identities,
the escrow shares and the escrow key they make, the evidence signing key, the private key inside the PKCS#12 file,
and every plaintext data key the fault trials seeded. Zero occurrences.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.reliability import canaries, tally
from tests.reliability.harness import Run, demo_approvers_env
from tests.support.playbook import ROOT

pytestmark = [pytest.mark.lab, pytest.mark.area("secrets")]

PLAYBOOKS = Path(ROOT) / "playbooks"
QUICK_RUNBOOKS = ["inventory", "backup_escrow", "restore_test"]
FULL_RUNBOOKS = [*QUICK_RUNBOOKS, "evidence", "rotate", "compromise_response"]
BASE64_TOKEN = re.compile(rb"[A-Za-z0-9+/]{43}=")


def pem_body_lines(pem: bytes) -> list[str]:
    """The base64 lines of a PEM private key: any one of them found elsewhere is the key leaking."""
    return [line for line in pem.decode().splitlines() if line and not line.startswith("-----") and len(line) >= 40]


def lab_canaries(lab: dict[str, Any], estate: dict[str, Any]) -> None:
    canaries.add(
        lab["VAULT_TOKEN"],
        lab["KEYOPS_LAB_RAFT_TOKEN"],
        lab["KEYOPS_PKCS11_PIN"],
        lab["KEYOPS_PKCS11_SO_PIN"],
        lab["KEYOPS_LAB_P12_PASSWORD"],
    )
    for identity in estate.get("keyops_escrow_custodian_identities", []):
        text = Path(identity["identity_file"]).read_text()
        canaries.add(*[line for line in text.splitlines() if line.startswith("AGE-SECRET-KEY-")])
    signing_key = estate.get("keyops_evidence_signing_key")
    if signing_key:
        canaries.add(*pem_body_lines(Path(signing_key).read_bytes()))
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    for p12 in Path(lab["KEYOPS_LAB_CERT_DIR"]).glob("*.p12"):
        key, _cert, _more = pkcs12.load_key_and_certificates(p12.read_bytes(), lab["KEYOPS_LAB_P12_PASSWORD"].encode())
        if key is not None:
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            canaries.add(*pem_body_lines(pem))


def escrow_canaries(output_dir: Path, estate: dict[str, Any]) -> int:
    """Open each escrow share with its custodian's identity (as only that custodian can), and rebuild the escrow
    key from them: the shares and the key are canaries too. Returns how many shares were opened."""
    import pyrage
    import shamir_mnemonic

    from ansible_collections.keyops.runbooks.plugins.module_utils.escrow import age_secret_key

    identities = {}
    for item in estate.get("keyops_escrow_custodian_identities", []):
        line = next(line for line in Path(item["identity_file"]).read_text().splitlines() if line.startswith("AGE-"))
        identities[item["name"]] = pyrage.x25519.Identity.from_str(line)
    opened = 0
    for escrow_file in output_dir.rglob("escrow.json"):
        escrow = json.loads(escrow_file.read_text())
        mnemonics = []
        for custodian in escrow["custodians"]:
            share = escrow_file.parent / custodian["share_file"]
            if not share.exists():  # the evidence package keeps escrow.json, not the shares
                continue
            sealed = share.read_bytes()
            mnemonic = pyrage.decrypt(sealed, [identities[custodian["name"]]]).decode()
            canaries.add(mnemonic, *[" ".join(mnemonic.split()[i : i + 6]) for i in range(0, 18, 6)])
            mnemonics.append(mnemonic)
            opened += 1
        if len(mnemonics) < escrow["threshold"]:
            continue
        secret = shamir_mnemonic.combine_mnemonics(mnemonics[: escrow["threshold"]])
        canaries.add(age_secret_key(secret), secret.hex(), base64.b64encode(secret).decode())
    return opened


@pytest.fixture(scope="module")
def runbooks(lab: dict[str, Any], outputs: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The runbooks at -vvvv with the default callback, as an operator runs them."""
    estate = yaml.safe_load((Path(lab["state_dir"]) / "estate.yml").read_text())
    lab_canaries(lab, estate)
    output_dir = outputs / "runbooks"
    inline = [
        {"name": item["name"], "identity": next(
            line for line in Path(item["identity_file"]).read_text().splitlines() if line.startswith("AGE-")
        )}
        for item in estate.get("keyops_escrow_custodian_identities", [])
    ]  # fmt: skip
    extra = {
        "keyops_output_dir": str(output_dir),
        "keyops_change_ref": "INC-CANARY",
        "keyops_compromised_key": estate_key(lab),
        "keyops_demo_approvals": True,
        # The custodians' secret keys inline, not in files: the restore test must still never show them.
        "keyops_escrow_custodian_identities": inline,
    }
    extra_file = outputs / "canary-vars.json"
    extra_file.write_text(json.dumps(extra))
    names = FULL_RUNBOOKS if request.config.getoption("--full", default=False) else QUICK_RUNBOOKS
    runs = {}
    for name in names:
        env = {"ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_FORCE_COLOR": "0", **demo_approvers_env(lab["state_dir"])}
        args = ["-e", f"@{Path(lab['state_dir']) / 'estate.yml'}", "-e", f"@{extra_file}"]
        runs[name] = Run(PLAYBOOKS / f"{name}.yml", outputs, env, verbosity=4, args=args).wait(timeout=900)
    shares = escrow_canaries(output_dir, estate)
    return {"runs": runs, "shares": shares}


def estate_key(lab: dict[str, Any]) -> str:
    return lab["seed"]["vault_transit"]["keys"][0]["name"]


def test_the_runbooks_ran(runbooks: dict[str, Any]) -> None:
    """The sweep proves something only if the runbooks did their work (and opened the escrow shares)."""
    failed = {name: run.stdout[-1500:] for name, run in runbooks["runs"].items() if run.rc != 0}
    assert not failed, failed
    assert runbooks["shares"] >= 3


def sweep_targets(outputs: Path, lab: dict[str, Any]) -> list[Path]:
    """Every file the suite's runs wrote: the outputs folder (runs, audit, temp, reports, bundles, evidence) and
    what the lab's rsyslog received."""
    files = [path for path in outputs.rglob("*") if path.is_file() and path.name != "canary-vars.json"]
    syslog = Path(lab["KEYOPS_LAB_SYSLOG_FILE"])
    return [*files, *([syslog] if syslog.exists() else [])]


def sweep(files: list[Path], secrets: list[str], plaintexts: set[str]) -> tuple[list[str], int]:
    """(where each secret was found, bytes read)."""
    found: list[str] = []
    swept = 0
    for path in files:
        data = path.read_bytes()
        swept += len(data)
        text = data.decode("latin-1")
        found += [f"{path}: secret #{number}" for number, secret in enumerate(secrets) if secret in text]
        found += [
            f"{path}: a plaintext data key" for token in BASE64_TOKEN.findall(data) if token.decode() in plaintexts
        ]
    return found, swept


def test_the_sweep_finds_a_planted_secret(tmp_path: Path) -> None:
    """The control: a secret in a file, whole or inside a line, is found; so zero found below means zero there."""
    planted = tmp_path / "stdout"
    planted.write_bytes(b'ok: [localhost] => {"token": "s3cr3t-canary-0001", "k": "' + b"A" * 43 + b'="}')

    found, _unused = sweep([planted], ["s3cr3t-canary-0001"], {"A" * 43 + "="})

    assert len(found) == 2


def test_no_secret_appears_in_any_output(runbooks: dict[str, Any], lab: dict[str, Any], outputs: Path) -> None:
    secrets = sorted(canaries.SECRETS)
    files = sweep_targets(outputs, lab)

    found, swept = sweep(files, secrets, canaries.PLAINTEXTS)

    tally.add("secrets", "canaries", len(secrets) + len(canaries.PLAINTEXTS))
    tally.add("secrets", "files swept", len(files))
    tally.add("secrets", "bytes swept", swept)
    tally.add("secrets", "occurrences", len(found))
    assert len(secrets) >= 10 and files
    assert not found, found[:20]
