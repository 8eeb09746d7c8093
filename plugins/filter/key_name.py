# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: key_name
short_description: Build a key name that follows ENV-PURPOSE-TYPE-YYYYMMDD
version_added: 0.1.0
description:
  - Composes the lower-case name C(ENV-PURPOSE-TYPE-YYYYMMDD) the key-management policy asks for.
  - Fails with a clear message when a part cannot appear in a compliant name.
positional: purpose, key_type, date
options:
  _input:
    description: The environment, for example V(prod).
    type: str
    required: true
  purpose:
    description: What the key protects, letters, digits and single hyphens.
    type: str
    required: true
  key_type:
    description: One of V(kek), V(dek), V(sign), V(transport), V(tls), V(hmac).
    type: str
    required: true
  date:
    description: Creation date as C(YYYYMMDD) or C(YYYY-MM-DD); today in UTC when left out.
    type: str
seealso:
  - plugin: keyops.runbooks.parse_key_name
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Name the new payments KEK
  ansible.builtin.set_fact:
    payments_kek: "{{ 'prod' | keyops.runbooks.key_name('payments', 'kek', '2026-12-03') }}"
  # prod-payments-kek-20261203
"""

RETURN = r"""
_value:
  description: The key name.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import KeyopsError
from ansible_collections.keyops.runbooks.plugins.module_utils.naming import build_key_name


def key_name(env, purpose, key_type, date=None):
    try:
        return build_key_name(env, purpose, key_type, date)
    except KeyopsError as error:
        raise AnsibleFilterError(error.message) from error


class FilterModule:
    def filters(self):
        return {"key_name": key_name}
