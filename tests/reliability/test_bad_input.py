"""Bad input, module by module: wrong types, missing options, unknown keys (generated from each module's own
argument spec), then malformed files and hostile names (the table below). Every case must give a clear error: the
module fails (or, for scanners, reports the file) with a message that names what is wrong, and no traceback.

Modules run in this process through their main() (tests/reliability/inproc.py), against the suite's lab, so a
case that slips past validation meets a real backend. A handful also run through ansible-playbook, to show the
same answers reach an operator.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.reliability import tally
from tests.reliability.inproc import argument_spec, call

pytestmark = [pytest.mark.area("bad-input")]

ROOT = Path(__file__).resolve().parents[2]
# Backed by an action plugin: no main() to call in this process; their bad input runs through ansible-playbook.
ACTION_MODULES = {"audit_sink_check", "runbook_progress"}
MODULES = sorted(path.stem for path in (ROOT / "plugins" / "modules").glob("*.py") if path.stem not in ACTION_MODULES)
# Options shared through the connection fragments: tested once, on one module each, not on every module.
SHARED = {
    "url", "namespace", "auth_method", "token", "role_id", "secret_id", "approle_mount", "ca_cert", "validate_certs",
    "timeout", "retries", "region", "profile", "access_key", "secret_key", "session_token", "endpoint_url",
    "retry_mode", "max_attempts", "change_ref", "approvals", "pkcs11_module", "token_label", "token_serial",
    "user_pin", "partition_index", "partition_count",
}  # fmt: skip
NOISE = re.compile(r"Traceback|object at 0x|File \"/")


def filler(spec: dict[str, Any]) -> Any:
    """A value of the right type for a required option, so a case fails on its own fault and nothing else."""
    kind = spec.get("type", "str")
    if spec.get("options"):
        inner = {name: filler(sub) for name, sub in spec["options"].items() if sub.get("required") or name == "path"}
        for group in spec.get("required_one_of") or []:
            if not any(name in inner for name in group):
                inner[group[0]] = filler(spec["options"][group[0]])
        return [inner] if kind == "list" else inner
    if spec.get("choices"):
        return spec["choices"][0] if kind != "list" else spec["choices"][:1]
    return {
        "str": "filler",
        "path": "/nonexistent/keyops-filler",
        "int": 1,
        "float": 1.0,
        "bool": False,
        "list": ["filler"],
        "dict": {},
        "raw": "filler",
        "json": "{}",
    }.get(kind, "filler")


WRONG = {"int": "not-a-number", "float": "not-a-number", "bool": "sometimes", "dict": ["not", "a", "dict"]}


def baseline(spec: dict[str, Any], rules: dict[str, Any]) -> dict[str, Any]:
    """Arguments that pass the spec's own rules (required, required_if, required_one_of, required_together)."""
    args = {option: filler(sub) for option, sub in spec.items() if sub.get("required")}
    for _unused in range(3):
        for rule in rules.get("required_if") or []:
            key, value, needed = rule[0], rule[1], rule[2]
            if args.get(key, spec.get(key, {}).get("default")) == value:
                wanted = needed[:1] if len(rule) > 3 and rule[3] else needed
                args.update({option: filler(spec[option]) for option in wanted if option not in args})
        for group in rules.get("required_one_of") or []:
            if not any(option in args for option in group):
                args[group[0]] = filler(spec[group[0]])
        for group in rules.get("required_together") or []:
            if any(option in args for option in group):
                args.update({option: filler(spec[option]) for option in group if option not in args})
    return args


def generated_cases() -> list[tuple[str, str, dict[str, Any], list[str]]]:
    """(module, case, args, words the message must hold) from each module's argument spec."""
    cases = []
    for name in MODULES:
        spec, rules = argument_spec(name)
        must = {option for option, sub in spec.items() if sub.get("required")}
        required = baseline(spec, rules)
        if must:
            cases.append((name, "missing required options", {}, ["missing required", *sorted(must)]))
        cases.append((name, "unknown option", {**required, "no_such_option": 1}, ["no_such_option"]))
        for option, sub in spec.items():
            if option in SHARED:
                continue
            kind = sub.get("type", "str")
            if kind in WRONG and not sub.get("options"):
                cases.append((name, f"{option}: wrong type", {**required, option: WRONG[kind]}, [option]))
            elif kind == "list" and sub.get("options"):
                element = filler(sub)[0]
                cases.append(
                    (name, f"{option}: unknown key in an item", {**required, option: [{**element, "zz": 1}]}, ["zz"])
                )
                cases.append((name, f"{option}: item not a dict", {**required, option: [42]}, [option]))
            elif kind == "dict" and sub.get("options"):
                cases.append((name, f"{option}: unknown key", {**required, option: {**filler(sub), "zz": 1}}, ["zz"]))
                # ansible-core's own wording for a dict with sub-options: it does not name the option.
                cases.append((name, f"{option}: not a dict", {**required, option: "x"}, ["dictionary requested"]))
            if sub.get("choices") and kind in ("str", "list"):
                bad = "no-such-choice" if kind == "str" else ["no-such-choice"]
                cases.append((name, f"{option}: not one of the choices", {**required, option: bad}, [option]))
    return cases


GENERATED = generated_cases()


def is_clear(result: dict[str, Any], failure: str | None, words: list[str]) -> tuple[bool, str]:
    message = str(result.get("msg", ""))
    if failure:
        return False, f"traceback:\n{failure[-1500:]}"
    if not result.get("failed"):
        return False, f"did not fail: {json.dumps(result, default=str)[:600]}"
    if NOISE.search(message) or ("exception" in result and "Traceback" in str(result["exception"])):
        return False, f"internals in the message: {message[:600]}"
    if not 10 <= len(message) <= 2000:
        return False, f"message length {len(message)}: {message[:300]}"
    missing = [word for word in words if word.lower() not in message.lower()]
    if missing:
        return False, f"the message does not name {missing}: {message}"
    return True, message


@pytest.mark.parametrize(
    ("module", "case", "args", "words"), GENERATED, ids=[f"{row[0]}-{row[1]}" for row in GENERATED]
)
def test_argument_spec_violations_fail_clearly(
    module: str, case: str, args: dict[str, Any], words: list[str], tmp_path: Path
) -> None:
    result, failure = call(module, args)

    clear, why = is_clear(result, failure, words)
    tally.add("bad-input", "cases")
    tally.add("bad-input", "tracebacks", int(failure is not None))
    tally.add("bad-input", "clear errors", int(clear))
    assert clear, f"{module} ({case}): {why}"


@pytest.mark.xfail(
    strict=True,
    reason="ansible-core 2.19 set_fallbacks() raises TypeError on a number given for a dict "
    "with sub-options, before any module code runs",
)
def test_a_number_for_a_dict_with_sub_options_is_ansible_cores_traceback() -> None:
    _result, failure = call("vault_transit_rewrap", {"name": "x", "store": 42})

    assert failure is None, failure


# -- malformed files and hostile names ---------------------------------------------------------------------------

HOSTILE_NAMES = {
    "slash": "a/b",
    "dot-dot": "..",
    "traversal": "../../sys/seal",
    "absolute": "/etc/passwd",
    "very long": "k" * 300,
    "unicode": "ключ-kek-20261203",
    "newline": "prod-x-kek-20261203\nFAKE LOG LINE",
    "empty": "",
    "url-encoded": "%2e%2e%2fsys",
}
REGISTERS = {
    "not YAML": b"keys: [unclosed\n  - name: x\n",
    "a list of strings": b"- just\n- strings\n",
    "keys not a list": b"keys: 42\n",
    "entry missing fields": b"keys:\n  - name: prod-a-kek-20261203\n",
    "wrong types": b"keys:\n  - name: prod-a-kek-20261203\n    backend: vault_transit\n"
    b"    rotation_period_days: soon\n",
    "binary": bytes(range(256)),
    "empty": b"",
    "duplicate keys": b"keys:\n  - name: a\n    name: b\n",
    "yaml bomb": b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    b"keys: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n",
    "python tag": b"keys: !!python/object/apply:os.system ['touch /tmp/keyops-pwned']\n",
}
PLANS = {
    "not JSON": b"this is not a plan",
    "a JSON list": b"[1, 2, 3]",
    "truncated": b'{"format": "keyops-change-plan/1", "actions": [',
    "wrong format": b'{"format": "something-else/9", "actions": []}',
    "digest mismatch": b'{"format": "keyops-change-plan/1", "actions": [], "digest": "00", "requester": "a"}',
    "binary": bytes(range(256)),
}
CERTS = {
    "garbage PEM": b"-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
    "PEM of random bytes": b"-----BEGIN CERTIFICATE-----\n"
    + __import__("base64").encodebytes(os.urandom(300))
    + b"-----END CERTIFICATE-----\n",
    "truncated DER": bytes.fromhex("3082052a30820412a003020102"),
    "empty": b"",
    "random .p12": os.urandom(512),
    "unterminated PEM": b"-----BEGIN CERTIFICATE-----\nMIIB\n",
}


def write(folder: Path, name: str, data: bytes) -> str:
    path = folder / name
    path.write_bytes(data)
    return str(path)


def fails_naming(*words: str) -> Callable[[dict[str, Any]], tuple[bool, str]]:
    """The module must fail, and its message must hold one of ``words``."""

    def check(result: dict[str, Any]) -> tuple[bool, str]:
        message = str(result.get("msg", ""))
        if not result.get("failed"):
            return False, f"did not fail: {json.dumps(result, default=str)[:400]}"
        if not any(word.lower() in message.lower() for word in words):
            return False, f"the message names none of {words}: {message[:400]}"
        return True, message

    return check


def reports(field: str, needle_of: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], tuple[bool, str]]:
    """A scanner: it may finish, but the bad file must be named in ``field`` of its result (or in its failure)."""

    def check(result: dict[str, Any]) -> tuple[bool, str]:
        text = json.dumps(result.get(field) if not result.get("failed") else result.get("msg"), default=str)
        needle = needle_of(result)
        return (needle in text, text[:400])

    return check


def domain_cases() -> list[tuple[str, str, Callable[[Path, dict[str, Any]], dict[str, Any]], Any, bool]]:
    """(module, case, args maker (tmp_path, lab), checker, check_mode)."""
    cases: list[tuple[str, str, Any, Any, bool]] = []
    names_refused = fails_naming("not a single path segment", "does not match", "empty", "no such key")
    for label, hostile in HOSTILE_NAMES.items():
        cases += [
            ("vault_transit_key", f"name {label}", lambda t, lab, h=hostile: {"name": h}, names_refused, False),
            (
                "vault_transit_key_info",
                f"names {label}",
                lambda t, lab, h=hostile: {"names": [h]},
                names_refused,
                False,
            ),
            (
                "vault_transit_rewrap",
                f"name {label}",
                lambda t, lab, h=hostile: {"name": h, "store": {"path": lab["KEYOPS_LAB_DEK_DB"]}},
                names_refused,
                True,
            ),
            (
                "vault_transit_backup",
                f"names {label}",
                lambda t, lab, h=hostile: {"names": [h], "dest": str(t / "backup"), "recipients": [AGE_RECIPIENT]},
                names_refused,
                False,
            ),
            ("aws_kms_key", f"alias {label}", lambda t, lab, h=hostile: {"alias": f"alias/{h}"}, names_refused, True),
            (
                "backup_bundle",
                f"bundle_id {label}",
                lambda t, lab, h=hostile: {
                    "state": "fetched",
                    "bundle_id": h,
                    "source_dir": str(t),
                    "dest_dir": str(t / "d"),
                },
                fails_naming("bundle id", "no bundle manifest", "no bundle with a manifest"),
                False,
            ),
            (
                "evidence_package",
                f"package_id {label}",
                lambda t, lab, h=hostile: {
                    "output_dir": str(t / "out"),
                    "package_id": h,
                    "signing_key": ed25519_key(t),
                },
                fails_naming("package_id"),
                False,
            ),
        ]
    for label, text in REGISTERS.items():
        cases.append(
            (
                "key_register_validate",
                f"register {label}",
                lambda t, lab, x=text: {"path": write(t, "register.yml", x)},
                fails_naming("register", "line", "yaml"),
                False,
            )
        )
        cases.append(
            (
                "rotation_plan",
                f"register {label}",
                lambda t, lab, x=text: {"sources": [], "register_path": write(t, "register.yml", x)},
                fails_naming("register", "line", "yaml"),
                True,
            )
        )
    for label, text in PLANS.items():
        cases.append(
            (
                "approval_verify",
                f"plan {label}",
                lambda t, lab, x=text: {
                    "plan_path": write(t, "plan.json", x),
                    "signatures": [],
                    "allowed_signers": write(t, "allowed_signers", b""),
                    "approvers_file": write(t, "approvers.yml", b"approvers: {}\n"),
                },
                fails_naming("plan"),
                False,
            )
        )
    for label, data in CERTS.items():
        suffix = ".p12" if "p12" in label else ".pem"
        cases.append(
            (
                "x509_inventory",
                f"certificate {label}",
                lambda t, lab, x=data, s=suffix: {"paths": [write(t, f"bad{s}", x)], "fail_on_errors": True},
                fails_naming("bad.p12", "bad.pem"),
                False,
            )
        )
        cases.append(
            (
                "key_material_scan",
                f"scan {label}",
                lambda t, lab, x=data, s=suffix: {"paths": [write(t, f"bad{s}", x)]},
                lambda result: (not result.get("failed"), str(result.get("msg", "finished"))),
                False,
            )
        )
    store_problems = {
        "not a SQLite file": lambda t: {"type": "sqlite", "path": write(t, "deks.sqlite", b"not a database" * 100)},
        "missing file": lambda t: {"type": "sqlite", "path": str(t / "absent.sqlite")},
        "table injection": lambda t: {"path": sqlite_store(t), "table": "data_keys; DROP TABLE data_keys"},
        "missing column": lambda t: {"path": sqlite_store(t), "context_column": "nope"},
        "JSON lines garbage": lambda t: {"type": "jsonl", "path": write(t, "deks.jsonl", b'{"id": "a"}\nnot json\n')},
        "unsupported URL": lambda t: {"type": "url", "url": "postgresql://user@db/keys"},
    }
    for label, store in store_problems.items():
        cases.append(
            (
                "vault_transit_rewrap",
                f"store {label}",
                lambda t, lab, s=store: {"name": lab["seed"]["vault_transit"]["keys"][0]["name"], "store": s(t)},
                fails_naming("store", "sqlite", "line", "table", "column", "scheme"),
                False,
            )
        )
        cases.append(
            (
                "aws_kms_reencrypt",
                f"store {label}",
                lambda t, lab, s=store: {"destination_key": kms_alias(lab), "store": s(t)},
                fails_naming("store", "sqlite", "line", "table", "column", "scheme"),
                False,
            )
        )
    cases += [
        (
            "audit_verify",
            "audit log of binary garbage",
            lambda t, lab: {"path": write(t, "audit.jsonl", bytes(range(256)) * 4)},
            fails_naming("line 1", "malformed", "broken"),
            False,
        ),
        (
            "evidence_verify",
            "package that is not a package",
            lambda t, lab: {"path": write(t, "evidence.tar.gz", b"nope"), "public_key": write(t, "k.pub", b"nope")},
            fails_naming("evidence", "public", "key", "package"),
            False,
        ),
        (
            "vault_transit_restore",
            "backup file of garbage",
            lambda t, lab: {"name": "prod-x-kek-20261203", "path": write(t, "b.age", b"garbage"), "identity": "AGE-x"},
            fails_naming("backup", "age", "identity"),
            False,
        ),
        (
            "vault_raft_snapshot",
            "restore from a file of garbage",
            lambda t, lab: {"state": "restored", "path": write(t, "snap.bin", b"garbage" * 50)},
            fails_naming("snapshot"),
            True,
        ),
        (
            "pkcs11_key_restore",
            "backup folder of garbage",
            lambda t, lab: {"backup_dir": garbage_dir(t)},
            fails_naming("backup", "manifest"),
            True,
        ),
        (
            "escrow_key",
            "custodian with a malformed key",
            lambda t, lab: {
                "bundle_dir": str(t / "bundle"),
                "custodians": [{"name": "a", "recipient": "age1nope"}, {"name": "b", "recipient": "ssh-rsa AAAA"}],
                "threshold": 2,
            },
            fails_naming("recipient", "custodian", "key"),
            True,
        ),
        (
            "escrow_key",
            "custodian names that are paths",
            lambda t, lab: {
                "bundle_dir": str(t / "bundle"),
                "custodians": [
                    {"name": "../../a", "recipient": AGE_RECIPIENT},
                    {"name": "/b", "recipient": AGE_RECIPIENT},
                ],
                "threshold": 2,
            },
            fails_naming("name", "custodian"),
            False,
        ),
        (
            "change_plan",
            "results that are not task results",
            lambda t, lab: {
                "results": ["garbage", 42],
                "path": str(t / "plan.json"),
                "requester": "alice@keyops.lab",
                "change_ref": "CHG-1",
            },
            fails_naming("result", "plan"),
            True,
        ),
        (
            "key_lock",
            "ttl of zero",
            lambda t, lab: {"keys": ["prod-a-kek-20261203"], "owner": "o", "ttl": 0},
            fails_naming("ttl"),
            False,
        ),
    ]
    return cases


AGE_RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


def ed25519_key(folder: Path) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = folder / "signing.pem"
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)
    return str(path)


def sqlite_store(folder: Path) -> str:
    import sqlite3

    path = folder / "deks.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS data_keys (id TEXT PRIMARY KEY, key_ref TEXT, ciphertext TEXT, context TEXT)"
        )
    return str(path)


def garbage_dir(folder: Path) -> str:
    target = folder / "backup"
    target.mkdir(exist_ok=True)
    (target / "manifest.json").write_bytes(b"{not json")
    (target / "key.bin").write_bytes(os.urandom(64))
    return str(target)


def kms_alias(lab: dict[str, Any]) -> str:
    return "alias/" + lab["seed"]["aws_kms"]["keys"][0]["alias"].removeprefix("alias/")


DOMAIN = domain_cases()


@pytest.mark.lab
@pytest.mark.parametrize(
    ("module", "case", "make", "check", "check_mode"), DOMAIN, ids=[f"{row[0]}-{row[1]}" for row in DOMAIN]
)
def test_malformed_files_and_hostile_names_fail_clearly(
    lab: dict[str, Any], module: str, case: str, make: Any, check: Any, check_mode: bool, tmp_path: Path
) -> None:
    args = make(tmp_path, lab)
    result, failure = call(module, args, check_mode=check_mode)

    message = str(result.get("msg", ""))
    clear, why = (False, f"traceback:\n{failure[-1500:]}") if failure else check(result)
    if clear and (NOISE.search(message) or len(message) > 2000):
        clear, why = False, f"internals or a wall of text in the message: {message[:600]}"
    tally.add("bad-input", "cases")
    tally.add("bad-input", "tracebacks", int(failure is not None))
    tally.add("bad-input", "clear errors", int(clear))
    assert clear, f"{module} ({case}): {why}"
    assert not Path("/tmp/keyops-pwned").exists(), "a register's YAML tag ran a command"


@pytest.mark.lab
def test_a_tampered_latest_json_in_the_backup_bucket_cannot_make_a_restore_delete_a_folder(
    lab: dict[str, Any], tmp_path: Path
) -> None:
    """latest.json in the backup bucket is rewritten by every backup, so it is not under Object Lock: whoever can
    write to the bucket can point it anywhere. Before the fix, a bundle id of '../victim' made the fetch delete
    <dest_dir>/../victim and write the bucket's files there."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=lab["AWS_ENDPOINT_URL"],
        region_name=lab["AWS_DEFAULT_REGION"],
        aws_access_key_id=lab["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=lab["AWS_SECRET_ACCESS_KEY"],
    )
    bucket = f"tampered-{os.getpid()}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="bundles/latest.json", Body=json.dumps({"bundle_id": "../victim"}).encode())
    s3.put_object(Bucket=bucket, Key="bundles/../victim/manifest.json", Body=b"{}")
    victim = tmp_path / "restore" / "victim"
    victim.mkdir(parents=True)
    (victim / "precious.txt").write_text("the operator's files")

    result, failure = call(
        "backup_bundle",
        {
            "state": "fetched",
            "bucket": bucket,
            "dest_dir": str(tmp_path / "restore" / "inner"),
            "s3_endpoint_url": lab["AWS_ENDPOINT_URL"],
        },
    )

    clear, why = (False, failure) if failure else fails_naming("bundle id")(result)
    tally.add("bad-input", "cases")
    tally.add("bad-input", "tracebacks", int(failure is not None))
    tally.add("bad-input", "clear errors", int(clear))
    assert clear, why
    assert (victim / "precious.txt").read_text() == "the operator's files"
    assert sorted(path.name for path in victim.iterdir()) == ["precious.txt"]
