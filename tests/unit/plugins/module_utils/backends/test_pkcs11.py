"""The PKCS#11 backend's pure parts: ids, URIs, names, refusals, backup files. Token behaviour is tested
against SoftHSM2 in tests/integration/pkcs11."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ansible_collections.keyops.runbooks.plugins.module_utils.backends import pkcs11 as p11
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    IntegrityError,
    InvalidInput,
    KeyNotFound,
    PolicyViolation,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.pkcs11_ops import _new_spec
from ansible_collections.keyops.runbooks.plugins.module_utils.policy import merged_policy


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0a1B", b"\x0a\x1b"), ("0a:1b", b"\x0a\x1b"), (None, None), ("", None)],
)
def test_id_from_hex(value, expected):
    assert p11.id_from_hex(value, "k") == expected


@pytest.mark.parametrize("value", ["abc", "zz", "0x01"])
def test_id_from_hex_refuses_what_is_not_hex(value):
    with pytest.raises(InvalidInput, match="is not an even number of hex digits"):
        p11.id_from_hex(value, "k")


def test_default_id_is_stable_per_label_and_differs_between_labels():
    assert p11.default_id("prod-a-kek-20261203") == p11.default_id("prod-a-kek-20261203")
    assert p11.default_id("prod-a-kek-20261203") != p11.default_id("prod-a-kek-20261204")
    assert len(p11.default_id("x")) == 8


@pytest.mark.parametrize(
    ("label", "object_class", "expected"),
    [
        ("prod-a-kek-20261203", None, "pkcs11:token=hsm%20a;object=prod-a-kek-20261203;id=%01%ff"),
        ("my key/1", p11.SECRET, "pkcs11:token=hsm%20a;object=my%20key%2f1;id=%01%ff;type=secret-key"),
        ("k", p11.PUBLIC, "pkcs11:token=hsm%20a;object=k;id=%01%ff;type=public"),
    ],
)
def test_key_uri_follows_rfc_7512(label, object_class, expected):
    assert p11.key_uri("hsm a", label, b"\x01\xff", object_class) == expected


@pytest.mark.parametrize(
    ("key_type", "bits", "curve", "expected"),
    [
        ("AES", 256, None, "AES-256"),
        ("RSA", 3072, None, "RSA-3072"),
        ("EC", 384, "P-384", "EC-P384"),
        ("EC", None, None, "EC"),
        ("DES3", None, None, "DES3"),
    ],
)
def test_algorithm_name_matches_the_policy_names(key_type, bits, curve, expected):
    assert p11.algorithm_name(key_type, bits, curve) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (bytes.fromhex("06082a8648ce3d030107"), "P-256"),
        (bytes.fromhex("06052b81040022"), "P-384"),
        (bytes.fromhex("06052b8104000a"), "unknown"),
        (None, None),
    ],
)
def test_curve_from_params(params, expected):
    assert p11.curve_from_params(params) == expected


@pytest.mark.parametrize(
    ("label", "explicit", "expected"),
    [
        ("prod-payments-kek-20261203", None, "kek"),
        ("prod-master-kek-20261203", None, "master-kek"),
        ("prod-invoices-sign-20261203", None, "signing"),
        ("Legacy Key", None, None),
        ("Legacy Key", "dek", "dek"),
    ],
)
def test_key_class_for(label, explicit, expected):
    assert p11.key_class_for(label, explicit) == expected


def _key(object_class=p11.SECRET, extractable=True, key_type="AES", label="k", key_id=b"\x01"):
    return p11.KeyObject(
        handle=object(),
        object_class=object_class,
        key_type=key_type,
        label=label,
        key_id=key_id,
        extractable=extractable,
        sensitive=True,
    )


WRAPPING = _key(label="kek", key_id=b"\xee")


@pytest.mark.parametrize(
    ("key", "mechanism", "reason"),
    [
        (_key(), "aes_key_wrap_pad", None),
        (_key(p11.PRIVATE, key_type="EC"), "aes_key_wrap_pad", None),
        (_key(extractable=False), "aes_key_wrap_pad", "HSM vendor's own backup"),
        (_key(p11.PRIVATE, key_type="RSA"), "rsa_oaep", "RSA-OAEP wraps only secret keys"),
        (_key(key_type="DES3"), "aes_key_wrap_pad", "not one this collection restores"),
        (_key(label="kek", key_id=b"\xee"), "aes_key_wrap_pad", "the wrapping key itself"),
    ],
    ids=["aes", "ec-private", "non-extractable", "oaep-private", "des3", "wrapping-key"],
)
def test_wrap_refusal_says_why(key, mechanism, reason):
    found = p11.wrap_refusal(key, mechanism, WRAPPING)
    if reason is None:
        assert found is None
    else:
        assert reason in found


def test_rsa_public_key_is_written_as_subject_public_key_info():
    public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pkcs1 = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    expected = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert p11._rsa_pkcs1_to_spki(pkcs1) == expected


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("prod-a-kek-20261203", "prod-a-kek-20261203.01ff.secret_key"),
        ("../etc/passwd", "_etc_passwd.01ff.secret_key"),
        ("", "unlabelled.01ff.secret_key"),
    ],
)
def test_backup_file_names_stay_inside_the_folder(label, expected):
    assert p11.safe_file_stem(label, b"\x01\xff", p11.SECRET) == expected


def test_backup_files_are_private_and_checked_on_read(tmp_path):
    folder = str(tmp_path / "backup")
    blob = os.urandom(40)
    entry = {"label": "k", "file": "k.wrapped", "sha256": __import__("hashlib").sha256(blob).hexdigest()}
    p11.write_backup(folder, {"format": p11.MANIFEST_FORMAT, "entries": [entry]}, {"k.wrapped": blob})

    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert {stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) for name in os.listdir(folder)} == {0o600}
    assert p11.read_manifest(folder)["entries"] == [entry]
    assert p11.read_blob(folder, entry) == blob and p11.blob_intact(folder, entry)

    (tmp_path / "backup" / "k.wrapped").write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    assert not p11.blob_intact(folder, entry)
    with pytest.raises(IntegrityError, match="does not match the SHA-256"):
        p11.read_blob(folder, entry)
    os.unlink(os.path.join(folder, "k.wrapped"))
    with pytest.raises(KeyNotFound, match="Restore from a complete backup folder"):
        p11.read_blob(folder, entry)


@pytest.mark.parametrize(
    ("content", "match"),
    [("not json", "is not readable JSON"), (json.dumps({"format": "other"}), "is not a keyops.runbooks/pkcs11")],
)
def test_read_manifest_refuses_foreign_files(tmp_path, content, match):
    (tmp_path / p11.MANIFEST_NAME).write_text(content)
    with pytest.raises(IntegrityError, match=match):
        p11.read_manifest(str(tmp_path))


def test_read_manifest_of_an_empty_folder_is_none(tmp_path):
    assert p11.read_manifest(str(tmp_path)) is None


@pytest.mark.parametrize(
    ("params", "option"),
    [
        ({"token_label": "t", "user_pin": "p"}, "pkcs11_module"),
        ({"pkcs11_module": "/x.so", "user_pin": "p"}, "token_label"),
        ({"pkcs11_module": "/x.so", "token_label": "t"}, "user_pin"),
        ({"pkcs11_module": "/nonexistent/x.so", "token_label": "t", "user_pin": "p"}, "pkcs11_module"),
    ],
)
def test_connection_errors_name_an_option_that_exists(params, option):
    with pytest.raises(Exception) as raised:
        p11.Token(params)
    assert option in raised.value.message
    assert option in p11.PKCS11_ARGSPEC


def test_the_pin_option_and_its_environment_fallback_are_no_log():
    assert p11.PKCS11_ARGSPEC["user_pin"]["no_log"] is True
    assert p11.PKCS11_ARGSPEC["user_pin"]["fallback"][1] == ["KEYOPS_PKCS11_PIN"]


ITEM = {"extractable": False, "sensitive": True, "end_date": None, "cryptoperiod_days": None}
START = dt.date(2026, 12, 3)


@pytest.mark.parametrize(
    ("label", "key_class", "item", "end"),
    [
        ("prod-a-kek-20261203", "kek", {}, dt.date(2028, 12, 2)),
        ("prod-a-sign-20261203", "signing", {}, dt.date(2029, 12, 2)),
        ("prod-a-kek-20261203", "kek", {"cryptoperiod_days": 30}, dt.date(2027, 1, 2)),
        ("prod-a-kek-20261203", "kek", {"end_date": "2027-06-30"}, dt.date(2027, 6, 30)),
    ],
)
def test_cryptoperiod_sets_the_end_date(label, key_class, item, end):
    spec = _new_spec({**ITEM, **item}, label, b"\x01", "AES-256", key_class, merged_policy(), START)
    assert (spec.start_date, spec.end_date) == (START, end)


@pytest.mark.parametrize(
    ("label", "key_class", "item", "error", "match"),
    [
        ("Legacy Key", None, {}, PolicyViolation, "ENV-PURPOSE-TYPE-YYYYMMDD"),
        ("prod-master-kek-20261203", "master-kek", {"extractable": True}, PolicyViolation, "may not be extractable"),
        ("prod-a-kek-20261203", "kek", {"end_date": "2026-12-01"}, InvalidInput, "is not after start_date"),
        ("prod-a-kek-20261203", "kek", {"end_date": "next year"}, InvalidInput, "is not YYYY-MM-DD"),
    ],
)
def test_new_keys_that_break_policy_are_refused(label, key_class, item, error, match):
    with pytest.raises(error, match=match):
        _new_spec({**ITEM, **item}, label, b"\x01", "AES-256", key_class, merged_policy(), START)
