"""Canary plaintexts and which operation proves each transit key type."""

from __future__ import annotations

import hashlib

import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils import canaries


@pytest.mark.parametrize(
    ("key_type", "operation"),
    [
        ("aes256-gcm96", "encrypt"),
        ("aes128-gcm96", "encrypt"),
        ("chacha20-poly1305", "encrypt"),
        ("ecdsa-p256", "sign"),
        ("ecdsa-p384", "sign"),
        ("ed25519", "sign"),
        ("rsa-3072", "sign"),
        ("hmac", "hmac"),
    ],
)
def test_operation_for_each_key_type(key_type: str, operation: str) -> None:
    assert canaries.operation_for(key_type) == operation


def test_plaintext_is_derived_from_public_labels_only() -> None:
    one = canaries.canary_plaintext("20261203", "transit/k")
    assert one == canaries.canary_plaintext("20261203", "transit/k")
    assert one == hashlib.sha256(b"keyops-canary/20261203/transit/k").digest()
    assert one != canaries.canary_plaintext("20261204", "transit/k")
    assert one != canaries.canary_plaintext("20261203", "transit/j")
