"""Vault area fixtures: an hvac oracle on the lab's OpenBao servers, scratch key names, seeded data-key stores."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.vault_deks import seed_store, vault_client

_COUNTER = itertools.count()


@pytest.fixture(scope="session")
def oracle(lab: dict[str, Any]) -> Any:
    """hvac straight on the dev server: the independent read every test verifies with."""
    return vault_client(lab["VAULT_ADDR"], lab["VAULT_TOKEN"])


@pytest.fixture(scope="session")
def raft_oracle(lab: dict[str, Any]) -> Any:
    return vault_client(lab["KEYOPS_LAB_RAFT_ADDR"], lab["KEYOPS_LAB_RAFT_TOKEN"])


@pytest.fixture
def scratch() -> Callable[[str], str]:
    """Unique, naming-rule compliant key names, so tests never share a key."""

    def make(purpose: str = "test", key_type: str = "kek") -> str:
        return f"test-{purpose}{os.getpid()}x{int(time.time() * 1000) % 10**8}x{next(_COUNTER)}-{key_type}-20261203"

    return make


@pytest.fixture
def dek_store(oracle: Any, scratch: Callable[[str], str], tmp_path: Any) -> Callable[..., tuple[str, str, dict]]:
    """Seed a SQLite store with data keys over three versions of a fresh key: (key name, store path, plaintexts)."""

    def make(count: int = 300, versions: int = 3, derived: bool = False) -> tuple[str, str, dict[str, str]]:
        name = scratch("deks")
        path = str(tmp_path / f"{name}.sqlite")
        return name, path, seed_store(oracle, path, name, count, versions, derived=derived)

    return make
