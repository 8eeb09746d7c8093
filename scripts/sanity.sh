#!/usr/bin/env bash
# ansible-test sanity needs the collection at ansible_collections/keyops/runbooks: copy the tracked
# and new files there (never .venv or the lab state) and run it offline with this venv's Python.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target="$root/.build/sanity/ansible_collections/keyops/runbooks"
rm -rf "$target"
mkdir -p "$target"
cd "$root"
# tar, not rsync: a fresh Debian machine has tar; a file deleted but not yet staged is skipped.
git ls-files -co --exclude-standard -z | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$target"
cd "$target"
git init -q . && git add -A >/dev/null 2>&1 # ansible-test lists files through git
"$root/.venv/bin/ansible-test" sanity --local --python 3.11 --color no "$@"
