"""key_inventory's glue: source options validated against the *_info modules' own, secrets read by name, sources
read at once with their failures kept apart, and a failed backend's unmatched register entries left unverified."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ansible_collections.keyops.runbooks.plugins.module_utils import inventory_sources as inv
from ansible_collections.keyops.runbooks.plugins.module_utils import key_scan, vault_transit
from ansible_collections.keyops.runbooks.plugins.module_utils.backends import aws_kms
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import BackendUnavailable, InvalidInput
from ansible_collections.keyops.runbooks.plugins.module_utils.reconcile import build_inventory
from ansible_collections.keyops.runbooks.plugins.module_utils.register import RegisterEntry

NOW = "2026-12-03T12:00:00Z"
# A port nothing listens on: connecting is refused at once.
DEAD_VAULT = "http://127.0.0.1:9"


def defaults(**overrides: Any) -> dict[str, Any]:
    """key_inventory's parameters with every default, as AnsibleModule would hand them over."""
    params: dict[str, Any] = {
        "vault_servers": [],
        "aws_kms": [],
        "pkcs11_tokens": [],
        "x509_paths": [],
        "x509_endpoints": [],
        "x509_ca_bundle": None,
        "pkcs12_password_envs": [],
        "file_scan_paths": [],
        "fail_on_source_errors": False,
        "records": [],
        "backends": [],
        "register_path": None,
        "policy": {},
        "output_dir": None,
        "formats": ["csv", "json", "html"],
        "due_window_days": None,
        "fail_on": "none",
        "title": "Key inventory",
        "as_of": NOW,
        "return_records": False,
    }
    params.update(overrides)
    return params


@pytest.mark.parametrize(
    ("spec", "given", "env", "expected", "secret"),
    [
        pytest.param(
            vault_transit.KEY_INFO_ARGSPEC,
            {"url": "http://vault:8200"},
            {"VAULT_TOKEN": "hvs.fallback-token"},
            {"token": "hvs.fallback-token", "workers": 8, "timeout": 30, "auth_method": "token", "key_classes": {}},
            "hvs.fallback-token",
            id="vault: the module's defaults and its VAULT_TOKEN fallback",
        ),
        pytest.param(
            aws_kms.KEY_INFO_ARGSPEC,
            {"region": "eu-central-1", "customer_managed_only": True, "endpoint_url": None},
            {"AWS_SECRET_ACCESS_KEY": "secret-key-canary", "AWS_ACCESS_KEY_ID": "AKIATEST"},
            {"region": "eu-central-1", "max_workers": 8, "keys": [], "customer_managed_only": True},
            "secret-key-canary",
            id="kms: defaults, and the secret key from the environment is a secret",
        ),
        pytest.param(
            key_scan.SCAN_ARGSPEC,
            {"paths": ["/srv"], "policy": {}},
            {},
            {"paths": ["/srv"], "max_size": 1048576, "use_detector": True},
            None,
            id="key files: the scan's defaults",
        ),
    ],
)
def test_source_options_get_the_info_modules_defaults_and_fallbacks(
    monkeypatch: pytest.MonkeyPatch, spec: dict, given: dict, env: dict, expected: dict, secret: str | None
) -> None:
    for name in ("VAULT_TOKEN", "BAO_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    secrets = inv.Secrets()
    params = inv.module_params(spec, given, "a source", secrets)
    assert {key: params[key] for key in expected} == expected
    assert (secret in secrets.values) if secret else not secrets.values


def test_bad_source_options_name_the_source() -> None:
    with pytest.raises(InvalidInput, match=r"Vault http://x: .*workers"):
        inv.module_params(vault_transit.KEY_INFO_ARGSPEC, {"url": "http://x", "workers": "many"}, "Vault http://x",
                          inv.Secrets())  # fmt: skip


@pytest.mark.parametrize(
    ("value", "error"),
    [("s3cr3t-pin", None), ("", "KEYOPS_TEST_PIN named by user_pin_env is not set"), (None, "is not set")],
)
def test_a_secret_is_read_by_its_variable_name(monkeypatch: pytest.MonkeyPatch, value: str | None, error: str) -> None:
    monkeypatch.delenv("KEYOPS_TEST_PIN", raising=False)
    if value is not None:
        monkeypatch.setenv("KEYOPS_TEST_PIN", value)
    secrets = inv.Secrets()
    if error:
        with pytest.raises(InvalidInput, match=error):
            secrets.env("KEYOPS_TEST_PIN", "user_pin_env", "PKCS#11 token t")
        assert not secrets.values
    else:
        assert secrets.env("KEYOPS_TEST_PIN", "user_pin_env", "PKCS#11 token t") == value
        assert secrets.values == {value}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param(defaults(), [], id="nothing"),
        pytest.param(
            defaults(
                vault_servers=[{"url": "http://a"}, {"url": "http://b"}],
                aws_kms=[{"region": "us-east-1"}],
                pkcs11_tokens=[{"token_label": "t1"}, {"token_label": "t2"}],
                x509_endpoints=[{"host": "h", "port": 443}],
                file_scan_paths=["/srv"],
            ),
            [
                ("vault_transit", "http://a", ""),
                ("vault_transit", "http://b", ""),
                ("aws_kms", "us-east-1", ""),
                ("pkcs11", "t1", "pkcs11"),
                ("pkcs11", "t2", "pkcs11"),
                ("x509", "certificate files and TLS endpoints", ""),
                ("file", "key files", ""),
            ],
            id="every kind, tokens in one lane",
        ),
        pytest.param(
            defaults(x509_paths=["/etc/pki"]),
            [("x509", "certificate files and TLS endpoints", "")],
            id="certificate files alone",
        ),
    ],
)
def test_the_sources_planned(params: dict[str, Any], expected: list[tuple[str, str, str]]) -> None:
    sources = inv.plan_sources(params, inv.Secrets())
    assert [(source.backend, source.name, source.lane) for source in sources] == expected


def test_sources_run_at_once_except_within_a_lane_and_one_failure_stays_its_own() -> None:
    running = 0
    peak = {"": 0, "pkcs11": 0}
    lock = threading.Lock()

    def reader(lane: str, fail: bool = False) -> Any:
        def read() -> dict[str, Any]:
            nonlocal running
            with lock:
                running += 1
                peak[lane] = max(peak[lane], running)
            time.sleep(0.1)
            with lock:
                running -= 1
            if fail:
                raise BackendUnavailable("List keys", None, "the server is unreachable", "Check url")
            return {"keys": [{"id": lane}]}

        return read

    sources = [
        inv.Source("vault_transit", "a", reader("")),
        inv.Source("vault_transit", "b", reader("", fail=True)),
        inv.Source("aws_kms", "r", reader("")),
    ]
    sources += [inv.Source("pkcs11", f"t{n}", reader("pkcs11"), lane="pkcs11") for n in range(3)]
    outcomes = inv.read_sources(sources)
    assert [outcome.source.name for outcome in outcomes] == ["a", "b", "r", "t0", "t1", "t2"]
    assert [outcome.error is None for outcome in outcomes] == [True, False, True, True, True, True]
    assert outcomes[1].error == "List keys failed: the server is unreachable. Check url"
    assert peak[""] >= 2, "sources of different lanes overlap"
    lines, errors, unread = inv.summarise(outcomes)
    assert errors == [{"backend": "vault_transit", "source": "b", "msg": outcomes[1].error}]
    assert unread == {"vault_transit": "the vault_transit source b could not be read"}
    assert [line.get("keys") for line in lines] == [1, None, 1, 1, 1, 1]


def test_a_lane_runs_its_sources_one_after_the_other() -> None:
    spans: list[tuple[float, float]] = []

    def read() -> dict[str, Any]:
        start = time.monotonic()
        time.sleep(0.05)
        spans.append((start, time.monotonic()))
        return {"keys": []}

    inv.read_sources([inv.Source("pkcs11", f"t{n}", read, lane="pkcs11") for n in range(3)])
    spans.sort()
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(spans))


def entry(name: str, backend: str = "vault_transit", location: str = "transit") -> RegisterEntry:
    return RegisterEntry(name=name, backend=backend, location=location, key_class="kek", owner="payments",
                         custodians=["a", "b"], purpose="wraps", rotation_period_days=90,
                         backup_location="snapshot", line=3)  # fmt: skip


def vault_record(name: str) -> dict[str, Any]:
    return {"id": name, "name": name, "backend": "vault_transit", "location": "http://v:8200/v1/transit",
            "algorithm": "aes256-gcm96", "created": "2026-11-20T00:00:00Z", "rotation_period_days": 90,
            "findings": []}  # fmt: skip


@pytest.mark.parametrize(
    ("unread", "missing", "unverified"),
    [
        (None, ["prod-gone-kek-20261120"], []),
        ({"vault_transit": "the vault_transit source http://b could not be read"}, [], ["prod-gone-kek-20261120"]),
        ({"aws_kms": "the aws_kms source r could not be read"}, ["prod-gone-kek-20261120"], []),
    ],
)
def test_a_failed_backends_unmatched_entries_are_unverified(
    unread: dict[str, str] | None, missing: list[str], unverified: list[str]
) -> None:
    entries = [entry("prod-here-kek-20261120"), entry("prod-gone-kek-20261120")]
    inventory = build_inventory([vault_record("prod-here-kek-20261120")], entries, now=NOW,
                                backends={"vault_transit"}, unread=unread)  # fmt: skip
    assert [item["name"] for item in inventory.missing] == missing
    assert [item["name"] for item in inventory.unverified] == unverified
    if unverified:
        assert inventory.unverified[0]["reason"] == unread["vault_transit"]
    assert inventory.records[0].get("owner") == "payments", "the entry a record matches is still reconciled"


def write_register(path: Path, *entries: RegisterEntry) -> str:
    keys = [{k: v for k, v in item.to_dict().items() if v is not None and k != "line"} for item in entries]
    path.write_text(yaml.safe_dump({"version": 1, "keys": keys}))
    return str(path)


def test_one_source_down_the_records_still_reported_and_the_reports_say_so(tmp_path: Path) -> None:
    register = write_register(
        tmp_path / "register.yml", entry("prod-here-kek-20261120"), entry("prod-gone-kek-20261120")
    )
    params = defaults(
        vault_servers=[{"url": DEAD_VAULT}],
        records=[vault_record("prod-here-kek-20261120")],
        register_path=register,
        output_dir=str(tmp_path / "reports"),
    )
    warnings: list[str] = []
    result = inv.key_inventory(params, False, warnings.append)
    assert [(item["backend"], item["source"]) for item in result["source_errors"]] == [("vault_transit", DEAD_VAULT)]
    assert result["counts"]["keys"] == 1 and result["missing_from_backend"] == []
    assert [item["name"] for item in result["unverified_register_entries"]] == ["prod-gone-kek-20261120"]
    assert result["sources"][0]["error"] == result["source_errors"][0]["msg"]
    assert any(DEAD_VAULT in warning and "could not be read" in warning for warning in warnings)
    assert '"source_errors"' in (tmp_path / "reports" / "key-inventory.json").read_text()

    with pytest.raises(BackendUnavailable, match="1 source\\(s\\) could not be read") as failed:
        inv.key_inventory(dict(params, fail_on_source_errors=True, output_dir=str(tmp_path / "gate")), False)
    assert failed.value.details["counts"]["keys"] == 1
    assert (tmp_path / "gate" / "key-inventory.html").exists(), "written before failing"


def test_a_broken_register_fails_before_any_source_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register = tmp_path / "register.yml"
    register.write_text("keys:\n  - name: x\n    backend: hsm\n")
    planned: list[str] = []
    monkeypatch.setattr(inv, "plan_sources", lambda *_args: planned.append("planned") or [])
    with pytest.raises(InvalidInput, match="schema error"):
        inv.key_inventory(defaults(register_path=str(register), vault_servers=[{"url": DEAD_VAULT}]), False)
    assert planned == []


def test_with_every_source_read_the_result_is_the_reports_result(tmp_path: Path) -> None:
    from ansible_collections.keyops.runbooks.plugins.module_utils.inventory_report import inventory_report

    records = [vault_record("prod-here-kek-20261120")]
    ours = inv.key_inventory(defaults(records=records, backends=["vault_transit"]), True)
    report = inventory_report(defaults(records=records, backends=["vault_transit"], sources=[]), True)
    assert ours.pop("sources") == [] and ours.pop("source_errors") == []
    assert ours == report


def test_the_reports_do_not_depend_on_the_order_the_sources_hand_records_over() -> None:
    from ansible_collections.keyops.runbooks.plugins.module_utils.report import report_document

    # A PKCS#11 key pair: two objects with one label at one location, both due and both with findings.
    pair = [
        dict(vault_record("old-kek"), backend="pkcs11", location="hsm", id=f"hsm/old-kek/{kind}",
             created="2020-01-01T00:00:00Z", rotation_period_days=30)
        for kind in ("private", "public")
    ]  # fmt: skip
    digests = set()
    for records in (pair, list(reversed(pair))):
        inventory = build_inventory([dict(record) for record in records], None, now=NOW)
        digests.add(report_document(inventory, {}, "t", 90)["content_digest"])
    assert len(digests) == 1
