# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The key register: the YAML file, kept under version control, that says which keys the company believes it has.

The schema is checked field by field on the YAML node tree, so every error names the line and the field an
operator has to fix. docs/inventory.md documents the same schema for people.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import InvalidInput
from ansible_collections.keyops.runbooks.plugins.module_utils.records import BACKENDS, KEY_CLASSES

try:
    import yaml
except ImportError:  # pragma: no cover - PyYAML ships with ansible-core
    yaml = None

TOP_LEVEL_FIELDS = ("version", "keys", "description")
SUPPORTED_VERSIONS = (1,)
# Field name: (kind, required). "unless_cert" fields may be left out for tls-cert entries.
ENTRY_FIELDS: dict[str, tuple[str, str]] = {
    "name": ("str", "required"),
    "backend": ("str", "required"),
    "location": ("str", "required"),
    "key_class": ("str", "required"),
    "owner": ("str", "required"),
    "custodians": ("list_str", "required"),
    "purpose": ("str", "required"),
    "algorithm": ("str", "optional"),
    "rotation_period_days": ("int", "unless_cert"),
    "backup_location": ("str", "unless_cert"),
    "key_id": ("str", "optional"),
    "data_key_stores": ("list", "optional"),
    "notes": ("str", "optional"),
}
CHOICES = {"backend": BACKENDS, "key_class": KEY_CLASSES}
MAX_ERRORS_IN_MESSAGE = 10


@dataclasses.dataclass
class RegisterEntry:
    """One key the register declares; ``line`` is where its entry starts in the file."""

    name: str
    backend: str
    location: str
    key_class: str
    owner: str
    custodians: list[str]
    purpose: str
    algorithm: str | None = None
    rotation_period_days: int | None = None
    backup_location: str | None = None
    key_id: str | None = None
    data_key_stores: list[Any] = dataclasses.field(default_factory=list)
    notes: str | None = None
    line: int = 0

    @property
    def ref(self) -> str:
        return f"{self.backend}:{self.location}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class RegisterError:
    line: int
    field: str | None
    message: str
    key: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}"
        if self.field:
            where += f", field '{self.field}'"
        if self.key:
            where += f" (key '{self.key}')"
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "key": self.key, "message": self.message}


def _line(node: Any) -> int:
    return node.start_mark.line + 1


def _closest(name: str, known: tuple[str, ...] | list[str]) -> str | None:
    close = difflib.get_close_matches(name, known, n=1)
    return close[0] if close else None


def _suggest(name: str, known: tuple[str, ...] | list[str]) -> str:
    close = _closest(name, known)
    return f"; did you mean '{close}'?" if close else f"; known fields: {', '.join(known)}"


def _check_value(field: str, kind: str, value: Any) -> str | None:
    """Why ``value`` cannot stand in ``field``, or None when it can."""
    if kind == "str":
        if not isinstance(value, str) or not value.strip():
            return f"must be a non-empty string, got {_shown(value)}"
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"must be a whole number of days (0: no scheduled rotation), got {_shown(value)}"
    elif kind == "list_str":
        if not isinstance(value, list) or not value:
            return f"must be a list of at least one name, got {_shown(value)}"
        if not all(isinstance(item, str) and item.strip() for item in value):
            return "must list names as non-empty strings"
    elif kind == "list" and not isinstance(value, list):
        return f"must be a list, got {_shown(value)}"
    if field in CHOICES and value not in CHOICES[field]:
        return f"'{value}' is not one of {', '.join(CHOICES[field])}"
    return None


def _shown(value: Any) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}"


def _entry(loader: Any, node: Any, index: int, errors: list[RegisterError]) -> RegisterEntry | None:
    if not isinstance(node, yaml.MappingNode):
        errors.append(RegisterError(_line(node), None, f"entry {index + 1} under 'keys' must be a mapping of fields"))
        return None
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    local: list[RegisterError] = []
    for key_node, value_node in node.value:
        field = str(key_node.value)
        if field in values:
            local.append(
                RegisterError(_line(key_node), field, f"appears twice in one entry (first on line {lines[field]})")
            )
            continue
        lines[field] = _line(key_node)
        values[field] = loader.construct_object(value_node, deep=True)
    name = values.get("name") if isinstance(values.get("name"), str) else None

    suggested = set()
    for field, value in values.items():
        if field not in ENTRY_FIELDS:
            suggested.add(_closest(field, tuple(ENTRY_FIELDS)))
            local.append(
                RegisterError(lines[field], field, "is not a register field" + _suggest(field, tuple(ENTRY_FIELDS)))
            )
            continue
        problem = _check_value(field, ENTRY_FIELDS[field][0], value)
        if problem:
            local.append(RegisterError(lines[field], field, problem))
    is_cert = values.get("key_class") == "tls-cert"
    for field, (_kind, need) in ENTRY_FIELDS.items():
        # A misspelt field already says which one is meant; "is required" on top would repeat it.
        if field in suggested:
            continue
        if field not in values and (need == "required" or (need == "unless_cert" and not is_cert)):
            reason = "is required" + ("" if need == "required" else " for every class but tls-cert")
            local.append(RegisterError(_line(node), field, reason))
    for item in local:
        item.key = name
    errors.extend(local)
    if local:
        return None
    known = {field: value for field, value in values.items() if field in ENTRY_FIELDS}
    return RegisterEntry(line=_line(node), **known)


def parse_register(text: str, source: str = "register") -> tuple[list[RegisterEntry], list[RegisterError]]:
    """Read register YAML; return the valid entries and every schema error found (not just the first)."""
    if yaml is None:  # pragma: no cover
        raise InvalidInput("Read key register", None, "PyYAML is not installed", "Install PyYAML (pip install pyyaml)")
    errors: list[RegisterError] = []
    # The C loader keeps line marks too, and composes a large register many times faster.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            line = mark.line + 1 if mark else 0
            return [], [RegisterError(line, None, f"not valid YAML: {error.problem or error.context}")]
        except yaml.YAMLError as error:
            return [], [RegisterError(0, None, f"not valid YAML: {error}")]
        if root is None:
            return [], [RegisterError(1, "keys", f"{source} is empty; it needs a 'keys' list")]

        items_node = root
        if isinstance(root, yaml.MappingNode):
            items_node = None
            for key_node, value_node in root.value:
                field = str(key_node.value)
                if field == "keys":
                    items_node = value_node
                elif field == "version":
                    version = loader.construct_object(value_node, deep=True)
                    if version not in SUPPORTED_VERSIONS:
                        errors.append(
                            RegisterError(
                                _line(value_node),
                                "version",
                                f"version {version!r} is not supported (supported: {SUPPORTED_VERSIONS})",
                            )
                        )
                elif field not in TOP_LEVEL_FIELDS:
                    errors.append(
                        RegisterError(
                            _line(key_node),
                            field,
                            "is not a top-level register field" + _suggest(field, TOP_LEVEL_FIELDS),
                        )
                    )
            if items_node is None:
                errors.append(RegisterError(_line(root), "keys", "is required: the list of registered keys"))
                return [], errors
        if not isinstance(items_node, yaml.SequenceNode):
            errors.append(RegisterError(_line(items_node), "keys", "must be a list of key entries"))
            return [], errors

        entries = [_entry(loader, node, index, errors) for index, node in enumerate(items_node.value)]
    finally:
        loader.dispose()

    seen: dict[tuple[str, str, str], RegisterEntry] = {}
    for entry in entries:
        if entry is None:
            continue
        identity = (entry.backend, entry.location.strip().rstrip("/").lower(), entry.name.strip().lower())
        if identity in seen:
            errors.append(
                RegisterError(
                    entry.line,
                    "name",
                    f"the same key is registered twice (first on line {seen[identity].line})",
                    entry.name,
                )
            )
        else:
            seen[identity] = entry
    errors.sort(key=lambda item: item.line)
    return list(seen.values()), errors


def read_register_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read()
    except FileNotFoundError as error:
        raise InvalidInput(
            "Read key register", None, f"{path} does not exist", "Point register_path at the register YAML"
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(
            "Read key register",
            None,
            f"{path} cannot be read ({error.__class__.__name__})",
            "Check the file's permissions and that it is UTF-8 text",
        ) from error


def load_register(path: str) -> list[RegisterEntry]:
    """Read and validate the register file; raise InvalidInput listing every error with its line and field."""
    entries, errors = parse_register(read_register_text(path), path)
    if errors:
        raise register_error(path, errors)
    return entries


def register_error(path: str, errors: list[RegisterError]) -> InvalidInput:
    shown = "; ".join(str(item) for item in errors[:MAX_ERRORS_IN_MESSAGE])
    more = f" (and {len(errors) - MAX_ERRORS_IN_MESSAGE} more)" if len(errors) > MAX_ERRORS_IN_MESSAGE else ""
    return InvalidInput(
        "Read key register",
        None,
        f"{path} has {len(errors)} schema error(s): {shown}{more}",
        "Fix those lines; docs/inventory.md lists every register field",
        errors=[item.to_dict() for item in errors],
    )
