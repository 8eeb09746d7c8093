"""key_material_scan through the real ansible-playbook, as an operator runs it."""

import os

from tests.support.key_files import build_key_tree
from tests.support.playbook import assert_no_canary, run_module, run_tasks


def test_scan_reports_every_kind_and_leaks_no_value_at_vvv(tmp_path):
    root = tmp_path / "host"
    built = build_key_tree(str(root))
    os.symlink(str(root), str(root / "keys" / "loop"))

    run = run_tasks(
        [{"name": "scan", "keyops.runbooks.key_material_scan": {"paths": [str(root)]}, "register": "scan"}], verbosity=3
    )

    result = run.by_name("scan")
    assert run.rc == 0, run.stdout[-2000:]
    assert not result["changed"]
    reported = {os.path.relpath(record["path"], root) for record in result["records"]}
    assert reported == set(built["expected"])
    assert any("loop" in error["error"] for error in result["errors"])
    assert_no_canary(built["canaries"], run.stdout, run.stderr)


def test_check_mode_reports_the_same(tmp_path):
    built = build_key_tree(str(tmp_path))
    normal = run_module("keyops.runbooks.key_material_scan", {"paths": [str(tmp_path)]})
    checked = run_module("keyops.runbooks.key_material_scan", {"paths": [str(tmp_path)]}, check=True)
    assert len(normal["records"]) == len(checked["records"]) == len(built["expected"])


def test_bad_input_fails_with_a_clear_message(tmp_path):
    result = run_module("keyops.runbooks.key_material_scan", {"paths": [str(tmp_path)], "max_size": 0})
    assert result["failed"]
    assert "max_size" in result["msg"] and "Traceback" not in result["msg"]

    missing = run_module("keyops.runbooks.key_material_scan", {"paths": [str(tmp_path / "nope")]})
    assert not missing.get("failed")
    assert missing["errors"][0]["error"] == "not found or not a directory"
