"""The key register schema: valid files load, every error names its line and field."""

from __future__ import annotations

import textwrap

import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import InvalidInput
from ansible_collections.keyops.runbooks.plugins.module_utils.register import load_register, parse_register

GOOD_ENTRY = """\
  - name: prod-payments-kek-20261203
    backend: vault_transit
    location: transit
    key_class: kek
    owner: payments-platform
    custodians: [a.haddad, m.okafor]
    purpose: wraps payment-card data keys
    algorithm: aes256-gcm96
    rotation_period_days: 90
    backup_location: s3://backups/vault/
"""


def register(*entries: str, header: str = "keys:\n") -> str:
    return header + "".join(entries)


def test_a_valid_register_loads_with_the_line_of_each_entry() -> None:
    cert = textwrap.dedent("""\
      - name: www.example.test
        backend: x509
        location: /etc/tls/www.pem
        key_class: tls-cert
        owner: web
        custodians: [ops]
        purpose: TLS for www
    """)
    entries, errors = parse_register(register(GOOD_ENTRY, textwrap.indent(cert, "  "), header="version: 1\nkeys:\n"))
    assert errors == []
    assert [(entry.name, entry.line) for entry in entries] == [
        ("prod-payments-kek-20261203", 3),
        ("www.example.test", 13),
    ]
    # A certificate needs neither a rotation period nor a backup location.
    assert entries[1].rotation_period_days is None and entries[1].backup_location is None


@pytest.mark.parametrize(
    ("change", "line", "field", "words"),
    [
        (("key_class: kek", "key_clas: kek"), 5, "key_clas", "did you mean 'key_class'"),
        (("key_class: kek", "key_class: root"), 5, "key_class", "'root' is not one of master-kek"),
        (("backend: vault_transit", "backend: vault"), 3, "backend", "'vault' is not one of vault_transit"),
        (("custodians: [a.haddad, m.okafor]", "custodians: []"), 7, "custodians", "at least one name"),
        (("custodians: [a.haddad, m.okafor]", "custodians: a.haddad"), 7, "custodians", "must be a list"),
        (("rotation_period_days: 90", "rotation_period_days: '90'"), 10, "rotation_period_days", "whole number"),
        (("rotation_period_days: 90", "rotation_period_days: -1"), 10, "rotation_period_days", "whole number"),
        (("    owner: payments-platform\n", ""), 2, "owner", "is required"),
        (("    backup_location: s3://backups/vault/\n", ""), 2, "backup_location", "every class but tls-cert"),
        (("purpose: wraps payment-card data keys", "purpose: ''"), 8, "purpose", "non-empty string"),
    ],
)
def test_each_schema_error_names_line_field_and_key(change: tuple[str, str], line: int, field: str, words: str) -> None:
    entries, errors = parse_register(register(GOOD_ENTRY.replace(*change)))
    assert entries == []
    assert len(errors) == 1, errors
    text = str(errors[0])
    assert text.startswith(f"line {line}, field '{field}' (key 'prod-payments-kek-20261203')"), text
    assert words in text


def test_every_error_is_reported_at_once_in_line_order() -> None:
    broken = GOOD_ENTRY.replace("backend: vault_transit", "backend: vault").replace("owner:", "ownr:")
    _unused, errors = parse_register(register(broken, GOOD_ENTRY.replace("payments", "orders").replace("90", "zero")))
    # The misspelt "ownr" says which field is meant, so "owner is required" is not repeated.
    assert [(error.line, error.field) for error in errors] == [
        (3, "backend"),
        (6, "ownr"),
        (20, "rotation_period_days"),
    ]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("keys: [\n  - name: a\n", 2, "not valid YAML"),
        ("", 1, "needs a 'keys' list"),
        ("version: 1\n", 1, "is required: the list of registered keys"),
        ("keys: {}\n", 1, "must be a list of key entries"),
        ("keys:\n  - just-a-name\n", 2, "must be a mapping of fields"),
        ("version: 2\nkeys: []\n", 1, "version 2 is not supported"),
        ("kees: []\nkeys: []\n", 1, "did you mean 'keys'"),
    ],
)
def test_structural_errors_name_their_line(text: str, line: int, words: str) -> None:
    _unused, errors = parse_register(text)
    assert errors and errors[0].line == line and words in str(errors[0]), errors


def test_a_key_registered_twice_is_an_error_pointing_at_both_lines() -> None:
    entries, errors = parse_register(
        register(GOOD_ENTRY, GOOD_ENTRY.replace("location: transit", "location: transit/"))
    )
    assert len(entries) == 1
    assert str(errors[0]) == (
        "line 12, field 'name' (key 'prod-payments-kek-20261203'): the same key is registered twice (first on line 2)"
    )


def test_a_field_given_twice_in_one_entry_is_an_error() -> None:
    _unused, errors = parse_register(register(GOOD_ENTRY + "    owner: someone-else\n"))
    assert str(errors[0]).startswith("line 12, field 'owner'") and "appears twice" in str(errors[0])


def test_load_register_fails_with_the_path_and_every_error(tmp_path) -> None:
    path = tmp_path / "register.yml"
    path.write_text(register(GOOD_ENTRY.replace("key_class: kek", "key_class: kex")))
    with pytest.raises(InvalidInput) as caught:
        load_register(str(path))
    assert f"{path} has 1 schema error(s): line 5, field 'key_class'" in caught.value.message
    assert "docs/inventory.md" in caught.value.message
    assert caught.value.details["errors"][0] == {
        "line": 5,
        "field": "key_class",
        "key": "prod-payments-kek-20261203",
        "message": "'kex' is not one of master-kek, kek, dek, signing, transport, tls-cert",
    }


def test_a_missing_register_file_says_which_option_to_fix(tmp_path) -> None:
    with pytest.raises(InvalidInput, match=r"does not exist\. Point register_path at the register YAML"):
        load_register(str(tmp_path / "nowhere.yml"))
