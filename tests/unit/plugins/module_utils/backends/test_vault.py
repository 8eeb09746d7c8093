"""The vault connection layer: option checks and how client errors map to typed errors (no server)."""

from __future__ import annotations

from typing import Any

import hvac.exceptions
import pytest
import requests

from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import (
    VAULT_ARGSPEC,
    check_segment,
    clean_message,
    connect,
    vault_call,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    AccessDenied,
    BackendUnavailable,
    InvalidInput,
    KeyNotFound,
)

REF = "transit/prod-payments-kek-20261203"


@pytest.mark.parametrize(
    ("raised", "error", "words"),
    [
        (hvac.exceptions.InvalidPath(), KeyNotFound, "no such key"),
        (hvac.exceptions.Forbidden(errors=["permission denied"]), AccessDenied, "permission denied"),
        (hvac.exceptions.VaultDown(errors=["Vault is sealed"]), BackendUnavailable, "sealed"),
        (hvac.exceptions.RateLimitExceeded(), BackendUnavailable, "throttled"),
        (hvac.exceptions.InvalidRequest(errors=["bad key type"]), InvalidInput, "bad key type"),
        (hvac.exceptions.InternalServerError(errors=["boom"]), BackendUnavailable, "boom"),
        (requests.exceptions.SSLError(), BackendUnavailable, "ca_cert"),
        (requests.exceptions.ConnectTimeout(), BackendUnavailable, "did not answer"),
        (requests.exceptions.ConnectionError(), BackendUnavailable, "cannot connect"),
    ],
)
def test_errors_map_to_typed_failures_naming_the_key(raised: Exception, error: type, words: str) -> None:
    with pytest.raises(error) as caught, vault_call("Rotate transit key", REF, "http://127.0.0.1:8200"):
        raise raised
    assert words in caught.value.message and REF in caught.value.message


def test_remedies_name_real_options() -> None:
    options = set(VAULT_ARGSPEC)
    assert {"url", "token", "ca_cert", "timeout", "retries", "role_id", "secret_id"} <= options
    assert VAULT_ARGSPEC["token"]["no_log"] and VAULT_ARGSPEC["secret_id"]["no_log"]
    assert VAULT_ARGSPEC["role_id"]["no_log"] is False


@pytest.mark.parametrize("text", ["invalid ciphertext vault:v1:QUJDRA== given", "token hvs.CAESIabcdef12345 bad"])
def test_server_messages_lose_anything_secret_like(text: str) -> None:
    cleaned = clean_message(text)
    assert "<redacted>" in cleaned and "QUJDRA" not in cleaned and "CAESI" not in cleaned


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"url": "vault.example:8200", "token": "t"}, r"not an http\(s\) URL"),
        ({"url": "http://127.0.0.1:99999", "token": "t"}, "invalid port"),
        ({"url": "http://127.0.0.1:8200"}, "no token"),
    ],
)
def test_connect_refuses_unusable_options(params: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        connect(params, REF)


@pytest.mark.parametrize("name", ["a/b", "", "../x", "with space", "-lead"])
def test_names_must_be_one_path_segment(name: str) -> None:
    with pytest.raises(InvalidInput, match="single path segment"):
        check_segment(name, "transit key name", REF, "name")
