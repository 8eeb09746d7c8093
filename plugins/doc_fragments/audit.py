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
        minimum decryption version) are refused unless the module verifies the approvals again on its own - the
        plan they carry (digest, expiry, that it holds this action on this key), each approver's SSH signature
        against the allowed-signers file of C(KEYOPS_ALLOWED_SIGNERS) or the policy's C(allowed_signers), and the
        rules of the approvers file (C(KEYOPS_APPROVERS_FILE) or the policy's C(approvers_file)). A dict saying
        C(verified=true) proves nothing. AWX approvals count only with the policy's C(accept_awx_approvals=true).
    type: list
    elements: dict
    default: []
"""
