# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  change_ref:
    description:
      - The change or incident reference this run works under, for example C(CHG-2041) or C(INC-77).
      - Written into every audit event the module returns.
    type: str
  approvals:
    description:
      - The verified approvals for this change, as returned by M(keyops.runbooks.approval_verify) in
        RV(keyops.runbooks.approval_verify#module:approvals).
      - Actions that the policy puts under dual control (master keys, export, destruction, trim, raising the
        minimum decryption version) are refused without a quorum of verified approvals for the plan digest.
    type: list
    elements: dict
    default: []
"""
