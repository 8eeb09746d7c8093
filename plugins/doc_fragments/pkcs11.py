# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  pkcs11_module:
    description:
      - Path of the HSM vendor's PKCS#11 library, for example C(/usr/lib/softhsm/libsofthsm2.so).
      - When left out, the value of the environment variable E(KEYOPS_PKCS11_MODULE) is used.
      - For SoftHSM2, the library reads its own configuration from E(SOFTHSM2_CONF) in the module's environment.
    type: path
  token_label:
    description:
      - Label of the token to use. Combined with O(token_serial) when both are given.
      - Tokens are never chosen by slot index, because a token moves to another slot when it is initialised.
      - When left out, the value of E(KEYOPS_PKCS11_TOKEN_LABEL) is used.
      - If two tokens match the selector, the module fails and lists their serial numbers.
    type: str
  token_serial:
    description:
      - Serial number of the token to use, as the token reports it (for SoftHSM2, 16 hex digits).
    type: str
  user_pin:
    description:
      - The token's user PIN. The module opens a read-write session and logs in as the user with it.
      - When left out, the value of E(KEYOPS_PKCS11_PIN) is used.
      - Never written to results, logs, audit events or files; a wrong PIN fails with a message that does not
        contain it.
    type: str
requirements:
  - python-pkcs11 >= 0.10 on the host that runs the module
  - cryptography
"""
