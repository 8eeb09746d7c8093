"""pkcs11_key_info: every key object on the token, as pkcs11-tool sees it, as KeyRecords."""

from __future__ import annotations

from tests.integration.pkcs11.softhsm_tokens import SOURCE, TODAY, Hsm, make_keys
from tests.support.playbook import run_module

INFO = "keyops.runbooks.pkcs11_key_info"
DAY = f"{TODAY:%Y%m%d}"
CLASSES = {"Secret Key Object": "secret_key", "Private Key Object": "private_key", "Public Key Object": "public_key"}


def test_inventory_lists_every_key_object_with_its_attributes(hsm: Hsm) -> None:
    locked, loose = f"inv-vault-kek-{DAY}", f"inv-mail-sign-{DAY}"
    make_keys(hsm, SOURCE, [(locked, "AES-256", False), (loose, "EC-P384", True), ("Legacy Key", "AES-256", True)])

    result = run_module(INFO, hsm.connection(), check=True)
    assert result.get("failed") is not True, result.get("msg")

    # Oracle: pkcs11-tool's listing of the same token, object for object.
    expected = sorted((CLASSES[item["kind"]], item.get("label", ""), item.get("ID", "")) for item in hsm.objects())
    found = sorted((record["object_class"], record["name"], record["cka_id"]) for record in result["keys"])
    assert found == expected
    assert result["count"] == len(expected)

    by_key = {(record["name"], record["object_class"]): record for record in result["keys"]}
    kek = by_key[(locked, "secret_key")]
    assert (kek["algorithm"], kek["length_bits"], kek["key_class"], kek["backend"]) == ("AES-256", 256, "kek", "pkcs11")
    assert (kek["extractable"], kek["sensitive"], kek["never_extractable"], kek["local"]) == (False, True, True, True)
    assert kek["exportable"] is False and kek["findings"] == [] and kek["start_date"] is None
    assert kek["id"].startswith(f"pkcs11:token={SOURCE};object=inv-vault-kek-") and kek["id"].endswith(
        ";type=secret-key"
    )
    private = by_key[(loose, "private_key")]
    assert (private["algorithm"], private["curve"], private["extractable"]) == ("EC-P384", "P-384", True)
    assert "extractable" in {item["code"] for item in private["findings"]}
    assert by_key[(loose, "public_key")]["dates_readable"] is True
    legacy = by_key[("Legacy Key", "secret_key")]
    assert "naming" in {item["code"] for item in legacy["findings"]}

    only_private = run_module(INFO, dict(hsm.connection(), object_classes=["private_key"], label=loose))
    assert [(record["name"], record["object_class"]) for record in only_private["keys"]] == [(loose, "private_key")]
