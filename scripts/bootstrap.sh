#!/usr/bin/env bash
# Prepare this checkout to run: Debian packages, the pinned virtual environment,
# and the collection linked where Ansible and pytest find it. Safe to run again.
#   scripts/bootstrap.sh          what the main job needs
#   scripts/bootstrap.sh --test   also what the test suite needs (Chromium)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

want_test=false
[ "${1:-}" = "--test" ] && want_test=true

debs=(softhsm2 opensc pebble rsyslog openssh-client sqlite3)
$want_test && debs+=(chromium)
missing=()
for pkg in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${KEYOPS_PYTHON:-python3}
stamp=.venv/.keyops-requirements
want=$(cat requirements.txt tests/requirements.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: building .venv with the pinned Python packages"
  "$python" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt -r tests/requirements.txt
  echo "$want" > "$stamp"
fi

# Ansible and pytest import the collection as ansible_collections.keyops.runbooks.
mkdir -p .build/collections/ansible_collections/keyops
ln -sfn "$root" .build/collections/ansible_collections/keyops/runbooks

# ansible-test bootstraps pip with a downloaded script; offline, ensurepip does the same job.
pip_cache="$HOME/.ansible/test/cache"
mkdir -p "$pip_cache"
for version in 24_2 25_1 25_2; do
  [ -f "$pip_cache/get_pip_$version.py" ] || printf 'import ensurepip\nensurepip.bootstrap(upgrade=True)\n' \
    > "$pip_cache/get_pip_$version.py"
done
echo "bootstrap: ready (ansible-core $(.venv/bin/python -c 'import ansible.release; print(ansible.release.__version__)'))"
