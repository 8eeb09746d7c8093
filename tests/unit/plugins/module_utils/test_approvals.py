"""Dual control: every way around the approval rule is refused, with its reason; the happy path passes.

Signatures are real: ssh-keygen makes the keys and signs, approvals.py verifies with ssh-keygen. Only the clock is
moved, to show expiry.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess

import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils import approvals
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import IntegrityError, PolicyViolation
from ansible_collections.keyops.runbooks.plugins.module_utils.records import utc_now

NOW = utc_now().replace(microsecond=0)


def event(action="rotate", key_ref="transit/prod-payments-kek-20261203", key_class="master-kek", **extra):
    return {
        "action": action,
        "backend": "vault_transit",
        "key_ref": key_ref,
        "outcome": "planned",
        "check_mode": True,
        "before": {"latest_version": 1, "last_rotated": "2026-01-01T00:00:00Z"},
        "after": {"latest_version": 2, "last_rotated": NOW.isoformat()},
        "detail": {"key_class": key_class, **extra},
    }


def make_plan(folder, name="plan.json", requester="operator@keyops.lab", events=None, now=NOW):
    actions = approvals.planned_actions([{"changed": True, "audit_events": events or [event()]}])
    plan = approvals.build_plan(actions, requester, "CHG-2041", 24, now)
    path = os.path.join(folder, name)
    approvals.write_private_file(path, approvals.plan_bytes(plan))
    return path, plan


def keygen(path, comment):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path], check=True)
    with open(path + ".pub") as stream:
        return stream.read().split()[:2]


@pytest.fixture(scope="module")
def estate(tmp_path_factory):
    """Demo approvers (alice, bob: every class; carol: kek/dek/tls-cert) plus the keys the attacks need."""
    folder = str(tmp_path_factory.mktemp("approvers"))
    made = approvals.create_demo_approvers(folder)
    with open(made["allowed_signers"]) as stream:
        lines = stream.read().splitlines()

    # mallory's key is in no allowed-signers file; dave's entry expired yesterday; erin shares alice's key.
    keygen(os.path.join(folder, "mallory"), "mallory@evil")
    dave_type, dave_key = keygen(os.path.join(folder, "dave"), "dave@keyops.lab")
    yesterday = approvals.ssh_time(NOW - dt.timedelta(days=1))
    lines.append(f'dave@keyops.lab namespaces="keyops-plan",valid-before="{yesterday}" {dave_type} {dave_key}')
    shared = os.path.join(folder, "shared_signers")
    alice_line = next(line for line in lines if line.startswith("alice@"))
    with open(shared, "w") as stream:
        stream.write("\n".join([*lines, alice_line.replace("alice@keyops.lab", "erin@keyops.lab", 1)]) + "\n")
    with open(made["allowed_signers"], "w") as stream:
        stream.write("\n".join(lines) + "\n")

    approvers = approvals.load_approvers(made["approvers_file"])
    approvers["dave@keyops.lab"] = {"team": "security", "key_classes": ["*"]}
    approvers["erin@keyops.lab"] = {"team": "audit", "key_classes": ["*"]}
    keys = {name: os.path.join(folder, name) for name in ("alice", "bob", "carol", "dave", "mallory")}
    return {
        "folder": folder,
        "signers": made["allowed_signers"],
        "approvers_file": made["approvers_file"],
        "shared_signers": shared,
        "approvers": approvers,
        "keys": keys,
    }


def sign(estate, plan_path, who, namespace="keyops-plan", suffix=""):
    """Sign exactly as an approver would with plain ssh-keygen."""
    out = f"{plan_path}.{who}{suffix}.sig"
    with open(plan_path, "rb") as stream:
        done = subprocess.run(
            ["ssh-keygen", "-Y", "sign", "-q", "-f", estate["keys"][who], "-n", namespace],
            input=stream.read(),
            capture_output=True,
            check=True,
        )
    with open(out, "wb") as stream:
        stream.write(done.stdout)
    return out


def verify(estate, plan_path, signatures, now=NOW, signers=None, **options):
    return approvals.verify_ssh_approvals(
        plan_path,
        signatures,
        signers or estate["signers"],
        estate["approvers"],
        options.pop("quorum", 2),
        now=now,
        **options,
    )


def test_happy_path_two_distinct_approvers_pass_the_module_gate(estate, tmp_path):
    plan_path, plan = make_plan(str(tmp_path))
    outcome = verify(
        estate,
        plan_path,
        [sign(estate, plan_path, "alice"), sign(estate, plan_path, "bob")],
        expected_digest=plan["digest"],
    )

    assert [item["approver"] for item in outcome["approvals"]] == ["alice@keyops.lab", "bob@keyops.lab"]
    assert {item["digest"] for item in outcome["approvals"]} == {plan["digest"]}
    assert all(
        item["verified"] and item["source"] == "ssh" and item["key_fingerprint"].startswith("SHA256:")
        for item in outcome["approvals"]
    )
    assert outcome["rejected"] == []
    # What a module needs to check them again on its own: the plan, the principal, the signature text.
    for item in outcome["approvals"]:
        assert item["plan_path"] == plan_path
        assert json.loads(item["plan_text"])["digest"] == plan["digest"]
        assert item["signature"].startswith("-----BEGIN SSH SIGNATURE-----")
    gate(estate, "rotate", outcome["approvals"])


KEY = "transit/prod-payments-kek-20261203"


def gate(estate, action, offered, key_ref=KEY, key_class="master-kek", now=NOW, **policy):
    """The modules' own gate, with the trusted files given in the policy (as a module's policy option would)."""
    policy = {"allowed_signers": estate["signers"], "approvers_file": estate["approvers_file"], **policy}
    approvals.require_approvals(action, key_ref, key_class, offered, False, policy, now=now)


def approved(estate, folder, who=("alice", "bob"), **plan_options):
    plan_path, _unused = make_plan(folder, **plan_options)
    signatures = [sign(estate, plan_path, name) for name in who]
    return verify(estate, plan_path, signatures)["approvals"]


def _forged(estate, folder):
    # The reviewer's reproduction: dicts that only say they were verified.
    return "rotate", [
        {"approver": "mallory", "verified": True, "digest": "x"},
        {"approver": "mallory2", "verified": True, "digest": "x"},
    ]


def _unsigned(estate, folder):
    # A real plan and digest copied into hand-written approvals, without signatures.
    offered = approved(estate, folder)
    return "rotate", [{key: value for key, value in item.items() if key != "signature"} for item in offered]


def _other_action(estate, folder):
    # Plan A (rotate) was approved; the approvals are offered for a destroy of the same key.
    return "destroy", approved(estate, folder)


def _other_key(estate, folder):
    # Plan A rotates one key; its approvals are offered to rotate another master key.
    return "rotate", approved(estate, folder, events=[event(key_ref="transit/prod-billing-kek-20261203")])


def _tampered_signature(estate, folder):
    # Alice's signature text is replaced by one alice made over another plan.
    offered = approved(estate, folder)
    other_path, _unused = make_plan(folder, "other.json", events=[event("destroy")])
    with open(sign(estate, other_path, "alice")) as stream:
        offered[0]["signature"] = stream.read()
    return "rotate", offered


def _corrupted_signature(estate, folder):
    offered = approved(estate, folder)
    text = offered[1]["signature"].splitlines()
    text[2] = text[2][:10] + ("A" if text[2][10] != "A" else "B") + text[2][11:]
    offered[1]["signature"] = "\n".join(text) + "\n"
    return "rotate", offered


def _plan_text_edited(estate, folder):
    # The embedded plan gains a destroy; digest field left as it was.
    offered = approved(estate, folder)
    plan = json.loads(offered[0]["plan_text"])
    plan["actions"].append(dict(plan["actions"][0], action="destroy"))
    for item in offered:
        item["plan_text"] = approvals.plan_bytes(plan).decode()
    return "destroy", offered


def _plan_text_rewritten(estate, folder):
    # The embedded plan is replaced by a new, self-consistent plan (its own digest), approvals' digests updated.
    offered = approved(estate, folder)
    plan = json.loads(offered[0]["plan_text"])
    plan["actions"].append(dict(plan["actions"][0], action="destroy"))
    plan["digest"] = approvals.plan_digest(plan)
    for item in offered:
        item.update(plan_text=approvals.plan_bytes(plan).decode(), digest=plan["digest"])
    return "destroy", offered


def _digest_swapped(estate, folder):
    offered = approved(estate, folder)
    offered[1]["digest"] = "0" * 64
    return "rotate", offered


def _two_plans(estate, folder):
    first = approved(estate, folder)
    second = approved(estate, folder + "/b", events=[event(), event("trim")])
    return "rotate", [first[0], second[1]]


def _carol_for_the_master_key(estate, folder):
    # bob and carol approved a plan for a kek; the gate is asked for the same key acting as a master key.
    return "destroy", approved(estate, folder, who=("bob", "carol"), events=[event("destroy", key_class="kek")])


def _one_approver_twice(estate, folder):
    offered = approved(estate, folder)
    return "rotate", [offered[0], dict(offered[0])]


def _awx_not_accepted(estate, folder):
    _unused, plan = make_plan(folder)
    outcome = approvals.verify_awx_approvals(
        plan, [{"approver": "alice"}, {"approver": "bob"}], "4711", estate["approvers"], 2, now=NOW
    )
    return "rotate", outcome["approvals"]


# Each row: what is offered to a module's gate -> the reason its refusal must give.
GATE_BYPASSES = [
    ("forged dicts saying verified: true", _forged, "forged or hand-written approval"),
    ("real plan, no signatures", _unsigned, "carries no SSH signature"),
    ("approvals of plan A for an action not in A", _other_action, "action not in the approved plan"),
    ("approvals of plan A for another key", _other_key, "holds no rotate on transit/prod-payments-kek"),
    ("signature text swapped for one over another plan", _tampered_signature, "the signature is not over this plan"),
    ("signature text corrupted", _corrupted_signature, "1 valid approval(s) of the 2 needed"),
    ("embedded plan edited", _plan_text_edited, "was edited after it was made"),
    ("embedded plan rewritten with its own digest", _plan_text_rewritten, "the signature is not over this plan"),
    ("approval digest not the plan's", _digest_swapped, "digest mismatch"),
    ("approvals of two plans mixed", _two_plans, "approvals are for different plans"),
    ("one approval offered twice", _one_approver_twice, "alice@keyops.lab already approved"),
    ("approver not allowed for this call's class", _carol_for_the_master_key, "carol@keyops.lab is not allowed"),
    ("AWX approvals without the policy's consent", _awx_not_accepted, "come from AWX approval nodes"),
]


@pytest.mark.parametrize(("attack", "setup", "reason"), GATE_BYPASSES, ids=[row[0] for row in GATE_BYPASSES])
def test_the_module_gate_checks_the_approvals_again(estate, tmp_path, monkeypatch, attack, setup, reason):
    monkeypatch.delenv(approvals.ALLOWED_SIGNERS_ENV, raising=False)
    monkeypatch.delenv(approvals.APPROVERS_FILE_ENV, raising=False)
    action, offered = setup(estate, str(tmp_path))

    with pytest.raises(PolicyViolation) as refused:
        gate(estate, action, offered)

    assert reason in refused.value.message
    assert "under dual control" in refused.value.message


def test_the_module_gate_passes_real_approvals_and_refuses_them_once_the_plan_expired(estate, tmp_path, monkeypatch):
    monkeypatch.delenv(approvals.ALLOWED_SIGNERS_ENV, raising=False)
    offered = approved(estate, str(tmp_path))

    gate(estate, "rotate", offered)
    with pytest.raises(PolicyViolation) as refused:
        gate(estate, "rotate", offered, now=NOW + dt.timedelta(hours=25))
    assert "expired at" in refused.value.message


def test_the_module_gate_trusts_the_environment_over_the_policy(estate, tmp_path, monkeypatch):
    # A requester who points the policy at an allowed-signers file of their own does not get past the EE's file.
    offered = approved(estate, str(tmp_path))
    rogue = tmp_path / "rogue_signers"
    rogue.write_text("")
    monkeypatch.setenv(approvals.ALLOWED_SIGNERS_ENV, estate["signers"])
    gate(estate, "rotate", offered, allowed_signers=str(rogue))

    monkeypatch.setenv(approvals.ALLOWED_SIGNERS_ENV, str(rogue))
    with pytest.raises(PolicyViolation) as refused:
        gate(estate, "rotate", offered)
    assert "is not in the allowed-signers file" in refused.value.message


def test_the_module_gate_needs_a_trusted_allowed_signers_file(estate, tmp_path, monkeypatch):
    monkeypatch.delenv(approvals.ALLOWED_SIGNERS_ENV, raising=False)
    offered = approved(estate, str(tmp_path))
    with pytest.raises(PolicyViolation) as refused:
        approvals.require_approvals("rotate", KEY, "master-kek", offered, False, {"approvers_file": "x"}, now=NOW)
    assert "no allowed-signers file is configured" in refused.value.message


def test_the_module_gate_reads_the_plan_from_its_path_too(estate, tmp_path, monkeypatch):
    monkeypatch.delenv(approvals.ALLOWED_SIGNERS_ENV, raising=False)
    offered = [
        {key: value for key, value in item.items() if key != "plan_text"} for item in approved(estate, str(tmp_path))
    ]
    gate(estate, "rotate", offered)


def test_the_module_gate_accepts_awx_approvals_only_when_the_policy_says_so(estate, tmp_path):
    _unused, plan = make_plan(str(tmp_path), events=[event("destroy", key_class="kek")])
    offered = approvals.verify_awx_approvals(
        plan, [{"approver": "alice", "node": "a"}, {"approver": "bob", "node": "b"}], "4711", estate["approvers"], 2
    )["approvals"]
    gate(estate, "destroy", offered, key_class="kek", accept_awx_approvals=True)
    # The same rules still apply to them: another action is refused.
    with pytest.raises(PolicyViolation) as refused:
        gate(estate, "schedule_deletion", offered, key_class="kek", accept_awx_approvals=True)
    assert "action not in the approved plan" in refused.value.message


@pytest.mark.parametrize(
    ("action", "planned", "key_ref", "planned_ref"),
    [
        ("raise_min_decryption_version", "configure", KEY, KEY),
        ("compromise_response", "revoke", "www.example.com", "www.example.com"),
        ("destroy", "destroy", "pkcs11:token=t;object=k;id=%01", "pkcs11:token=t;object=k;id=%01;type=secret-key"),
    ],
)
def test_the_gate_finds_the_action_as_the_plan_records_it(
    estate, tmp_path, monkeypatch, action, planned, key_ref, planned_ref
):
    monkeypatch.delenv(approvals.ALLOWED_SIGNERS_ENV, raising=False)
    offered = approved(estate, str(tmp_path), events=[event(planned, planned_ref, requires_approval=True)])
    gate(estate, action, offered, key_ref=key_ref)


def test_check_mode_and_actions_outside_dual_control_are_not_gated():
    forged = [{"approver": "mallory", "verified": True, "digest": "x"}]
    approvals.require_approvals("rotate", KEY, "master-kek", forged, True)
    approvals.require_approvals("rotate", KEY, "dek", [], False)


def _plan_then_edit(estate, folder):
    """Approvers sign a plan; then someone rewrites the file as a new, self-consistent plan."""
    plan_path, _unused = make_plan(folder)
    signatures = [sign(estate, plan_path, "alice"), sign(estate, plan_path, "bob")]
    make_plan(folder, events=[event(), event("destroy", "transit/prod-payments-kek-20241203")])
    return plan_path, signatures


def _signed_other_plan(estate, folder):
    plan_path, _unused = make_plan(folder)
    other_path, _unused = make_plan(folder, "other.json", events=[event("destroy")])
    return plan_path, [sign(estate, other_path, "alice"), sign(estate, plan_path, "bob")]


# Each row: how the rule is attacked -> the reason the refusal must give.
BYPASSES = [
    ("one approver twice", lambda e, f: _pair(e, f, ["alice", "alice"]), "alice@keyops.lab already approved"),
    (
        "requester approves",
        lambda e, f: _pair(e, f, ["alice", "bob"], requester="alice@keyops.lab"),
        "alice@keyops.lab requested this change and cannot approve it",
    ),
    ("unknown key", lambda e, f: _pair(e, f, ["mallory", "bob"]), "is not in the allowed-signers file"),
    ("signature over another plan", _signed_other_plan, "the signature is not over this plan file"),
    ("plan changed after approval", _plan_then_edit, "the signature is not over this plan file"),
    ("approver key expired", lambda e, f: _pair(e, f, ["dave", "bob"]), "the key of dave@keyops.lab expired at"),
    (
        "approver not allowed for the class",
        lambda e, f: _pair(e, f, ["carol", "bob"]),
        "not allowed to approve changes to key class master-kek",
    ),
    ("quorum not met", lambda e, f: _pair(e, f, ["bob"]), "has 1 valid approval(s) of the 2 needed"),
    ("no approvals at all", lambda e, f: _pair(e, f, []), "no approvals offered"),
    (
        "wrong namespace",
        lambda e, f: _pair(e, f, ["alice", "bob"], namespace={"alice": "file"}),
        "signed for namespace 'file'",
    ),
    # The lambda defers the look-up: _garbage is defined below this table.
    ("not a signature", lambda e, f: _garbage(e, f), "not an SSH signature"),  # pylint: disable=unnecessary-lambda
]


def _pair(estate, folder, who, requester="operator@keyops.lab", namespace=None):
    plan_path, _unused = make_plan(folder, requester=requester)
    return plan_path, [
        sign(estate, plan_path, name, (namespace or {}).get(name, "keyops-plan"), suffix=str(n))
        for n, name in enumerate(who)
    ]


def _garbage(estate, folder):
    plan_path, signatures = _pair(estate, folder, ["bob"])
    fake = plan_path + ".fake.sig"
    with open(fake, "w") as stream:
        stream.write("-----BEGIN SSH SIGNATURE-----\nbm90IGEgc2lnbmF0dXJl\n-----END SSH SIGNATURE-----\n")
    return plan_path, [fake, *signatures]


@pytest.mark.parametrize(("attack", "setup", "reason"), BYPASSES, ids=[row[0] for row in BYPASSES])
def test_every_way_around_the_rule_is_refused_with_its_reason(estate, tmp_path, attack, setup, reason):
    plan_path, signatures = setup(estate, str(tmp_path))

    with pytest.raises(PolicyViolation) as refused:
        verify(estate, plan_path, signatures)

    assert reason in refused.value.message
    assert len(refused.value.details["approvals"]) < 2
    with pytest.raises(PolicyViolation):
        approvals.require_approvals("rotate", "k", "master-kek", refused.value.details["approvals"], check_mode=False)


def test_one_key_under_two_principals_counts_once(estate, tmp_path):
    plan_path, _unused = make_plan(str(tmp_path))
    with pytest.raises(PolicyViolation) as refused:
        verify(estate, plan_path, [sign(estate, plan_path, "alice")], signers=estate["shared_signers"], quorum=1)
    assert "listed for several principals" in refused.value.message


def test_expired_plan_refuses_every_approval(estate, tmp_path):
    plan_path, _unused = make_plan(str(tmp_path))
    signatures = [sign(estate, plan_path, "alice"), sign(estate, plan_path, "bob")]

    with pytest.raises(PolicyViolation) as refused:
        verify(estate, plan_path, signatures, now=NOW + dt.timedelta(hours=25))

    assert "expired at" in refused.value.message and "no longer count" in refused.value.message


def test_recomputed_digest_must_be_the_approved_one(estate, tmp_path):
    plan_path, _unused = make_plan(str(tmp_path))
    signatures = [sign(estate, plan_path, "alice"), sign(estate, plan_path, "bob")]

    with pytest.raises(PolicyViolation) as refused:
        verify(estate, plan_path, signatures, expected_digest="0" * 64)

    assert "recomputed" in refused.value.message


def test_plan_edited_by_hand_is_refused_before_any_signature(estate, tmp_path):
    plan_path, plan = make_plan(str(tmp_path))
    signatures = [sign(estate, plan_path, "alice"), sign(estate, plan_path, "bob")]
    plan["actions"][0]["after"]["latest_version"] = 9
    with open(plan_path, "wb") as stream:
        stream.write(approvals.plan_bytes(plan))

    with pytest.raises(IntegrityError) as refused:
        verify(estate, plan_path, signatures)

    assert "was edited after it was made" in refused.value.message


def test_distinct_teams_when_the_policy_asks(estate, tmp_path):
    plan_path, _unused = make_plan(str(tmp_path), events=[event("destroy", key_class="kek")])
    signatures = [sign(estate, plan_path, "bob"), sign(estate, plan_path, "carol")]

    assert len(verify(estate, plan_path, signatures)["approvals"]) == 2
    with pytest.raises(PolicyViolation) as refused:
        verify(estate, plan_path, signatures, distinct_teams=True)
    assert "team 'platform' already approved" in refused.value.message


def test_unclassified_key_needs_an_approver_allowed_for_every_class(estate, tmp_path):
    plan_path, _unused = make_plan(str(tmp_path), events=[event("destroy", key_class=None)])
    with pytest.raises(PolicyViolation) as refused:
        verify(estate, plan_path, [sign(estate, plan_path, "alice"), sign(estate, plan_path, "carol")])
    assert "key class unclassified" in refused.value.message


AWX_CASES = [
    ("happy path", [{"approver": "alice", "node": "a"}, {"approver": "bob", "node": "b"}], "4711", None),
    ("same person on both nodes", [{"approver": "alice"}, {"approver": "alice"}], "4711", "already approved"),
    (
        "requester approves",
        [{"approver": "bob"}, {"approver": "alice"}],
        "4711",
        "requested this change and cannot approve it",
    ),
    ("same team", [{"approver": "bob"}, {"approver": "carol"}], "4711", "team 'platform' already approved"),
    ("unknown user", [{"approver": "alice"}, {"approver": "zed"}], "4711", "zed is not in the approvers file"),
    ("outside a workflow", [{"approver": "alice"}, {"approver": "bob"}], None, "outside an AWX workflow job"),
]


@pytest.mark.parametrize(("case", "offered", "job", "reason"), AWX_CASES, ids=[row[0] for row in AWX_CASES])
def test_awx_approval_nodes_follow_the_same_rules(estate, tmp_path, case, offered, job, reason):
    requester = "bob" if case == "requester approves" else "operator"
    events = [event("destroy", key_class="kek")] if case == "same team" else None
    _unused, plan = make_plan(str(tmp_path), requester=requester, events=events)

    if reason is None:
        outcome = approvals.verify_awx_approvals(plan, offered, job, estate["approvers"], 2, now=NOW)
        assert [(item["approver"], item["source"]) for item in outcome["approvals"]] == [
            ("alice@keyops.lab", "awx"),
            ("bob@keyops.lab", "awx"),
        ]
        return
    with pytest.raises(PolicyViolation) as refused:
        approvals.verify_awx_approvals(plan, offered, job, estate["approvers"], 2, now=NOW)
    assert reason in refused.value.message


# --- plans ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "key_class", "detail", "expected"),
    [
        ("rotate", "master-kek", {}, True),
        ("rotate", "kek", {}, False),
        ("destroy", "dek", {}, True),
        ("schedule_deletion", "kek", {}, True),
        ("trim", "kek", {}, True),
        ("configure", "kek", {"requires_approval": True}, True),
    ],
)
def test_which_actions_need_approval_is_policy(action, key_class, detail, expected):
    actions = approvals.planned_actions([{"audit_events": [event(action, key_class=key_class, **detail)]}])
    assert actions[0]["requires_approval"] is expected


def test_policy_override_changes_what_needs_approval():
    policy = {"approval_required_actions": ["rotate"], "approval_required_classes": []}
    assert approvals.planned_actions([{"audit_events": [event("rotate", key_class="dek")]}], policy)[0][
        "requires_approval"
    ]


def test_plan_digest_ignores_order_time_and_volatile_fields_but_not_targets():
    first = [{"audit_events": [event(key_ref="a"), event(key_ref="b")]}]
    later = [{"results": [{"audit_events": [event(key_ref="b")]}, {"audit_events": [event(key_ref="a")]}]}]
    later[0]["results"][0]["audit_events"][0]["after"]["last_rotated"] = "2027-01-01T00:00:00Z"
    plan = approvals.build_plan(approvals.planned_actions(first), "op", "CHG-1", now=NOW)
    again = approvals.build_plan(approvals.planned_actions(later), "op", "CHG-1", now=NOW + dt.timedelta(hours=3))
    other = approvals.build_plan(approvals.planned_actions([{"audit_events": [event(key_ref="c")]}]), "op", "CHG-1")

    assert plan["digest"] == again["digest"]
    assert plan["digest"] != other["digest"]
    assert "last_rotated" not in plan["actions"][0]["after"]
    assert plan["targets"] == ["a", "b"]


@pytest.mark.parametrize(
    ("results", "reason"),
    [
        ([{"failed": True, "msg": "Vault sealed"}], "a check-mode task failed"),
        ([{"audit_events": [dict(event(), outcome="changed", check_mode=False)]}], "not from a check-mode run"),
        (["text"], "not a registered task result"),
    ],
)
def test_plan_refuses_results_that_are_not_a_clean_check_run(results, reason):
    with pytest.raises(Exception) as refused:
        approvals.planned_actions(results)
    assert reason in str(refused.value)


def test_compare_plan_says_what_moved():
    approved = approvals.build_plan(approvals.planned_actions([{"audit_events": [event(key_ref="a")]}]), "op", "C")
    recomputed = approvals.build_plan(approvals.planned_actions([{"audit_events": [event(key_ref="b")]}]), "op", "C")

    approvals.compare_plan(approved, dict(approved))
    with pytest.raises(PolicyViolation) as refused:
        approvals.compare_plan(approved, recomputed)
    assert "new: rotate on b" in refused.value.message
    assert "no longer planned: rotate on a" in refused.value.message


def test_plan_file_is_private_canonical_and_readable(tmp_path):
    path, plan = make_plan(str(tmp_path))
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    with open(path, "rb") as stream:
        data = stream.read()
    assert data == approvals.plan_bytes(json.loads(data))
    assert approvals.load_plan(path)[0]["digest"] == plan["digest"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20270101Z", dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc)),
        ("202701011230Z", dt.datetime(2027, 1, 1, 12, 30, tzinfo=dt.timezone.utc)),
        ("20270101123045Z", dt.datetime(2027, 1, 1, 12, 30, 45, tzinfo=dt.timezone.utc)),
        ("tomorrow", None),
    ],
)
def test_allowed_signers_times(text, expected):
    assert approvals.parse_ssh_time(text) == expected


def test_allowed_signers_options_are_read():
    line = 'a@x,b@x namespaces="keyops-plan,file",valid-before="20270101Z" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 c'
    (entry,) = approvals.parse_allowed_signers("# comment\n\n" + line)
    assert entry.principals == ("a@x", "b@x")
    assert entry.options == {"namespaces": "keyops-plan,file", "valid-before": "20270101Z"}
