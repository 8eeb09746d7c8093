# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The key naming rule ``ENV-PURPOSE-TYPE-YYYYMMDD``, lower case."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import InvalidInput

KEY_TYPES = ("kek", "dek", "sign", "transport", "tls", "hmac")
# TYPE to the key class it usually names; a master KEK is a kek whose purpose says so.
TYPE_TO_CLASS = {
    "kek": "kek",
    "dek": "dek",
    "sign": "signing",
    "transport": "transport",
    "tls": "tls-cert",
    "hmac": "dek",
}
_PART = r"[a-z0-9]+(?:[a-z0-9]|-(?=[a-z0-9]))*"
_NAME = re.compile(rf"^(?P<env>[a-z0-9]+)-(?P<purpose>{_PART})-(?P<type>{'|'.join(KEY_TYPES)})-(?P<date>\d{{8}})$")
_SEGMENT = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_NAME_LENGTH = 128


def build_key_name(env: str, purpose: str, key_type: str, date: Any = None) -> str:
    """Compose a compliant key name; ``date`` defaults to today in UTC."""
    env, purpose, key_type = (str(part).strip().lower() for part in (env, purpose, key_type))
    if not re.match(r"^[a-z0-9]+$", env):
        raise InvalidInput(
            "Build key name",
            None,
            f"environment '{env}' must be letters and digits only",
            "Use a short environment such as prod, stage or dev",
        )
    if not _SEGMENT.match(purpose):
        raise InvalidInput(
            "Build key name",
            None,
            f"purpose '{purpose}' must be letters, digits and single hyphens",
            "Use a purpose such as payments or customer-data",
        )
    if key_type not in KEY_TYPES:
        raise InvalidInput(
            "Build key name",
            None,
            f"type '{key_type}' is not one of {', '.join(KEY_TYPES)}",
            "Pick the type that says what the key does",
        )
    if date is None:
        day = dt.datetime.now(dt.UTC).date()
    elif isinstance(date, (dt.date, dt.datetime)):
        day = date if not isinstance(date, dt.datetime) else date.date()
    else:
        text = str(date).replace("-", "")
        try:
            day = dt.datetime.strptime(text, "%Y%m%d").date()
        except ValueError as error:
            raise InvalidInput(
                "Build key name",
                None,
                f"date '{date}' is not YYYYMMDD or YYYY-MM-DD",
                "Pass the creation date, or leave it out for today",
            ) from error
    name = f"{env}-{purpose}-{key_type}-{day:%Y%m%d}"
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(
            "Build key name",
            None,
            f"the name is {len(name)} characters long",
            f"Shorten the purpose so the name fits in {MAX_NAME_LENGTH} characters",
        )
    return name


def parse_key_name(name: Any) -> dict[str, Any]:
    """Split a name into its parts; ``valid`` is false (with a ``reason``) when it does not follow the rule."""
    text = str(name)
    match = _NAME.match(text) if len(text) <= MAX_NAME_LENGTH else None
    if not match:
        return {"valid": False, "name": text, "reason": "does not match ENV-PURPOSE-TYPE-YYYYMMDD in lower case"}
    try:
        day = dt.datetime.strptime(match["date"], "%Y%m%d").date()
    except ValueError:
        return {"valid": False, "name": text, "reason": f"'{match['date']}' is not a calendar date"}
    return {
        "valid": True,
        "name": text,
        "env": match["env"],
        "purpose": match["purpose"],
        "type": match["type"],
        "date": day.isoformat(),
        "key_class": TYPE_TO_CLASS[match["type"]],
    }


def successor_name(name: str, date: Any = None) -> str:
    """The dated name of the key that replaces ``name`` (same env, purpose and type)."""
    parts = parse_key_name(name)
    if not parts["valid"]:
        raise InvalidInput(
            "Name successor key",
            name,
            f"the name {parts['reason']}",
            "Give the successor an explicit name that follows the naming rule",
        )
    return build_key_name(parts["env"], parts["purpose"], parts["type"], date)
