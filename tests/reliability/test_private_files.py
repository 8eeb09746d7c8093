"""Files: everything the collection writes that may hold something sensitive is 0600 (folders 0700) whatever the
umask, and written atomically (temp file in the same folder, then rename), so a crash or a full disk never leaves
a half-written file, a world-readable temp file or a temp file at all.

The first test reads the collection's code and lists every place that writes a file; each must be one of the
private writers below, so a new write elsewhere fails here until it is reviewed and added. Each writer is then run
under umask 000 (the worst an operator's shell can have) and, where it replaces a file, with the rename failing
(a full disk): the old file must be intact and no temp file left.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils import (
    acme_client,
    approvals,
    audit_sinks,
    backup_bundle,
    cert_lifecycle,
    dek_store,
    evidence,
    kms_reencrypt,
    report,
    runbook_journal,
    vault_backup,
    vault_rewrap,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import KeyopsError
from tests.reliability import tally
from tests.reliability.inproc import call
from tests.support.key_files import fresh_private_key_pem
from tests.support.playbook import ANSIBLE_PLAYBOOK, ROOT
from tests.support.vault_deks import vault_client

pytestmark = [pytest.mark.area("files")]

PLUGINS = Path(ROOT) / "plugins"
SECRET = fresh_private_key_pem()


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the writers -------------------------------------------------------------------------------------------------


def _acme(folder: Path) -> list[Path]:
    acme_client.write_atomic(str(folder / "account.key"), SECRET, 0o600)
    return [folder / "account.key"]


def _plan(folder: Path) -> list[Path]:
    approvals.write_private_file(str(folder / "plans" / "plan.json"), SECRET)
    return [folder / "plans" / "plan.json"]


def _audit_line(folder: Path) -> list[Path]:
    audit_sinks.append_line(str(folder / "audit" / "audit.jsonl"), {"action": "rotate"})
    return [folder / "audit" / "audit.jsonl"]


def _audit_atomic(folder: Path) -> list[Path]:
    audit_sinks.write_private_atomic(str(folder / "spool" / "chain-head.json"), SECRET)
    return [folder / "spool" / "chain-head.json"]


def _bundle_fetch(folder: Path) -> list[Path]:
    source = folder / "offsite" / "bundle-1"
    for name in ("manifest.json", "escrow.json", "vault/transit.age"):
        (source / name).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        vault_backup.write_private(str(source / name), SECRET)
    (folder / "restore").mkdir(mode=0o700)  # as the module makes dest_dir
    backup_bundle.fetch_from_dir(str(folder / "offsite"), "bundle-1", str(folder / "restore"))
    target = folder / "restore" / "bundle-1"
    return [target / "manifest.json", target / "escrow.json", target / "vault" / "transit.age"]


def _cert_install(folder: Path) -> list[Path]:
    key = folder / "tls" / "service.key"
    key.parent.mkdir(mode=0o700)
    cert_lifecycle._install(str(key), SECRET, secret=True)
    backup = cert_lifecycle._backup(str(key), "20261203T000000Z")
    return [key, Path(backup)]


def _jsonl_store(folder: Path) -> list[Path]:
    path = folder / "deks.jsonl"
    vault_backup.write_private(str(path), b'{"id": "a", "key_ref": "transit/k", "ciphertext": "vault:v1:x"}\n')
    store = dek_store.JsonLinesStore(str(path))
    progress = dek_store.Progress("job", "0/1")
    store.commit([dek_store.Update("a", "vault:v1:x", "vault:v2:y", "transit/k")], progress)
    journal = Path(store.journal_path)
    journal_mode = mode(journal)
    store.finish()
    assert journal_mode == 0o600, oct(journal_mode)
    return [path, journal]


def _evidence_archive(folder: Path) -> list[Path]:
    package = folder / "evidence-q4"
    package.mkdir(mode=0o700)
    vault_backup.write_private(str(package / "manifest.json"), SECRET)
    vault_backup.write_private(str(package / "manifest.json.sig"), b"signature")
    evidence.write_archive(str(package), str(folder / "evidence-q4.tar.gz"))
    return [folder / "evidence-q4.tar.gz"]


def _kms_progress(folder: Path) -> list[Path]:
    kms_reencrypt.write_progress_file(str(folder / "progress.json"), {"done": 1})
    return [folder / "progress.json"]


def _report(folder: Path) -> list[Path]:
    written = report.write_files(str(folder / "reports"), {"csv": "name\n", "json": "{}", "html": "<p>"})
    return [Path(path) for path in written.values()]


def _journal(folder: Path) -> list[Path]:
    runbook_journal.write_atomic(str(folder / "journal" / "run.json"), SECRET)
    return [folder / "journal" / "run.json"]


def _vault_backup(folder: Path) -> list[Path]:
    vault_backup.write_private(str(folder / "transit.age"), SECRET)
    return [folder / "transit.age"]


def _rewrap_progress(folder: Path) -> list[Path]:
    vault_rewrap.ProgressFile(str(folder / "rewrap.json"), "job", "transit/k", lambda: 0.0).write(
        1, 2, 1, 0, 1, finished=True
    )
    return [folder / "rewrap.json"]


# (file, function) -> (how it is exercised here, or None when another test below runs it; whether it replaces
# a file atomically). Every place in plugins/ that writes a file must be listed.
WRITERS: dict[tuple[str, str], tuple[Callable[[Path], list[Path]] | None, bool]] = {
    ("module_utils/acme_client.py", "write_atomic"): (_acme, True),
    ("module_utils/approvals.py", "write_private_file"): (_plan, True),
    ("module_utils/audit_sinks.py", "append_line"): (_audit_line, False),
    ("module_utils/audit_sinks.py", "write_private_atomic"): (_audit_atomic, True),
    # The chain lock file (empty): run by the audit callback test below.
    ("module_utils/audit_sinks.py", "AuditTrail._locked"): (None, False),
    ("module_utils/backup_bundle.py", "fetch_from_dir"): (_bundle_fetch, False),
    # Renames the pending key that write_atomic made 0600: run through cert_lifecycle's own helpers.
    ("module_utils/cert_lifecycle.py", "renew_one"): (_cert_install, False),
    ("module_utils/dek_store.py", "JsonLinesStore._append_journal"): (_jsonl_store, False),
    ("module_utils/dek_store.py", "JsonLinesStore.finish"): (_jsonl_store, True),
    ("module_utils/evidence.py", "write_archive"): (_evidence_archive, False),
    # Renames the staging folder the package was built in: run by the module test below.
    ("module_utils/evidence.py", "build"): (None, False),
    ("module_utils/kms_reencrypt.py", "write_progress_file"): (_kms_progress, True),
    ("module_utils/report.py", "write_files"): (_report, True),
    ("module_utils/runbook_journal.py", "write_atomic"): (_journal, True),
    ("module_utils/vault_backup.py", "write_private"): (_vault_backup, True),
    # Streams the snapshot from the server: run by the module test below.
    ("module_utils/vault_raft.py", "save_snapshot"): (None, False),
    ("module_utils/vault_rewrap.py", "ProgressFile.write"): (_rewrap_progress, True),
}


def file_writes() -> set[tuple[str, str]]:
    """Every (file, function) in plugins/ that opens a file for writing, makes a temp file or renames one."""
    found: set[tuple[str, str]] = set()
    for path in sorted(PLUGINS.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        relative = str(path.relative_to(PLUGINS))
        for scope, node in _calls(tree, []):
            if _writes(node):
                found.add((relative, ".".join(scope) or "<module>"))
    return found


def _calls(node: ast.AST, scope: list[str]) -> Iterator[tuple[list[str], ast.Call]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield from _calls(child, [*scope, child.name])
        else:
            if isinstance(child, ast.Call):
                yield scope, child
            yield from _calls(child, scope)


def _writes(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    base = ast.unparse(func.value) if isinstance(func, ast.Attribute) else ""
    candidates = [*call.args[1:2], *(keyword.value for keyword in call.keywords if keyword.arg == "mode")]
    literal = [arg.value for arg in candidates if isinstance(arg, ast.Constant)]
    mode_text = next((value for value in literal if isinstance(value, str)), "r")
    if name == "open" and base in ("", "io", "builtins", "tarfile"):
        return any(flag in mode_text for flag in "wax+")
    if base == "os" and name in ("open", "fdopen", "replace", "rename"):
        return True
    if base == "tempfile" and name in ("mkstemp", "mkdtemp", "NamedTemporaryFile"):
        return True
    if base == "shutil" and name in ("copy", "copy2", "copyfile", "copytree", "move"):
        return True
    return name in ("write_text", "write_bytes")


def test_every_file_write_in_the_collection_is_a_known_private_writer() -> None:
    found = file_writes()
    tally.add("files", "writers", len(found))

    assert found - WRITERS.keys() == set(), "new file writes: review them (0600, atomic) and add them to WRITERS"
    assert WRITERS.keys() - found == set(), "WRITERS lists code that no longer writes: remove it"


EXERCISED = sorted({key: value for key, value in WRITERS.items() if value[0]}.items())


@pytest.mark.parametrize(("where", "writer"), EXERCISED, ids=[f"{key[0]}:{key[1]}" for key, _unused in EXERCISED])
def test_writer_makes_owner_only_files_whatever_the_umask(
    where: tuple[str, str], writer: tuple[Callable[[Path], list[Path]], bool], tmp_path: Path
) -> None:
    exercise, _unused = writer
    with umask(0):
        written = exercise(tmp_path)

    modes = {str(path.relative_to(tmp_path)): oct(mode(path)) for path in written if path.exists()}
    folders = {
        str(folder.relative_to(tmp_path)): oct(mode(folder))
        for path in written
        for folder in path.parents
        if tmp_path in folder.parents
    }
    leftovers = [path.name for path in tmp_path.rglob("*") if path.name.startswith((".keyops-", ".tmp-"))]
    tally.add("files", "0600", sum(1 for value in modes.values() if value == "0o600"))
    tally.add("files", "temp files left", len(leftovers))
    assert all(value == "0o600" for value in modes.values()), modes
    assert all(value == "0o700" for value in folders.values()), folders
    assert not leftovers


ATOMIC = [(key, value) for key, value in EXERCISED if value[1]]


@pytest.mark.parametrize(("where", "writer"), ATOMIC, ids=[f"{key[0]}:{key[1]}" for key, _unused in ATOMIC])
def test_a_failed_rename_leaves_the_old_file_and_no_temp_file(
    where: tuple[str, str], writer: tuple[Callable[[Path], list[Path]], bool], tmp_path: Path
) -> None:
    exercise, _unused = writer
    written = exercise(tmp_path)
    before = {path: path.read_bytes() for path in written if path.exists()}
    listing = sorted(str(path) for path in tmp_path.rglob("*"))

    # The writer raises (an OSError, or the collection's error saying which file and why); nothing else changes.
    with (
        mock.patch("os.replace", side_effect=OSError(28, "No space left on device")),
        pytest.raises((OSError, KeyopsError)),
    ):
        exercise(tmp_path)

    assert {path: path.read_bytes() for path in before} == before, "a half-written file replaced the old one"
    assert sorted(str(path) for path in tmp_path.rglob("*")) == listing, "a temp file was left behind"
    tally.add("files", "atomic")


def walk_modes(folder: Path) -> tuple[dict[str, str], list[str]]:
    """(files and folders that are not owner-only, temp files left) below ``folder``."""
    loose, leftovers = {}, []
    for path in folder.rglob("*"):
        expected = 0o700 if path.is_dir() else 0o600
        if mode(path) != expected:
            loose[str(path.relative_to(folder))] = oct(mode(path))
        if path.name.startswith((".keyops-", ".tmp-")):
            leftovers.append(str(path.relative_to(folder)))
    return loose, leftovers


@pytest.mark.lab
def test_modules_and_the_audit_callback_write_owner_only_files_under_umask_000(
    lab: dict[str, Any], tmp_path: Path
) -> None:
    """End to end: a raft snapshot, a transit backup, an evidence package and the audit trail, written by the
    modules and the callback themselves with umask 000."""
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    key = out / "signing.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)], check=True)
    key.chmod(0o600)
    raft = {"url": lab["KEYOPS_LAB_RAFT_ADDR"], "token": lab["KEYOPS_LAB_RAFT_TOKEN"]}
    backed_up = f"files-b{os.getpid()}-kek-20261203"
    client = vault_client(lab["VAULT_ADDR"], lab["VAULT_TOKEN"])
    client.adapter.post(f"/v1/transit/keys/{backed_up}", json={"type": "aes256-gcm96"})
    client.adapter.post(
        f"/v1/transit/keys/{backed_up}/config", json={"exportable": True, "allow_plaintext_backup": True}
    )
    runs = [
        ("vault_raft_snapshot", {**raft, "path": str(out / "snapshots" / "raft.snap")}),
        (
            "vault_transit_backup",
            {
                "names": [backed_up],
                "dest": str(out / "backups"),
                "recipients": ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"],
            },
        ),
        ("evidence_package", {"output_dir": str(out / "evidence"), "package_id": "q4", "signing_key": str(key)}),
    ]
    with umask(0):
        (out / "snapshots").mkdir(mode=0o700)
        (out / "backups").mkdir(mode=0o700)
        for module, args in runs:
            result, failure = call(module, args)
            assert failure is None and not result.get("failed"), (module, result.get("msg"), failure)
        audit = out / "audit"
        playbook = tmp_path / "probe.yml"
        playbook.write_text(
            json.dumps(
                [
                    {
                        "hosts": "localhost",
                        "gather_facts": False,
                        "tasks": [
                            {
                                "name": "probe",
                                "keyops.runbooks.vault_audit_device": {"path": "probe", "file_path": "/dev/null"},
                                "check_mode": True,
                            }
                        ],
                    }
                ]
            )
        )
        done = subprocess.run(
            [ANSIBLE_PLAYBOOK, str(playbook)],
            cwd=ROOT,
            env={
                **os.environ,
                "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
                "KEYOPS_AUDIT_PATH": str(audit / "audit.jsonl"),
                "KEYOPS_AUDIT_SPOOL_DIR": str(audit / "spool"),
            },
            capture_output=True,
            text=True,
            check=False,
        )
    assert done.returncode == 0, done.stdout[-2000:]
    assert (audit / "spool" / "chain.lock").exists() and (audit / "audit.jsonl").exists()

    loose, leftovers = walk_modes(out)
    files = [path for path in out.rglob("*") if path.is_file() and path != key]
    tally.add("files", "0600", sum(1 for path in files if mode(path) == 0o600))
    tally.add("files", "temp files left", len(leftovers))
    assert loose == {}, f"not owner-only: {loose}"
    assert not leftovers
