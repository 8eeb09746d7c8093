# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: what key_inventory does below its ``main()``.

One module process reads every source the inventory is pointed at, concurrently, each through the very function
its ``*_info`` module calls (validated against that module's own options, so defaults and environment fallbacks are
the same), then reconciles, evaluates the policy and writes the reports like key_inventory_report. A source that
fails is reported with its error while the others are still inventoried; its backend's register entries that
nothing matched are listed as unverified, never as missing.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import importlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    BackendUnavailable,
    InvalidInput,
    KeyopsError,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.inventory_report import (
    REPORT_ARGSPEC,
    check_as_of,
    inventory_report,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.register import load_register

ACTION = "Read key inventory sources"
# The code behind each kind of source, imported only when a source of that kind is read: the module start compiles
# every module it imports (boto3, python-pkcs11, cryptography, detect-secrets...), so an estate without key files or
# tokens does not pay for them.
PACKAGE = "ansible_collections.keyops.runbooks.plugins.module_utils"
CODE = {
    "vault_transit": f"{PACKAGE}.vault_transit",
    "aws_kms": f"{PACKAGE}.backends.aws_kms",
    "pkcs11": f"{PACKAGE}.pkcs11_ops",
    "x509": f"{PACKAGE}.x509",
    "file": f"{PACKAGE}.key_scan",
}

# What key_inventory takes per source. Secrets are named by environment variable, never given: a value in a
# variable file or a loop item could show in output; a name cannot.
VAULT_SOURCE: dict[str, Any] = {
    "url": {"type": "str", "required": True},
    "token_env": {"type": "str", "no_log": False},
    "namespace": {"type": "str"},
    "mounts": {"type": "list", "elements": "str"},
    "ca_cert": {"type": "path"},
    "key_classes": {"type": "dict", "no_log": False},
}
KMS_SOURCE: dict[str, Any] = {
    "region": {"type": "str", "required": True},
    "endpoint_url": {"type": "str"},
    "profile": {"type": "str"},
    "customer_managed_only": {"type": "bool", "default": True},
}
PKCS11_SOURCE: dict[str, Any] = {
    "token_label": {"type": "str", "required": True, "no_log": False},
    "module": {"type": "path"},
    "token_serial": {"type": "str", "no_log": False},
    "user_pin_env": {"type": "str", "no_log": False},
}
ENDPOINT: dict[str, Any] = {
    "host": {"type": "str", "required": True},
    "port": {"type": "int", "default": 443},
    "server_name": {"type": "str"},
    "names": {"type": "list", "elements": "str"},
    "timeout": {"type": "float"},
}
KEY_INVENTORY_ARGSPEC: dict[str, Any] = {
    "vault_servers": {"type": "list", "elements": "dict", "default": [], "options": VAULT_SOURCE},
    "aws_kms": {"type": "list", "elements": "dict", "default": [], "options": KMS_SOURCE},
    # Token labels and the NAMES of PIN variables: nothing secret.
    "pkcs11_tokens": {"type": "list", "elements": "dict", "default": [], "options": PKCS11_SOURCE, "no_log": False},
    "x509_paths": {"type": "list", "elements": "path", "default": []},
    "x509_endpoints": {"type": "list", "elements": "dict", "default": [], "options": ENDPOINT},
    "x509_ca_bundle": {"type": "path"},
    "pkcs12_password_envs": {"type": "list", "elements": "str", "default": [], "no_log": False},
    "file_scan_paths": {"type": "list", "elements": "path", "default": []},
    "fail_on_source_errors": {"type": "bool", "default": False},
    **REPORT_ARGSPEC,
}


class Secrets:
    """Secret values the sources read from the environment, for the module to mask in everything it returns."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, values: Any) -> None:
        with self._lock:
            self.values.update(value for value in values if isinstance(value, str) and value)

    def env(self, name: str, option: str, source: str) -> str:
        value = os.environ.get(name)
        if not value:
            raise InvalidInput(
                ACTION,
                None,
                f"{source}: the environment variable {name} named by {option} is not set",
                f"Export {name} where the module runs (the task's environment), or fix {option}",
            )
        self.add([value])
        return value


@dataclasses.dataclass
class Source:
    backend: str
    name: str
    read: Callable[[], dict[str, Any]]
    # Sources of one lane run one after the other (PKCS#11 tokens share one loaded library); lanes run at once.
    lane: str = ""


@dataclasses.dataclass
class Outcome:
    source: Source
    result: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0


def module_params(spec: dict[str, Any], given: dict[str, Any], source: str, secrets: Secrets) -> dict[str, Any]:
    """``given`` validated against a *_info module's own options: its defaults and environment fallbacks apply."""
    result = ArgumentSpecValidator(spec).validate({key: value for key, value in given.items() if value is not None})
    # Fallbacks such as AWS_SECRET_ACCESS_KEY or VAULT_TOKEN are secrets too.
    secrets.add(getattr(result, "_no_log_values", ()))
    if result.error_messages:
        raise InvalidInput(ACTION, None, f"{source}: {'; '.join(result.error_messages)}", "Fix that source's options")
    return result.validated_parameters


def read_vault(item: dict[str, Any], policy: dict[str, Any], secrets: Secrets) -> dict[str, Any]:
    from ansible_collections.keyops.runbooks.plugins.module_utils import vault_transit

    source = f"Vault {item['url']}"
    given = {key: item.get(key) for key in ("url", "namespace", "mounts", "ca_cert", "key_classes")}
    if item.get("token_env"):
        given["token"] = secrets.env(item["token_env"], "token_env", source)
    return vault_transit.key_info(
        module_params(vault_transit.KEY_INFO_ARGSPEC, dict(given, policy=policy), source, secrets)
    )


def read_kms(item: dict[str, Any], secrets: Secrets) -> dict[str, Any]:
    from ansible_collections.keyops.runbooks.plugins.module_utils.backends import aws_kms

    source = f"KMS {item['region']}"
    given = {key: item.get(key) for key in ("region", "endpoint_url", "profile", "customer_managed_only")}
    return aws_kms.key_info(module_params(aws_kms.KEY_INFO_ARGSPEC, given, source, secrets))


def read_pkcs11(item: dict[str, Any], policy: dict[str, Any], secrets: Secrets) -> dict[str, Any]:
    from ansible_collections.keyops.runbooks.plugins.module_utils import pkcs11_ops

    source = f"PKCS#11 token {item['token_label']}"
    given = {"token_label": item["token_label"], "token_serial": item.get("token_serial"), "policy": policy}
    given["pkcs11_module"] = item.get("module")
    if item.get("user_pin_env"):
        given["user_pin"] = secrets.env(item["user_pin_env"], "user_pin_env", source)
    return pkcs11_ops.key_info(module_params(pkcs11_ops.INFO_ARGSPEC, given, source, secrets))


def read_x509(params: dict[str, Any], secrets: Secrets) -> dict[str, Any]:
    from ansible_collections.keyops.runbooks.plugins.module_utils import x509

    # An unset password variable is an empty password, as the role's env lookup always gave.
    passwords = [os.environ.get(name, "") for name in params["pkcs12_password_envs"]]
    secrets.add(passwords)
    given = {
        "paths": params["x509_paths"],
        "endpoints": params["x509_endpoints"],
        "ca_bundle": params.get("x509_ca_bundle"),
        "pkcs12_passwords": passwords,
        "policy": params["policy"],
    }
    return x509.inventory_scan(module_params(x509.INVENTORY_ARGSPEC, given, "certificates", secrets))


def read_files(params: dict[str, Any], secrets: Secrets) -> dict[str, Any]:
    from ansible_collections.keyops.runbooks.plugins.module_utils import key_scan

    given = {"paths": params["file_scan_paths"], "policy": params["policy"]}
    return key_scan.scan_files(module_params(key_scan.SCAN_ARGSPEC, given, "key files", secrets))


def plan_sources(params: dict[str, Any], secrets: Secrets) -> list[Source]:
    """Every source the options name, in report order: Vault servers, KMS regions, tokens, certificates, files."""
    policy = params.get("policy") or {}
    sources = [
        Source("vault_transit", item["url"], functools.partial(read_vault, item, policy, secrets))
        for item in params["vault_servers"]
    ]
    sources += [
        Source("aws_kms", item["region"], functools.partial(read_kms, item, secrets)) for item in params["aws_kms"]
    ]
    sources += [
        Source("pkcs11", item["token_label"], functools.partial(read_pkcs11, item, policy, secrets), lane="pkcs11")
        for item in params["pkcs11_tokens"]
    ]
    if params["x509_paths"] or params["x509_endpoints"]:
        sources.append(
            Source("x509", "certificate files and TLS endpoints", functools.partial(read_x509, params, secrets))
        )
    if params["file_scan_paths"]:
        sources.append(Source("file", "key files", functools.partial(read_files, params, secrets)))
    return sources


def read_one(source: Source, clock: Callable[[], float] = time.monotonic) -> Outcome:
    started = clock()
    try:
        return Outcome(source, result=source.read(), seconds=round(clock() - started, 3))
    except KeyopsError as error:
        # The collection's errors carry a message fit to show (no secret, no raw server answer); anything else is a
        # defect and is not swallowed.
        return Outcome(source, error=error.message, seconds=round(clock() - started, 3))


# KMS answers several calls per key (describe, tags, rotation status and history): at any size it is the longest
# source, so its lanes start first and read while the other backends' code is still being imported.
FIRST_TO_START = ("aws_kms",)


def read_sources(sources: list[Source]) -> list[Outcome]:
    """Read every source, lanes at once and each lane in order; outcomes in the order of ``sources``."""
    lanes: dict[str, list[int]] = {}
    for index, source in enumerate(sources):
        lanes.setdefault(source.lane or f"#{index}", []).append(index)
    outcomes: list[Outcome | None] = [None] * len(sources)

    def run(indexes: list[int]) -> None:
        for index in indexes:
            outcomes[index] = read_one(sources[index])

    def starts_late(indexes: list[int]) -> bool:
        return not any(sources[index].backend in FIRST_TO_START for index in indexes)

    if lanes:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(lanes)) as pool:
            futures = []
            for indexes in sorted(lanes.values(), key=starts_late):
                # Each lane's code is imported here, one lane after the other, rather than by the reading threads
                # at once; a lane starts as soon as its own code is in.
                for backend in dict.fromkeys(sources[index].backend for index in indexes):
                    importlib.import_module(CODE[backend])
                futures.append(pool.submit(run, indexes))
            for future in futures:
                future.result()
    return [outcome for outcome in outcomes if outcome is not None]


def summarise(outcomes: list[Outcome]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """Per-source lines for the result, the errors, and the backends with a source that failed (with why)."""
    lines: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    unread: dict[str, str] = {}
    for outcome in outcomes:
        source = outcome.source
        line: dict[str, Any] = {"backend": source.backend, "source": source.name, "seconds": outcome.seconds}
        if outcome.error is not None:
            line["error"] = outcome.error
            errors.append({"backend": source.backend, "source": source.name, "msg": outcome.error})
            reason = f"the {source.backend} source {source.name} could not be read"
            unread[source.backend] = f"{unread[source.backend]}; {reason}" if source.backend in unread else reason
        else:
            result = outcome.result or {}
            line["keys"] = len(result.get("keys") or result.get("records") or [])
        lines.append(line)
    return lines, errors, unread


def key_inventory(
    params: dict[str, Any],
    check_mode: bool,
    warn: Callable[[str], None] = lambda _message: None,
    mask: Callable[[set[str]], None] = lambda _values: None,
) -> dict[str, Any]:
    """Read every source at once, then build and write the inventory as key_inventory_report does."""
    check_as_of(params)
    # The register is checked before any backend is read: a schema error fails fast with every line and field.
    entries = load_register(params["register_path"]) if params.get("register_path") else None
    secrets = Secrets()
    try:
        sources = plan_sources(params, secrets)
        outcomes = read_sources(sources)
    finally:
        mask(secrets.values)
    lines, errors, unread = summarise(outcomes)
    for outcome in outcomes:
        for warning in (outcome.result or {}).pop("warnings", None) or []:
            warn(f"{outcome.source.backend} {outcome.source.name}: {warning}")
    for item in errors:
        warn(f"{item['backend']} {item['source']} could not be read, the inventory goes on without it: {item['msg']}")

    failing = bool(errors) and params.get("fail_on_source_errors")
    report_params = dict(
        params,
        sources=[outcome.result for outcome in outcomes if outcome.result is not None],
        backends=sorted({source.backend for source in sources} | set(params.get("backends") or [])),
        # When failing on the sources, the severity gate would only hide that reason.
        fail_on="none" if failing else params.get("fail_on"),
    )
    result = inventory_report(report_params, check_mode, entries, unread, errors)
    result["sources"] = lines
    if failing:
        first = errors[0]
        raise BackendUnavailable(
            ACTION,
            None,
            f"{len(errors)} source(s) could not be read (first: {first['backend']} {first['source']}: "
            f"{first['msg']}); the reports list them",
            "Fix that source or its options, or set fail_on_source_errors=false to inventory the others",
            **{key: value for key, value in result.items() if key != "records"},
        )
    return result


def run_key_inventory(module: Any) -> dict[str, Any]:
    return key_inventory(module.params, module.check_mode, module.warn, module.no_log_values.update)
