# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the one connection layer for HashiCorp Vault / OpenBao (options, client, error mapping).

Every vault_* module merges ``VAULT_ARGSPEC``, calls ``connect()`` and wraps server calls in ``vault_call()``,
which turns hvac's and requests' exceptions into the collection's typed errors with one wording.
"""

from __future__ import annotations

import contextlib
import json
import re
import traceback
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from ansible.module_utils.basic import env_fallback

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    AccessDenied,
    BackendUnavailable,
    InvalidInput,
    KeyNotFound,
    KeyopsError,
    MissingLibrary,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.naming import parse_key_name

try:
    import hvac
    import hvac.exceptions
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry
except ImportError:
    HVAC_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    HVAC_IMPORT_ERROR = None

VAULT_ARGSPEC: dict[str, Any] = {
    "url": {"type": "str", "fallback": (env_fallback, ["VAULT_ADDR", "BAO_ADDR"])},
    "namespace": {"type": "str", "fallback": (env_fallback, ["VAULT_NAMESPACE", "BAO_NAMESPACE"])},
    "auth_method": {"type": "str", "default": "token", "choices": ["token", "approle"]},
    "token": {"type": "str", "no_log": True, "fallback": (env_fallback, ["VAULT_TOKEN", "BAO_TOKEN"])},
    "role_id": {"type": "str", "no_log": False, "fallback": (env_fallback, ["VAULT_ROLE_ID"])},
    "secret_id": {"type": "str", "no_log": True, "fallback": (env_fallback, ["VAULT_SECRET_ID"])},
    "approle_mount": {"type": "str", "default": "approle"},
    "ca_cert": {"type": "path", "aliases": ["ca_bundle"], "fallback": (env_fallback, ["VAULT_CACERT", "BAO_CACERT"])},
    "validate_certs": {"type": "bool", "default": True},
    "timeout": {"type": "int", "default": 30},
    "retries": {"type": "int", "default": 3},
}
VAULT_REQUIRED_IF = [("auth_method", "approle", ["role_id", "secret_id"])]

# Ciphertexts and tokens that a server message might echo back: never let one reach a result.
_SECRET_LIKE = re.compile(r"(vault:v\d+:\S+|hv[sbr]\.\S+|s\.[A-Za-z0-9]{20,})")
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def require_hvac() -> None:
    if HVAC_IMPORT_ERROR:
        raise MissingLibrary("hvac", HVAC_IMPORT_ERROR)


def check_segment(value: str, what: str, key_ref: str | None, option: str) -> str:
    """Refuse a key or role name that is not one path segment (a slash would address another path)."""
    if not value or not _SEGMENT.match(value):
        raise InvalidInput(
            f"Check {what}",
            key_ref or value,
            f"'{value}' is not a single path segment (letters, digits, '-', '_', '.'; no slash)",
            f"Set {option} to a plain name",
        )
    return value


def check_mount(value: str, key_ref: str | None = None, option: str = "mount") -> str:
    mount = (value or "").strip("/")
    if not mount or any(not _SEGMENT.match(part) for part in mount.split("/")):
        raise InvalidInput(
            "Check mount",
            key_ref,
            f"mount '{value}' is not a secrets engine path",
            f"Set {option} to the engine's path, for example transit",
        )
    return mount


def validate_name(name: str, mount: str) -> tuple[str, str]:
    mount = check_mount(mount, f"{mount}/{name}")
    return mount, check_segment(name, "transit key name", f"{mount}/{name}", "name")


def key_ref(mount: str, name: str) -> str:
    """The reference stored beside each data key (store column ``key_ref``): ``<mount>/<name>``."""
    return f"{mount}/{name}"


def key_class_of(name: str, given: str | None = None) -> str | None:
    if given:
        return given
    parts = parse_key_name(name)
    if not parts["valid"]:
        return None
    if parts["type"] == "kek" and "master" in parts["purpose"].split("-"):
        return "master-kek"
    return parts["key_class"]


def ciphertext_version(ciphertext: str) -> int:
    """N of ``vault:vN:...``; 0 for anything else (which no key version can decrypt)."""
    # Called once per data key on every scan: kept to a slice, a find and an int().
    if not ciphertext or ciphertext[:7] != "vault:v":
        return 0
    end = ciphertext.find(":", 7)
    head = ciphertext[7:end]
    return int(head) if end > 7 and head.isdigit() else 0


def clean_message(text: str) -> str:
    """A server's error text, short, without anything that looks like a ciphertext or token."""
    text = " ".join(str(text).replace("1 error occurred:", "").replace("*", " ").split())
    return _SECRET_LIKE.sub("<redacted>", text)[:300]


def server_message(error: Exception) -> str:
    errors = getattr(error, "errors", None) or []
    text = "; ".join(str(item) for item in errors) if isinstance(errors, list) else str(errors)
    return clean_message(text) or type(error).__name__


@contextlib.contextmanager
def vault_call(action: str, key_ref: str | None, url: str = "", remedy_404: str | None = None) -> Iterator[None]:
    """Map the client's errors to typed KeyopsErrors: not found, denied, sealed/down, throttled, refused."""
    try:
        yield
    except KeyopsError:
        raise
    except hvac.exceptions.InvalidPath as error:
        raise KeyNotFound(
            action,
            key_ref,
            "Vault has no such key or path (404)",
            remedy_404 or "Check the key name and the mount option",
        ) from error
    except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized) as error:
        raise AccessDenied(
            action,
            key_ref,
            f"permission denied ({server_message(error)})",
            "Use a token (token / VAULT_TOKEN, or AppRole) whose policy grants this path",
        ) from error
    except (hvac.exceptions.VaultDown, hvac.exceptions.VaultNotInitialized) as error:
        raise BackendUnavailable(
            action,
            key_ref,
            f"the server at {url or 'url'} is sealed, uninitialised or in standby",
            "Unseal the server (or point url at the active node) and run again",
        ) from error
    except hvac.exceptions.RateLimitExceeded as error:
        raise BackendUnavailable(
            action,
            key_ref,
            "the server throttled the request (429) after the retries",
            "Run again later, or raise retries",
        ) from error
    except hvac.exceptions.InvalidRequest as error:
        raise InvalidInput(
            action,
            key_ref,
            f"the server refused the request: {server_message(error)}",
            "Fix the option the server names",
        ) from error
    except hvac.exceptions.VaultError as error:
        raise BackendUnavailable(
            action,
            key_ref,
            f"the server answered with an error: {server_message(error)}",
            "Check the server's log and state, then run again",
        ) from error
    except requests.exceptions.SSLError as error:
        raise BackendUnavailable(
            action,
            key_ref,
            f"TLS verification with {url} failed",
            "Set ca_cert (or VAULT_CACERT) to the CA bundle that signed the server's certificate",
        ) from error
    except requests.exceptions.Timeout as error:
        raise BackendUnavailable(
            action, key_ref, f"the server at {url} did not answer in time", "Check the server, or raise timeout"
        ) from error
    except requests.exceptions.ConnectionError as error:
        raise BackendUnavailable(
            action,
            key_ref,
            f"cannot connect to {url}: the server is down or the address is wrong",
            "Start the server, or set url (or VAULT_ADDR) to its address",
        ) from error
    except requests.exceptions.RequestException as error:
        raise InvalidInput(
            action,
            key_ref,
            f"the request to {url} could not be made ({type(error).__name__})",
            "Set url (or VAULT_ADDR) to http(s)://host:port",
        ) from error


def _check_url(url: str | None, key_ref: str | None) -> str:
    parsed = urlparse(url or "")
    if not url or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidInput(
            "Connect to Vault",
            key_ref,
            f"url '{url or ''}' is not an http(s) URL",
            "Set url (or VAULT_ADDR) to http(s)://host:port",
        )
    try:
        parsed.port  # noqa: B018 - reading the port validates it
    except ValueError as error:
        raise InvalidInput(
            "Connect to Vault",
            key_ref,
            f"url '{url}' has an invalid port",
            "Set url (or VAULT_ADDR) to http(s)://host:port",
        ) from error
    return url.rstrip("/")


def _session(url: str, retries: int) -> requests.Session:
    session = requests.Session()
    # Proxy settings are read from the environment once, not on every request (rewrap sends thousands).
    session.proxies.update(requests.utils.get_environ_proxies(url))
    session.trust_env = False
    # Connection errors are retried for every method (nothing reached the server); 429/502/504 only for reads,
    # so a write such as a rotation is never sent twice.
    retry = Retry(
        total=retries,
        connect=retries,
        read=0,
        status=retries,
        backoff_factor=0.3,
        status_forcelist=(429, 502, 504),
        allowed_methods=frozenset({"GET", "HEAD", "LIST"}),
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=16)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class Vault:
    """An authenticated hvac client plus the facts the modules report (url, namespace)."""

    def __init__(self, client: Any, url: str, namespace: str | None) -> None:
        self.client = client
        self.url = url
        self.namespace = namespace

    @property
    def transit(self) -> Any:
        return self.client.secrets.transit

    @property
    def pki(self) -> Any:
        return self.client.secrets.pki

    def location(self, mount: str) -> str:
        prefix = f"{self.namespace.strip('/')}/" if self.namespace else ""
        return f"{self.url}/v1/{prefix}{mount}"

    def call(self, action: str, key_ref: str | None = None, remedy_404: str | None = None) -> Any:
        return vault_call(action, key_ref, self.url, remedy_404)


def connect(params: dict[str, Any], key_ref: str | None = None) -> Vault:
    """Build the client from the module's connection options and log in (token or AppRole)."""
    require_hvac()
    url = _check_url(params.get("url"), key_ref)
    verify: bool | str = params.get("validate_certs", True)
    if verify and params.get("ca_cert"):
        verify = params["ca_cert"]
    client = hvac.Client(
        url=url,
        namespace=params.get("namespace") or None,
        verify=verify,
        timeout=params.get("timeout") or 30,
        session=_session(url, params.get("retries") or 0),
    )
    if params.get("auth_method") == "approle":
        with vault_call("Log in with AppRole", key_ref, url):
            client.auth.approle.login(
                params["role_id"], params["secret_id"], mount_point=params.get("approle_mount") or "approle"
            )
    elif params.get("token"):
        client.token = params["token"]
    else:
        raise InvalidInput(
            "Connect to Vault",
            key_ref,
            "no token was given",
            "Set token (or VAULT_TOKEN), or auth_method=approle with role_id and secret_id",
        )
    return Vault(client, url, params.get("namespace"))


def emit_warnings(module: Any, result: dict[str, Any]) -> dict[str, Any]:
    """Hand a result's ``warnings`` to ``module.warn`` (passing them to exit_json is deprecated)."""
    for warning in result.pop("warnings", None) or []:
        module.warn(warning)
    return result


def call_batch(function: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call a transit batch endpoint; an answer of 400 that still carries per-item results is returned as such
    (Vault answers 400 when some items of a batch fail, OpenBao 200)."""
    try:
        return function(*args, **kwargs)
    except hvac.exceptions.InvalidRequest as error:
        try:
            answer = json.loads(error.text or "")
        except ValueError:
            raise error from None
        if not isinstance(answer, dict) or not (answer.get("data") or {}).get("batch_results"):
            raise
        return answer
