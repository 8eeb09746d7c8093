"""Secrets the suite puts through real runs, collected for the sweep at the end (tests/reliability/
test_secrets_sweep.py). They live only in this process's memory.
"""

from __future__ import annotations

SECRETS: set[str] = set()
# Plaintext data keys (base64 of 32 random bytes), kept apart: there are thousands, looked up by token.
PLAINTEXTS: set[str] = set()


def add(*values: str) -> None:
    SECRETS.update(value for value in values if value and len(value) >= 12)


def add_plaintexts(values: object) -> None:
    PLAINTEXTS.update(str(value) for value in values)  # type: ignore[attr-defined]
