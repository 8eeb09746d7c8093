# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: certificate discovery in files and on TLS endpoints, certificate facts and findings.

Every source (a file, a PEM block, an endpoint) fails on its own: its error is recorded and the scan goes on.
All times are aware UTC datetimes taken from the certificate (never the machine's local zone); not-after is
inclusive, so a certificate is still valid during its not-after second.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import fnmatch
import functools
import ipaddress
import os
import re
import select
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import IntegrityError, InvalidInput, MissingLibrary
from ansible_collections.keyops.runbooks.plugins.module_utils.policy import (
    evaluate_record,
    merge_findings,
    merged_policy,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.records import KeyRecord, finding, iso_utc, parse_time

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import NameOID

    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported through MissingLibrary
    import traceback

    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()

DEFAULT_INCLUDE = ("*.pem", "*.crt", "*.cer", "*.cert", "*.der", "*.p12", "*.pfx", "*.chain", "*.bundle")
PKCS12_SUFFIXES = (".p12", ".pfx")
MAX_FILE_BYTES = 10 * 1024 * 1024
CERT_PEM_LABELS = frozenset({"CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"})
PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n?(.*?)-----END \1-----", re.DOTALL)
DAY = dt.timedelta(days=1)


def require_cryptography() -> None:
    if CRYPTOGRAPHY_IMPORT_ERROR:
        raise MissingLibrary("cryptography", CRYPTOGRAPHY_IMPORT_ERROR)


@dataclasses.dataclass
class ScanError:
    """One source that could not be read in full. ``block`` is the PEM block index when the error is one block."""

    source: str
    kind: str
    message: str
    block: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Found:
    """A certificate and where it came from."""

    cert: Any
    source: dict[str, Any]


@dataclasses.dataclass
class Endpoint:
    host: str
    port: int = 443
    server_name: str | None = None
    timeout: float = 5.0
    names: list[str] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        sni = f" (SNI {self.server_name})" if self.server_name else ""
        return f"{self.host}:{self.port}{sni}"

    def names_asked(self) -> list[str]:
        return list(self.names) or [self.server_name or self.host]


@dataclasses.dataclass
class ScanOptions:
    as_of: dt.datetime
    window_days: int = 30
    policy: dict[str, Any] = dataclasses.field(default_factory=dict)
    anchors: list[Any] = dataclasses.field(default_factory=list)
    pkcs12_passwords: list[str] = dataclasses.field(default_factory=list)

    @functools.cached_property
    def rules(self) -> dict[str, Any]:
        return merged_policy(self.policy)


# ---------------------------------------------------------------------------------------------------------------
# Reading certificates out of bytes


def _pem_blocks(data: bytes) -> Iterable[tuple[str, bytes]]:
    for match in PEM_BLOCK.finditer(data):
        yield match.group(1).decode("ascii"), match.group(2)


def _pem_body(body: bytes) -> bytes:
    lines = [line.strip() for line in body.splitlines()]
    # RFC 7468 allows explanatory headers (Proc-Type and the like) before a blank line; certificates have none.
    text = b"".join(line for line in lines if line and b":" not in line)
    return base64.b64decode(text, validate=True)


def certificates_from_bytes(
    data: bytes, source: str, passwords: Iterable[str] = (), pkcs12_hint: bool = False
) -> tuple[list[Found], list[ScanError], bool]:
    """(certificates, errors, recognised) for one file's bytes.

    PEM: every CERTIFICATE block wherever it sits among other text; a bad block is an error of its own.
    Otherwise DER, then PKCS#12 (tried first when ``pkcs12_hint``). ``recognised`` is False when the bytes are
    PEM without any certificate block (a key file, say): not an error, just nothing to report.
    """
    if b"-----BEGIN " in data:
        found: list[Found] = []
        errors: list[ScanError] = []
        index = -1
        for label, body in _pem_blocks(data):
            if label not in CERT_PEM_LABELS:
                continue
            index += 1
            try:
                der = _pem_body(body)
                cert = x509.load_der_x509_certificate(der) if label != "TRUSTED CERTIFICATE" else _load_trusted(der)
            except (ValueError, binascii.Error) as error:
                errors.append(
                    ScanError(
                        source, "file", f"PEM block {index} is not a readable certificate: {_short(error)}", index
                    )
                )
                continue
            found.append(Found(cert, {"type": "file", "path": source, "format": "pem", "block": index}))
        # A BEGIN line without its END (a file cut short by a copy or a full disk) matches no block above.
        begun = sum(data.count(b"-----BEGIN " + label.encode("ascii") + b"-----") for label in CERT_PEM_LABELS)
        if begun > index + 1:
            errors.append(
                ScanError(source, "file", f"{begun - index - 1} PEM certificate block(s) have no END line: truncated")
            )
        return found, errors, begun > 0

    attempts = (_from_pkcs12, _from_der) if pkcs12_hint else (_from_der, _from_pkcs12)
    reasons = []
    for attempt in attempts:
        try:
            return attempt(data, source, passwords), [], True
        except _NotThisFormat as reason:
            reasons.append(str(reason))
    if pkcs12_hint and _looks_like_pkcs12(data):
        return [], [ScanError(source, "file", reasons[0])], True
    return [], [ScanError(source, "file", "not a PEM, DER or PKCS#12 certificate file")], True


class _NotThisFormat(Exception):
    pass


def _load_trusted(der: bytes) -> Any:
    # OpenSSL's TRUSTED CERTIFICATE is a DER certificate followed by trust settings: read the first element.
    if len(der) < 4 or der[0] != 0x30:
        raise ValueError("not a DER sequence")
    length_byte = der[1]
    if length_byte < 0x80:
        end = 2 + length_byte
    else:
        count = length_byte & 0x7F
        end = 2 + count + int.from_bytes(der[2 : 2 + count], "big")
    return x509.load_der_x509_certificate(der[:end])


def _from_der(data: bytes, source: str, _passwords: Iterable[str]) -> list[Found]:
    try:
        cert = x509.load_der_x509_certificate(data)
    except ValueError as error:
        raise _NotThisFormat(f"not a DER certificate: {_short(error)}") from None
    return [Found(cert, {"type": "file", "path": source, "format": "der", "block": 0})]


def _looks_like_pkcs12(data: bytes) -> bool:
    # PFX starts with a SEQUENCE whose first element is INTEGER 3 (the version).
    return data[:1] == b"\x30" and b"\x02\x01\x03" in data[:8]


def _from_pkcs12(data: bytes, source: str, passwords: Iterable[str]) -> list[Found]:
    if not _looks_like_pkcs12(data):
        raise _NotThisFormat("not a PKCS#12 file")
    # Each try costs a full key derivation, so the operator's passwords go first.
    candidates: list[bytes | None] = [password.encode() for password in passwords] + [None, b""]
    for password in candidates:
        try:
            bundle = pkcs12.load_pkcs12(data, password)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
        certs = ([bundle.cert.certificate] if bundle.cert else []) + [
            item.certificate for item in bundle.additional_certs
        ]
        # The bundle's private key is dropped here: an inventory never holds key material.
        return [
            Found(cert, {"type": "file", "path": source, "format": "pkcs12", "block": index})
            for index, cert in enumerate(certs)
        ]
    raise _NotThisFormat(
        "PKCS#12 file could not be opened with any of the given pkcs12_passwords (wrong password "
        "or unsupported encryption); add its password to pkcs12_passwords"
    )


def _short(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]


def read_file(
    path: str, passwords: Iterable[str], max_bytes: int = MAX_FILE_BYTES
) -> tuple[list[Found], list[ScanError], bool]:
    try:
        size = os.stat(path).st_size
        if size > max_bytes:
            return (
                [],
                [
                    ScanError(
                        path,
                        "file",
                        f"file is {size} bytes, over the {max_bytes}-byte limit; exclude it or raise max_file_bytes",
                    )
                ],
                True,
            )
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        return [], [ScanError(path, "file", f"cannot read the file: {error.strerror or _short(error)}")], True
    return certificates_from_bytes(data, path, passwords, path.lower().endswith(PKCS12_SUFFIXES))


def load_anchors(path: str | None) -> list[Any]:
    """Trust anchors from a PEM bundle; an unreadable bundle is an option error, not a per-source one."""
    if not path:
        return []
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise InvalidInput(
            "Read CA bundle",
            None,
            f"'{path}' cannot be read ({error.strerror})",
            "Point ca_bundle at a readable PEM file of trusted CA certificates",
        ) from None
    found, _errors, _seen = certificates_from_bytes(data, path)
    if not found:
        raise InvalidInput(
            "Read CA bundle",
            None,
            f"'{path}' holds no PEM certificate",
            "Point ca_bundle at a PEM file of trusted CA certificates",
        )
    return [item.cert for item in found]


# ---------------------------------------------------------------------------------------------------------------
# Finding files


def _matches(path: str, patterns: Iterable[str]) -> bool:
    name = os.path.basename(path)
    return any(fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(path, pattern) for pattern in patterns)


def discover_files(
    paths: Iterable[str], include: Iterable[str], exclude: Iterable[str], recurse: bool, follow_symlinks: bool = False
) -> tuple[list[str], list[ScanError]]:
    """Files to scan: named files always (unless excluded), directory members that match ``include``."""
    include, exclude = list(include), list(exclude)
    files: list[str] = []
    errors: list[ScanError] = []
    for root in paths:
        if os.path.isfile(root):
            if not _matches(root, exclude):
                files.append(root)
            continue
        if not os.path.isdir(root):
            errors.append(ScanError(root, "file", "no such file or directory"))
            continue

        def walk_error(error: OSError, top: str = root) -> None:
            errors.append(ScanError(error.filename or top, "file", f"cannot list the directory: {error.strerror}"))

        for directory, subdirs, names in os.walk(root, onerror=walk_error, followlinks=follow_symlinks):
            subdirs[:] = sorted(
                sub for sub in subdirs if recurse and not _matches(os.path.join(directory, sub), exclude)
            )
            for name in sorted(names):
                path = os.path.join(directory, name)
                if (
                    _matches(path, include)
                    and not _matches(path, exclude)
                    and (follow_symlinks or not os.path.islink(path))
                ):
                    files.append(path)
    return files, errors


# ---------------------------------------------------------------------------------------------------------------
# TLS endpoints


def fetch_served_chain(endpoint: Endpoint) -> list[Any]:
    """The certificates an endpoint serves, in the order it sends them. Accepts any certificate on purpose."""
    try:
        from OpenSSL import SSL
    except ImportError:
        import traceback

        raise MissingLibrary("pyOpenSSL", traceback.format_exc()) from None

    deadline = time.monotonic() + endpoint.timeout
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_verify(SSL.VERIFY_NONE, lambda *_: True)
    # The point is to see weak and legacy certificates, so OpenSSL's security level must not refuse them.
    context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    sock = socket.create_connection((endpoint.host, endpoint.port), timeout=endpoint.timeout)
    try:
        sock.setblocking(False)
        connection = SSL.Connection(context, sock)
        if endpoint.server_name:
            connection.set_tlsext_host_name(endpoint.server_name.encode("idna"))
        connection.set_connect_state()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("TLS handshake timed out")
            try:
                connection.do_handshake()
                break
            except SSL.WantReadError:
                select.select([sock], [], [], remaining)
            except SSL.WantWriteError:
                select.select([], [sock], [], remaining)
        chain = connection.get_peer_cert_chain(as_cryptography=True) or []
        # The chain is in hand; a peer that drops the close_notify changes nothing.
        with contextlib.suppress(SSL.Error):
            connection.shutdown()
        return list(chain)
    finally:
        sock.close()


def _endpoint_error(error: BaseException) -> str:
    if isinstance(error, (TimeoutError, socket.timeout)):
        return "timed out; raise the endpoint's timeout or check that it listens"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused: nothing listens on that port"
    if isinstance(error, socket.gaierror):
        return "host name does not resolve"
    if isinstance(error, OSError) and error.strerror:
        return f"cannot connect: {error.strerror}"
    return f"TLS handshake failed: {_short(error)}"


# ---------------------------------------------------------------------------------------------------------------
# Facts and findings


def hex_serial(cert: Any) -> str:
    serial = cert.serial_number
    width = max(1, (serial.bit_length() + 7) // 8)
    return serial.to_bytes(width, "big", signed=False).hex() if serial >= 0 else hex(serial)


def _key_facts(cert: Any) -> dict[str, Any]:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return {"key_type": "RSA", "key_size": key.key_size, "curve": None}
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"key_type": "EC", "key_size": key.curve.key_size, "curve": key.curve.name}
    if isinstance(key, ed25519.Ed25519PublicKey):
        return {"key_type": "Ed25519", "key_size": 256, "curve": "Ed25519"}
    if isinstance(key, ed448.Ed448PublicKey):
        return {"key_type": "Ed448", "key_size": 456, "curve": "Ed448"}
    if isinstance(key, dsa.DSAPublicKey):
        return {"key_type": "DSA", "key_size": key.key_size, "curve": None}
    return {"key_type": type(key).__name__, "key_size": None, "curve": None}


def _signature_facts(cert: Any) -> dict[str, Any]:
    oid = cert.signature_algorithm_oid
    name = getattr(oid, "_name", None) or oid.dotted_string
    try:
        digest = cert.signature_hash_algorithm
        hash_name = digest.name if digest else None
    except UnsupportedAlgorithm:
        lowered = name.lower()
        hash_name = next((candidate for candidate in ("md5", "md2", "sha1") if candidate in lowered), None)
    return {"signature_algorithm": name, "signature_hash": hash_name}


def general_name(name: Any) -> str:
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    return f"{type(name).__name__}:{name.value}"


def _rfc4514(name: Any) -> str:
    try:
        return name.rfc4514_string()
    except ValueError:
        return "(unreadable name)"


def common_names_of(name: Any) -> list[str]:
    try:
        return [str(attribute.value) for attribute in name.get_attributes_for_oid(NameOID.COMMON_NAME)]
    except ValueError:
        return []


def _common_names(cert: Any) -> list[str]:
    return common_names_of(cert.subject)


def _is_self_issued(cert: Any) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
        return True
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False


def covers_name(sans: list[str], common_names: list[str], name: str) -> bool:
    """RFC 6125 matching: SANs when present (a wildcard covers one left-most label), CN only without SANs."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        address = None
    if address is not None:
        return f"IP:{address}" in sans
    wanted = name.lower().rstrip(".")
    dns_names = [san[4:] for san in sans if san.startswith("DNS:")]
    candidates = dns_names if sans else common_names
    for candidate in candidates:
        pattern = candidate.lower().rstrip(".")
        if pattern == wanted:
            return True
        if pattern.startswith("*.") and "." in wanted:
            head, _dot, rest = wanted.partition(".")
            if head and rest == pattern[2:]:
                return True
    return False


@dataclasses.dataclass
class ChainCheck:
    """How a served chain relates to the trust anchors: in order, complete, verified."""

    in_order: bool
    complete: bool
    verified: bool | None
    reason: str | None


def check_chain(chain: list[Any], anchors: list[Any]) -> ChainCheck:
    """Walk issuer links from the leaf through the served certificates to an anchor, checking signatures.

    Expiry, key sizes and names have findings of their own, so they do not make a chain fail here.
    """
    if not chain:
        return ChainCheck(False, False, None, "no certificate served")
    in_order = all(_issued_by(chain[index], chain[index + 1]) for index in range(len(chain) - 1))
    current = chain[0]
    pool = list(chain[1:])
    for _step in range(len(chain) + 1):
        anchor = next((item for item in anchors if _issued_by(current, item)), None)
        if anchor is not None:
            return ChainCheck(in_order, True, True, None)
        if _is_self_issued(current):
            reason = "the chain ends in a self-signed certificate that is not in the CA bundle"
            return ChainCheck(in_order, True, False if anchors else None, reason)
        issuer = next((item for item in pool if _issued_by(current, item)), None)
        if issuer is None:
            break
        pool.remove(issuer)
        current = issuer
    issuer_name = _rfc4514(current.issuer)
    reason = f"no certificate for issuer '{issuer_name}' was served or is in the CA bundle"
    return ChainCheck(in_order, False, False if anchors else None, reason)


def _issued_by(cert: Any, issuer: Any) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _extensions(cert: Any, errors: list[str]) -> dict[str, Any]:
    facts: dict[str, Any] = {"sans": [], "is_ca": False, "extended_key_usage": []}
    try:
        extensions = cert.extensions
    except ValueError as error:
        errors.append(f"an extension cannot be parsed ({_short(error)}); SANs, CA flag and key usages unknown")
        facts["sans"] = None
        return facts
    for extension in extensions:
        value = extension.value
        if isinstance(value, x509.SubjectAlternativeName):
            facts["sans"] = [general_name(name) for name in value]
        elif isinstance(value, x509.BasicConstraints):
            facts["is_ca"] = value.ca
        elif isinstance(value, x509.ExtendedKeyUsage):
            facts["extended_key_usage"] = [getattr(oid, "_name", oid.dotted_string) for oid in value]
    return facts


def _key_class(facts: dict[str, Any], endpoint: bool) -> str:
    usages = facts["extended_key_usage"]
    if facts["is_ca"] or (not endpoint and usages and "serverAuth" not in usages and "clientAuth" not in usages):
        return "signing"
    return "tls-cert"


def describe(
    item: Found, options: ScanOptions, names: list[str] | None = None, chain: ChainCheck | None = None
) -> tuple[KeyRecord, list[str]]:
    """The KeyRecord of one certificate, and the problems met while reading it (for the source's error list)."""
    cert = item.cert
    problems: list[str] = []
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    facts = _extensions(cert, problems)
    facts.update(_key_facts(cert))
    facts.update(_signature_facts(cert))
    common_names = _common_names(cert)
    endpoint = item.source["type"] == "endpoint"
    key_class = _key_class(facts, endpoint)
    lifetime = not_after - not_before
    # Not-after is inclusive: the certificate is valid through that second.
    expired = options.as_of > not_after
    seconds_left = (not_after - options.as_of).total_seconds()
    days_left = int(seconds_left // 86400)
    renewal_due = min(not_after - dt.timedelta(days=options.window_days), not_before + lifetime * 2 / 3)

    name_matches = None
    if names:
        if facts["sans"] is None:
            problems.append("name coverage unknown: the SAN extension cannot be parsed")
        else:
            name_matches = all(covers_name(facts["sans"], common_names, name) for name in names)

    record = KeyRecord(
        id=f"sha256:{fingerprint}",
        name=(common_names[0] if common_names else (facts["sans"] or [fingerprint[:16]])[0]),
        backend="x509",
        location=source_label(item.source),
        key_class=key_class,
        algorithm=facts["key_type"],
        length_bits=facts["curve"] or facts["key_size"],
        created=iso_utc(not_before),
        expires=iso_utc(not_after),
        next_rotation_due=iso_utc(renewal_due),
        state="expired" if expired else "enabled",
        exportable=None,
    )
    record.extra = {
        "subject": _rfc4514(cert.subject),
        "sans": facts["sans"],
        "issuer": _rfc4514(cert.issuer),
        "serial": hex_serial(cert),
        "not_before": iso_utc(not_before),
        "not_after": iso_utc(not_after),
        "days_left": days_left,
        "key_type": facts["key_type"],
        "key_size": facts["key_size"],
        "curve": facts["curve"],
        "signature_algorithm": facts["signature_algorithm"],
        "signature_hash": facts["signature_hash"],
        "self_signed": _is_self_issued(cert),
        "is_ca": facts["is_ca"],
        "extended_key_usage": facts["extended_key_usage"],
        "fingerprint_sha256": fingerprint,
        "source": dict(item.source),
        "names_asked": list(names or []),
        "name_matches": name_matches,
        "chain_in_order": chain.in_order if chain else None,
        "chain_complete": chain.complete if chain else None,
        "chain_verified": chain.verified if chain else None,
        "chain_problem": chain.reason if chain else None,
        "errors": list(problems),
    }
    record.findings = certificate_findings(record, options, not_before, not_after)
    return record, problems


# Findings this module decides itself; the rest (key sizes, approved curves and families, validity length) come
# from the collection's policy checks, so every inventory reports them the same way.
OWN_CODES = frozenset(
    {
        "cert_expired",
        "cert_expiring",
        "not_yet_valid",
        "weak_signature",
        "name_mismatch",
        "incomplete_chain",
        "untrusted_chain",
        "chain_order",
        "unreadable_field",
    }
)


def certificate_findings(
    record: KeyRecord, options: ScanOptions, not_before: dt.datetime, not_after: dt.datetime
) -> list[dict[str, str]]:
    rules = options.rules
    facts = record.extra

    def add(code: str, default: str, message: str) -> None:
        found.append(finding(code, rules["finding_severities"].get(code, default), message))

    found: list[dict[str, str]] = []
    days_left = facts["days_left"]
    if options.as_of > not_after:
        add("cert_expired", "high", f"expired on {facts['not_after']} ({-days_left} day(s) ago)")
    elif days_left < options.window_days:
        add(
            "cert_expiring",
            "medium",
            f"expires on {facts['not_after']}, {days_left} day(s) left (window {options.window_days} days)",
        )
    if options.as_of < not_before:
        add("not_yet_valid", "medium", f"valid only from {facts['not_before']}")

    weak_hashes = [name.lower() for name in rules["weak_signature_hashes"]] + ["md2"]
    if facts["signature_hash"] and facts["signature_hash"].lower() in weak_hashes:
        if facts["self_signed"]:
            # Nobody relies on a trust anchor's self-signature, but the certificate still says SHA-1/MD5.
            found.append(finding("weak_signature", "low", f"self-signed with {facts['signature_algorithm']}"))
        else:
            add("weak_signature", "high", f"signed with {facts['signature_algorithm']}")

    if facts["name_matches"] is False:
        add(
            "name_mismatch",
            "high",
            f"does not cover {', '.join(facts['names_asked'])} (SANs: {', '.join(facts['sans'] or []) or 'none'})",
        )
    if facts["chain_complete"] is False:
        add("incomplete_chain", "high", facts["chain_problem"] or "the served chain is incomplete")
    elif facts["chain_verified"] is False:
        add("untrusted_chain", "high", facts["chain_problem"] or "the chain does not verify")
    if facts["chain_in_order"] is False and facts["chain_complete"]:
        add("chain_order", "low", "the served chain is not in issuing order")
    if facts["errors"]:
        add("unreadable_field", "medium", "; ".join(facts["errors"]))

    shared = [item for item in evaluate_record(record, options.policy, options.as_of) if item["code"] not in OWN_CODES]
    return merge_findings(found, shared)


def source_label(source: dict[str, Any]) -> str:
    if source["type"] == "endpoint":
        sni = f" sni={source['server_name']}" if source.get("server_name") else ""
        return f"{source['host']}:{source['port']}{sni} #{source['position']}"
    return f"{source['path']}#{source['block']}"


# ---------------------------------------------------------------------------------------------------------------
# The scan


@dataclasses.dataclass
class ScanResult:
    records: list[KeyRecord]
    errors: list[ScanError]
    files: int
    endpoints: int


def _scan_file(path: str, options: ScanOptions, max_file_bytes: int) -> tuple[list[KeyRecord], list[ScanError]]:
    found, errors, _recognised = read_file(path, options.pkcs12_passwords, max_file_bytes)
    records = []
    for item in found:
        try:
            record, problems = describe(item, options)
        except (ValueError, TypeError, UnsupportedAlgorithm) as error:
            errors.append(
                ScanError(path, "file", f"certificate cannot be described: {_short(error)}", item.source["block"])
            )
            continue
        records.append(record)
        errors.extend(ScanError(path, "file", problem, item.source["block"]) for problem in problems)
    return records, errors


def _scan_endpoint(
    endpoint: Endpoint, options: ScanOptions, fetch: Callable[[Endpoint], list[Any]]
) -> tuple[list[KeyRecord], list[ScanError]]:
    try:
        chain = fetch(endpoint)
    except MissingLibrary:
        raise
    except Exception as error:  # any failure of one endpoint is that endpoint's error, by design
        return [], [ScanError(endpoint.label, "endpoint", _endpoint_error(error))]
    if not chain:
        return [], [ScanError(endpoint.label, "endpoint", "the server sent no certificate")]
    check = check_chain(chain, options.anchors)
    served = [cert.fingerprint(hashes.SHA256()).hex() for cert in chain]
    records: list[KeyRecord] = []
    errors: list[ScanError] = []
    for position, cert in enumerate(chain):
        source = {
            "type": "endpoint",
            "host": endpoint.host,
            "port": endpoint.port,
            "server_name": endpoint.server_name,
            "position": position,
            "served_chain": served,
        }
        leaf = position == 0
        try:
            record, problems = describe(
                Found(cert, source), options, endpoint.names_asked() if leaf else None, check if leaf else None
            )
        except (ValueError, TypeError, UnsupportedAlgorithm) as error:
            errors.append(
                ScanError(
                    endpoint.label, "endpoint", f"certificate {position} cannot be described: {_short(error)}", position
                )
            )
            continue
        records.append(record)
        errors.extend(ScanError(endpoint.label, "endpoint", problem, position) for problem in problems)
    return records, errors


def scan(
    files: list[str],
    endpoints: list[Endpoint],
    options: ScanOptions,
    workers: int = 16,
    fetch: Callable[[Endpoint], list[Any]] = fetch_served_chain,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> ScanResult:
    """Scan every file and endpoint with a bounded pool; results keep the input order."""
    require_cryptography()
    jobs: list[Callable[[], tuple[list[KeyRecord], list[ScanError]]]] = []
    jobs += [lambda path=path: _scan_file(path, options, max_file_bytes) for path in files]
    jobs += [lambda endpoint=endpoint: _scan_endpoint(endpoint, options, fetch) for endpoint in endpoints]
    records: list[KeyRecord] = []
    errors: list[ScanError] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for found, failed in pool.map(lambda job: job(), jobs):
            records.extend(found)
            errors.extend(failed)
    return ScanResult(records, errors, len(files), len(endpoints))


def as_of_time(value: Any) -> dt.datetime:
    """``as_of`` option or now, as aware UTC (a naive value is read as UTC, never as local time)."""
    if value in (None, ""):
        return dt.datetime.now(dt.UTC)
    try:
        moment = parse_time(value)
    except ValueError:
        raise InvalidInput(
            "Scan certificates",
            None,
            f"as_of '{value}' is not an ISO 8601 time",
            "Give as_of like 2027-01-31T00:00:00Z",
        ) from None
    return moment or dt.datetime.now(dt.UTC)


def summarise(result: ScanResult, seconds: float) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for record in result.records:
        for item in record.findings:
            counts[item["code"]] = counts.get(item["code"], 0) + 1
    return {
        "files": result.files,
        "endpoints": result.endpoints,
        "certificates": len(result.records),
        "errors": len(result.errors),
        "findings": dict(sorted(counts.items())),
        "seconds": round(seconds, 3),
    }


def certificate_pem(cert: Any) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# The options of x509_inventory; key_inventory validates its certificate source against them too.
INVENTORY_ARGSPEC: dict[str, Any] = dict(
    paths=dict(type="list", elements="path", default=[]),
    include=dict(type="list", elements="str", default=list(DEFAULT_INCLUDE)),
    exclude=dict(type="list", elements="str", default=[]),
    recurse=dict(type="bool", default=True),
    follow_symlinks=dict(type="bool", default=False),
    max_file_bytes=dict(type="int", default=MAX_FILE_BYTES),
    pkcs12_passwords=dict(type="list", elements="str", default=[], no_log=True),
    endpoints=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(
            host=dict(type="str", required=True),
            port=dict(type="int", default=443),
            server_name=dict(type="str"),
            names=dict(type="list", elements="str"),
            timeout=dict(type="float"),
        ),
    ),
    timeout=dict(type="float", default=5),
    ca_bundle=dict(type="path"),
    expiry_window_days=dict(type="int"),
    as_of=dict(type="str"),
    workers=dict(type="int", default=16),
    fail_on_errors=dict(type="bool", default=False),
    policy=dict(type="dict", default={}),
)


def inventory_scan(params: dict[str, Any]) -> dict[str, Any]:
    """What x509_inventory returns: certificates in files and on TLS endpoints, with the sources that failed."""
    require_cryptography()
    if not params["paths"] and not params["endpoints"]:
        raise InvalidInput("Scan certificates", None, "nothing to scan", "Give paths, endpoints or both")
    started = time.monotonic()
    policy = merged_policy(params["policy"])
    window = params["expiry_window_days"]
    options = ScanOptions(
        as_of=as_of_time(params["as_of"]),
        window_days=policy["certificate_renewal_window_days"] if window is None else window,
        policy=params["policy"],
        anchors=load_anchors(params["ca_bundle"]),
        pkcs12_passwords=params["pkcs12_passwords"],
    )
    files, walk_errors = discover_files(
        params["paths"], params["include"], params["exclude"], params["recurse"], params["follow_symlinks"]
    )
    endpoints = [
        Endpoint(
            host=item["host"],
            port=item["port"],
            server_name=item["server_name"],
            timeout=item["timeout"] or params["timeout"],
            names=item["names"] or [],
        )
        for item in params["endpoints"]
    ]
    result = scan(files, endpoints, options, params["workers"], max_file_bytes=params["max_file_bytes"])
    result.errors[:0] = walk_errors
    report = {
        "changed": False,
        "records": [record.to_dict() for record in result.records],
        "errors": [error.to_dict() for error in result.errors],
        "summary": summarise(result, time.monotonic() - started),
    }
    if params["fail_on_errors"] and result.errors:
        raise IntegrityError(
            "Scan certificates",
            None,
            f"{len(result.errors)} source(s) could not be read (first: {result.errors[0].source}: "
            f"{result.errors[0].message})",
            "Fix or exclude those sources, or set fail_on_errors=false to report them only",
            **report,
        )
    return report
