"""Rewrap throughput: keyops' rewrap_store against a raw hvac batch loop over the same kind of store.

    source .lab/env.sh && .venv/bin/python bench/vault_rewrap.py 5000 50000

For each size, two stores are seeded alike (every data key below the latest version). The raw loop reads a
batch, rewraps it and writes it back in one transaction per batch; keyops does the same through the module's
code (version checks, compare-and-swap commit, progress). Prints data keys per second and the ratio
keyops / raw.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, ".build", "collections"))

from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import connect  # noqa: E402
from ansible_collections.keyops.runbooks.plugins.module_utils.dek_store import open_store  # noqa: E402
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_rewrap import (  # noqa: E402
    RewrapRequest,
    rewrap_store,
)
from tests.support.vault_deks import seed_store, vault_client, versions_in  # noqa: E402


def raw_loop(client, path: str, name: str, batch: int) -> float:
    connection = sqlite3.connect(path, isolation_level=None)
    latest = client.secrets.transit.read_key(name)["data"]["latest_version"]
    started = time.perf_counter()
    after = ""
    while True:
        rows = connection.execute(
            "SELECT id, ciphertext FROM data_keys WHERE id > ? ORDER BY id LIMIT ?", (after, batch)
        ).fetchall()
        if not rows:
            break
        after = rows[-1][0]
        answer = client.secrets.transit.rewrap_data(
            name,
            ciphertext=None,
            key_version=None,
            batch_input=[{"ciphertext": ct, "key_version": latest} for _unused, ct in rows],
        )
        connection.execute("BEGIN")
        connection.executemany(
            "UPDATE data_keys SET ciphertext = ? WHERE id = ?",
            [
                (result["ciphertext"], item_id)
                for (item_id, _unused), result in zip(rows, answer["data"]["batch_results"], strict=True)
            ],
        )
        connection.execute("COMMIT")
    connection.close()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("sizes", nargs="*", type=int, default=[5000, 50000])
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="fixed items per request for both (default: keyops sizes to 1000 JSON strings)",
    )
    args = parser.parse_args()
    client = vault_client()
    vault = connect({"url": os.environ["VAULT_ADDR"], "token": os.environ["VAULT_TOKEN"], "retries": 3})
    stamp = int(time.time())
    with tempfile.TemporaryDirectory() as work:
        for size in args.sizes:
            raw_path, ours_path = os.path.join(work, f"raw-{size}.sqlite"), os.path.join(work, f"ours-{size}.sqlite")
            # Data keys over versions 1-3, then one more rotation: every data key is below the target, so both
            # loops rewrap all of them.
            for kind, store_path in (("raw", raw_path), ("ours", ours_path)):
                seed_store(client, store_path, f"bench-{kind}-{size}-{stamp}", size)
                client.secrets.transit.rotate_key(f"bench-{kind}-{size}-{stamp}")
            request = RewrapRequest("transit", f"bench-ours-{size}-{stamp}", batch_size=args.batch_size)
            raw_batch = args.batch_size or 332
            raw_seconds = raw_loop(client, raw_path, f"bench-raw-{size}-{stamp}", raw_batch)
            started = time.perf_counter()
            with open_store({"type": "sqlite", "path": ours_path}) as store:
                result = rewrap_store(vault, store, request)
            ours_seconds = time.perf_counter() - started
            assert result["rewrapped"] == size and versions_in(ours_path) == {"v4": size}, result
            ours_rate, raw_rate = size / ours_seconds, size / raw_seconds
            print(
                f"{size:>7} data keys: keyops {ours_rate:>8.0f}/s end to end (key read, histogram, rewrap loop "
                f"{result['rate_per_s']:.0f}/s), raw hvac loop {raw_rate:>8.0f}/s, ratio {ours_rate / raw_rate:.2f}; "
                f"batch {args.batch_size or 'auto'}"
            )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
