"""Escrow key split and recovery, with pyrage and shamir-mnemonic for real (no fakes)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pyrage
import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils import escrow
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import Conflict, IntegrityError, InvalidInput

BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def decode_age_secret(text: str) -> bytes:
    """Bech32 payload of an AGE-SECRET-KEY-1 string, written here independently of the code under test."""
    data = text.lower().split("1", 1)[1][:-6]
    accumulator, bits, out = 0, 0, []
    for char in data:
        accumulator = (accumulator << 5) | BECH32.index(char)
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((accumulator >> bits) & 255)
    return bytes(out)


def custodians(count: int) -> tuple[list[dict[str, str]], dict[str, Any]]:
    identities = {f"c{index}": pyrage.x25519.Identity.generate() for index in range(count)}
    return [{"name": name, "recipient": str(identity.to_public())} for name, identity in identities.items()], identities


def offered(identities: dict[str, Any], names: list[str]) -> list[dict[str, str]]:
    return [{"name": name, "identity": str(identities[name])} for name in names]


@pytest.mark.parametrize("run", range(20))
def test_age_secret_key_matches_pyrage(run: int) -> None:
    identity = pyrage.x25519.Identity.generate()
    assert escrow.age_secret_key(decode_age_secret(str(identity))) == str(identity)


@pytest.mark.parametrize(
    ("threshold", "count", "names"),
    [(2, 3, ["c0", "c1"]), (2, 3, ["c2", "c0"]), (3, 5, ["c4", "c1", "c3"]), (2, 2, ["c1", "c0"]), (5, 5, None)],
)
def test_any_k_of_n_recover_the_escrow_key(tmp_path: Path, threshold: int, count: int, names: list[str] | None) -> None:
    people, identities = custodians(count)
    created = escrow.create_escrow(str(tmp_path), people, threshold, False)
    recipient = created["escrow"]["recipient"]
    identity, summary = escrow.recover_identity(str(tmp_path), offered(identities, names or list(identities)))
    assert str(identity.to_public()) == recipient
    assert summary["custodians_used"] == (names or list(identities))[:threshold]
    assert str(identity) not in json.dumps(summary) and str(identity) not in (tmp_path / "escrow.json").read_text()


@pytest.mark.parametrize(("threshold", "count"), [(2, 3), (3, 5), (4, 4)])
def test_k_minus_one_shares_recover_nothing(tmp_path: Path, threshold: int, count: int) -> None:
    people, identities = custodians(count)
    escrow.create_escrow(str(tmp_path), people, threshold, False)
    with pytest.raises(IntegrityError, match=f"{threshold - 1} usable share\\(s\\) of the {threshold} needed"):
        escrow.recover_identity(str(tmp_path), offered(identities, list(identities)[: threshold - 1]))


def test_files_are_private_and_hold_no_plaintext_share(tmp_path: Path) -> None:
    people, identities = custodians(3)
    escrow.create_escrow(str(tmp_path), people, 2, False)
    shares = [
        pyrage.decrypt((tmp_path / f"share-{name}.age").read_bytes(), [identities[name]]).decode()
        for name in identities
    ]
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        content = path.read_bytes()
        assert not any(share.split()[0].encode() + b" " + share.split()[1].encode() in content for share in shares)
    # One custodian opens only their own share.
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt((tmp_path / "share-c0.age").read_bytes(), [identities["c1"]])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("remove", "c1: share file share-c1.age is missing"),
        ("alter", "c1: share file share-c1.age was altered"),
        ("wrong-identity", "c1: the identity given does not open this custodian's share"),
        ("stranger", "x9: not a custodian of this bundle"),
    ],
)
def test_recovery_names_each_unusable_share(tmp_path: Path, damage: str, message: str) -> None:
    people, identities = custodians(3)
    escrow.create_escrow(str(tmp_path), people, 2, False)
    given = offered(identities, ["c0", "c1"])
    share = tmp_path / "share-c1.age"
    if damage == "remove":
        share.unlink()
    elif damage == "alter":
        share.write_bytes(share.read_bytes()[:-1] + bytes([share.read_bytes()[-1] ^ 1]))
    elif damage == "wrong-identity":
        given[1]["identity"] = str(pyrage.x25519.Identity.generate())
    else:
        given[1] = {"name": "x9", "identity": str(pyrage.x25519.Identity.generate())}
    with pytest.raises(IntegrityError) as raised:
        escrow.recover_identity(str(tmp_path), given)
    assert message in raised.value.message


def test_same_escrow_is_kept_and_another_is_refused(tmp_path: Path) -> None:
    people, _identities = custodians(3)
    first = escrow.create_escrow(str(tmp_path), people, 2, False)
    again = escrow.create_escrow(str(tmp_path), people, 2, False)
    assert not again["changed"] and again["escrow"]["recipient"] == first["escrow"]["recipient"]
    with pytest.raises(Conflict, match="new bundle folder"):
        escrow.create_escrow(str(tmp_path), people, 3, False)
    assert escrow.create_escrow(str(tmp_path / "new"), people, 2, True) == {
        "changed": True,
        "escrow": {"recipient": None, "threshold": 2, "custodians": people},
    }
    assert not os.path.exists(tmp_path / "new")


@pytest.mark.parametrize(
    ("entries", "threshold", "message"),
    [
        (["c0 age1"], 2, "not an age"),
        ([{"name": "c0"}], 2, "needs a name and a recipient"),
        ([{"name": "../x", "recipient": "r"}], 2, "not a plain name"),
        ("dup", 2, "listed twice"),
        ("three", 1, "does not split knowledge"),
        ("three", 4, "does not split knowledge"),
    ],
)
def test_custodian_input_is_checked(entries: Any, threshold: int, message: str) -> None:
    people, _identities = custodians(3)
    if entries == "dup":
        entries = [people[0], people[0]]
    elif entries == "three":
        entries = people
    with pytest.raises(InvalidInput, match=message):
        escrow.check_custodians(entries, threshold)


def test_string_custodians_are_name_and_key() -> None:
    people, _identities = custodians(2)
    lines = [f"{item['name']} {item['recipient']}" for item in people]
    assert escrow.check_custodians(lines, 2) == people
