"""The AWX configuration as code in awx/ is valid for the awx.awx modules that apply it, and wires dual control.

Each awx.awx module's own argument spec is captured (its AnsibleModule subclass is swapped for one that records the
spec) and every definition is validated against it with Ansible's own validator.
"""

from __future__ import annotations

import glob
import importlib
import os
import re
import subprocess
import sys

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
AWX = os.path.join(ROOT, "awx")
RUNBOOKS = ("inventory", "rotate", "compromise_response", "backup_escrow", "restore_test", "evidence", "site")
DUAL_CONTROLLED = ("rotate", "compromise_response", "backup_escrow")
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}

# Definition list -> the awx.awx module configure.yml applies it with.
MODULES = {
    "controller_organizations": "organization",
    "controller_teams": "team",
    "controller_execution_environments": "execution_environment",
    "controller_projects": "project",
    "controller_inventories": "inventory",
    "controller_hosts": "host",
    "controller_credential_types": "credential_type",
    "controller_credentials": "credential",
    "controller_templates": "job_template",
    "controller_workflows": "workflow_job_template",
    "controller_roles": "role",
}


class _Loader(yaml.SafeLoader):
    """YAML as Ansible reads it: !unsafe marks a string Ansible must not template."""


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def load(path):
    with open(path) as stream:
        return yaml.load(stream, Loader=_Loader)


@pytest.fixture(scope="module")
def defs():
    merged = {}
    for name in ("organization", "credential_types", "credentials", "job_templates", "workflows", "roles"):
        merged.update(load(os.path.join(AWX, f"{name}.yml")))
    merged["surveys"] = {path: load(path) for path in sorted(glob.glob(os.path.join(AWX, "surveys", "*.yml")))}
    return merged


@pytest.fixture(scope="module")
def surveys_by_target(defs):
    by_target = {}
    for survey in defs["surveys"].values():
        for target in survey["job_templates"] + survey["workflows"]:
            assert target not in by_target, f"two surveys for {target}"
            by_target[target] = survey["survey_spec"]
    return by_target


class _Captured(Exception):
    def __init__(self, argument_spec, **kwargs):
        super().__init__("captured")
        self.spec = argument_spec
        self.kwargs = kwargs


def module_spec(name):
    """The argument spec the awx.awx module builds in main(), plus the connection options every one of them takes."""
    module = importlib.import_module(f"ansible_collections.awx.awx.plugins.modules.{name}")
    from ansible_collections.awx.awx.plugins.module_utils.controller_api import ControllerModule

    original = module.ControllerAPIModule

    def capture(argument_spec=None, **kwargs):
        raise _Captured(argument_spec, **kwargs)

    module.ControllerAPIModule = capture
    try:
        module.main()
    except _Captured as captured:
        spec = dict(ControllerModule.AUTH_ARGSPEC, **captured.spec)
        return spec, {
            key: captured.kwargs[key]
            for key in ("mutually_exclusive", "required_if", "required_one_of", "required_together")
            if key in captured.kwargs
        }
    finally:
        module.ControllerAPIModule = original
    raise AssertionError(f"awx.awx.{name} did not build a module")


def doc_suboptions(name, option):
    """An option's documented suboptions as an argument spec (workflow_nodes has no spec of its own in the module)."""
    module = importlib.import_module(f"ansible_collections.awx.awx.plugins.modules.{name}")
    return _spec_from_doc(yaml.safe_load(module.DOCUMENTATION)["options"][option]["suboptions"])


def _spec_from_doc(options):
    spec = {}
    for key, doc in options.items():
        entry = {"type": doc.get("type", "str")}
        for field in ("elements", "choices", "aliases", "required"):
            if field in doc:
                entry[field] = doc[field]
        if "choices" in entry:
            entry["choices"] = [type(entry["choices"][0])(choice) for choice in entry["choices"]]
        if "suboptions" in doc:
            entry["options"] = _spec_from_doc(doc["suboptions"])
        spec[key] = entry
    return spec


def validate(name, params):
    spec, constraints = module_spec(name)
    result = ArgumentSpecValidator(spec, **constraints).validate(params)
    return [str(error) for error in result.errors]


def test_awx_collection_is_importable():
    assert module_spec("job_template")[0]["job_slice_count"]["type"] == "int"


@pytest.mark.parametrize(("variable", "module"), sorted(MODULES.items()))
def test_every_definition_is_valid_for_its_awx_module(defs, surveys_by_target, variable, module):
    assert defs[variable], f"{variable} is empty"
    for item in defs[variable]:
        params = dict(item)
        if item.get("name") in surveys_by_target:
            params["survey_spec"] = surveys_by_target[item["name"]]
        assert validate(module, params) == [], f"{variable}: {item.get('name', item)}"


def test_workflow_nodes_match_the_documented_node_options(defs):
    node_spec = doc_suboptions("workflow_job_template", "workflow_nodes")
    for workflow in defs["controller_workflows"]:
        for node in workflow["workflow_nodes"]:
            result = ArgumentSpecValidator(node_spec).validate(node)
            assert result.error_messages == [], f"{workflow['name']} node {node['identifier']}"


def test_an_invalid_definition_is_caught():
    assert validate("job_template", {"name": "x", "job_type": "explode", "job_slice_count": "many", "playbok": "x"})


# Imported by the runbooks for the lab demo only; AWX approves through its approval nodes instead.
NOT_A_JOB_TEMPLATE = {"playbooks/demo_approve.yml"}


def test_every_playbook_and_runbook_has_a_job_template(defs):
    playbooks = {template["playbook"] for template in defs["controller_templates"]}
    on_disk = {os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, "playbooks", "*.yml"))}
    on_disk -= NOT_A_JOB_TEMPLATE
    assert "playbooks/demo_approve.yml" not in playbooks, "the demo signer must never be an AWX job template"
    expected = {f"playbooks/{name}.yml" for name in RUNBOOKS}
    assert on_disk | expected <= playbooks
    assert playbooks <= on_disk | expected, "a job template names a playbook nobody is writing"


def test_surveys_are_well_formed_and_cover_every_survey_enabled_template(defs, surveys_by_target):
    names = {item["name"] for item in defs["controller_templates"] + defs["controller_workflows"]}
    assert set(surveys_by_target) <= names
    for item in defs["controller_templates"] + defs["controller_workflows"]:
        if item.get("survey_enabled"):
            assert item["name"] in surveys_by_target, f"{item['name']} enables a survey it does not have"
    for spec in surveys_by_target.values():
        variables = [question["variable"] for question in spec["spec"]]
        assert len(variables) == len(set(variables))
        for question in spec["spec"]:
            assert question["type"] in SURVEY_TYPES
            assert isinstance(question["required"], bool)
            assert re.fullmatch(r"[a-z_][a-z0-9_]*", question["variable"])
            if question["type"].startswith("multi"):
                assert question["choices"]
                defaults = str(question.get("default", "")).split("\n")
                assert all(value in question["choices"] for value in defaults if value)


def _templates(defs):
    return {template["name"]: template for template in defs["controller_templates"]}


@pytest.mark.parametrize("runbook", DUAL_CONTROLLED)
def test_dual_controlled_workflow_is_plan_two_approvals_apply_with_a_deny_path(defs, runbook):
    templates = _templates(defs)
    (workflow,) = [
        item
        for item in defs["controller_workflows"]
        if item["workflow_nodes"][0]["unified_job_template"]["name"] == templates_name(runbook, "plan")
    ]
    nodes = {node["identifier"]: node for node in workflow["workflow_nodes"]}

    def ujt(node_id):
        return nodes[node_id]["unified_job_template"]

    def next_of(node_id, path):
        return [item["identifier"] for item in nodes[node_id].get("related", {}).get(path, [])]

    # plan -> approval -> approval -> apply, and only that way to apply.
    path = ["plan"]
    while next_of(path[-1], "success_nodes"):
        (following,) = next_of(path[-1], "success_nodes")
        path.append(following)
    kinds = [ujt(node)["type"] for node in path]
    assert kinds == ["job_template", "workflow_approval", "workflow_approval", "job_template"]
    plan, apply = templates[ujt(path[0])["name"]], templates[ujt(path[-1])["name"]]
    assert plan["job_type"] == "check" and plan["extra_vars"]["dual_control_phase"] == "plan"
    assert apply["job_type"] == "run" and apply["extra_vars"]["dual_control_phase"] == "apply"
    assert plan["playbook"] == apply["playbook"] == f"playbooks/{runbook}.yml"
    assert "keyops approvers" in apply["credentials"]
    assert apply["extra_vars"]["dual_control_awx_lookup"] is True

    # Each approval has a timeout, and a denial or a timeout goes to the job that records it.
    for approval in path[1:3]:
        assert ujt(approval)["timeout"] > 0
        (denied,) = next_of(approval, "failure_nodes")
        assert templates[ujt(denied)["name"]]["playbook"] == "playbooks/record_denial.yml"
    assert ujt(path[1])["name"] != ujt(path[2])["name"]

    # Approval goes to two different teams; operators may launch but not approve.
    approvers = [
        role
        for role in defs["controller_roles"]
        if role["role"] == "approval" and workflow["name"] in role.get("workflows", [])
    ]
    teams = {team for role in approvers for team in role.get("teams", [role.get("team")])}
    assert teams == {"keyops-security-approvers", "keyops-platform-approvers"}


def templates_name(runbook, phase):
    return "keyops " + runbook.replace("_", " ") + f" - {phase}"


def test_rewrap_and_reencrypt_templates_are_sliced(defs):
    sliced = [item for item in defs["controller_templates"] if item.get("job_tags") in ("rewrap", "reencrypt")]
    assert len(sliced) == 2
    assert all(item["job_slice_count"] > 1 for item in sliced)


def test_credential_types_keep_secrets_secret_and_inject_only_their_inputs(defs):
    names = {item["name"] for item in defs["controller_credential_types"]}
    assert {"keyops HashiCorp Vault / OpenBao", "keyops AWS KMS", "keyops PKCS#11 HSM"} <= names
    for item in defs["controller_credential_types"]:
        fields = {field["id"]: field for field in item["inputs"]["fields"]}
        for field_id, field in fields.items():
            if re.search(r"^(token|pin)$|secret|_token$|password", field_id):
                assert field.get("secret") is True, f"{item['name']}: {field_id} must be secret"
        for section in item["injectors"].values():
            for value in section.values():
                used = set(re.findall(r"\{\{\s*([a-z_]+)", value)) - {"tower"}
                assert used <= set(fields), f"{item['name']} injects unknown inputs {used - set(fields)}"
    for credential in defs["controller_credentials"]:
        for value in credential["inputs"].values():
            assert "{{" in value, f"{credential['name']} holds a literal value; inputs must come from variables"


def test_configure_playbook_passes_every_key_the_definitions_use(defs, surveys_by_target):
    (play,) = load(os.path.join(AWX, "configure.yml"))
    passed = {}
    for task in play["tasks"]:
        for key, args in task.items():
            if key.startswith("awx.awx."):
                passed[key.removeprefix("awx.awx.")] = set(args)
    for variable, module in MODULES.items():
        used = {key for item in defs[variable] for key in item}
        assert used <= passed[module], f"configure.yml drops {used - passed[module]} for awx.awx.{module}"


def test_configure_playbook_loads_everything_before_it_talks_to_the_controller(tmp_path):
    """Run it against a closed port: loading and the survey mapping must work; the first API call must fail."""
    env = dict(
        os.environ,
        CONTROLLER_HOST="https://127.0.0.1:9",
        ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
        ANSIBLE_NOCOLOR="1",
    )
    done = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
            os.path.join(AWX, "configure.yml"),
            "-e",
            "keyops_awx_scm_url=https://git.invalid/k.git",
            "-e",
            "keyops_awx_ee_image=ee.invalid/keyops:1",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode != 0
    out = done.stdout
    assert "TASK [Load the surveys, keyed by the template or workflow that asks them]" in out
    assert re.search(r"TASK \[Organization\][^\n]*\n[^\n]*failed", out), out[-2000:]
