# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  url:
    description:
      - The Vault or OpenBao server, for example C(https://vault.example.com:8200).
      - Falls back to E(VAULT_ADDR), then E(BAO_ADDR).
    type: str
  namespace:
    description:
      - The Vault Enterprise or OpenBao namespace to work in.
      - Falls back to E(VAULT_NAMESPACE), then E(BAO_NAMESPACE).
    type: str
  auth_method:
    description:
      - V(token) uses O(token). V(approle) logs in with O(role_id) and O(secret_id) at O(approle_mount).
    type: str
    choices: [token, approle]
    default: token
  token:
    description:
      - The token to authenticate with. Falls back to E(VAULT_TOKEN), then E(BAO_TOKEN).
      - Never logged, also when it comes from the environment.
    type: str
  role_id:
    description: The AppRole role ID. Falls back to E(VAULT_ROLE_ID).
    type: str
  secret_id:
    description: The AppRole secret ID. Falls back to E(VAULT_SECRET_ID). Never logged.
    type: str
  approle_mount:
    description: Where the AppRole auth method is mounted.
    type: str
    default: approle
  ca_cert:
    description:
      - A CA bundle to verify the server's TLS certificate with. Falls back to E(VAULT_CACERT), then E(BAO_CACERT).
    type: path
    aliases: [ca_bundle]
  validate_certs:
    description: Verify the server's TLS certificate. Only turn off against a throw-away test server.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each answer from the server.
    type: int
    default: 30
  retries:
    description:
      - How many times to retry a request that could not connect, and a read answered with 429, 502 or 504.
      - Writes are only retried when the connection failed, so a change is never sent twice.
    type: int
    default: 3
notes:
  - The connection options can be set once for all vault modules with the C(group/keyops.runbooks.vault) action
    group in C(module_defaults).
"""
