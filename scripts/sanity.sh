#!/usr/bin/env bash
# ansible-test sanity needs the collection at ansible_collections/keyops/runbooks: copy the tracked
# and new files there (never .venv or the lab state) and run it offline with this venv's Python.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target="$root/.build/sanity/ansible_collections/keyops/runbooks"
rm -rf "$target"
mkdir -p "$target"
cd "$root"
git ls-files -co --exclude-standard -z | rsync -a --from0 --files-from=- ./ "$target/"
cd "$target"
git init -q . && git add -A >/dev/null 2>&1 # ansible-test lists files through git
"$root/.venv/bin/ansible-test" sanity --local --python 3.11 --color no "$@"
