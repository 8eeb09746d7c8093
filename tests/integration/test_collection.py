"""The collection is usable the normal ways: build, install, ansible-doc for every plugin, playbooks by FQCN."""

import json
import os
import subprocess
import sys
import tarfile

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
PLUGIN_DIRS = {"modules": "module", "filter": "filter", "callback": "callback"}


def plugins():
    found = []
    for directory, plugin_type in PLUGIN_DIRS.items():
        folder = os.path.join(ROOT, "plugins", directory)
        if os.path.isdir(folder):
            found += [
                (plugin_type, name[:-3])
                for name in sorted(os.listdir(folder))
                if name.endswith(".py") and not name.startswith("_")
            ]
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    work = tmp_path_factory.mktemp("galaxy")
    subprocess.run(
        [f"{BIN}/ansible-galaxy", "collection", "build", ROOT, "--output-path", str(work), "--force"],
        check=True,
        capture_output=True,
        text=True,
    )
    tarball = next(work.glob("keyops-runbooks-*.tar.gz"))
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    assert not [name for name in names if name.startswith((".venv", ".lab", ".build", ".git/"))]
    target = work / "collections"
    subprocess.run(
        [f"{BIN}/ansible-galaxy", "collection", "install", str(tarball), "-p", str(target), "--no-deps", "--force"],
        check=True,
        capture_output=True,
        text=True,
    )
    empty_config = work / "ansible.cfg"
    empty_config.write_text("[defaults]\n")
    # The collections bundled with the ansible package are found on sys.path; only ours needs a path.
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(target), ANSIBLE_CONFIG=str(empty_config))
    return env


def test_ansible_doc_lists_every_module_of_the_installed_collection(installed):
    listing = subprocess.run(
        [f"{BIN}/ansible-doc", "-l", "keyops.runbooks"], env=installed, capture_output=True, text=True, check=True
    ).stdout
    for plugin_type, name in plugins():
        if plugin_type == "module":
            assert f"keyops.runbooks.{name}" in listing


@pytest.mark.parametrize("plugin_type", sorted(set(PLUGIN_DIRS.values())))
def test_every_plugin_has_documentation(installed, plugin_type):
    names = [f"keyops.runbooks.{name}" for kind, name in plugins() if kind == plugin_type]
    if not names:
        pytest.skip(f"the collection has no {plugin_type} plugins")
    done = subprocess.run(
        [f"{BIN}/ansible-doc", "-t", plugin_type, "--json", *names],
        env=installed,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-1500:]
    assert "[WARNING]" not in done.stderr, done.stderr[-1500:]
    documented = json.loads(done.stdout)
    assert sorted(documented) == sorted(names)
    for name, doc in documented.items():
        assert doc["doc"].get("short_description"), name
        if plugin_type == "module":
            assert doc.get("examples") and doc.get("return") is not None, f"{name} lacks EXAMPLES or RETURN"


def test_action_groups_name_modules_that_exist():
    with open(os.path.join(ROOT, "meta", "runtime.yml")) as handle:
        runtime = yaml.safe_load(handle)
    module_names = {name for plugin_type, name in plugins() if plugin_type == "module"}
    for group, members in runtime["action_groups"].items():
        assert members, f"action group {group} is empty"
        assert set(members) <= module_names, group


def test_playbooks_ship_in_the_collection_and_parse_by_fqcn(installed):
    playbooks = sorted(name[:-4] for name in os.listdir(os.path.join(ROOT, "playbooks")) if name.endswith(".yml"))
    assert "site" in playbooks
    for playbook in playbooks:
        done = subprocess.run(
            [f"{BIN}/ansible-playbook", "--syntax-check", f"keyops.runbooks.{playbook}"],
            env=installed,
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        assert done.returncode == 0, f"{playbook}: {done.stderr[-1500:]}"
