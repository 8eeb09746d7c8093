#!/usr/bin/python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: key_lock
short_description: Serialise runbook runs on the same key across controllers with a lock in Vault KV v2
description:
  - Takes (O(state=acquired)) or gives back (O(state=released)) one lock per key in O(keys), so that two runs on
    the same key at once - two operators, two AWX jobs on different execution nodes - never interleave.
  - Each lock is a KV v2 secret C(<path_prefix>/<key>) in O(mount). Taking it is a check-and-set write (C(cas)
    set to the version just read, C(0) when there is no lock yet), so of two controllers racing exactly one wins.
  - A lock names its O(owner) (run id and operator), when it was taken and when it expires (O(ttl)). A lock past
    its expiry belongs to a run that died; the next run takes it over and says from whom.
  - A run that finds a key locked by another owner waits up to O(wait_timeout) seconds, then fails naming the
    holder and since when. Keys are locked in sorted order and all or nothing, so two runs on overlapping keys
    cannot deadlock.
  - Releasing writes a C(released) version rather than deleting, so the secret's version history shows who held
    the key and when.
version_added: 0.1.0
author:
  - keyops maintainers (@keyops)
extends_documentation_fragment:
  - keyops.runbooks.attributes
  - keyops.runbooks.vault
options:
  keys:
    description: The keys to lock, by any stable name (key name, C(<mount>/<name>), key ARN, PKCS#11 label).
    type: list
    elements: str
    required: true
  state:
    description: V(acquired) takes the locks (or refreshes them when this owner holds them), V(released) gives
      them back.
    type: str
    choices: [acquired, released]
    default: acquired
  owner:
    description:
      - Who holds the lock, as one string that is the same for every task of one run and differs between runs,
        for example C(INC-77/alice/run-3f2a). Re-taking a lock one already holds refreshes its expiry.
    type: str
    required: true
  run_id:
    description: The run's id, recorded in the lock for the one that waits.
    type: str
  operator:
    description: The person or AWX user running, recorded in the lock.
    type: str
  ttl:
    description:
      - Seconds until the lock expires if it is not released or refreshed (a dead run's lock then frees itself).
      - Set it above the longest step of the run; a runbook refreshes its locks between steps.
    type: int
    default: 14400
  wait_timeout:
    description: Seconds to wait for a lock another owner holds before failing. V(0) fails at once.
    type: int
    default: 0
  poll_interval:
    description: Seconds between two attempts while waiting.
    type: float
    default: 2.0
  force:
    description: With O(state=released), release locks held by another owner too (to clear a lock by hand after
      checking that its run is gone).
    type: bool
    default: false
  mount:
    description: The KV version 2 mount.
    type: str
    default: secret
  path_prefix:
    description: The folder in the mount that holds the locks.
    type: str
    default: keyops/locks
attributes:
  check_mode:
    support: full
    details: Reads the locks and reports whether they are free, held (and by whom) or stale; writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: Taking a lock one already holds refreshes its expiry (a write, reported as changed); releasing a lock
      that is not held changes nothing.
notes:
  - The token needs C(create), C(update) and C(read) on C(<mount>/data/<path_prefix>/*).
  - Expiry is judged by the controller's clock against the time written in the lock; keep controllers on NTP.
seealso:
  - module: keyops.runbooks.runbook_journal
"""

EXAMPLES = r"""
- name: Lock the compromised key for this run (waits up to 5 minutes for another run)
  keyops.runbooks.key_lock:
    keys: [transit/prod-payments-kek-20251203]
    owner: "INC-77/{{ awx_user_name | default('operator') }}/{{ awx_job_id | default('cli') }}"
    run_id: INC-77
    ttl: 7200
    wait_timeout: 300

- name: Release the lock
  keyops.runbooks.key_lock:
    keys: [transit/prod-payments-kek-20251203]
    owner: "INC-77/{{ awx_user_name | default('operator') }}/{{ awx_job_id | default('cli') }}"
    state: released
"""

RETURN = r"""
locks:
  description: One entry per key, in sorted order.
  returned: always
  type: list
  elements: dict
  contains:
    key:
      description: The key.
      type: str
      sample: transit/prod-payments-kek-20251203
    status:
      description: V(acquired), V(refreshed), V(taken_over) (a stale lock), V(released), V(not_held),
        V(held_by_other); in check mode V(free), V(held) or V(stale).
      type: str
      sample: acquired
    owner:
      description: The lock's owner (after taking it, this run; otherwise the holder).
      type: str
      sample: INC-77/alice/cli
    acquired:
      description: When the holder took the lock.
      type: str
      sample: "2026-12-03T18:00:00Z"
    expires:
      description: When the lock expires unless refreshed.
      type: str
      sample: "2026-12-03T22:00:00Z"
    waited_s:
      description: Seconds spent waiting for another run.
      type: float
      sample: 0.0
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils._module import run_module
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import (
    VAULT_ARGSPEC,
    VAULT_REQUIRED_IF,
    connect,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.key_lock import KvLocks, run_key_lock


def handle(module: AnsibleModule) -> dict:
    vault = connect(module.params)
    locks = KvLocks(vault, module.params["mount"], module.params["path_prefix"])
    return run_key_lock(locks, module.params, module.check_mode)


def main() -> None:
    argument_spec = dict(
        VAULT_ARGSPEC,
        keys=dict(type="list", elements="str", required=True, no_log=False),
        state=dict(type="str", default="acquired", choices=["acquired", "released"]),
        owner=dict(type="str", required=True),
        run_id=dict(type="str"),
        operator=dict(type="str"),
        ttl=dict(type="int", default=14400),
        wait_timeout=dict(type="int", default=0),
        poll_interval=dict(type="float", default=2.0),
        force=dict(type="bool", default=False),
        mount=dict(type="str", default="secret"),
        path_prefix=dict(type="str", default="keyops/locks"),
    )
    module = AnsibleModule(argument_spec=argument_spec, required_if=VAULT_REQUIRED_IF, supports_check_mode=True)
    run_module(module, handle)


if __name__ == "__main__":
    main()
