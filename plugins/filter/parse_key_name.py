# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: parse_key_name
short_description: Split a key name into environment, purpose, type and date
version_added: 0.1.0
description:
  - Reads a name of the form C(ENV-PURPOSE-TYPE-YYYYMMDD).
  - Never fails on a non-compliant name; returns RV(_value.valid=false) and a reason, so inventories can report it.
options:
  _input:
    description: The key name.
    type: str
    required: true
seealso:
  - plugin: keyops.runbooks.key_name
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Check a name against the rule
  ansible.builtin.assert:
    that: ("prod-payments-kek-20261203" | keyops.runbooks.parse_key_name).valid
    fail_msg: The key name does not follow ENV-PURPOSE-TYPE-YYYYMMDD
"""

RETURN = r"""
_value:
  description: The parts of the name.
  type: dict
  contains:
    valid:
      description: Whether the name follows the rule.
      type: bool
    reason:
      description: Why it does not, when RV(_value.valid=false).
      type: str
    env:
      description: Environment.
      type: str
    purpose:
      description: Purpose.
      type: str
    type:
      description: Key type.
      type: str
    date:
      description: The date in the name, ISO 8601.
      type: str
    key_class:
      description: The key class the type usually means.
      type: str
"""

from ansible_collections.keyops.runbooks.plugins.module_utils.naming import parse_key_name


class FilterModule:
    def filters(self):
        return {"parse_key_name": parse_key_name}
