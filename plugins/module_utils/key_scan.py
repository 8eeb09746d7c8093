# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find key material sitting in files: the keys nobody registered.

Private to this collection. Every finding carries what an auditor needs (where, what kind, how
protected, who can read it, a fingerprint) and never the key itself: values are parsed in memory,
fingerprinted and dropped.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import fnmatch
import hashlib
import json
import os
import re
import socket
import stat
import struct
from collections.abc import Iterator
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import InvalidInput, MissingLibrary
from ansible_collections.keyops.runbooks.plugins.module_utils.policy import merged_policy
from ansible_collections.keyops.runbooks.plugins.module_utils.records import KeyRecord, finding, iso_utc

try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import pkcs12

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - reported through missing_required_lib
    HAS_CRYPTOGRAPHY = False

try:
    import jks

    HAS_PYJKS = True
except ImportError:  # pragma: no cover - JKS files are then reported without their entries
    HAS_PYJKS = False

try:
    from detect_secrets.core.scan import scan_line
    from detect_secrets.settings import transient_settings

    HAS_DETECT_SECRETS = True
except ImportError:  # pragma: no cover - the generic detector is then skipped with a warning
    HAS_DETECT_SECRETS = False

PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----(.*?)-----END \1-----", re.DOTALL)
PRIVATE_PEM_LABELS = {
    b"PRIVATE KEY": "pkcs8",
    b"ENCRYPTED PRIVATE KEY": "pkcs8",
    b"RSA PRIVATE KEY": "pem_private_key",
    b"EC PRIVATE KEY": "pem_private_key",
    b"DSA PRIVATE KEY": "pem_private_key",
    b"OPENSSH PRIVATE KEY": "openssh_private_key",
}
KEY_NAME_WORDS = re.compile(r"(key|secret|kek|dek|encrypt|cipher|master)", re.IGNORECASE)
# Names that say the value is a digest or an identifier, not a key, even when they also say "key".
NOT_KEY_WORDS = re.compile(
    r"(hash|checksum|digest|sha\d*|md5|fingerprint|thumbprint|uuid|_id$|^id$|keyid|key_id)", re.IGNORECASE
)
# name = value, name: value, "name": "value", NAME=value; the value is a run of base64 or hex characters.
ASSIGNMENT = re.compile(
    r"""(?P<name>[A-Za-z_][A-Za-z0-9_.\-]{0,80})["']?\s*(?:=|:|=>)\s*["']?(?P<value>[A-Za-z0-9+/_\-]{16,200}={0,2})(?![A-Za-z0-9+/_\-=])["']?"""
)
SYMMETRIC_KEY_BYTES = {16: 128, 24: 192, 32: 256, 64: 512}
SYMMETRIC_ALGORITHMS = ("symmetric", "oct")
JKS_MAGIC = {b"\xfe\xed\xfe\xed": "jks", b"\xce\xce\xce\xce": "jceks"}
DER_EXTENSIONS = (".der", ".key", ".pk8", ".p8")
PKCS12_EXTENSIONS = (".p12", ".pfx")
JSON_EXTENSIONS = (".json", ".jwk", ".jwks")
DETECT_SECRETS_PLUGINS = [
    {"name": "Base64HighEntropyString", "limit": 4.0},
    {"name": "HexHighEntropyString", "limit": 3.0},
    {"name": "KeywordDetector"},
]


@dataclasses.dataclass
class KeyFinding:
    """One piece of key material found in a file. Holds facts about the key, never the key."""

    path: str
    line: int | None
    kind: str
    algorithm: str | None = None
    length_bits: int | str | None = None
    protected: bool | None = None
    private: bool = True
    fingerprint_sha256: str | None = None
    label: str | None = None


@dataclasses.dataclass
class ScanResult:
    records: list[dict[str, Any]]
    errors: list[dict[str, str]]
    files_scanned: int
    files_skipped: int
    warnings: list[str]


def _fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _public_fingerprint(public_key: Any) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _fingerprint(der)


def describe_key(key: Any) -> tuple[str, int | str | None]:
    """Algorithm and size (or curve) of a cryptography key object, private or public."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "RSA", key.key_size
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return "EC", key.curve.name
    if isinstance(key, (dsa.DSAPrivateKey, dsa.DSAPublicKey)):
        return "DSA", key.key_size
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "Ed25519", 256
    if isinstance(key, (ed448.Ed448PrivateKey, ed448.Ed448PublicKey)):
        return "Ed448", 456
    return type(key).__name__, None


def _private_key_finding(path: str, line: int, kind: str, loader: Any, data: bytes) -> KeyFinding:
    """Parse a private key without a password: success means it is stored unprotected."""
    try:
        key = loader(data, password=None)
    except TypeError:
        return KeyFinding(path, line, kind, protected=True)
    except (ValueError, NotImplementedError):
        return KeyFinding(path, line, kind, protected=None)
    algorithm, size = describe_key(key)
    return KeyFinding(path, line, kind, algorithm, size, False, True, _public_fingerprint(key.public_key()))


def _openssh_public_part(blob: bytes) -> tuple[bool | None, Any]:
    """Read an openssh-key-v1 container: whether it is encrypted and its public key, which is stored in clear."""
    magic = b"openssh-key-v1\x00"
    if not blob.startswith(magic):
        return None, None
    position = len(magic)
    fields: list[bytes] = []
    try:
        for _field in range(3):  # cipher name, kdf name, kdf options
            (length,) = struct.unpack(">I", blob[position : position + 4])
            fields.append(blob[position + 4 : position + 4 + length])
            position += 4 + length
        position += 4  # number of keys
        (length,) = struct.unpack(">I", blob[position : position + 4])
        public_blob = blob[position + 4 : position + 4 + length]
        (type_length,) = struct.unpack(">I", public_blob[:4])
        key_type = public_blob[4 : 4 + type_length].decode("ascii")
        public_key = serialization.load_ssh_public_key(f"{key_type} ".encode() + base64.b64encode(public_blob))
    except (struct.error, ValueError, UnicodeDecodeError):
        return None, None
    return fields[0] != b"none", public_key


def pem_findings(path: str, content: bytes) -> Iterator[KeyFinding]:
    for match in PEM_BLOCK.finditer(content):
        label = match.group(1)
        kind = PRIVATE_PEM_LABELS.get(label)
        if kind is None:
            continue
        line = content.count(b"\n", 0, match.start()) + 1
        block = match.group(0)
        if kind == "openssh_private_key":
            try:
                body = base64.b64decode(b"".join(match.group(2).split()))
            except binascii.Error:
                yield KeyFinding(path, line, kind)
                continue
            encrypted, public_key = _openssh_public_part(body)
            if public_key is None:
                yield KeyFinding(path, line, kind, protected=encrypted)
                continue
            algorithm, size = describe_key(public_key)
            yield KeyFinding(path, line, kind, algorithm, size, encrypted, True, _public_fingerprint(public_key))
        elif label == b"ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in block:
            yield KeyFinding(path, line, kind, protected=True)
        else:
            yield _private_key_finding(path, line, kind, serialization.load_pem_private_key, block)


def der_findings(path: str, content: bytes) -> Iterator[KeyFinding]:
    if not content.startswith(b"\x30"):
        return
    found = _private_key_finding(path, 1, "pkcs8_der", serialization.load_der_private_key, content)
    if found.protected is not None:
        yield found


def pkcs12_findings(path: str, content: bytes) -> Iterator[KeyFinding]:
    try:
        key, _certificate, _extra = pkcs12.load_key_and_certificates(content, None)
    except ValueError:
        # Either protected by a password or not PKCS#12 at all; the extension says which is likelier.
        yield KeyFinding(path, None, "pkcs12", protected=True)
        return
    if key is None:
        return  # certificates only: the x509 inventory reports those
    algorithm, size = describe_key(key)
    yield KeyFinding(path, None, "pkcs12", algorithm, size, False, True, _public_fingerprint(key.public_key()))


def keystore_findings(path: str, content: bytes) -> Iterator[KeyFinding]:
    kind = JKS_MAGIC[content[:4]]
    if not HAS_PYJKS:
        yield KeyFinding(path, None, kind, protected=True)
        return
    try:
        # No store password: pyjks then reads the structure without checking the integrity hash or decrypting.
        store = jks.KeyStore.loads(content, None, try_decrypt_keys=False)
    except (jks.util.KeystoreException, struct.error, ValueError):
        yield KeyFinding(path, None, kind, protected=True)
        return
    for alias, entry in store.private_keys.items():
        algorithm = size = fingerprint = None
        if entry.cert_chain:
            from cryptography import x509

            try:
                public_key = x509.load_der_x509_certificate(entry.cert_chain[0][1]).public_key()
                algorithm, size = describe_key(public_key)
                fingerprint = _public_fingerprint(public_key)
            except ValueError:
                pass
        yield KeyFinding(path, None, kind, algorithm, size, True, True, fingerprint, alias)
    for alias, entry in store.secret_keys.items():
        yield KeyFinding(path, None, kind, getattr(entry, "algorithm", None), None, True, True, None, alias)


def _jwk_finding(path: str, jwk: dict[str, Any], index: int) -> KeyFinding | None:
    key_type = jwk.get("kty")
    if key_type == "oct" and "k" in jwk:
        raw = _b64url(jwk["k"])
        return KeyFinding(
            path,
            None,
            "jwk",
            "oct",
            len(raw) * 8 if raw else None,
            False,
            True,
            _fingerprint(raw) if raw else None,
            jwk.get("kid") or f"key {index}",
        )
    if "d" not in jwk:
        return None  # a public key: not secret material
    if key_type == "RSA":
        modulus = _b64url(jwk.get("n", ""))
        size: int | str | None = len(modulus) * 8 if modulus else None
        public = {"e": jwk.get("e"), "kty": "RSA", "n": jwk.get("n")}
    elif key_type in ("EC", "OKP"):
        size = jwk.get("crv")
        public = {"crv": jwk.get("crv"), "kty": key_type, "x": jwk.get("x")}
        if key_type == "EC":
            public["y"] = jwk.get("y")
    else:
        size, public = None, {"kty": key_type}
    # RFC 7638 thumbprint of the public part.
    thumbprint = _fingerprint(json.dumps(public, sort_keys=True, separators=(",", ":")).encode())
    return KeyFinding(path, None, "jwk", key_type, size, False, True, thumbprint, jwk.get("kid") or f"key {index}")


def _b64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(str(text) + "=" * (-len(str(text)) % 4))
    except (binascii.Error, ValueError):
        return b""


def jwk_findings(path: str, content: bytes) -> Iterator[KeyFinding]:
    try:
        document = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return
    if isinstance(document, dict) and isinstance(document.get("keys"), list):
        candidates = document["keys"]
    elif isinstance(document, dict) and "kty" in document:
        candidates = [document]
    else:
        return
    for index, jwk in enumerate(candidates):
        if isinstance(jwk, dict):
            found = _jwk_finding(path, jwk, index)
            if found:
                yield found


def _decode_key_value(value: str) -> bytes | None:
    """The raw bytes when ``value`` is hex or base64 of a symmetric key length, else None."""
    text = value.strip()
    if re.fullmatch(r"[0-9a-fA-F]+", text) and len(text) // 2 in SYMMETRIC_KEY_BYTES and len(text) % 2 == 0:
        return bytes.fromhex(text)
    if len(text) < 20:
        return None
    for decoder in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            raw = decoder(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            continue
        if len(raw) in SYMMETRIC_KEY_BYTES:
            return raw
    return None


def _looks_random(raw: bytes) -> bool:
    # Key bytes are near-uniform; text, counters and padding repeat.
    return len(set(raw)) >= len(raw) * 0.6


def _detector_lines(text: str, candidate_lines: list[int]) -> set[int]:
    """Lines where detect-secrets, the generic detector, also sees a secret."""
    lines = text.splitlines()
    flagged = set()
    with transient_settings({"plugins_used": DETECT_SECRETS_PLUGINS}):
        for number in candidate_lines:
            if any(True for _secret in scan_line(lines[number - 1])):
                flagged.add(number)
    return flagged


def config_findings(path: str, content: bytes, use_detector: bool) -> Iterator[KeyFinding]:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return
    if not KEY_NAME_WORDS.search(text):
        return
    candidates: list[tuple[int, str, bytes]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if "BEGIN " in line or len(line) > 4000:
            continue
        for match in ASSIGNMENT.finditer(line):
            name = match.group("name")
            if not KEY_NAME_WORDS.search(name) or NOT_KEY_WORDS.search(name):
                continue
            raw = _decode_key_value(match.group("value"))
            if raw is not None and _looks_random(raw):
                candidates.append((number, name, raw))
    if not candidates:
        return
    confirmed = _detector_lines(text, sorted({number for number, _name, _raw in candidates})) if use_detector else None
    for number, name, raw in candidates:
        if confirmed is not None and number not in confirmed:
            continue
        yield KeyFinding(
            path, number, "symmetric_key_in_config", "symmetric", len(raw) * 8, False, True, _fingerprint(raw), name
        )


def file_findings(path: str, content: bytes, use_detector: bool) -> list[KeyFinding]:
    lower = path.lower()
    if content[:4] in JKS_MAGIC:
        return list(keystore_findings(path, content))
    if lower.endswith(PKCS12_EXTENSIONS):
        return list(pkcs12_findings(path, content))
    if b"-----BEGIN " in content:
        found = list(pem_findings(path, content))
        return found + list(config_findings(path, content, use_detector))
    if lower.endswith(DER_EXTENSIONS):
        return list(der_findings(path, content))
    if lower.endswith(JSON_EXTENSIONS) or content[:1] in (b"{", b"["):
        found = list(jwk_findings(path, content))
        if found:
            return found
    if b"\x00" in content[:1024]:
        return []
    return list(config_findings(path, content, use_detector))


@dataclasses.dataclass
class WalkOptions:
    include: list[str]
    exclude: list[str]
    max_size: int


def _matches(path: str, patterns: list[str]) -> bool:
    name = os.path.basename(path)
    return any(fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(name, pattern) for pattern in patterns)


def walk_files(
    roots: list[str], options: WalkOptions, errors: list[dict[str, str]]
) -> Iterator[tuple[str, os.stat_result]]:
    """Yield regular files below ``roots``. Symlinks are followed only when they stay inside the root they were
    found under; a link out of the tree or a loop is reported and skipped."""
    for root in roots:
        real_root = os.path.realpath(root)
        if os.path.isfile(real_root):
            yield from _file_if_wanted(root, options, errors)
            continue
        if not os.path.isdir(real_root):
            errors.append({"source": root, "error": "not found or not a directory"})
            continue
        visited: set[tuple[int, int]] = set()
        pending = [root]
        while pending:
            directory = pending.pop()
            try:
                info = os.stat(directory)
                if (info.st_dev, info.st_ino) in visited:
                    errors.append({"source": directory, "error": "symlink loop: directory already scanned"})
                    continue
                visited.add((info.st_dev, info.st_ino))
                entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
            except OSError as error:
                errors.append({"source": directory, "error": f"cannot read directory: {error.strerror}"})
                continue
            for entry in entries:
                path = entry.path
                if options.exclude and _matches(path, options.exclude):
                    continue
                if entry.is_symlink():
                    target = os.path.realpath(path)
                    if os.path.commonpath([target, real_root]) != real_root:
                        errors.append({"source": path, "error": "symlink points out of the scanned tree: skipped"})
                        continue
                    if not os.path.exists(target):
                        errors.append({"source": path, "error": "dangling symlink: skipped"})
                        continue
                if entry.is_dir():
                    pending.append(path)
                elif entry.is_file():
                    yield from _file_if_wanted(path, options, errors)


def _file_if_wanted(
    path: str, options: WalkOptions, errors: list[dict[str, str]]
) -> Iterator[tuple[str, os.stat_result]]:
    if options.include and not _matches(path, options.include):
        return
    try:
        info = os.stat(path)
    except OSError as error:
        errors.append({"source": path, "error": f"cannot stat: {error.strerror}"})
        return
    if not stat.S_ISREG(info.st_mode):
        return
    if info.st_size > options.max_size:
        return
    yield path, info


def _owner(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def evaluate(found: KeyFinding, mode: int, policy: dict[str, Any]) -> list[dict[str, str]]:
    findings = []
    world_readable = bool(mode & stat.S_IROTH)
    if found.private and world_readable:
        findings.append(
            finding(
                "world_readable_private_key",
                "critical",
                f"{found.kind} in {found.path} is readable by every user (mode {mode & 0o777:04o})",
            )
        )
    if found.algorithm in SYMMETRIC_ALGORITHMS and found.protected is False:
        findings.append(
            finding(
                "hardcoded_symmetric_key",
                "high",
                f"a {found.length_bits}-bit key is written in clear under '{found.label}'",
            )
        )
    elif found.private and found.protected is False:
        findings.append(
            finding("unencrypted_private_key", "high", f"{found.kind} in {found.path} is stored without a passphrase")
        )
    weak = weak_reason(found, policy)
    if weak:
        findings.append(finding("weak_algorithm", "high", weak))
    return findings


def weak_reason(found: KeyFinding, policy: dict[str, Any]) -> str | None:
    if found.algorithm == "RSA" and isinstance(found.length_bits, int) and found.length_bits < policy["min_rsa_bits"]:
        return f"RSA-{found.length_bits} is below the {policy['min_rsa_bits']}-bit minimum"
    if found.algorithm == "DSA":
        return "DSA is not an approved algorithm"
    if found.algorithm == "EC" and found.length_bits not in ("secp256r1", "secp384r1"):
        return f"curve {found.length_bits} is not approved"
    if found.algorithm in SYMMETRIC_ALGORITHMS and isinstance(found.length_bits, int) and found.length_bits < 256:
        return f"a {found.length_bits}-bit symmetric key is below the 256-bit minimum"
    return None


def to_record(found: KeyFinding, info: os.stat_result, host: str, policy: dict[str, Any]) -> dict[str, Any]:
    mode = info.st_mode & 0o7777
    where = f"{found.path}:{found.line}" if found.line else found.path
    name = f"{os.path.basename(found.path)}:{found.label or found.line or found.kind}"
    record = KeyRecord(
        id=f"file://{host}{where}" + (f"#{found.label}" if found.label and not found.line else ""),
        name=name,
        backend="file",
        location=found.path,
        algorithm=found.algorithm,
        length_bits=found.length_bits,
        created=iso_utc(info.st_mtime),
        state="enabled",
        exportable=True,
        findings=evaluate(found, mode, policy),
        extra={
            "path": found.path,
            "line": found.line,
            "kind": found.kind,
            "entry": found.label,
            "protected": found.protected,
            "file_owner": _owner(info.st_uid),
            "file_mode": f"{mode:04o}",
            "fingerprint_sha256": found.fingerprint_sha256,
            "host": host,
        },
    )
    return record.to_dict()


def scan(
    roots: list[str], options: WalkOptions, policy: dict[str, Any], host: str, use_detector: bool = True
) -> ScanResult:
    errors: list[dict[str, str]] = []
    warnings: list[str] = []
    if use_detector and not HAS_DETECT_SECRETS:
        warnings.append("detect-secrets is not installed on the host: symmetric keys are found by name and length only")
        use_detector = False
    records: list[dict[str, Any]] = []
    scanned = skipped = 0
    for path, info in walk_files(roots, options, errors):
        try:
            with open(path, "rb") as stream:
                content = stream.read(options.max_size + 1)
        except OSError as error:
            errors.append({"source": path, "error": f"cannot read: {error.strerror}"})
            skipped += 1
            continue
        scanned += 1
        try:
            found = file_findings(path, content, use_detector)
        except (ValueError, TypeError, struct.error) as error:
            errors.append({"source": path, "error": f"could not be parsed ({type(error).__name__})"})
            continue
        records.extend(to_record(item, info, host, policy) for item in found)
    return ScanResult(records, errors, scanned, skipped, warnings)


# The options of key_material_scan; key_inventory validates its key-file source against them too.
SCAN_ARGSPEC: dict[str, Any] = {
    "paths": {"type": "list", "elements": "path", "required": True},
    "include": {"type": "list", "elements": "str", "default": []},
    "exclude": {"type": "list", "elements": "str", "default": ["*.git", "node_modules", "__pycache__"]},
    "max_size": {"type": "int", "default": 1048576},
    "use_detector": {"type": "bool", "default": True},
    "policy": {"type": "dict", "default": {}},
}


def scan_files(params: dict[str, Any]) -> dict[str, Any]:
    """What key_material_scan returns, plus ``warnings`` for the caller to hand to module.warn."""
    if not HAS_CRYPTOGRAPHY:
        raise MissingLibrary("cryptography")
    if params["max_size"] < 1:
        raise InvalidInput(
            "Scan for key material",
            None,
            f"max_size {params['max_size']} is not a positive size",
            "Set max_size to a number of bytes, for example 1048576",
        )
    options = WalkOptions(params["include"], params["exclude"], params["max_size"])
    result = scan(params["paths"], options, merged_policy(params["policy"]), socket.getfqdn(), params["use_detector"])
    return {
        "changed": False,
        "records": result.records,
        "errors": result.errors,
        "files_scanned": result.files_scanned,
        "files_skipped": result.files_skipped,
        "warnings": list(result.warnings),
    }
