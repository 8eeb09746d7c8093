# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: keys in an HSM reached through PKCS#11 (python-pkcs11).

Tokens are chosen by label and/or serial, never by slot index (a token moves to another slot when it is
initialised). Every key is a token object, addressed by label plus CKA_ID; more than one match for a
selector is an error that lists the candidates. Nothing here returns key material or the PIN: wrapped
blobs only ever go to files, and results carry labels, ids, attributes and check values.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import traceback
from collections.abc import Iterator
from typing import Any

from ansible.module_utils.basic import env_fallback

from ansible_collections.keyops.runbooks.plugins.module_utils.approvals import write_private_file
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    AccessDenied,
    BackendUnavailable,
    Conflict,
    IntegrityError,
    InvalidInput,
    KeyNotFound,
    MissingLibrary,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.naming import parse_key_name
from ansible_collections.keyops.runbooks.plugins.module_utils.records import KeyRecord, finding, iso_utc, utc_now

try:
    import pkcs11
    from pkcs11 import MGF, Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
    from pkcs11 import exceptions as p11errors
    from pkcs11.attributes import AttributeMapper, handle_date
    from pkcs11.constants import DEFAULT
    from pkcs11.util.ec import decode_ec_public_key, encode_ec_public_key, encode_named_curve_parameters
    from pkcs11.util.rsa import decode_rsa_public_key, encode_rsa_public_key
except ImportError:
    HAS_PKCS11 = False
    PKCS11_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    HAS_PKCS11 = True
    PKCS11_IMPORT_ERROR = None

BACKEND = "pkcs11"

# The connection options every pkcs11_* module merges (doc fragment keyops.runbooks.pkcs11).
PKCS11_ARGSPEC: dict[str, Any] = {
    "pkcs11_module": {"type": "path", "fallback": (env_fallback, ["KEYOPS_PKCS11_MODULE"])},
    "token_label": {"type": "str", "no_log": False, "fallback": (env_fallback, ["KEYOPS_PKCS11_TOKEN_LABEL"])},
    "token_serial": {"type": "str", "no_log": False},
    "user_pin": {"type": "str", "no_log": True, "fallback": (env_fallback, ["KEYOPS_PKCS11_PIN"])},
}

SECRET, PRIVATE, PUBLIC = "secret_key", "private_key", "public_key"
OBJECT_CLASSES = (SECRET, PRIVATE, PUBLIC)

# Approved algorithm name (policy.approved_algorithms.pkcs11) -> key type, size in bits, curve.
ALGORITHMS: dict[str, dict[str, Any]] = {
    "AES-256": {"key_type": "AES", "bits": 256, "curve": None},
    "RSA-3072": {"key_type": "RSA", "bits": 3072, "curve": None},
    "RSA-4096": {"key_type": "RSA", "bits": 4096, "curve": None},
    "EC-P256": {"key_type": "EC", "bits": 256, "curve": "P-256"},
    "EC-P384": {"key_type": "EC", "bits": 384, "curve": "P-384"},
}
# DER-encoded named-curve OIDs as they appear in CKA_EC_PARAMS.
CURVES = {
    "P-256": {"oid": "1.2.840.10045.3.1.7", "der": "06082a8648ce3d030107", "bits": 256, "hash": "sha256"},
    "P-384": {"oid": "1.3.132.0.34", "der": "06052b81040022", "bits": 384, "hash": "sha384"},
    "P-521": {"oid": "1.3.132.0.35", "der": "06052b81040023", "bits": 521, "hash": "sha512"},
}
WRAP_MECHANISMS = {
    "aes_key_wrap_pad": {"name": "CKM_AES_KEY_WRAP_PAD", "wrapping_class": SECRET, "unwrapping_class": SECRET},
    "rsa_oaep": {"name": "CKM_RSA_PKCS_OAEP", "wrapping_class": PUBLIC, "unwrapping_class": PRIVATE},
}
OAEP_HASHES = ("sha1", "sha256", "sha384", "sha512")
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "keyops.runbooks/pkcs11-backup/v1"
VENDOR_BACKUP_HINT = (
    "the token will never let it out (CKA_EXTRACTABLE is false), so only the HSM vendor's own backup or "
    "cloning procedure can copy it (for example a backup HSM, a cloning domain or a security world)"
)


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers (no token needed)


def id_from_hex(value: str | None, label: str) -> bytes | None:
    if value in (None, ""):
        return None
    text = str(value).lower().replace(":", "")
    if not re.fullmatch(r"(?:[0-9a-f]{2})+", text):
        raise InvalidInput(
            "Read key id",
            label,
            f"id '{value}' is not an even number of hex digits",
            "Pass the CKA_ID as hex, for example 0a1b2c3d",
        )
    return bytes.fromhex(text)


def default_id(label: str) -> bytes:
    """A stable CKA_ID derived from the label, so a rerun of the same task finds the same key."""
    return hashlib.sha256(label.encode("utf-8")).digest()[:8]


def key_uri(token_label: str, label: str, key_id: bytes, object_class: str | None = None) -> str:
    """An RFC 7512 PKCS#11 URI naming one object (or a key pair when ``object_class`` is left out)."""

    def quote(text: str) -> str:
        return "".join(
            ch if re.match(r"[A-Za-z0-9._~-]", ch) else "".join(f"%{b:02x}" for b in ch.encode()) for ch in text
        )

    parts = [f"token={quote(token_label)}", f"object={quote(label)}", "id=" + "".join(f"%{b:02x}" for b in key_id)]
    if object_class:
        parts.append("type=" + {SECRET: "secret-key", PRIVATE: "private", PUBLIC: "public"}[object_class])
    return "pkcs11:" + ";".join(parts)


def algorithm_name(key_type: str | None, bits: int | None, curve: str | None) -> str | None:
    if key_type == "EC":
        return f"EC-{curve.replace('-', '')}" if curve else "EC"
    if key_type and bits:
        return f"{key_type}-{bits}"
    return key_type


def curve_from_params(ec_params: bytes | None) -> str | None:
    if not ec_params:
        return None
    for name, curve in CURVES.items():
        if ec_params.hex() == curve["der"]:
            return name
    return "unknown"


def key_class_for(label: str, explicit: str | None = None) -> str | None:
    """The key class the label names (a kek whose purpose mentions master is a master KEK)."""
    if explicit:
        return explicit
    parts = parse_key_name(label)
    if not parts["valid"]:
        return None
    if parts["type"] == "kek" and "master" in parts["purpose"].split("-"):
        return "master-kek"
    return parts["key_class"]


def kcv_hex(block: bytes) -> str:
    """A key check value: the first three bytes of a zero block encrypted under the key (ANSI X9.24 style)."""
    return block[:3].hex()


# ---------------------------------------------------------------------------------------------------------------
# Objects as read from a token


@dataclasses.dataclass
class KeyObject:
    """One key object's public facts. ``handle`` is the python-pkcs11 object, valid in its session only."""

    handle: Any
    object_class: str
    key_type: str | None
    label: str
    key_id: bytes
    bits: int | None = None
    curve: str | None = None
    token: bool = True
    sensitive: bool | None = None
    extractable: bool | None = None
    always_sensitive: bool | None = None
    never_extractable: bool | None = None
    local: bool | None = None
    start_date: str | None = None
    end_date: str | None = None
    dates_readable: bool = True
    capabilities: list[str] = dataclasses.field(default_factory=list)

    @property
    def algorithm(self) -> str | None:
        return algorithm_name(self.key_type, self.bits, self.curve)

    @property
    def id_hex(self) -> str:
        return self.key_id.hex()

    def summary(self) -> dict[str, Any]:
        """The facts a result, diff or candidate list may show."""
        return {
            "label": self.label,
            "id": self.id_hex,
            "object_class": self.object_class,
            "key_type": self.key_type,
            "algorithm": self.algorithm,
            "length_bits": self.bits,
            "curve": self.curve,
            "token": self.token,
            "sensitive": self.sensitive,
            "extractable": self.extractable,
            "always_sensitive": self.always_sensitive,
            "never_extractable": self.never_extractable,
            "local": self.local,
            "start_date": self.start_date,
            "end_date": self.end_date,
            "dates_readable": self.dates_readable,
            "capabilities": list(self.capabilities),
        }


_CAPABILITY_ATTRIBUTES = ("ENCRYPT", "DECRYPT", "WRAP", "UNWRAP", "SIGN", "VERIFY", "DERIVE")
_FLAG_ATTRIBUTES = ("SENSITIVE", "EXTRACTABLE", "ALWAYS_SENSITIVE", "NEVER_EXTRACTABLE")
_CLASS_ATTRIBUTES = {
    SECRET: (*_FLAG_ATTRIBUTES, "VALUE_LEN", *_CAPABILITY_ATTRIBUTES),
    PRIVATE: (*_FLAG_ATTRIBUTES, "SIGN", "DECRYPT", "UNWRAP", "DERIVE"),
    PUBLIC: ("VERIFY", "ENCRYPT", "WRAP"),
}


def _class_name(value: Any) -> str | None:
    return {ObjectClass.SECRET_KEY: SECRET, ObjectClass.PRIVATE_KEY: PRIVATE, ObjectClass.PUBLIC_KEY: PUBLIC}.get(value)


def _date_mapper() -> Any:
    """python-pkcs11's mapper, reading an empty CK_DATE as None instead of failing."""
    mapper = AttributeMapper()
    pack, unpack = handle_date
    for attribute in (Attribute.START_DATE, Attribute.END_DATE):
        mapper.register_handler(attribute, pack, lambda raw, unpack=unpack: unpack(raw) if raw.strip(b"\0 ") else None)
    return mapper


def _read(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """Read attributes in one call; fall back to one at a time when the token refuses one of them."""
    wanted = [getattr(Attribute, name) for name in names]
    try:
        values = obj.get_attributes(wanted)
        return {name: values.get(attribute) for name, attribute in zip(names, wanted, strict=True)}
    except (p11errors.PKCS11Error, ValueError):
        pass
    result: dict[str, Any] = {}
    for name, attribute in zip(names, wanted, strict=True):
        try:
            result[name] = obj[attribute]
        except (p11errors.PKCS11Error, ValueError):
            result[name] = None
    return result


def read_key_object(obj: Any) -> KeyObject | None:
    """The public facts of one key object, or None for objects that are not keys (certificates, data)."""
    base = _read(obj, ("CLASS", "KEY_TYPE", "LABEL", "ID", "TOKEN", "LOCAL"))
    object_class = _class_name(base["CLASS"])
    if object_class is None:
        return None
    key_type = base["KEY_TYPE"].name if base["KEY_TYPE"] is not None else None
    details = _read(obj, _CLASS_ATTRIBUTES[object_class])
    key = KeyObject(
        handle=obj,
        object_class=object_class,
        key_type=key_type,
        label=base["LABEL"] or "",
        key_id=base["ID"] or b"",
        token=bool(base["TOKEN"]),
        local=base["LOCAL"],
        sensitive=details.get("SENSITIVE"),
        extractable=details.get("EXTRACTABLE"),
        always_sensitive=details.get("ALWAYS_SENSITIVE"),
        never_extractable=details.get("NEVER_EXTRACTABLE"),
        capabilities=[name.lower() for name in _CAPABILITY_ATTRIBUTES if details.get(name)],
    )
    if object_class == SECRET and details.get("VALUE_LEN"):
        key.bits = int(details["VALUE_LEN"]) * 8
    elif key_type == "RSA":
        modulus = _read(obj, ("MODULUS",))["MODULUS"]
        key.bits = len(modulus) * 8 if modulus else None
    elif key_type == "EC":
        key.curve = curve_from_params(_read(obj, ("EC_PARAMS",))["EC_PARAMS"])
        key.bits = CURVES.get(key.curve or "", {}).get("bits")

    # SoftHSM2 up to 2.6 cannot read CK_DATEs back from private objects (its issues #655 and #804).
    try:
        dates = obj.get_attributes([Attribute.START_DATE, Attribute.END_DATE])
        key.start_date = dates[Attribute.START_DATE].isoformat() if dates.get(Attribute.START_DATE) else None
        key.end_date = dates[Attribute.END_DATE].isoformat() if dates.get(Attribute.END_DATE) else None
    except (p11errors.PKCS11Error, ValueError):
        key.dates_readable = False
    return key


# ---------------------------------------------------------------------------------------------------------------
# Connection


def _pkcs11_failure(action: str, key_ref: str | None, error: Exception, remedy: str) -> BackendUnavailable:
    """A token error we did not expect here: name the PKCS#11 condition, never the raw object."""
    return BackendUnavailable(action, key_ref, f"the token answered {type(error).__name__}", remedy)


class Token:
    """One token chosen by label and/or serial, with the user logged in on each session it opens."""

    def __init__(self, params: dict[str, Any]) -> None:
        if not HAS_PKCS11:
            raise MissingLibrary("python-pkcs11", PKCS11_IMPORT_ERROR)
        self.module_path = params.get("pkcs11_module")
        self.label = params.get("token_label")
        self.serial = params.get("token_serial")
        self._pin = params.get("user_pin")
        if not self.module_path:
            raise InvalidInput(
                "Open PKCS#11 token",
                None,
                "no PKCS#11 library was given",
                "Set pkcs11_module (or KEYOPS_PKCS11_MODULE) to the vendor's .so file",
            )
        if not self.label and not self.serial:
            raise InvalidInput(
                "Open PKCS#11 token",
                None,
                "no token selector was given",
                "Set token_label (or KEYOPS_PKCS11_TOKEN_LABEL) and/or token_serial",
            )
        if not self._pin:
            raise InvalidInput(
                "Open PKCS#11 token", None, "no user PIN was given", "Set user_pin (or KEYOPS_PKCS11_PIN)"
            )
        if not os.path.isfile(self.module_path):
            raise BackendUnavailable(
                "Load PKCS#11 library",
                None,
                f"{self.module_path} does not exist",
                "Set pkcs11_module to the path of the vendor's PKCS#11 library",
            )
        try:
            self._lib = pkcs11.lib(self.module_path)
        except (p11errors.PKCS11Error, OSError, RuntimeError) as error:
            raise BackendUnavailable(
                "Load PKCS#11 library",
                None,
                f"{self.module_path} could not be loaded ({type(error).__name__})",
                "Check that it is a PKCS#11 library for this platform and that its own "
                "configuration (for SoftHSM2: SOFTHSM2_CONF) is readable",
            ) from error
        self._token = self._select()
        self.label = self._token.label
        self.serial = self._token.serial.decode("ascii", "replace").strip()
        self._mapper = _date_mapper()
        self._open_sessions = 0

    @property
    def selector(self) -> str:
        parts = [f"label '{self.label}'"] if self.label else []
        parts += [f"serial '{self.serial}'"] if self.serial else []
        return " and ".join(parts)

    def _select(self) -> Any:
        try:
            present = list(self._lib.get_tokens())
        except p11errors.PKCS11Error as error:
            raise _pkcs11_failure(
                "List PKCS#11 tokens", None, error, "Check the PKCS#11 library and its configuration"
            ) from error
        matches = [
            token
            for token in present
            if (not self.label or token.label == self.label)
            and (not self.serial or token.serial.decode("ascii", "replace").strip() == self.serial)
        ]
        seen = sorted(f"{token.label} (serial {token.serial.decode('ascii', 'replace').strip()})" for token in present)
        if not matches:
            raise BackendUnavailable(
                "Open PKCS#11 token",
                None,
                f"no token with {self.selector} is present (tokens seen: {', '.join(seen) or 'none'})",
                "Check token_label / token_serial, and that the token is initialised",
            )
        if len(matches) > 1:
            raise Conflict(
                "Open PKCS#11 token",
                None,
                f"{len(matches)} tokens match {self.selector}: "
                + ", ".join(f"serial {token.serial.decode('ascii', 'replace').strip()}" for token in matches),
                "Add token_serial so that exactly one token matches",
                candidates=[
                    {"label": token.label, "serial": token.serial.decode("ascii", "replace").strip()}
                    for token in matches
                ],
            )
        return matches[0]

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """A read-write session with the user logged in; closed (and logged out) on exit."""
        # PKCS#11 login state belongs to the process: a second session shares the first one's login.
        pin = None if self._open_sessions else self._pin
        try:
            session = self._token.open(rw=True, user_pin=pin, attribute_mapper=self._mapper)
        except (p11errors.PinIncorrect, p11errors.PinInvalid, p11errors.PinLenRange) as error:
            raise AccessDenied(
                "Log in to PKCS#11 token",
                None,
                f"token '{self.label}' refused the user PIN",
                "Check user_pin (or KEYOPS_PKCS11_PIN) for this token",
            ) from error
        except p11errors.PinLocked as error:
            raise AccessDenied(
                "Log in to PKCS#11 token",
                None,
                f"the user PIN of token '{self.label}' is locked",
                "Have the security officer unlock or reset the user PIN",
            ) from error
        except p11errors.UserPinNotInitialized as error:
            raise AccessDenied(
                "Log in to PKCS#11 token",
                None,
                f"token '{self.label}' has no user PIN yet",
                "Have the security officer initialise the user PIN",
            ) from error
        except (p11errors.TokenNotPresent, p11errors.DeviceRemoved) as error:
            raise BackendUnavailable(
                "Open PKCS#11 session",
                None,
                f"token '{self.label}' went away",
                "Check the HSM connection and run again",
            ) from error
        except p11errors.PKCS11Error as error:
            raise _pkcs11_failure("Open PKCS#11 session", None, error, "Check the token state") from error
        self._open_sessions += 1
        try:
            yield session
        finally:
            self._open_sessions -= 1
            with contextlib.suppress(p11errors.PKCS11Error):
                session.close()

    def mechanisms(self) -> set[Any]:
        return set(self._token.slot.get_mechanisms())

    def supports_wrap(self, mechanism: Any) -> bool:
        if mechanism not in self.mechanisms():
            return False
        info = self._token.slot.get_mechanism_info(mechanism)
        return bool(info.flags & MechanismFlag.WRAP)

    def supports_unwrap(self, mechanism: Any) -> bool:
        if mechanism not in self.mechanisms():
            return False
        info = self._token.slot.get_mechanism_info(mechanism)
        return bool(info.flags & MechanismFlag.UNWRAP)

    def uri(self, label: str, key_id: bytes, object_class: str | None = None) -> str:
        return key_uri(self.label, label, key_id, object_class)


def list_keys(
    session: Any, label: str | None = None, key_id: bytes | None = None, object_class: str | None = None
) -> list[KeyObject]:
    """Every key object matching the filters (exact label and id), in the token's order."""
    template: dict[Any, Any] = {}
    if label is not None:
        template[Attribute.LABEL] = label
    if key_id is not None:
        template[Attribute.ID] = key_id
    if object_class is not None:
        template[Attribute.CLASS] = {
            SECRET: ObjectClass.SECRET_KEY,
            PRIVATE: ObjectClass.PRIVATE_KEY,
            PUBLIC: ObjectClass.PUBLIC_KEY,
        }[object_class]
    keys = []
    try:
        for obj in session.get_objects(template):
            key = read_key_object(obj)
            if key is not None:
                keys.append(key)
    except p11errors.PKCS11Error as error:
        raise _pkcs11_failure("List key objects", label, error, "Check the token state") from error
    return keys


def candidates(keys: list[KeyObject]) -> list[dict[str, Any]]:
    return [
        {
            "label": key.label,
            "id": key.id_hex,
            "object_class": key.object_class,
            "algorithm": key.algorithm,
            "start_date": key.start_date,
            "handle": key.handle.handle,
        }
        for key in keys
    ]


def _duplicates_error(action: str, ref: str, keys: list[KeyObject], remedy: str) -> Conflict:
    listed = "; ".join(
        f"{key.object_class} {key.algorithm} label '{key.label}' id {key.id_hex or '(none)'}" for key in keys
    )
    return Conflict(
        action,
        ref,
        f"{len(keys)} objects match and none is picked for you: {listed}",
        remedy,
        candidates=candidates(keys),
    )


# ---------------------------------------------------------------------------------------------------------------
# Key records (pkcs11_key_info)


def key_record(
    token: Token, key: KeyObject, today: dt.date | None = None, approved: list[str] | None = None
) -> dict[str, Any]:
    """One key object as a KeyRecord, with findings an auditor would raise."""
    today = today or utc_now().date()
    key_class = key_class_for(key.label)
    parts = parse_key_name(key.label)
    findings = []
    if not parts["valid"]:
        findings.append(finding("naming", "low", f"label '{key.label}' {parts['reason']}"))
    if not key.token:
        findings.append(finding("session_object", "medium", "a session object: it disappears with the session"))
    if key.object_class != PUBLIC and key.extractable:
        severity = "high" if key_class == "master-kek" else "low"
        findings.append(finding("extractable", severity, "the key can be wrapped out of the token"))
    if key.object_class != PUBLIC and key.sensitive is False:
        findings.append(finding("not_sensitive", "critical", "CKA_SENSITIVE is false: the value can be read out"))
    if approved is not None and key.algorithm not in approved:
        findings.append(finding("algorithm", "medium", f"{key.algorithm} is not an approved algorithm"))
    if not key.dates_readable:
        findings.append(
            finding("dates_unreadable", "info", "the token does not return CKA_START_DATE/END_DATE for this object")
        )
    state = "enabled"
    if key.end_date and dt.date.fromisoformat(key.end_date) < today:
        state = "expired"
        findings.append(finding("cryptoperiod_ended", "medium", f"the end date {key.end_date} has passed"))
    record = KeyRecord(
        id=token.uri(key.label, key.key_id, key.object_class),
        name=key.label,
        backend=BACKEND,
        location=f"{token.label} (serial {token.serial})",
        key_class=key_class,
        purpose=parts.get("purpose"),
        algorithm=key.algorithm,
        length_bits=key.curve if key.key_type == "EC" and key.curve else key.bits,
        created=iso_utc(key.start_date),
        expires=iso_utc(key.end_date),
        state=state,
        exportable=bool(key.extractable) if key.object_class != PUBLIC else True,
        findings=findings,
        extra={
            "object_class": key.object_class,
            "key_type": key.key_type,
            "cka_id": key.id_hex,
            "token_label": token.label,
            "token_serial": token.serial,
            "size_bits": key.bits,
            "curve": key.curve,
            "extractable": key.extractable,
            "sensitive": key.sensitive,
            "always_sensitive": key.always_sensitive,
            "never_extractable": key.never_extractable,
            "local": key.local,
            "token_object": key.token,
            "start_date": key.start_date,
            "end_date": key.end_date,
            "dates_readable": key.dates_readable,
            "capabilities": key.capabilities,
        },
    )
    return record.to_dict()


# ---------------------------------------------------------------------------------------------------------------
# Generation


@dataclasses.dataclass
class KeySpec:
    """What pkcs11_key is asked to make: a secret key or a key pair, under one label and CKA_ID."""

    label: str
    key_id: bytes
    algorithm: str
    extractable: bool = False
    sensitive: bool = True
    start_date: dt.date | None = None
    end_date: dt.date | None = None

    @property
    def pair(self) -> bool:
        return ALGORITHMS[self.algorithm]["key_type"] != "AES"

    @property
    def classes(self) -> tuple[str, ...]:
        return (PRIVATE, PUBLIC) if self.pair else (SECRET,)


def _dates(spec: KeySpec) -> dict[Any, Any]:
    template: dict[Any, Any] = {}
    if spec.start_date:
        template[Attribute.START_DATE] = spec.start_date
    if spec.end_date:
        template[Attribute.END_DATE] = spec.end_date
    return template


def generate(session: Any, spec: KeySpec) -> None:
    """Make the key as token objects, sensitive and (by default) never extractable."""
    algorithm = ALGORITHMS[spec.algorithm]
    secret_flags = {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: spec.sensitive,
        Attribute.EXTRACTABLE: spec.extractable,
        **_dates(spec),
    }
    public_flags = {Attribute.TOKEN: True, Attribute.PRIVATE: False, **_dates(spec)}
    try:
        if algorithm["key_type"] == "AES":
            session.generate_key(
                KeyType.AES,
                algorithm["bits"],
                id=spec.key_id,
                label=spec.label,
                store=True,
                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT | MechanismFlag.WRAP | MechanismFlag.UNWRAP,
                template=secret_flags,
            )
        elif algorithm["key_type"] == "RSA":
            session.generate_keypair(
                KeyType.RSA,
                algorithm["bits"],
                id=spec.key_id,
                label=spec.label,
                store=True,
                capabilities=MechanismFlag.SIGN
                | MechanismFlag.VERIFY
                | MechanismFlag.ENCRYPT
                | MechanismFlag.DECRYPT
                | MechanismFlag.WRAP
                | MechanismFlag.UNWRAP,
                public_template=public_flags,
                private_template=secret_flags,
            )
        else:
            params = session.create_domain_parameters(
                KeyType.EC,
                {Attribute.EC_PARAMS: encode_named_curve_parameters(CURVES[algorithm["curve"]]["oid"])},
                local=True,
            )
            params.generate_keypair(
                id=spec.key_id,
                label=spec.label,
                store=True,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                public_template=public_flags,
                private_template=secret_flags,
            )
    except (p11errors.MechanismInvalid, p11errors.KeySizeRange, p11errors.DomainParamsInvalid) as error:
        raise InvalidInput(
            "Create key",
            spec.label,
            f"the token cannot make {spec.algorithm} keys ({type(error).__name__})",
            "Pick an algorithm this token supports",
        ) from error
    except (p11errors.TokenWriteProtected, p11errors.SessionReadOnly, p11errors.UserNotLoggedIn) as error:
        raise AccessDenied(
            "Create key",
            spec.label,
            f"the token refused to store objects ({type(error).__name__})",
            "Log in as the token's user on a writable token",
        ) from error
    except p11errors.PKCS11Error as error:
        raise _pkcs11_failure("Create key", spec.label, error, "Check the token state and free space") from error


def confirm(keys: list[KeyObject], spec: KeySpec) -> None:
    """Check, from a fresh session, that what the token stored is what was asked for."""
    by_class = {key.object_class: key for key in keys}
    problems = []
    if sorted(by_class) != sorted(spec.classes) or len(keys) != len(spec.classes):
        problems.append(f"found {sorted(key.object_class for key in keys)} instead of {sorted(spec.classes)}")
    for key in keys:
        if key.algorithm != spec.algorithm:
            problems.append(f"{key.object_class} is {key.algorithm}")
        if not key.token:
            problems.append(f"{key.object_class} is a session object")
        if key.object_class != PUBLIC:
            if key.sensitive is not spec.sensitive:
                problems.append(f"{key.object_class} has CKA_SENSITIVE={key.sensitive}")
            if key.extractable is not spec.extractable:
                problems.append(f"{key.object_class} has CKA_EXTRACTABLE={key.extractable}")
    if problems:
        raise IntegrityError(
            "Confirm new key",
            spec.label,
            "the token stored something else: " + "; ".join(problems),
            "Inspect the token with pkcs11_key_info and remove the stray objects by label and id",
        )


def set_end_date(keys: list[KeyObject], end: dt.date) -> None:
    for key in keys:
        try:
            key.handle[Attribute.END_DATE] = end
        except p11errors.AttributeReadOnly as error:
            raise AccessDenied(
                "Set end date",
                key.label,
                f"the token does not allow changing CKA_END_DATE on the {key.object_class}",
                "Record the end date in the key register instead",
            ) from error
        except p11errors.PKCS11Error as error:
            raise _pkcs11_failure("Set end date", key.label, error, "Check the token state") from error


def destroy(keys: list[KeyObject]) -> None:
    for key in keys:
        try:
            key.handle.destroy()
        except p11errors.PKCS11Error as error:
            raise _pkcs11_failure(
                "Destroy key",
                key.label,
                error,
                "Check that the object is destroyable (CKA_DESTROYABLE) and the session is writable",
            ) from error


# ---------------------------------------------------------------------------------------------------------------
# Wrap and unwrap (pkcs11_key_backup, pkcs11_key_restore)


def mechanism_of(name: str) -> Any:
    return {"aes_key_wrap_pad": Mechanism.AES_KEY_WRAP_PAD, "rsa_oaep": Mechanism.RSA_PKCS_OAEP}[name]


def oaep_param(hash_name: str) -> tuple[Any, Any, None]:
    mechanisms = {
        "sha1": (Mechanism.SHA_1, MGF.SHA1),
        "sha256": (Mechanism.SHA256, MGF.SHA256),
        "sha384": (Mechanism.SHA384, MGF.SHA384),
        "sha512": (Mechanism.SHA512, MGF.SHA512),
    }
    digest_mechanism, mgf = mechanisms[hash_name]
    return (digest_mechanism, mgf, None)


def mechanism_label(name: str, oaep_hash: str | None) -> str:
    text = WRAP_MECHANISMS[name]["name"]
    if name == "rsa_oaep":
        text += f" (hash {oaep_hash.upper()}, MGF1-{oaep_hash.upper()})"
    return text


def require_mechanism(token: Token, name: str, direction: str) -> None:
    """Refuse before touching any key when the token lacks the mechanism: never fall back to a weaker one."""
    mechanism = mechanism_of(name)
    supported = token.supports_wrap(mechanism) if direction == "wrap" else token.supports_unwrap(mechanism)
    if not supported:
        raise InvalidInput(
            f"{direction.capitalize()} keys",
            None,
            f"token '{token.label}' does not offer {WRAP_MECHANISMS[name]['name']} for {direction}ping",
            "Pick another mechanism option the token supports; nothing falls back on its own",
        )


def find_one(session: Any, label: str, key_id: bytes | None, object_class: str, purpose: str) -> KeyObject:
    keys = list_keys(session, label=label, key_id=key_id, object_class=object_class)
    ref = label if key_id is None else f"{label} (id {key_id.hex()})"
    if not keys:
        raise KeyNotFound(
            f"Find {purpose}",
            ref,
            f"no {object_class.replace('_', ' ')} with that label and id is on the token",
            f"Check the {purpose} label and id options, and the token selected",
        )
    if len(keys) > 1:
        raise _duplicates_error(f"Find {purpose}", ref, keys, f"Pass the {purpose}'s id so exactly one matches")
    return keys[0]


def wrap(wrapping: KeyObject, key: KeyObject, name: str, oaep_hash: str | None) -> bytes:
    """The wrapped blob of one key; a refused mechanism is an error naming it, never a quiet fallback."""
    param = oaep_param(oaep_hash) if name == "rsa_oaep" else None
    try:
        return wrapping.handle.wrap_key(key.handle, mechanism=mechanism_of(name), mechanism_param=param)
    except (p11errors.MechanismInvalid, p11errors.MechanismParamInvalid, p11errors.ArgumentsBad) as error:
        raise InvalidInput(
            "Wrap key",
            key.label,
            f"the token refused {mechanism_label(name, oaep_hash)} ({type(error).__name__})",
            "Pick another mechanism or oaep_hash that the token supports and your policy "
            "accepts; nothing falls back on its own",
        ) from error
    except (p11errors.KeyUnextractable, p11errors.KeyNotWrappable) as error:
        raise Conflict(
            "Wrap key",
            key.label,
            f"the token refused to wrap it ({type(error).__name__})",
            "Leave it out of labels, or use the HSM vendor's own backup",
        ) from error
    except (p11errors.WrappingKeyTypeInconsistent, p11errors.WrappingKeyHandleInvalid) as error:
        raise InvalidInput(
            "Wrap key",
            key.label,
            f"the wrapping key '{wrapping.label}' cannot wrap with "
            f"{mechanism_label(name, oaep_hash)} ({type(error).__name__})",
            "Use a wrapping key with CKA_WRAP set that fits the mechanism",
        ) from error
    except p11errors.PKCS11Error as error:
        raise _pkcs11_failure("Wrap key", key.label, error, "Check the token state") from error


def wrap_refusal(key: KeyObject, name: str, wrapping: KeyObject) -> str | None:
    """Why a key cannot go into a wrapped backup, or None when it can."""
    if key.handle == wrapping.handle or (key.label == wrapping.label and key.key_id == wrapping.key_id):
        return "it is the wrapping key itself"
    if key.object_class == PUBLIC:
        return None
    if not key.extractable:
        return VENDOR_BACKUP_HINT
    if name == "rsa_oaep" and key.object_class == PRIVATE:
        return (
            "RSA-OAEP wraps only secret keys (a private key does not fit in one OAEP block); back key pairs "
            "up with mechanism aes_key_wrap_pad"
        )
    if key.key_type not in ("AES", "RSA", "EC"):
        return f"key type {key.key_type} is not one this collection restores"
    return None


def kcv(key: KeyObject) -> str | None:
    """Key check value of an AES key, or None when the token will not encrypt with it in ECB."""
    if key.key_type != "AES" or "encrypt" not in key.capabilities:
        return None
    try:
        return kcv_hex(key.handle.encrypt(bytes(16), mechanism=Mechanism.AES_ECB))
    except p11errors.PKCS11Error:
        return None


def public_der(key: KeyObject) -> bytes:
    """SubjectPublicKeyInfo DER of a public key object (public data: safe to write in clear)."""
    if key.key_type == "RSA":
        return _spki_rsa(encode_rsa_public_key(key.handle))
    return encode_ec_public_key(key.handle)


def _spki_rsa(pkcs1: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    public = serialization.load_der_public_key(_rsa_pkcs1_to_spki(pkcs1))
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _rsa_pkcs1_to_spki(pkcs1: bytes) -> bytes:
    # SPKI = SEQUENCE { AlgorithmIdentifier rsaEncryption NULL, BIT STRING { RSAPublicKey } }
    algorithm = bytes.fromhex("300d06092a864886f70d0101010500")
    bit_string = b"\x03" + _der_length(len(pkcs1) + 1) + b"\x00" + pkcs1
    body = algorithm + bit_string
    return b"\x30" + _der_length(len(body)) + body


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def import_public(session: Any, der: bytes, label: str, key_id: bytes, dates: dict[str, str | None]) -> None:
    """Put a public key (SPKI DER from a backup) on the token as a token object."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    public = serialization.load_der_public_key(der)
    if isinstance(public, rsa.RSAPublicKey):
        attributes = decode_rsa_public_key(
            public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
        )
        attributes.update({Attribute.VERIFY: True, Attribute.ENCRYPT: True, Attribute.WRAP: True})
    elif isinstance(public, ec.EllipticCurvePublicKey):
        attributes = decode_ec_public_key(der)
        attributes.update({Attribute.VERIFY: True, Attribute.ENCRYPT: False, Attribute.WRAP: False})
    else:
        raise InvalidInput(
            "Restore public key",
            label,
            "the backup holds a public key type this collection does not restore",
            "Restore it with the HSM vendor's tools",
        )
    attributes.update(
        {
            Attribute.CLASS: ObjectClass.PUBLIC_KEY,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: False,
            Attribute.LABEL: label,
            Attribute.ID: key_id,
        }
    )
    for field, attribute in (("start_date", Attribute.START_DATE), ("end_date", Attribute.END_DATE)):
        if dates.get(field):
            attributes[attribute] = dt.date.fromisoformat(dates[field])
    try:
        session.create_object(attributes)
    except p11errors.PKCS11Error as error:
        raise _pkcs11_failure("Restore public key", label, error, "Check the token state") from error


def unwrap(unwrapping: KeyObject, entry: dict[str, Any], blob: bytes, name: str, oaep_hash: str | None) -> None:
    """Unwrap one backup entry into a token object with the attributes the backup recorded."""
    key_id = bytes.fromhex(entry["id"])
    template: dict[Any, Any] = {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: bool(entry.get("extractable")),
    }
    for field, attribute in (("start_date", Attribute.START_DATE), ("end_date", Attribute.END_DATE)):
        if entry.get(field):
            template[attribute] = dt.date.fromisoformat(entry[field])
    if entry["object_class"] == SECRET:
        object_class, key_type = ObjectClass.SECRET_KEY, KeyType.AES
        capabilities = MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT | MechanismFlag.WRAP | MechanismFlag.UNWRAP
    else:
        object_class, key_type = ObjectClass.PRIVATE_KEY, KeyType[entry["key_type"]]
        capabilities = MechanismFlag.SIGN
        if entry["key_type"] == "RSA":
            capabilities |= MechanismFlag.DECRYPT | MechanismFlag.UNWRAP
        # python-pkcs11 puts every capability in an unwrap template; a private key may not carry the public ones.
        template.update({Attribute.ENCRYPT: DEFAULT, Attribute.VERIFY: DEFAULT, Attribute.WRAP: DEFAULT})
    param = oaep_param(oaep_hash) if name == "rsa_oaep" else None
    try:
        unwrapping.handle.unwrap_key(
            object_class,
            key_type,
            blob,
            id=key_id,
            label=entry["label"],
            mechanism=mechanism_of(name),
            mechanism_param=param,
            store=True,
            capabilities=capabilities,
            template=template,
        )
    except (p11errors.WrappedKeyInvalid, p11errors.WrappedKeyLenRange, p11errors.EncryptedDataInvalid) as error:
        raise IntegrityError(
            "Unwrap key",
            entry["label"],
            f"the token could not unwrap the blob "
            f"({type(error).__name__}): it was made under another wrapping key or is damaged",
            "Check that the unwrapping key is the one the backup was made under",
        ) from error
    except (p11errors.MechanismInvalid, p11errors.MechanismParamInvalid, p11errors.ArgumentsBad) as error:
        raise InvalidInput(
            "Unwrap key",
            entry["label"],
            f"the token refused {mechanism_label(name, oaep_hash)} ({type(error).__name__})",
            "Restore on a token that supports the backup's mechanism",
        ) from error
    except p11errors.PKCS11Error as error:
        raise _pkcs11_failure("Unwrap key", entry["label"], error, "Check the token state") from error


def known_answer(session: Any, keys: list[KeyObject], entry: dict[str, Any]) -> dict[str, Any]:
    """Prove the restored key is the backed-up one: check value and a canary round trip, or sign/verify.

    The canary is random per run and never leaves this function.
    """
    canary = os.urandom(32)
    by_class = {key.object_class: key for key in keys}
    try:
        if entry["object_class"] == SECRET:
            key = by_class[SECRET]
            iv = os.urandom(16)
            round_trip = key.handle.decrypt(key.handle.encrypt(canary, mechanism_param=iv), mechanism_param=iv)
            check_value = kcv(key)
            passed = round_trip == canary and (entry.get("kcv") is None or check_value == entry["kcv"])
            return {
                "check": "encrypt/decrypt canary and key check value",
                "passed": passed,
                "kcv": check_value,
                "kcv_expected": entry.get("kcv"),
            }
        private, public = by_class[PRIVATE], by_class.get(PUBLIC)
        signature, verified_on_token = _sign_verify(private, public, canary)
        verified_backup = _verify_with_backup_public(entry, canary, signature, private)
        return {
            "check": "sign canary, verify on token and against the backed-up public key",
            "passed": bool(verified_on_token and verified_backup),
        }
    except p11errors.PKCS11Error as error:
        return {"check": "known-answer", "passed": False, "error": type(error).__name__}


def _sign_verify(private: KeyObject, public: KeyObject | None, canary: bytes) -> tuple[bytes, bool]:
    if private.key_type == "RSA":
        params = {"mechanism": Mechanism.SHA256_RSA_PKCS_PSS, "mechanism_param": (Mechanism.SHA256, MGF.SHA256, 32)}
        signature = private.handle.sign(canary, **params)
        return signature, bool(public and public.handle.verify(canary, signature, **params))
    digest_name = CURVES.get(private.curve or "", {}).get("hash", "sha256")
    # Tokens such as SoftHSM2 offer raw CKM_ECDSA only: hash here, sign on the token.
    digest = hashlib.new(digest_name, canary).digest()
    signature = private.handle.sign(digest, mechanism=Mechanism.ECDSA)
    return signature, bool(public and public.handle.verify(digest, signature, mechanism=Mechanism.ECDSA))


def _verify_with_backup_public(entry: dict[str, Any], canary: bytes, signature: bytes, private: KeyObject) -> bool:
    """Verify outside the token with the public key the backup recorded (an oracle the token cannot fake)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

    public = serialization.load_der_public_key(base64.b64decode(entry["public_key_der"]))
    try:
        if private.key_type == "RSA":
            public.verify(
                signature, canary, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256()
            )
        else:
            half = len(signature) // 2
            der = utils.encode_dss_signature(
                int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
            )
            algorithm = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}[
                CURVES.get(private.curve or "", {}).get("hash", "sha256")
            ]
            public.verify(der, canary, ec.ECDSA(algorithm))
    except InvalidSignature:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# Backup files


def safe_file_stem(label: str, key_id: bytes, object_class: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:80].lstrip(".") or "unlabelled"
    return f"{stem}.{key_id.hex() or 'noid'}.{object_class}"


def read_manifest(backup_dir: str) -> dict[str, Any] | None:
    path = os.path.join(backup_dir, MANIFEST_NAME)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as stream:
            manifest = json.load(stream)
    except (OSError, ValueError) as error:
        raise IntegrityError(
            "Read backup manifest",
            None,
            f"{path} is not readable JSON ({type(error).__name__})",
            "Point backup_dir at a folder written by keyops.runbooks.pkcs11_key_backup",
        ) from error
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise IntegrityError(
            "Read backup manifest",
            None,
            f"{path} is not a {MANIFEST_FORMAT} manifest",
            "Point backup_dir at a folder written by keyops.runbooks.pkcs11_key_backup",
        )
    return manifest


def blob_intact(backup_dir: str, entry: dict[str, Any]) -> bool:
    path = os.path.join(backup_dir, entry["file"])
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as stream:
        return hashlib.sha256(stream.read()).hexdigest() == entry["sha256"]


def read_blob(backup_dir: str, entry: dict[str, Any]) -> bytes:
    path = os.path.join(backup_dir, entry["file"])
    try:
        with open(path, "rb") as stream:
            blob = stream.read()
    except OSError as error:
        raise KeyNotFound(
            "Read wrapped key",
            entry["label"],
            f"{path} is missing ({type(error).__name__})",
            "Restore from a complete backup folder",
        ) from error
    if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
        raise IntegrityError(
            "Read wrapped key",
            entry["label"],
            f"{path} does not match the SHA-256 in the manifest",
            "Restore from an intact copy of the backup",
        )
    return blob


def write_backup(backup_dir: str, manifest: dict[str, Any], blobs: dict[str, bytes]) -> None:
    """Blobs first, manifest last: a folder with a manifest always has every blob the manifest names."""
    os.makedirs(backup_dir, mode=0o700, exist_ok=True)
    for name, blob in blobs.items():
        write_private_file(os.path.join(backup_dir, name), blob)
    write_private_file(
        os.path.join(backup_dir, MANIFEST_NAME), json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8") + b"\n"
    )
