# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: raft snapshots of a Vault / OpenBao server, saved to a 0600 file and restored from one.

A snapshot holds the storage as the server's barrier encrypted it: it stays sealed by that server's keys and
can only be read by a server unsealed with them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import Vault
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    BackendUnavailable,
    IntegrityError,
    InvalidInput,
)

GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20


def file_sha256(path: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def save_snapshot(vault: Vault, path: str, force: bool, check_mode: bool) -> dict[str, Any]:
    if os.path.exists(path) and not force:
        sha256, size = file_sha256(path)
        return {"changed": False, "path": path, "snapshot_sha256": sha256, "bytes": size}
    if check_mode:
        return {"changed": True, "path": path}
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InvalidInput(
            "Save raft snapshot",
            None,
            f"directory '{directory}' does not exist",
            "Create it (0700) or set path elsewhere",
        )
    fd, temp = tempfile.mkstemp(prefix=".keyops-snapshot-", dir=directory)
    digest, size = hashlib.sha256(), 0
    try:
        with vault.call("Save raft snapshot", None):
            response = vault.client.sys.take_raft_snapshot()
            _raise_for_status(response)
            with os.fdopen(fd, "wb") as handle:
                for block in response.iter_content(CHUNK):
                    handle.write(block)
                    digest.update(block)
                    size += len(block)
                handle.flush()
                os.fsync(handle.fileno())
        with open(temp, "rb") as handle:
            if handle.read(2) != GZIP_MAGIC:
                raise IntegrityError(
                    "Save raft snapshot",
                    None,
                    "the server's answer is not a snapshot archive",
                    "Check that the server uses raft storage and the token may read sys/storage/raft/snapshot",
                )
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    return {"changed": True, "path": path, "snapshot_sha256": digest.hexdigest(), "bytes": size}


def restore_snapshot(vault: Vault, path: str, force: bool, check_mode: bool, wait_s: float = 60.0) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise InvalidInput("Restore raft snapshot", None, f"'{path}' does not exist", "Set path to a snapshot file")
    sha256, size = file_sha256(path)
    with open(path, "rb") as handle:
        if size == 0 or handle.read(2) != GZIP_MAGIC:
            raise IntegrityError(
                "Restore raft snapshot",
                None,
                f"'{path}' is empty or not a snapshot archive",
                "Restore from another copy of the snapshot",
            )
    result = {"changed": True, "path": path, "snapshot_sha256": sha256, "bytes": size}
    if check_mode:
        return result
    with open(path, "rb") as handle, vault.call("Restore raft snapshot", None):
        sys_backend = vault.client.sys
        response = (sys_backend.force_restore_raft_snapshot if force else sys_backend.restore_raft_snapshot)(handle)
        _raise_for_status(response)
    _wait_active(vault, wait_s)
    return result


def _raise_for_status(response: Any) -> None:
    import hvac.utils

    status = getattr(response, "status_code", 200)
    if status >= 400:
        hvac.utils.raise_for_error("", response.url, status, text=response.text[:500])


def _wait_active(vault: Vault, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            health = vault.client.sys.read_health_status(method="GET")
            if isinstance(health, dict) and not health.get("sealed") and not health.get("standby"):
                return
        except Exception:  # the server restarts its core after a restore; keep polling
            pass
        if time.monotonic() > deadline:
            raise BackendUnavailable(
                "Restore raft snapshot",
                None,
                f"the server was not active again within {wait_s:.0f}s",
                "Check the server's log; it may need unsealing",
            )
        time.sleep(0.2)
