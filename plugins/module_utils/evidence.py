# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the evidence package for auditors, and its verification.

One folder (and one tar.gz of it) with the written procedure rendered to HTML, the reports and records the runbooks
wrote, the key register, the policy in force, the audit-log excerpt with its chain verification and the role
definitions, plus ``manifest.json`` (SHA-256 and size of every file) signed with Ed25519 (``manifest.json.sig``).
A verifier holding the public key finds every changed, missing or added file.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import gzip
import html
import io
import json
import os
import re
import shutil
import tarfile
import traceback
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.audit import GENESIS_HASH, parse_record, verify_log
from ansible_collections.keyops.runbooks.plugins.module_utils.canonical import sha256_file, sha256_hex
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    IntegrityError,
    InvalidInput,
    KeyNotFound,
    MissingLibrary,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.policy import merged_policy
from ansible_collections.keyops.runbooks.plugins.module_utils.records import iso_utc, parse_time, utc_now
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_backup import write_private

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
except ImportError:
    CRYPTOGRAPHY_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    CRYPTOGRAPHY_IMPORT_ERROR = None

try:
    from markdown_it import MarkdownIt
except ImportError:
    MarkdownIt = None

FORMAT = "keyops-evidence/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
# Never collected, whatever the sources say: anything that could hold a secret or a key.
NEVER = (
    "*.agekey",
    "*.pem.key",
    "*signing-key.pem",
    "*.p12",
    "*.pfx",
    "env.sh",
    "lab.json",
    "*.age",
    "*.snap",
    "*.wrapped",
    "*.sqlite",
    "raft-init.json",
)


def _require_cryptography() -> None:
    if CRYPTOGRAPHY_IMPORT_ERROR:
        raise MissingLibrary("cryptography", CRYPTOGRAPHY_IMPORT_ERROR)


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    write_private(path, data)


def _excluded(relative: str, exclude: list[str]) -> bool:
    name = os.path.basename(relative)
    return any(fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(relative, pattern) for pattern in (*NEVER, *exclude))


# ---------------------------------------------------------------------------------------------------------------
# Collecting


def collect_sources(staging: str, sources: list[dict[str, Any]], exclude: list[str]) -> list[dict[str, str]]:
    """Copy each source file or folder to ``<staging>/<dest>``; missing optional sources are listed, not fatal."""
    absent = []
    for source in sources:
        path, dest = source["path"], source["dest"]
        if not os.path.exists(path):
            if source.get("required"):
                raise KeyNotFound(
                    "Collect evidence", None, f"{path} does not exist", f"Run the runbook that writes {dest} first"
                )
            absent.append({"path": path, "dest": dest})
            continue
        if os.path.isfile(path):
            if not _excluded(os.path.basename(path), exclude):
                with open(path, "rb") as handle:
                    _write(os.path.join(staging, dest), handle.read())
            continue
        for folder, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                full = os.path.join(folder, name)
                relative = os.path.relpath(full, path)
                if _excluded(relative, exclude) or name.startswith(".keyops-"):
                    continue
                with open(full, "rb") as handle:
                    _write(os.path.join(staging, dest, relative), handle.read())
    return absent


def render_docs(staging: str, docs: list[str]) -> list[str]:
    """Each Markdown file as itself and as HTML (markdown-it-py), under procedure/."""
    rendered = []
    for path in docs:
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        stem = os.path.splitext(os.path.basename(path))[0]
        if os.path.basename(os.path.dirname(os.path.abspath(path))) == "runbooks":
            stem = f"runbook-{stem}"
        _write(os.path.join(staging, "procedure", f"{stem}.md"), text.encode())
        if MarkdownIt is not None:
            body = MarkdownIt("commonmark").enable("table").render(text)
        else:
            body = f"<pre>{html.escape(text)}</pre>"
        page = (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(stem)}</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #999;padding:.2em .5em}code{background:#eee}</style></head>\n"
            f"<body>\n{body}</body></html>\n"
        )
        _write(os.path.join(staging, "procedure", f"{stem}.html"), page.encode())
        rendered.append(f"procedure/{stem}.html")
    return rendered


def audit_excerpt(staging: str, log: str | None, anchor_path: str | None, days: int) -> dict[str, Any]:
    """The log's tail since ``days`` ago, verbatim (so its hashes hold), and the chain verification of both."""
    if not log or not os.path.isfile(log):
        result = {"log": log, "present": False, "note": "no audit log at this path: the package has no audit excerpt"}
        _write(os.path.join(staging, "audit", "chain-verification.json"), _json(result))
        return result
    whole = verify_log(log, anchor_path)
    cutoff = utc_now() - dt.timedelta(days=days)
    with open(log, encoding="utf-8", errors="replace") as handle:
        lines = handle.readlines()
    start = len(lines)
    for index, line in enumerate(lines):
        record = parse_record(line)
        when = parse_time((record or {}).get("ts"))
        if when is not None and when >= cutoff:
            start = index
            break
    excerpt = lines[start:]
    first = parse_record(excerpt[0]) if excerpt else None
    start_hash = (first or {}).get("prev_hash") or GENESIS_HASH
    excerpt_path = os.path.join(staging, "audit", "audit-excerpt.jsonl")
    _write(excerpt_path, "".join(excerpt).encode())
    part = verify_log(excerpt_path, None, start_hash)
    result = {
        "log": log,
        "present": True,
        "since": iso_utc(cutoff),
        "whole_log": {
            key: whole[key] for key in ("ok", "count", "runs", "first_broken", "last_hash", "anchors_checked")
        },
        "excerpt": {
            "file": "audit/audit-excerpt.jsonl",
            "start_hash": start_hash,
            "lines": len(excerpt),
            **{key: part[key] for key in ("ok", "count", "first_broken", "last_hash")},
        },
        "how_to_verify": "scripts/keyops-audit-verify audit/audit-excerpt.jsonl --start-hash <start_hash>",
    }
    _write(os.path.join(staging, "audit", "chain-verification.json"), _json(result))
    return result


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode()


# ---------------------------------------------------------------------------------------------------------------
# Manifest, signature, archive


def load_private_key(path: str) -> Any:
    _require_cryptography()
    try:
        with open(path, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise InvalidInput(
            "Read evidence signing key",
            None,
            f"{path} is not a readable unencrypted PEM private key",
            "Set signing_key to the Ed25519 private key file (PKCS#8 PEM)",
        ) from error
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InvalidInput(
            "Read evidence signing key", None, f"{path} is not an Ed25519 key", "Use an Ed25519 signing key"
        )
    return key


def load_public_key(path: str) -> Any:
    _require_cryptography()
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        key = (
            serialization.load_ssh_public_key(data)
            if data.startswith(b"ssh-ed25519")
            else serialization.load_pem_public_key(data)
        )
    except (OSError, ValueError, TypeError) as error:
        raise InvalidInput(
            "Read evidence public key",
            None,
            f"{path} is not a readable PEM or OpenSSH public key",
            "Set public_key to the signer's Ed25519 public key",
        ) from error
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise InvalidInput("Read evidence public key", None, f"{path} is not an Ed25519 key", "Use an Ed25519 key")
    return key


def public_fingerprint(key: Any) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(bytes.fromhex(sha256_hex(raw))).decode().rstrip("=")


def list_files(folder: str) -> list[str]:
    found = []
    for root, _dirs, names in os.walk(folder):
        for name in names:
            relative = os.path.relpath(os.path.join(root, name), folder)
            if relative not in (MANIFEST, SIGNATURE):
                found.append(relative)
    return sorted(found)


def manifest_for(folder: str, package_id: str, period_days: int, signer: str, notes: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "package_id": package_id,
        "period_days": period_days,
        "signer": {"algorithm": "Ed25519", "public_key_fingerprint": signer},
        "notes": notes,
        "files": [
            {
                "path": relative,
                "sha256": sha256_file(os.path.join(folder, relative)),
                "bytes": os.path.getsize(os.path.join(folder, relative)),
            }
            for relative in list_files(folder)
        ],
    }


def write_archive(folder: str, archive: str) -> None:
    """A tar.gz with sorted names, fixed owners and times, so the same folder gives the same bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        base = os.path.basename(folder.rstrip(os.sep))
        for relative in [*list_files(folder), MANIFEST, SIGNATURE]:
            info = tar.gettarinfo(os.path.join(folder, relative), arcname=f"{base}/{relative}")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o600
            with open(os.path.join(folder, relative), "rb") as handle:
                tar.addfile(info, handle)
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0) as stream:
        stream.write(buffer.getvalue())
    write_private(archive, compressed.getvalue())


# The package id becomes a folder name the build replaces (rmtree + rename): one plain segment, never a path.
_PACKAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def build(params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """Collect into a staging folder, compare with the package already there, replace it only when different."""
    output_dir, package_id = params["output_dir"], params["package_id"]
    if not _PACKAGE_ID.match(package_id or ""):
        raise InvalidInput(
            "Build evidence package",
            None,
            f"package_id {package_id[:80]!r} is not a plain name (letters, digits, '-', '_', '.'; no slash)",
            "Set package_id to a plain name, for example 2026-q4",
        )
    folder = os.path.join(output_dir, f"evidence-{package_id}")
    archive = folder + ".tar.gz"
    key = load_private_key(params["signing_key"])
    signer = public_fingerprint(key.public_key())
    os.makedirs(output_dir, mode=0o700, exist_ok=True)
    staging = os.path.join(output_dir, f".keyops-evidence-{package_id}-{os.getpid()}")
    try:
        absent = collect_sources(staging, params["sources"], params["exclude"])
        rendered = render_docs(staging, params["docs"])
        _write(os.path.join(staging, "policy", "policy-in-force.json"), _json(merged_policy(params.get("policy"))))
        audit = audit_excerpt(staging, params.get("audit_log"), params.get("audit_anchor_path"), params["days"])
        _write(
            os.path.join(staging, "signing-key.pub.pem"),
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        )
        notes = {
            "absent_sources": absent,
            "audit_log_present": audit["present"],
            "audit_chain_ok": (audit.get("whole_log") or {}).get("ok"),
        }
        manifest = manifest_for(staging, package_id, params["days"], signer, notes)
        previous = read_manifest(folder)
        same = previous is not None and {k: v for k, v in previous.items() if k != "created"} == manifest
        if same and os.path.isfile(archive) and verify(folder, key.public_key())["ok"]:
            return {
                "changed": False,
                "path": folder,
                "archive": archive,
                "manifest": previous,
                "rendered": rendered,
                "audit": audit,
            }
        manifest["created"] = iso_utc(utc_now())
        if check_mode:
            return {
                "changed": True,
                "path": folder,
                "archive": archive,
                "manifest": manifest,
                "rendered": rendered,
                "audit": audit,
            }
        body = _json(manifest)
        write_private(os.path.join(staging, MANIFEST), body)
        write_private(os.path.join(staging, SIGNATURE), base64.b64encode(key.sign(body)) + b"\n")
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        os.replace(staging, folder)
        os.chmod(folder, 0o700)
        write_archive(folder, archive)
        return {
            "changed": True,
            "path": folder,
            "archive": archive,
            "manifest": manifest,
            "rendered": rendered,
            "audit": audit,
        }
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging)


# ---------------------------------------------------------------------------------------------------------------
# Verifying


def read_manifest(folder: str) -> dict[str, Any] | None:
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        try:
            return json.load(handle)
        except ValueError:
            return None


def unpack(archive: str, into: str) -> str:
    """Extract a package archive (regular files only, no paths outside) and return its folder."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [member for member in tar.getmembers() if member.isfile()]
        for member in members:
            if member.name.startswith("/") or ".." in member.name.split("/"):
                raise IntegrityError(
                    "Unpack evidence package",
                    None,
                    f"{archive} holds a path outside the package ({member.name})",
                    "Do not trust this archive",
                )
        tar.extractall(into, members=members, filter="data")
    roots = {member.name.split("/", 1)[0] for member in members}
    if len(roots) != 1:
        raise IntegrityError(
            "Unpack evidence package", None, f"{archive} is not one package folder", "Do not trust this archive"
        )
    return os.path.join(into, roots.pop())


def verify(folder: str, public_key: Any) -> dict[str, Any]:
    """Check the signature over manifest.json, then every file's hash: changed, missing, added."""
    manifest_path, signature_path = os.path.join(folder, MANIFEST), os.path.join(folder, SIGNATURE)
    result: dict[str, Any] = {"path": folder, "signature_valid": False, "changed": [], "missing": [], "added": []}
    if not os.path.isfile(manifest_path):
        result.update(ok=False, missing=[MANIFEST])
        return result
    with open(manifest_path, "rb") as handle:
        body = handle.read()
    try:
        with open(signature_path, "rb") as handle:
            public_key.verify(base64.b64decode(handle.read().strip()), body)
        result["signature_valid"] = True
    except FileNotFoundError:
        result["missing"].append(SIGNATURE)
    except (InvalidSignature, ValueError):
        result["signature_valid"] = False
    try:
        manifest = json.loads(body)
        listed = {entry["path"]: entry["sha256"] for entry in manifest["files"]}
    except (ValueError, KeyError, TypeError):
        result.update(ok=False, error="manifest.json is not a keyops evidence manifest")
        return result
    present = set(list_files(folder))
    result["changed"] = sorted(
        path for path, digest in listed.items() if path in present and sha256_file(os.path.join(folder, path)) != digest
    )
    result["missing"] += sorted(set(listed) - present)
    result["added"] = sorted(present - set(listed))
    result.update(
        files=len(listed),
        package_id=manifest.get("package_id"),
        created=manifest.get("created"),
        signer=(manifest.get("signer") or {}).get("public_key_fingerprint"),
        ok=result["signature_valid"] and not (result["changed"] or result["missing"] or result["added"]),
    )
    return result
