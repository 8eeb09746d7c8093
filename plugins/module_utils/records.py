# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The uniform KeyRecord that every inventory source returns.

Reports, policy checks and the register reconcile this one shape. Times are
ISO 8601 strings in UTC; nothing here ever holds key material.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

BACKENDS = ("vault_transit", "aws_kms", "pkcs11", "x509", "file")
KEY_CLASSES = ("master-kek", "kek", "dek", "signing", "transport", "tls-cert")
STATES = ("enabled", "disabled", "pending_deletion", "destroyed", "expired")
SEVERITIES = ("info", "low", "medium", "high", "critical")

UTC = dt.UTC


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC)


def parse_time(value: Any) -> dt.datetime | None:
    """Read an ISO 8601 string, epoch seconds or datetime as an aware UTC datetime."""
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, (int, float)):
        moment = dt.datetime.fromtimestamp(value, UTC)
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        # Vault answers with nanoseconds; Python reads at most microseconds.
        if "." in text:
            head, _dot, tail = text.partition(".")
            digits = "".join(ch for ch in tail if ch.isdigit())
            zone = tail[len(digits) :]
            text = f"{head}.{digits[:6]}{zone}"
        moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def iso_utc(value: Any) -> str | None:
    moment = parse_time(value)
    if moment is None:
        return None
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def add_days(value: Any, days: int | None) -> str | None:
    moment = parse_time(value)
    if moment is None or not days:
        return None
    return iso_utc(moment + dt.timedelta(days=days))


def finding(code: str, severity: str, message: str) -> dict[str, str]:
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}")
    return {"code": code, "severity": severity, "message": message}


@dataclasses.dataclass
class KeyRecord:
    """One key (or certificate) as the inventory sees it. Field order is the auditors' CSV column order."""

    id: str
    name: str
    backend: str
    location: str = ""
    key_class: str | None = None
    owner: str | None = None
    purpose: str | None = None
    algorithm: str | None = None
    length_bits: int | str | None = None
    created: str | None = None
    last_rotated: str | None = None
    rotation_period_days: int | None = None
    next_rotation_due: str | None = None
    expires: str | None = None
    state: str = "enabled"
    versions: int | None = None
    backup_location: str | None = None
    exportable: bool | None = None
    findings: list[dict[str, str]] = dataclasses.field(default_factory=list)
    # Backend-specific facts (certificate fields, token attributes, ...): never key material.
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.next_rotation_due is None and self.rotation_period_days:
            self.next_rotation_due = add_days(self.last_rotated or self.created, self.rotation_period_days)

    def to_dict(self) -> dict[str, Any]:
        record = {name: getattr(self, name) for name in CSV_COLUMNS}
        record["findings"] = list(self.findings)
        for key, value in self.extra.items():
            record.setdefault(key, value)
        return record


CSV_COLUMNS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(KeyRecord) if field.name != "extra")
