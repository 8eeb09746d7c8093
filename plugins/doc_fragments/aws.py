# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  region:
    description:
      - The AWS region of the keys.
      - Falls back to E(AWS_REGION), then E(AWS_DEFAULT_REGION), then the region of O(profile).
    type: str
  profile:
    description:
      - A named profile from the AWS shared configuration and credentials files.
      - Falls back to E(AWS_PROFILE).
    type: str
  access_key:
    description:
      - The AWS access key id. Falls back to E(AWS_ACCESS_KEY_ID).
      - When neither this nor O(profile) is set, boto3's own credential chain applies (environment, shared
        files, instance or container role).
    type: str
  secret_key:
    description: The AWS secret access key. Falls back to E(AWS_SECRET_ACCESS_KEY).
    type: str
  session_token:
    description: The session token of temporary credentials. Falls back to E(AWS_SESSION_TOKEN).
    type: str
  endpoint_url:
    description:
      - A KMS endpoint other than AWS's own, for example a VPC endpoint or a local moto server.
      - Falls back to E(AWS_ENDPOINT_URL_KMS), then E(AWS_ENDPOINT_URL).
    type: str
  retry_mode:
    description:
      - botocore's retry mode. V(adaptive) also slows the client down when KMS throttles it, which suits the
        concurrent re-encrypt; V(standard) retries with backoff only.
    type: str
    choices: [adaptive, standard]
    default: adaptive
  max_attempts:
    description: How many times botocore tries one call (first try included) before the module gives up on it.
    type: int
    default: 10
notes:
  - Every option that names a key accepts a key id, a key ARN, an alias name (C(alias/NAME)) or an alias ARN.
    The module resolves it with C(DescribeKey) and returns the key ARN.
"""
