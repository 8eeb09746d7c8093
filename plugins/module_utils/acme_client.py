# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: a small ACME (RFC 8555) client on top of the ``acme`` library, for renewal and revocation.

The account key is an EC P-256 key kept in a 0600 file; it is never returned. Server problems are mapped to
the collection's typed errors by their ACME error type, never passed on as raw responses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import tempfile
import traceback
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    AccessDenied,
    BackendUnavailable,
    Conflict,
    InvalidInput,
    KeyopsError,
    MissingLibrary,
)

try:
    import josepy as jose
    import requests
    from acme import challenges, client, messages
    from acme import errors as acme_errors
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ACME_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported through MissingLibrary
    ACME_IMPORT_ERROR = traceback.format_exc()

USER_AGENT = "keyops.runbooks"
# RFC 5280 CRLReason codes that ACME servers accept for revokeCert.
REVOCATION_REASONS = {
    "unspecified": 0,
    "keyCompromise": 1,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
    "privilegeWithdrawn": 9,
}
ACME_ERROR_PREFIX = "urn:ietf:params:acme:error:"

# Connection options shared by the ACME modules (documented in doc_fragments/acme.py).
ACME_ARGSPEC: dict[str, Any] = {
    "acme_directory": {"type": "str", "required": True},
    "acme_ca_bundle": {"type": "path"},
    "account_key_path": {"type": "path", "required": True, "no_log": False},
    "account_email": {"type": "str"},
    "terms_agreed": {"type": "bool", "default": False},
}


def require_acme() -> None:
    if ACME_IMPORT_ERROR:
        raise MissingLibrary("acme", ACME_IMPORT_ERROR)


def write_atomic(path: str, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder, created with ``mode``, then rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp_path = tempfile.mkstemp(prefix=".keyops-", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_path)
        raise


@dataclasses.dataclass
class AcmeSettings:
    directory: str
    account_key_path: str
    ca_bundle: str | None = None
    email: str | None = None
    terms_agreed: bool = False
    timeout: int = 30
    http01_webroot: str | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> AcmeSettings:
        return cls(
            directory=params["acme_directory"],
            account_key_path=params["account_key_path"],
            ca_bundle=params.get("acme_ca_bundle"),
            email=params.get("account_email"),
            terms_agreed=bool(params.get("terms_agreed")),
            http01_webroot=params.get("http01_webroot"),
        )


def load_account_key(path: str, create: bool) -> tuple[Any, bool]:
    """(JWK, created). A missing key is made (EC P-256, 0600) only when ``create``; check mode never writes."""
    require_acme()
    try:
        with open(path, "rb") as handle:
            pem = handle.read()
    except FileNotFoundError:
        if not create:
            return None, False
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
            write_atomic(path, pem, 0o600)
        except OSError as error:
            raise InvalidInput(
                "Create ACME account key",
                None,
                f"'{path}' cannot be written ({error.strerror})",
                "Point account_key_path at a writable location",
            ) from None
        return jose.JWKEC(key=key), True
    except OSError as error:
        raise InvalidInput(
            "Read ACME account key",
            None,
            f"'{path}' cannot be read ({error.strerror})",
            "Fix the file's permissions or point account_key_path elsewhere",
        ) from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise InvalidInput(
            "Read ACME account key",
            None,
            f"'{path}' is not an unencrypted PEM private key",
            "Point account_key_path at the account's PEM key, or at a new path to create one",
        ) from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return jose.JWKEC(key=key), False
    return jose.JWKRSA(key=key), False


def _signing_alg(jwk: Any) -> Any:
    if isinstance(jwk, jose.JWKEC):
        return {256: jose.ES256, 384: jose.ES384, 521: jose.ES512}[jwk.key.curve.key_size]
    return jose.RS256


def acme_error(action: str, key_ref: str | None, error: BaseException) -> KeyopsError:
    """Map an ACME client or transport failure to a typed error with a remedy (no raw server body)."""
    if isinstance(error, messages.Error):
        code = (error.typ or "").removeprefix(ACME_ERROR_PREFIX)
        detail = (error.detail or "").splitlines()[0][:200] if error.detail else ""
        reason = f"the ACME server answered '{code}'" + (f" ({detail})" if detail else "")
        if code in ("unauthorized", "accountDoesNotExist", "userActionRequired", "externalAccountRequired"):
            return AccessDenied(
                action,
                key_ref,
                reason,
                "Check account_key_path (the account that owns the certificate) and terms_agreed",
            )
        if code == "rateLimited":
            return BackendUnavailable(action, key_ref, reason, "Wait for the rate limit to pass, then run again")
        if code == "alreadyRevoked":
            return Conflict(action, key_ref, reason, "Nothing to do: the certificate is already revoked")
        if code in ("serverInternal", "badNonce"):
            return BackendUnavailable(action, key_ref, reason, "Run again; the ACME server had a transient failure")
        return InvalidInput(action, key_ref, reason, "Fix the request (names, CSR key type) and run again")
    if isinstance(error, acme_errors.TimeoutError):
        return BackendUnavailable(
            action, key_ref, "the ACME server did not finish the order in time", "Raise acme_timeout or try again later"
        )
    if isinstance(error, requests.exceptions.SSLError):
        return BackendUnavailable(
            action,
            key_ref,
            "the ACME server's TLS certificate does not verify",
            "Set acme_ca_bundle to the CA that issued the ACME server's listener certificate",
        )
    if isinstance(error, requests.exceptions.RequestException):
        return BackendUnavailable(
            action,
            key_ref,
            f"the ACME server cannot be reached ({type(error).__name__})",
            "Check acme_directory and that the server is up",
        )
    if isinstance(error, acme_errors.Error):
        return BackendUnavailable(
            action,
            key_ref,
            f"the ACME exchange failed ({type(error).__name__})",
            "Run again; see the ACME server's logs if it persists",
        )
    return KeyopsError(action, key_ref, f"unexpected failure ({type(error).__name__})", None)


class AcmeSession:
    """One account on one ACME server for the length of a module run."""

    def __init__(self, settings: AcmeSettings, account_key: Any) -> None:
        require_acme()
        self.settings = settings
        verify: bool | str = settings.ca_bundle or True
        self.net = client.ClientNetwork(
            account_key,
            alg=_signing_alg(account_key),
            verify_ssl=verify,
            user_agent=USER_AGENT,
            timeout=settings.timeout,
        )
        self.account_key = account_key
        try:
            directory = client.ClientV2.get_directory(settings.directory, self.net)
        except (acme_errors.Error, messages.Error, requests.exceptions.RequestException, ValueError) as error:
            if isinstance(error, ValueError) and not isinstance(error, requests.exceptions.RequestException):
                raise InvalidInput(
                    "Read ACME directory",
                    None,
                    f"'{settings.directory}' is not an ACME directory",
                    "Set acme_directory to the server's directory URL (…/directory or …/dir)",
                ) from None
            raise acme_error("Read ACME directory", None, error) from None
        self.client = client.ClientV2(directory, self.net)
        self._register()

    def _register(self) -> None:
        registration = messages.NewRegistration.from_data(
            email=self.settings.email, terms_of_service_agreed=self.settings.terms_agreed
        )
        try:
            account = self.client.new_account(registration)
        except acme_errors.ConflictError as existing:
            # The key already has an account: use it (RFC 8555 7.3.1).
            account = messages.RegistrationResource(uri=existing.location, body=messages.Registration())
            self.net.account = account
        except (acme_errors.Error, messages.Error, requests.exceptions.RequestException) as error:
            raise acme_error("Register ACME account", None, error) from None
        self.net.account = account

    def issue(self, key_ref: str, csr_pem: bytes, deadline_s: int) -> tuple[str, str | None]:
        """(full chain PEM, certificate URL). Answers http-01 for every pending authorization, then finalizes."""
        deadline = dt.datetime.now() + dt.timedelta(seconds=deadline_s)  # the acme library compares naive times
        try:
            order = self.client.new_order(csr_pem)
            for authorization in order.authorizations:
                if authorization.body.status == messages.STATUS_VALID:
                    continue
                self._answer_http01(key_ref, authorization)
            order = self.client.poll_authorizations(order, deadline)
            # Alternate chains are fetched later and separately, so a failure there cannot lose this certificate.
            order = self.client.finalize_order(order, deadline, fetch_alternative_chains=False)
        except (acme_errors.Error, messages.Error, requests.exceptions.RequestException) as error:
            if isinstance(error, acme_errors.ValidationError):
                raise InvalidInput(
                    "Issue certificate",
                    key_ref,
                    "the ACME server refused the http-01 challenge",
                    "Serve http01_webroot at http://<name>/.well-known/acme-challenge/",
                ) from None
            raise acme_error("Issue certificate", key_ref, error) from None
        return order.fullchain_pem, order.body.certificate

    def alternate_chains(self, certificate_url: str) -> list[str]:
        """The alternate full chains the server links from the certificate (RFC 8555 7.4.2). May raise."""
        new_nonce = self.client.directory["newNonce"]
        response = self.net.post(certificate_url, None, new_nonce_url=new_nonce)
        links = requests.utils.parse_header_links(response.headers.get("Link", ""))
        urls = [link["url"] for link in links if link.get("rel") == "alternate" and link.get("url")]
        return [self.net.post(url, None, new_nonce_url=new_nonce).text for url in urls]

    def _answer_http01(self, key_ref: str, authorization: Any) -> None:
        http01 = next(
            (item for item in authorization.body.challenges if isinstance(item.chall, challenges.HTTP01)), None
        )
        if http01 is None:
            raise InvalidInput(
                "Issue certificate",
                key_ref,
                f"the ACME server offers no http-01 challenge for {authorization.body.identifier.value}",
                "Use an ACME server or account that allows http-01 for these names",
            )
        response, validation = http01.response_and_validation(self.account_key)
        token_path = None
        if self.settings.http01_webroot:
            token_path = os.path.join(
                self.settings.http01_webroot, ".well-known", "acme-challenge", http01.chall.encode("token")
            )
            os.makedirs(os.path.dirname(token_path), exist_ok=True)
            write_atomic(token_path, validation.encode(), 0o644)
        try:
            self.client.answer_challenge(http01, response)
        finally:
            if token_path:
                with contextlib.suppress(OSError):
                    os.unlink(token_path)

    def revoke(self, key_ref: str, cert: Any, reason: str) -> bool:
        """Revoke; True when this call revoked it, False when the server says it already was."""
        try:
            self.client.revoke(cert, REVOCATION_REASONS[reason])
        except messages.Error as error:
            if (error.typ or "").removeprefix(ACME_ERROR_PREFIX) == "alreadyRevoked":
                return False
            raise acme_error("Revoke certificate", key_ref, error) from None
        except (acme_errors.Error, requests.exceptions.RequestException) as error:
            raise acme_error("Revoke certificate", key_ref, error) from None
        return True
