#!/usr/bin/env bash
# Run every molecule scenario under extensions/molecule against a lab of their own,
# started and seeded here and stopped on the way out.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"
export KEYOPS_LAB_DIR="${KEYOPS_MOLECULE_LAB_DIR:-$root/.build/molecule-lab}"
# Below 32768: above it the kernel hands out ephemeral client ports, and their TIME_WAIT leftovers (the test
# suites before this one make thousands of connections) can hold a lab port.
export KEYOPS_LAB_PORT_BASE="${KEYOPS_MOLECULE_PORT_BASE:-22200}"
export ANSIBLE_COLLECTIONS_PATH="$root/.build/collections"
export ANSIBLE_CONFIG="$root/ansible.cfg"

scenarios=$(find extensions/molecule -mindepth 2 -maxdepth 2 -name molecule.yml 2>/dev/null | wc -l)
if [ "$scenarios" -eq 0 ]; then
  echo "molecule: no scenarios under extensions/molecule" >&2
  exit 1
fi

# Each run gets a fresh lab, so outputs a scenario left in molecule's ephemeral folders by an earlier run (keys,
# bundles and journals of a lab that no longer exists) must not be picked up again.
for scenario in extensions/molecule/*/molecule.yml; do
  name=$(basename "$(dirname "$scenario")")
  rm -rf "${HOME}/.ansible/tmp/molecule."*".${name}"
done

# Absolute paths: the trap runs after the `cd extensions` below.
trap '"$root/.venv/bin/python" "$root/lab/keyops_lab.py" down >/dev/null 2>&1 || true' EXIT
# Another session may hold the ports: move up a hundred at a time, as the test fixtures do.
for _attempt in 1 2 3 4 5; do
  if up_output=$(.venv/bin/python lab/keyops_lab.py up 2>&1); then
    echo "$up_output"
    break
  fi
  echo "$up_output" >&2
  case "$up_output" in
    *"ports already in use"*) export KEYOPS_LAB_PORT_BASE=$((KEYOPS_LAB_PORT_BASE + 100)) ;;
    *) exit 2 ;;
  esac
done
.venv/bin/python lab/keyops_lab.py status >/dev/null
.venv/bin/python lab/keyops_lab.py seed
# shellcheck disable=SC1091
source "$KEYOPS_LAB_DIR/env.sh"
cd extensions
molecule test --all
