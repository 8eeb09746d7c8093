"""x509_acme_renew and x509_acme_revoke against Pebble, four ways, checked with openssl and Pebble's own records."""

from __future__ import annotations

import json
import os
import ssl
import stat
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils import cert_lifecycle
from ansible_collections.keyops.runbooks.plugins.module_utils.acme_client import AcmeSession
from tests.integration.certificates.oracle import openssl, openssl_fingerprint
from tests.support.dual_control import approve, trusted_env
from tests.support.playbook import assert_no_canary, four_way, run_module, run_tasks

pytestmark = pytest.mark.lab

RENEW = "keyops.runbooks.x509_acme_renew"
REVOKE = "keyops.runbooks.x509_acme_revoke"


def acme_args(acme: dict[str, str], account_key: Path) -> dict[str, Any]:
    return {
        "acme_directory": acme["directory"],
        "acme_ca_bundle": acme["ca"],
        "account_key_path": str(account_key),
        "terms_agreed": True,
    }


def pebble_status(acme: dict[str, str], serial: str) -> dict[str, Any]:
    """Pebble's management interface, read directly (not through the module under test)."""
    context = ssl.create_default_context(cafile=acme["ca"])
    url = f"{acme['management']}/cert-status-by-serial/{int(serial, 16):x}"
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        return json.loads(response.read())


def public_key_der(path: Path, private: bool) -> str:
    if private:
        return openssl("pkey", "-in", str(path), "-pubout")
    return openssl("x509", "-in", str(path), "-noout", "-pubkey")


@pytest.fixture()
def site(tmp_path, lab_issuer) -> dict[str, Path]:
    """An expiring certificate (12 days left) from the lab CA, as a web server would have it."""
    folder = tmp_path / "tls"
    folder.mkdir()
    cert_pem, key_pem = lab_issuer.leaf("shop.lab.internal", 78, 12)
    (folder / "shop.crt").write_bytes(cert_pem)
    (folder / "shop.key").write_bytes(key_pem)
    os.chmod(folder / "shop.key", 0o600)
    return {
        "folder": folder,
        "cert": folder / "shop.crt",
        "key": folder / "shop.key",
        "fullchain": folder / "shop-fullchain.crt",
        "account": tmp_path / "acme" / "account.key",
    }


def test_renewal_four_ways_with_new_key_backups_and_openssl_checks(acme, site):
    old_fingerprint = openssl_fingerprint(str(site["cert"]))
    old_key = site["key"].read_bytes()
    args = dict(
        acme_args(acme, site["account"]),
        change_ref="CHG-7",
        certificates=[
            {
                "name": "prod-shop-tls-20261203",
                "cert_path": str(site["cert"]),
                "key_path": str(site["key"]),
                "fullchain_path": str(site["fullchain"]),
                "names": ["shop.lab.internal"],
            },
            {
                "name": "prod-new-tls-20261203",
                "cert_path": str(site["folder"] / "new.crt"),
                "key_path": str(site["folder"] / "new.key"),
                "chain_path": str(site["folder"] / "new-chain.crt"),
                "names": ["new.lab.internal", "127.0.0.1"],
                "key_type": "rsa-3072",
            },
        ],
    )

    planned, renewed, checked_again, again = four_way(RENEW, args)

    # Check mode planned both, wrote nothing and made no account key.
    assert [entry["reason"] for entry in planned["certificates"]] == ["expiring", "missing"]
    assert [event["outcome"] for event in planned["audit_events"]] == ["planned", "planned"]
    # Real run: new certificate, new key, old pair backed up 0600.
    shop, new = renewed["certificates"]
    assert shop["old"]["fingerprint_sha256"] == old_fingerprint
    assert shop["new"]["fingerprint_sha256"] == openssl_fingerprint(str(site["cert"])) != old_fingerprint
    assert site["key"].read_bytes() != old_key
    assert public_key_der(site["key"], True) == public_key_der(site["cert"], False)
    assert Path(shop["backups"]["key"]).read_bytes() == old_key
    for path in (site["key"], Path(shop["backups"]["key"]), Path(shop["backups"]["cert"]), site["account"]):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    # The new certificate chains to Pebble's root through the chain it was served with.
    verified = openssl("verify", "-CAfile", acme["root"], "-untrusted", str(site["fullchain"]), str(site["cert"]))
    assert verified.strip().endswith("OK")
    assert "127.0.0.1" in openssl("x509", "-in", str(site["folder"] / "new.crt"), "-noout", "-ext", "subjectAltName")
    assert "3072 bit" in openssl("pkey", "-in", str(site["folder"] / "new.key"), "-noout", "-text")
    assert new["reason"] == "missing" and new["old"] is None
    assert [event["action"] for event in renewed["audit_events"]] == ["renew", "issue"]
    assert renewed["audit_events"][0]["before"]["serial"] == shop["old"]["serial"]
    assert renewed["audit_events"][0]["after"]["serial"] == shop["new"]["serial"]
    # Pebble issued exactly that serial.
    assert pebble_status(acme, shop["new"]["serial"])["Status"] == "Valid"
    # Idempotent: nothing due any more.
    assert [entry["reason"] for entry in again["certificates"]] == [None, None]
    assert checked_again["certificates"][0]["old"]["serial"] == shop["new"]["serial"]
    # No key material in any result.
    assert_no_canary(
        [site["key"].read_text().splitlines()[1], site["account"].read_text().splitlines()[1]],
        json.dumps([planned, renewed, checked_again, again]),
    )


def test_issued_certificate_survives_failures_after_issuance(acme, site, monkeypatch):
    """Alternate chains that cannot be fetched only warn; an install error keeps the issued pair in pending files."""
    params = dict(acme_args(acme, site["account"]), http01_webroot=None)
    session = cert_lifecycle.open_session(params, create_account_key=True)
    target = cert_lifecycle.CertTarget(
        "shop", str(site["cert"]), str(site["key"]), ["shop.lab.internal"], fullchain_path=str(site["fullchain"])
    )

    def unreachable(self, url):
        raise ConnectionError("alternate chain endpoint down")

    monkeypatch.setattr(AcmeSession, "alternate_chains", unreachable)
    done = cert_lifecycle.renew_one(target, session, 60, "Pebble Root CA", backup=True)
    assert done["verified"]["key_matches"] and "alternate chains could not be fetched" in done["warnings"][0]
    assert pebble_status(acme, done["new"]["serial"])["Status"] == "Valid"

    real_install = cert_lifecycle._install

    def disk_full(path, data, secret):
        if path == str(site["fullchain"]):
            raise OSError(28, "No space left on device", path)
        return real_install(path, data, secret)

    monkeypatch.setattr(cert_lifecycle, "_install", disk_full)
    with pytest.raises(cert_lifecycle.BackendUnavailable) as failed:
        cert_lifecycle.renew_one(target, session, 60, None, backup=True)
    issued = failed.value.details["issued"]
    pending = Path(str(site["cert"]) + cert_lifecycle.PENDING_SUFFIX)
    assert str(pending) in failed.value.message
    assert openssl_fingerprint(str(pending)) == issued["fingerprint_sha256"]
    assert stat.S_IMODE(os.stat(pending).st_mode) == 0o600
    assert pebble_status(acme, issued["serial"])["Status"] == "Valid"


def test_one_failing_certificate_does_not_stop_the_others(acme, site, tmp_path):
    args = dict(
        acme_args(acme, site["account"]),
        certificates=[
            {
                "name": "unwritable",
                "cert_path": str(tmp_path / "no" / "such" / "x.crt"),
                "key_path": str(tmp_path / "no" / "such" / "x.key"),
                "names": ["x.lab.internal"],
            },
            {
                "name": "shop",
                "cert_path": str(site["cert"]),
                "key_path": str(site["key"]),
                "names": ["shop.lab.internal"],
            },
        ],
    )
    result = run_module(RENEW, args)
    assert result["failed"] and "unwritable" in result["msg"] and "cert_path" in result["msg"]
    assert [entry["changed"] for entry in result["certificates"]] == [False, True]
    assert [event["outcome"] for event in result["audit_events"]] == ["failure", "changed"]
    assert openssl_fingerprint(str(site["cert"])) == result["certificates"][1]["new"]["fingerprint_sha256"]


def test_revocation_four_ways_confirmed_by_pebble(acme, site):
    issued = run_module(
        RENEW,
        dict(
            acme_args(acme, site["account"]),
            certificates=[
                {
                    "name": "retired",
                    "cert_path": str(site["folder"] / "retired.crt"),
                    "key_path": str(site["folder"] / "retired.key"),
                    "names": ["retired.lab.internal"],
                }
            ],
        ),
    )
    serial = issued["certificates"][0]["new"]["serial"]
    args = {key: value for key, value in acme_args(acme, site["account"]).items() if key != "terms_agreed"}
    args.update(
        reason="cessationOfOperation",
        acme_management_url=acme["management"],
        change_ref="CHG-8",
        certificates=[{"name": "retired", "cert_path": str(site["folder"] / "retired.crt")}],
    )

    planned, revoked, checked_again, again = four_way(REVOKE, args)

    assert pebble_status(acme, serial)["Status"] == "Revoked"
    assert pebble_status(acme, serial)["Reason"] == 5
    assert planned["certificates"][0]["confirmed"] is None
    assert revoked["certificates"][0]["confirmed"] == {
        "acme": "revoked",
        "status_source": "acme_management_url",
        "status": "revoked",
        "reason_code": 5,
    }
    assert revoked["audit_events"][0]["after"]["revoked"] is True
    assert again["audit_events"][0]["outcome"] == "unchanged"
    assert checked_again["certificates"][0]["revoked"] is True


def test_key_compromise_revocation_needs_two_approvals(acme, site):
    run_module(
        RENEW,
        dict(
            acme_args(acme, site["account"]),
            certificates=[
                {
                    "name": "leaked",
                    "cert_path": str(site["folder"] / "leaked.crt"),
                    "key_path": str(site["folder"] / "leaked.key"),
                    "names": ["leaked.lab.internal"],
                }
            ],
        ),
    )
    cert_path = str(site["folder"] / "leaked.crt")
    serial = openssl("x509", "-in", cert_path, "-noout", "-serial").strip().split("=", 1)[1].lower()
    args = {key: value for key, value in acme_args(acme, site["account"]).items() if key != "terms_agreed"}
    args.update(reason="keyCompromise", change_ref="INC-77", certificates=[{"name": "leaked", "cert_path": cert_path}])

    refused = run_module(REVOKE, args)
    assert refused["failed"] and "approv" in refused["msg"]
    assert pebble_status(acme, serial)["Status"] == "Valid"

    # Forged approvals that only say they were verified: refused, the certificate stays valid.
    forged = [{"approver": name, "verified": True, "digest": "ab" * 32, "source": "ssh"} for name in ("ana", "raj")]
    refused = run_module(REVOKE, dict(args, approvals=forged), env=trusted_env())
    assert refused["failed"] and "forged or hand-written approval" in refused["msg"]
    assert pebble_status(acme, serial)["Status"] == "Valid"

    # Approvals of the plan made from the module's own check-mode run, signed and verified for real.
    planned = run_module(REVOKE, args, check=True)
    assert planned["audit_events"][0]["detail"]["requires_approval"] is True
    approvals = approve([planned])
    done = run_tasks([{"name": "revoke", REVOKE: dict(args, approvals=approvals)}], verbosity=3, env=trusted_env())
    result = done.by_name("revoke")
    assert result["changed"] and result["certificates"][0]["confirmed"]["acme"] == "revoked"
    assert pebble_status(acme, serial) | {"Certificate": None} == {
        "Status": "Revoked",
        "Serial": f"{int(serial, 16):x}",
        "Certificate": None,
        "Reason": 1,
        "RevokedAt": pebble_status(acme, serial)["RevokedAt"],
    }
    assert [item["approver"] for item in result["audit_events"][0]["approvals"]] == [
        "alice@keyops.lab",
        "bob@keyops.lab",
    ]
    assert_no_canary([site["account"].read_text().splitlines()[1]], done.stdout, done.stderr)
