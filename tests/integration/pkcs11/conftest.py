"""Fixtures for the PKCS#11 tests: tokens of this session's own in the lab's SoftHSM2 (fixture `lab`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("pkcs11")

from tests.integration.pkcs11.softhsm_tokens import Hsm, make_transport


@pytest.fixture(scope="session")
def hsm(lab: dict[str, Any]) -> Iterator[Hsm]:
    if shutil.which("softhsm2-util") is None or shutil.which("pkcs11-tool") is None:
        pytest.skip("softhsm2 and opensc are needed (scripts/bootstrap.sh installs them from bindep.txt)")
    tokens = Hsm(lab)
    try:
        yield tokens
    finally:
        tokens.remove_tokens()
        shutil.rmtree(tokens.root, ignore_errors=True)


@pytest.fixture(scope="session")
def transport(hsm: Hsm) -> dict[str, str]:
    return make_transport(hsm)
