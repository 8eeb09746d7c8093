"""How long key_material_scan takes over 10,000 files (and 1,000 for the scaling ratio).

Run: .venv/bin/python bench/key_scan.py [--files 10000]
Prints files, seconds, files per second and the 10N/N time ratio (linear is 10).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, ".build", "collections")]

from ansible_collections.keyops.runbooks.plugins.module_utils import key_scan  # noqa: E402
from ansible_collections.keyops.runbooks.plugins.module_utils.policy import merged_policy  # noqa: E402
from tests.support.key_files import build_key_tree, write  # noqa: E402


def build_estate(root: str, files: int) -> None:
    """Mostly ordinary configuration and source, with a key tree every 500 files."""
    for number in range(files):
        folder = os.path.join(root, f"svc{number // 200:03d}")
        if number % 500 == 0:
            build_key_tree(os.path.join(folder, f"keys{number}"))
        write(
            os.path.join(folder, f"config{number}.ini"),
            f"[service]\nname = svc{number}\nport = {8000 + number % 1000}\nrequest_id = {secrets.token_hex(16)}\n"
            f"cache_key_sha256 = {secrets.token_hex(32)}\n" + "# filler line\n" * 40,
        )


def timed_scan(root: str) -> tuple[float, int, int]:
    options = key_scan.WalkOptions(include=[], exclude=[], max_size=1 << 20)
    start = time.perf_counter()
    result = key_scan.scan([root], options, merged_policy(), "bench")
    return time.perf_counter() - start, result.files_scanned, len(result.records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as small, tempfile.TemporaryDirectory() as large:
        build_estate(small, args.files // 10)
        build_estate(large, args.files)
        small_seconds, small_files, _unused = timed_scan(small)
        large_seconds, large_files, records = timed_scan(large)
    print(
        f"key_material_scan: {large_files} files in {large_seconds:.2f} s "
        f"({large_files / large_seconds:,.0f} files/s, {records} keys found)"
    )
    print(
        f"key_material_scan: scaling {small_files} -> {large_files} files: time ratio "
        f"{large_seconds / small_seconds:.1f} (linear is 10)"
    )


if __name__ == "__main__":
    main()
