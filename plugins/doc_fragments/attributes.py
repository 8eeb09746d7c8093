# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # The descriptions of the attributes every module states; each module sets its own support and details.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: With C(--check), reads the real state, reports what it would change, and changes nothing.
  diff_mode:
    description: With C(--diff), shows the state before and after (ids, versions, settings), never secrets.
  idempotent:
    description:
      - A second run with the same options against an unchanged backend reports no change.
"""

    ACTION_PLUGIN = r"""
options: {}
attributes:
  action:
    description: Runs on the controller through an action plugin of the same name.
"""

    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details: The module only reads.
  diff_mode:
    support: N/A
    details: The module only reads.
  idempotent:
    support: full
"""
