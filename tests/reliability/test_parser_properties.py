"""Property-based tests (hypothesis) for what reads untrusted text: the key register, change plans, allowed-signers
files and SSH signatures, certificate bytes, key-material scans, audit logs, key names and lock paths.

Each parser, fed anything, either returns its normal answer or raises the collection's own error (which a module
turns into a clear message): never another exception, which an operator would see as a traceback. The naming
filter round-trips, and a lock path never leaves its folder.
"""

from __future__ import annotations

import datetime as dt
import json
import string

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.keyops.runbooks.plugins.filter.key_name import key_name
from ansible_collections.keyops.runbooks.plugins.filter.parse_key_name import parse_key_name as parse_filter
from ansible_collections.keyops.runbooks.plugins.module_utils import approvals, audit, key_lock, key_scan, naming, x509
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import KeyopsError
from ansible_collections.keyops.runbooks.plugins.module_utils.register import parse_register
from tests.reliability import tally

pytestmark = [pytest.mark.area("bad-input")]

# The example counts: tests/reliability/conftest.py loads the "reliability-quick" or "reliability-full" profile.


def counted(_what: str) -> None:
    tally.add("bad-input", "property examples")


# YAML-able and JSON-able trees of scalars, lists and dicts: what a hand-edited file can hold.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40), st.dates()
)
trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=15), children, max_size=5),
    max_leaves=30,
)
register_fields = st.sampled_from(
    ["name", "backend", "location", "key_class", "owner", "purpose", "algorithm", "rotation_period_days",
     "length_bits", "custodians", "data_key_stores", "created", "expires", "backup_location", "exportable"]
)  # fmt: skip
register_entries = st.dictionaries(register_fields, trees, max_size=10)


@given(st.text(max_size=400))
def test_the_register_parser_answers_any_text(text: str) -> None:
    counted("register text")
    try:
        entries, errors = parse_register(text)
    except KeyopsError:
        return
    assert isinstance(entries, list) and isinstance(errors, list)
    assert all(str(error) for error in errors)


@given(st.one_of(st.lists(register_entries, max_size=4), st.dictionaries(st.just("keys"), trees)))
def test_the_register_parser_answers_any_yaml_document(document: object) -> None:
    counted("register document")
    text = yaml.safe_dump({"keys": document} if isinstance(document, list) else document, allow_unicode=True)
    try:
        entries, errors = parse_register(text)
    except KeyopsError:
        return
    # Every entry is either accepted or named in an error: nothing is dropped silently.
    if isinstance(document, list):
        assert len(entries) + len({error.line for error in errors}) >= min(len(document), 1) or not document


@given(trees)
def test_a_plan_of_any_shape_is_refused_cleanly_unless_it_is_one(plan: object) -> None:
    counted("plan")
    try:
        approvals.check_plan(plan, "plan.json")
    except KeyopsError:
        return
    raise AssertionError("a random document was accepted as a change plan")


@given(st.binary(max_size=300))
def test_plan_files_of_any_bytes_are_refused_cleanly(data: bytes) -> None:
    counted("plan file")
    try:
        approvals.check_plan(json.loads(data), "plan.json")
    except (KeyopsError, ValueError):
        return
    raise AssertionError("random bytes were accepted as a change plan")


@given(st.text(max_size=300))
def test_allowed_signers_files_of_any_text_parse(text: str) -> None:
    counted("allowed signers")
    for signer in approvals.parse_allowed_signers(text):
        assert signer.principals and signer.key_blob is not None


@given(st.text(alphabet=string.digits + "Z", max_size=16))
def test_allowed_signers_times_of_any_digits_parse_or_are_none(text: str) -> None:
    counted("ssh time")
    moment = approvals.parse_ssh_time(text)
    assert moment is None or isinstance(moment, dt.datetime)


@given(st.binary(max_size=200), st.booleans())
def test_ssh_signatures_of_any_bytes_are_read_or_refused(data: bytes, armored: bool) -> None:
    counted("ssh signature")
    if armored:
        data = b"-----BEGIN SSH SIGNATURE-----\n" + __import__("base64").encodebytes(b"SSHSIG" + data)
        data += b"-----END SSH SIGNATURE-----\n"
    try:
        approvals.parse_ssh_signature(data)
    except ValueError:
        return


def pem(label: bytes, body: bytes, end: bool) -> bytes:
    return b"-----BEGIN " + label + b"-----\n" + body + (b"\n-----END " + label + b"-----\n" if end else b"")


base64ish = st.text(alphabet=string.ascii_letters + string.digits + "+/=\n:", max_size=300).map(str.encode)
pem_like = st.builds(
    pem,
    st.sampled_from([b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE", b"PRIVATE KEY", b"PKCS7"]),
    st.binary(max_size=200) | base64ish,
    st.booleans(),
)


@given(st.one_of(st.binary(max_size=400), pem_like), st.booleans())
def test_certificate_bytes_of_any_kind_give_certificates_or_errors(data: bytes, pkcs12_hint: bool) -> None:
    counted("certificate bytes")
    found, errors, _recognised = x509.certificates_from_bytes(data, "file.pem", ["secret"], pkcs12_hint)
    assert all(error.message and "Traceback" not in error.message for error in errors)
    assert isinstance(found, list)


@given(st.one_of(st.binary(max_size=400), pem_like, trees.map(lambda tree: json.dumps(tree, default=str).encode())))
def test_key_material_scans_of_any_file_content_answer(data: bytes) -> None:
    counted("key scan")
    for name in ("id_rsa", "config.json", "app.env", "store.p12", "keys.jwks"):
        findings = key_scan.file_findings(f"/srv/{name}", data, use_detector=False)
        assert isinstance(findings, list)


@given(st.lists(st.one_of(st.text(max_size=80), trees.map(lambda tree: json.dumps(tree, default=str))), max_size=8))
def test_audit_logs_of_any_lines_verify_or_break_cleanly(lines: list[str]) -> None:
    counted("audit log")
    report = audit.verify_chain(lines, [])
    assert report["ok"] in (True, False)
    if not report["ok"] and lines:
        assert report["first_broken"]["code"] and report["first_broken"]["reason"]


name_part = st.from_regex(r"[a-z][a-z0-9]{0,7}(-[a-z0-9]{1,6}){0,2}", fullmatch=True)


@given(
    st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True),
    name_part,
    st.sampled_from(naming.KEY_TYPES),
    st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2099, 12, 31)),
)
def test_the_naming_filter_round_trips(env: str, purpose: str, key_type: str, day: dt.date) -> None:
    counted("naming round trip")
    try:
        name = key_name(env, purpose, key_type, day.isoformat())
    except AnsibleFilterError as error:
        assert "characters long" in str(error)
        return
    parts = parse_filter(name)
    assert parts["valid"], parts
    assert (parts["env"], parts["purpose"], parts["type"], parts["date"]) == (env, purpose, key_type, day.isoformat())
    assert parts["key_class"] == naming.TYPE_TO_CLASS[key_type]
    assert naming.successor_name(name, "2100-01-01").endswith("-21000101")


@given(st.one_of(st.text(max_size=80), st.integers(), st.none(), trees))
def test_the_naming_filters_answer_any_input(value: object) -> None:
    counted("naming any input")
    parts = parse_filter(value)
    assert parts["valid"] in (True, False) and (parts["valid"] or parts["reason"])
    try:
        key_name(value, value, value, value)
    except AnsibleFilterError:
        return


@given(st.text(min_size=1, max_size=300).filter(str.strip), st.text(min_size=1, max_size=300).filter(str.strip))
def test_a_lock_path_never_leaves_its_folder_and_two_keys_never_share_one(key: str, other: str) -> None:
    counted("lock path")
    path = key_lock.lock_path("keyops/locks", key)
    leaf = path.removeprefix("keyops/locks/")
    assert path.startswith("keyops/locks/") and "/" not in leaf and leaf not in ("", ".", "..")
    assert all(ord(char) > 31 for char in leaf), "a control character in a Vault path"
    if key.strip() != other.strip():
        assert key_lock.lock_path("keyops/locks", other) != path
