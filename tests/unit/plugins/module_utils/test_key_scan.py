import builtins
import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from ansible_collections.keyops.runbooks.plugins.module_utils import key_scan
from ansible_collections.keyops.runbooks.plugins.module_utils.policy import merged_policy
from tests.support.key_files import build_key_tree, write

OPTIONS = key_scan.WalkOptions(include=[], exclude=[], max_size=1 << 20)


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def tree(tmp_path, rsa_key):
    built = build_key_tree(str(tmp_path), rsa_key)
    return str(tmp_path), built


def run_scan(root):
    return key_scan.scan([root], OPTIONS, merged_policy(), "testhost")


def by_file(result, root):
    found = {}
    for record in result.records:
        found.setdefault(os.path.relpath(record["path"], root), []).append(record)
    return found


def test_every_kind_is_found_with_its_facts_and_findings(tree):
    root, built = tree
    found = by_file(run_scan(root), root)

    for relative, facts in built["expected"].items():
        assert relative in found, f"{relative} not reported"
        record = found[relative][0]
        assert record["kind"] == facts["kind"], relative
        assert record["backend"] == "file"
        if "algorithm" in facts:
            assert record["algorithm"] == facts["algorithm"], relative
        if "protected" in facts:
            assert record["protected"] is facts["protected"], relative
        assert {item["code"] for item in record["findings"]} == facts["codes"], relative


def test_ordinary_config_and_public_material_yield_no_false_positives(tree):
    root, _built = tree
    found = by_file(run_scan(root), root)
    assert not [path for path in found if path.startswith("ordinary/")]


def test_no_key_value_ever_appears_in_the_result(tree):
    root, built = tree
    text = json.dumps(run_scan(root).records)
    for canary in built["canaries"]:
        assert canary not in text


def test_protected_openssh_key_still_reports_its_public_fingerprint(tree):
    root, _built = tree
    found = by_file(run_scan(root), root)
    clear, protected = found["ssh/id_ed25519"][0], found["ssh/id_ed25519_protected"][0]
    assert protected["fingerprint_sha256"] == clear["fingerprint_sha256"]
    assert len(clear["fingerprint_sha256"]) == 64


def test_symlink_loop_and_links_out_of_the_tree_are_reported_and_skipped(tmp_path):
    root = tmp_path / "scan"
    write(str(root / "a" / "app.env"), "APP_SECRET_KEY=" + "ab" * 16 + "\n")
    os.symlink(str(root), str(root / "a" / "loop"))
    outside = tmp_path / "outside"
    write(str(outside / "id_rsa.pem"), "not scanned")
    os.symlink(str(outside), str(root / "escape"))
    os.symlink(str(root / "missing"), str(root / "dangling"))

    result = run_scan(str(root))

    reasons = {os.path.basename(error["source"]): error["error"] for error in result.errors}
    assert "out of the scanned tree" in reasons["escape"]
    assert "dangling" in reasons["dangling"]
    assert any("loop" in error["error"] for error in result.errors)
    assert all(str(outside) not in record["path"] for record in result.records)


def test_unreadable_file_is_reported_and_the_scan_goes_on(tree, monkeypatch):
    root, _built = tree
    denied = os.path.join(root, "app", "payments.env")
    real_open = builtins.open

    def refusing_open(path, *args, **kwargs):
        if path == denied:
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    result = run_scan(root)

    assert {"source": denied, "error": "cannot read: Permission denied"} in result.errors
    assert "app/settings.yaml" in by_file(result, root)


RANDOM_HEX_256 = "9c3e71a2f05b48d6e1c7a93f2b8d6054fa17c3e9b20d58a6c4f1e739d0b2a86e"
RANDOM_HEX_128 = "5e0c9a7f3b21d846ea13c7f9024bd6e8"


@pytest.mark.parametrize(
    ("content", "reported"),
    [
        ("DEK=" + RANDOM_HEX_256, True),
        ("aes_key: '" + "3q2+7w==" * 2 + "'", False),  # 12 bytes: not a key length
        ("session_id = " + RANDOM_HEX_128, False),
        ("master.key.fingerprint = " + RANDOM_HEX_256, False),
        ("encryption_key = " + "41" * 32, False),  # not random: padding, not a key
        ('"kek": "' + RANDOM_HEX_128 + '"', True),
        ("token_secret=" + RANDOM_HEX_256 + "ff", False),  # 33 bytes: not a key length
    ],
)
def test_config_rules_table(tmp_path, content, reported):
    path = write(str(tmp_path / "conf" / "svc.conf"), content + "\n")
    with open(path, "rb") as stream:
        found = list(key_scan.config_findings(path, stream.read(), use_detector=True))
    assert bool(found) is reported


def test_size_limit_and_include_globs(tree):
    root, _built = tree
    only_env = key_scan.WalkOptions(include=["*.env"], exclude=[], max_size=1 << 20)
    result = key_scan.scan([root], only_env, merged_policy(), "testhost")
    assert {os.path.basename(record["path"]) for record in result.records} == {"payments.env"}
    tiny = key_scan.WalkOptions(include=[], exclude=[], max_size=10)
    assert key_scan.scan([root], tiny, merged_policy(), "testhost").records == []
