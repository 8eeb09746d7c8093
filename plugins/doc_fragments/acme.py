# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  acme_directory:
    description:
      - URL of the ACME server's directory, for example C(https://acme-v02.api.letsencrypt.org/directory) or an
        internal CA's.
    type: str
    required: true
  acme_ca_bundle:
    description:
      - PEM file of the CA that issued the ACME server's own TLS certificate, when that is not a CA the host already
        trusts.
    type: path
  account_key_path:
    description:
      - Private key of the ACME account (PEM). Created as an EC P-256 key with mode 0600 when the file does not
        exist, except in check mode. Never returned or logged.
    type: path
    required: true
  account_email:
    description:
      - Contact e-mail given when the account is created.
    type: str
  terms_agreed:
    description:
      - Agree to the ACME server's terms of service when creating the account. Most servers refuse new accounts
        without it.
    type: bool
    default: false
"""
