# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dual control: change plans, plan digests and approval checks."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any

from ansible.module_utils.common.yaml import yaml_dump, yaml_load

from ansible_collections.keyops.runbooks.plugins.module_utils.audit import state_summary
from ansible_collections.keyops.runbooks.plugins.module_utils.canonical import canonical_json, digest
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    IntegrityError,
    InvalidInput,
    KeyopsError,
    PolicyViolation,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.policy import merged_policy, requires_approval
from ansible_collections.keyops.runbooks.plugins.module_utils.records import UTC, iso_utc, parse_time, utc_now

# Under which audit action a plan records a gated action: the module's own planned event, or the runbook planner's.
# Each gate action also matches itself.
PLANNED_AS: dict[str, tuple[str, ...]] = {
    "raise_min_decryption_version": ("configure",),
    "export": ("configure",),
    "compromise_response": ("revoke",),
    "configure": ("contain",),
}
# Where a module finds the files that say who may approve: the environment (set by the execution environment or an
# AWX credential, not by the requester) wins over the policy value.
ALLOWED_SIGNERS_ENV = "KEYOPS_ALLOWED_SIGNERS"
APPROVERS_FILE_ENV = "KEYOPS_APPROVERS_FILE"


def require_approvals(
    action: str,
    key_ref: str,
    key_class: str | None,
    approvals: list[dict[str, Any]] | None,
    check_mode: bool,
    policy: dict[str, Any] | None = None,
    other_refs: list[str] | tuple[str, ...] = (),
    now: dt.datetime | None = None,
) -> None:
    """Refuse a dual-controlled action unless approvals of a plan that holds this action still verify here.

    The module re-verifies on its own what approval_verify verified: the plan the approvals carry (its digest, its
    expiry, that it holds this action on this key), each SSH signature over it against the trusted allowed-signers
    file, and the rules (quorum, requester, approvers file, key class). ``other_refs`` are other names of the same
    target a plan may use (KMS aliases). Check mode only plans, so it is never refused: that is how the plan to
    approve gets made.
    """
    if check_mode or not requires_approval(action, key_class, policy):
        return
    gate = _Gate(action, key_ref, key_class, merged_policy(policy), now or utc_now())
    gate.check([approval for approval in approvals or [] if isinstance(approval, dict)], other_refs)


class _Gate:
    """The checks behind require_approvals, each refusal saying why."""

    def __init__(
        self, action: str, key_ref: str, key_class: str | None, policy: dict[str, Any], now: dt.datetime
    ) -> None:
        self.action = action
        self.key_ref = key_ref
        self.key_class = key_class
        self.policy = policy
        self.now = now
        self.quorum = int(policy["approval_quorum"])

    def refuse(self, reason: str, remedy: str | None = None) -> None:
        raise PolicyViolation(
            self.action.replace("_", " ").capitalize(),
            self.key_ref,
            f"this action is under dual control and {reason}",
            remedy
            or "Plan the change in check mode, have distinct approvers sign that plan file, verify their signatures "
            "with keyops.runbooks.approval_verify and pass the approvals it returns, unchanged",
        )

    def check(self, offered: list[dict[str, Any]], other_refs: list[str] | tuple[str, ...]) -> None:
        if not offered:
            self.refuse(f"has no approvals (0 of {self.quorum} needed)")
        source = self._source(offered)
        plan, data = self._plan(offered)
        self._in_plan(plan, other_refs)
        approvers_file = self._trusted_file("approvers_file", APPROVERS_FILE_ENV, "approvers")
        signers = (
            self._trusted_file("allowed_signers", ALLOWED_SIGNERS_ENV, "allowed-signers") if source == "ssh" else ""
        )
        distinct = self.policy.get("approval_distinct_teams")
        distinct_teams = bool(source == "awx" if distinct is None else distinct)
        try:
            approvers = load_approvers(approvers_file)
            if source == "ssh":
                outcome = self._verify_ssh(offered, data, signers, approvers, distinct_teams)
            else:
                outcome = verify_awx_approvals(
                    plan,
                    [
                        {
                            "approver": approval.get("principal") or approval.get("approver"),
                            "team": approval.get("team"),
                            "node": approval.get("node"),
                            "approved_at": approval.get("signed_at"),
                        }
                        for approval in offered
                    ],
                    offered[0].get("awx_workflow_job_id"),
                    approvers,
                    self.quorum,
                    distinct_teams,
                    now=self.now,
                )
        except KeyopsError as error:
            self.refuse(f"its approvals do not hold here: {error.reason}")
        self._class_allowed(plan, outcome["approvals"], approvers)

    def _source(self, offered: list[dict[str, Any]]) -> str:
        for number, approval in enumerate(offered, 1):
            who = approval.get("principal") or approval.get("approver") or "no approver named"
            label = f"approval {number} ({who})"
            if not (approval.get("plan_text") or approval.get("plan_path")) or not approval.get("digest"):
                self.refuse(
                    f"{label} carries no plan and digest to check: it was not returned by "
                    "keyops.runbooks.approval_verify (a forged or hand-written approval; 'verified: true' proves "
                    "nothing)"
                )
            if approval.get("source") == "ssh" and not approval.get("signature"):
                self.refuse(f"{label} carries no SSH signature: it is unsigned (forged or hand-written)")
            if approval.get("source") not in ("ssh", "awx"):
                self.refuse(f"{label} has source {approval.get('source')!r}; only 'ssh' and 'awx' approvals exist")
        sources = {approval["source"] for approval in offered}
        if len(sources) > 1:
            self.refuse("its approvals mix SSH-signed and AWX approvals; pass the approvals of one verification")
        source = sources.pop()
        if source == "awx" and self.policy.get("accept_awx_approvals") is not True:
            self.refuse(
                "its approvals come from AWX approval nodes, which carry no signature this module can check",
                "Pass SSH-signed approvals, or set accept_awx_approvals: true in the policy where only AWX workflows "
                "behind approval nodes can run this module",
            )
        return source

    def _plan(self, offered: list[dict[str, Any]]) -> tuple[dict[str, Any], bytes]:
        texts = set()
        for approval in offered:
            if approval.get("plan_text"):
                texts.add(str(approval["plan_text"]).encode("utf-8"))
            else:
                try:
                    with open(str(approval["plan_path"]), "rb") as stream:
                        texts.add(stream.read())
                except OSError as error:
                    self.refuse(f"its plan file {approval['plan_path']} is unreadable: {error.strerror}")
        if len(texts) > 1:
            self.refuse("its approvals are for different plans; all must approve one plan")
        data = texts.pop()
        try:
            plan = check_plan(json.loads(data), "the plan its approvals carry")
        except ValueError:
            self.refuse("the plan its approvals carry is not JSON")
        except KeyopsError as error:
            self.refuse(error.reason)
        for number, approval in enumerate(offered, 1):
            if approval.get("digest") != plan["digest"]:
                self.refuse(
                    f"approval {number} ({approval.get('principal') or approval.get('approver')}) names plan digest "
                    f"{str(approval.get('digest'))[:16]}, but the plan it carries digests to {plan['digest'][:16]} "
                    "(digest mismatch)"
                )
        try:
            verify_plan_state(plan, None, self.now)
        except KeyopsError as error:
            self.refuse(error.reason)
        return plan, data

    def _in_plan(self, plan: dict[str, Any], other_refs: list[str] | tuple[str, ...]) -> None:
        actions = {self.action, *PLANNED_AS.get(self.action, ())}
        refs = [self.key_ref, *other_refs]
        matches = [
            item
            for item in plan.get("actions") or []
            if item.get("action") in actions and any(same_target(item.get("key_ref"), ref) for ref in refs)
        ]
        if not matches:
            self.refuse(
                f"the approved plan {plan['digest'][:16]} ({plan.get('change_ref')}) holds no {self.action} on "
                f"{self.key_ref}: approvals of one plan do not cover an action that is not in it (action not in the "
                "approved plan)",
                "Plan this action in check mode and have that plan approved",
            )
        if not any(item.get("requires_approval") for item in matches):
            self.refuse(
                f"the approved plan {plan['digest'][:16]} holds {self.action} on {self.key_ref} only as an action "
                "that needed no approval (planned under another policy), so its approvers were not asked for it",
                "Plan again under the policy in force and have that plan approved",
            )
        self.planned_class = next((item.get("key_class") for item in matches if item.get("key_class")), None)

    def _trusted_file(self, policy_key: str, env: str, what: str) -> str:
        path = os.environ.get(env) or self.policy.get(policy_key)
        if not path:
            self.refuse(
                f"no {what} file is configured to re-verify its approvals against",
                f"Set the environment variable {env} (the execution environment or an AWX credential provides it) "
                f"or the policy's {policy_key}",
            )
        return str(path)

    def _verify_ssh(
        self,
        offered: list[dict[str, Any]],
        data: bytes,
        allowed_signers: str,
        approvers: dict[str, dict[str, Any]],
        distinct: bool,
    ) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="keyops-approvals-") as folder:
            plan_path = os.path.join(folder, "plan.json")
            write_private_file(plan_path, data)
            signatures = []
            for number, approval in enumerate(offered, 1):
                who = re.sub(r"[^A-Za-z0-9_.@-]", "_", str(approval.get("principal") or approval.get("approver")))
                path = os.path.join(folder, f"approval-{number}-{who}.sig")
                write_private_file(path, str(approval["signature"]).encode("utf-8"))
                signatures.append(path)
            return verify_ssh_approvals(
                plan_path, signatures, allowed_signers, approvers, self.quorum, distinct, now=self.now
            )

    def _class_allowed(
        self, plan: dict[str, Any], counted: list[dict[str, Any]], approvers: dict[str, dict[str, Any]]
    ) -> None:
        """The plan's classes were checked with the rules; the class this call acts on must be covered too."""
        key_class = self.key_class or self.planned_class or "unclassified"
        for approval in counted:
            refusal = _class_refusal(approvers.get(approval["principal"] or "") or {}, {key_class})
            if refusal:
                self.refuse(f"{approval['principal']} is {refusal}")


def same_target(planned: Any, ref: str) -> bool:
    """One key under two spellings: PKCS#11 URIs name a key pair or one of its objects (``type=``)."""
    if planned == ref:
        return True
    if isinstance(planned, str) and planned.startswith("pkcs11:") and ref.startswith("pkcs11:"):

        def untyped(uri: str) -> list[str]:
            return sorted(part for part in uri[len("pkcs11:") :].split(";") if not part.startswith("type="))

        return untyped(planned) == untyped(ref)
    return False


# ---------------------------------------------------------------------------------------------------------------
# Change plans
# ---------------------------------------------------------------------------------------------------------------

PLAN_FORMAT = "keyops-plan/1"
SIGNATURE_NAMESPACE = "keyops-plan"
# The fields the digest covers: what will be done, to what, for whom. created/expires are outside it because the
# apply run cannot reproduce them; the approvers' signatures over the whole plan file protect them instead.
DIGEST_FIELDS = ("format", "requester", "change_ref", "actions", "targets", "key_classes", "requires_approval")
# State fields a check-mode run estimates from the clock or from live traffic (a deletion date, a count of data keys
# still being written): they would differ between the plan run and the apply run without the change differing.
DEFAULT_VOLATILE_FIELDS = (
    "deletion_date",
    "last_rotated",
    "not_after",
    "end_date",
    "count",
    "rewrapped",
    "reencrypted",
    "failed",
    "skipped",
    "total",
    "histogram",
)
ACTION_FIELDS = ("action", "backend", "key_ref", "key_class", "requires_approval", "before", "after")


def _task_results(results: list[Any]) -> list[dict[str, Any]]:
    """Flatten registered results: a looped task registers ``results`` with one entry per item."""
    flat: list[dict[str, Any]] = []
    for result in results or []:
        if not isinstance(result, dict):
            raise InvalidInput(
                "Build change plan",
                None,
                f"a result is a {type(result).__name__}, not a registered task result",
                "Pass the variables registered from the check-mode tasks in 'results'",
            )
        if isinstance(result.get("results"), list) and "audit_events" not in result:
            flat.extend(_task_results(result["results"]))
        else:
            flat.append(result)
    return flat


def _stable_state(state: Any, volatile: frozenset[str]) -> dict[str, Any] | None:
    summary = state_summary(state) if isinstance(state, dict) else None
    if summary is None:
        return None
    return {key: value for key, value in summary.items() if key not in volatile}


def planned_actions(
    results: list[Any],
    policy: dict[str, Any] | None = None,
    volatile_fields: list[str] | tuple[str, ...] = DEFAULT_VOLATILE_FIELDS,
) -> list[dict[str, Any]]:
    """The actions a check-mode run would take, in a canonical order, from its registered task results."""
    volatile = frozenset(volatile_fields)
    actions = []
    for result in _task_results(results):
        if result.get("skipped"):
            continue
        if result.get("failed"):
            raise InvalidInput(
                "Build change plan",
                None,
                f"a check-mode task failed ({str(result.get('msg'))[:200]})",
                "Fix the failure and run the plan again; a plan is only made from a clean run",
            )
        for event in result.get("audit_events") or []:
            if event.get("outcome") == "changed" and not event.get("check_mode"):
                raise InvalidInput(
                    "Build change plan",
                    event.get("key_ref"),
                    "the results come from a real run that already changed the key, not from a check-mode run",
                    "Register the results of the tasks run with check_mode: true",
                )
            if not (event.get("check_mode") and event.get("outcome") == "planned"):
                continue
            detail = event.get("detail") or {}
            key_class = detail.get("key_class")
            needs = bool(detail.get("requires_approval")) or requires_approval(
                event.get("action", ""), key_class, policy
            )
            actions.append(
                {
                    "action": event.get("action"),
                    "backend": event.get("backend"),
                    "key_ref": event.get("key_ref"),
                    "key_class": key_class,
                    "requires_approval": needs,
                    "before": _stable_state(event.get("before"), volatile),
                    "after": _stable_state(event.get("after"), volatile),
                }
            )
    return sorted(actions, key=canonical_json)


def plan_digest(plan: dict[str, Any]) -> str:
    return digest({field: plan.get(field) for field in DIGEST_FIELDS})


def build_plan(
    actions: list[dict[str, Any]],
    requester: str,
    change_ref: str | None,
    validity_hours: float = 24,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """A change plan: the actions, their targets, who asks, under which change, until when; and its digest."""
    created = now or utc_now()
    plan: dict[str, Any] = {
        "format": PLAN_FORMAT,
        "requester": requester,
        "change_ref": change_ref,
        "actions": actions,
        "targets": sorted({action["key_ref"] for action in actions}),
        "key_classes": sorted({action["key_class"] for action in actions if action.get("key_class")}),
        "requires_approval": any(action["requires_approval"] for action in actions),
        "created": iso_utc(created),
        "expires": iso_utc(created + dt.timedelta(hours=validity_hours)),
    }
    plan["digest"] = plan_digest(plan)
    return plan


def plan_bytes(plan: dict[str, Any]) -> bytes:
    """The bytes written to the plan file and signed by the approvers: canonical JSON and a newline."""
    return canonical_json(plan) + b"\n"


def write_private_file(path: str, data: bytes) -> None:
    """Write atomically (temporary file in the same folder, then rename) with mode 0600."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".keyops-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def check_plan(plan: Any, source: str) -> dict[str, Any]:
    """Refuse a plan that is not one, or whose digest field no longer matches its content (edited by hand)."""
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise InvalidInput(
            "Read change plan",
            None,
            f"{source} is not a {PLAN_FORMAT} change plan",
            "Pass the plan file written by keyops.runbooks.change_plan",
        )
    if plan_digest(plan) != plan.get("digest"):
        raise IntegrityError(
            "Read change plan",
            None,
            f"{source} was edited after it was made: its content digests "
            f"to {plan_digest(plan)}, not to the {plan.get('digest')} it records",
            "Make a new plan with keyops.runbooks.change_plan and have it approved again",
        )
    return plan


def load_plan(path: str) -> tuple[dict[str, Any], bytes]:
    """The plan in a plan file and the file's exact bytes (what the approvers signed)."""
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as error:
        raise InvalidInput(
            "Read change plan", None, f"cannot read plan file {path}: {error.strerror}", "Check the plan_path option"
        ) from None
    try:
        plan = json.loads(data)
    except ValueError:
        raise InvalidInput(
            "Read change plan", None, f"{path} is not JSON", "Pass the plan file written by keyops.runbooks.change_plan"
        ) from None
    return check_plan(plan, path), data


def plan_differences(approved: dict[str, Any], recomputed: dict[str, Any]) -> list[str]:
    """Say, in an operator's words, how a recomputed plan differs from the approved one."""
    differences = []
    for field in ("requester", "change_ref"):
        if approved.get(field) != recomputed.get(field):
            differences.append(f"{field} is {recomputed.get(field)!r}, the approved plan has {approved.get(field)!r}")
    approved_actions = [canonical_json(action) for action in approved.get("actions") or []]
    recomputed_actions = [canonical_json(action) for action in recomputed.get("actions") or []]
    for label, ours, theirs in (
        ("new", recomputed_actions, approved_actions),
        ("no longer planned", approved_actions, recomputed_actions),
    ):
        for text in ours:
            if text not in theirs:
                action = json.loads(text)
                differences.append(f"{label}: {action['action']} on {action['key_ref']} ({action['backend']})")
    if not differences and approved.get("digest") != recomputed.get("digest"):
        differences.append("the plans differ in their summary fields")
    return differences


def compare_plan(approved: dict[str, Any], recomputed: dict[str, Any]) -> None:
    """Refuse to apply when the plan recomputed now is not the plan that was approved."""
    if approved.get("digest") == recomputed.get("digest"):
        return
    differences = plan_differences(approved, recomputed)
    raise PolicyViolation(
        "Apply change plan",
        None,
        f"the plan recomputed now ({recomputed.get('digest')}) differs from the approved plan "
        f"({approved.get('digest')}): {'; '.join(differences[:10])}",
        "The estate or the requested change moved since approval; make a new plan and have it approved again",
        differences=differences,
    )


def plan_expired(plan: dict[str, Any], now: dt.datetime | None = None) -> bool:
    expires = parse_time(plan.get("expires"))
    return expires is None or (now or utc_now()) > expires


# ---------------------------------------------------------------------------------------------------------------
# SSH signatures (ssh-keygen -Y sign -n keyops-plan) and the allowed-signers file
# ---------------------------------------------------------------------------------------------------------------

SSHSIG_ARMOR = ("-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----")


@dataclasses.dataclass(frozen=True)
class SshSignature:
    key_blob: bytes
    namespace: str

    @property
    def fingerprint(self) -> str:
        return ssh_fingerprint(self.key_blob)


@dataclasses.dataclass(frozen=True)
class AllowedSigner:
    principals: tuple[str, ...]
    options: dict[str, str]
    key_blob: bytes
    line: int

    @property
    def fingerprint(self) -> str:
        return ssh_fingerprint(self.key_blob)


class SignatureRefused(Exception):
    """One signature does not count; ``reason`` says why in an operator's words."""

    def __init__(self, reason: str, principal: str | None = None, fingerprint: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.principal = principal
        self.fingerprint = fingerprint


def ssh_fingerprint(key_blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_blob).digest()).decode("ascii").rstrip("=")


def _ssh_string(data: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(data):
        raise ValueError("truncated")
    (length,) = struct.unpack(">I", data[offset : offset + 4])
    end = offset + 4 + length
    if end > len(data):
        raise ValueError("truncated")
    return data[offset + 4 : end], end


def parse_ssh_signature(text: bytes) -> SshSignature:
    """Read the signer's public key and the namespace from an armored SSHSIG blob (PROTOCOL.sshsig)."""
    body = text.decode("ascii", errors="replace").strip()
    if not (body.startswith(SSHSIG_ARMOR[0]) and body.endswith(SSHSIG_ARMOR[1])):
        raise ValueError("no SSH SIGNATURE armor")
    raw = base64.b64decode("".join(body[len(SSHSIG_ARMOR[0]) : -len(SSHSIG_ARMOR[1])].split()), validate=True)
    if raw[:6] != b"SSHSIG":
        raise ValueError("no SSHSIG magic")
    key_blob, offset = _ssh_string(raw, 10)
    namespace, offset = _ssh_string(raw, offset)
    return SshSignature(key_blob, namespace.decode("utf-8", errors="replace"))


def _split_options(text: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in re.findall(r'(?:[^,"]|"[^"]*")+', text):
        name, _sep, value = item.partition("=")
        options[name.strip().lower()] = value.strip().strip('"')
    return options


def parse_allowed_signers(text: str) -> list[AllowedSigner]:
    """The entries of an allowed-signers file (ssh-keygen(1), ALLOWED SIGNERS), for explaining refusals."""
    signers = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = re.findall(r'(?:[^\s"]|"[^"]*")+', line)
        if len(fields) < 3:
            continue
        principals, rest = fields[0], fields[1:]
        options = {}
        if not re.match(r"^(ssh|ecdsa|sk)-", rest[0]):
            options, rest = _split_options(rest[0]), rest[1:]
        if len(rest) < 2:
            continue
        try:
            blob = base64.b64decode(rest[1], validate=True)
        except ValueError:
            continue
        signers.append(AllowedSigner(tuple(principals.split(",")), options, blob, number))
    return signers


def parse_ssh_time(text: str) -> dt.datetime | None:
    """YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z], as allowed-signers files write them (no Z: local time)."""
    match = re.fullmatch(r"(\d{8})(\d{4}(\d{2})?)?(Z?)", text.strip())
    if not match:
        return None
    digits = match.group(1) + (match.group(2) or "0000")
    digits += "00" if len(digits) == 12 else ""
    try:
        moment = dt.datetime.strptime(digits, "%Y%m%d%H%M%S")
    except ValueError:
        # Digits that are no calendar time (a typo such as month 13): ssh-keygen ignores such an entry too.
        return None
    return moment.replace(tzinfo=UTC) if match.group(4) else moment.astimezone(UTC)


def ssh_time(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")


Runner = Callable[[list[str], bytes], tuple[int, str, str]]


def _run(args: list[str], stdin: bytes) -> tuple[int, str, str]:
    done = subprocess.run(args, input=stdin, capture_output=True, check=False, timeout=60)
    return done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")


def ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    if not path:
        raise KeyopsError(
            "Verify approvals",
            None,
            "ssh-keygen is not installed on the host running the module",
            "Install OpenSSH's client tools (Debian: openssh-client) there",
        )
    return path


def _explain_no_principal(sig: SshSignature, signers: list[AllowedSigner], now: dt.datetime) -> str:
    entries = [entry for entry in signers if entry.key_blob == sig.key_blob]
    if not entries:
        return f"key {sig.fingerprint} is not in the allowed-signers file (unknown approver key)"
    for entry in entries:
        who = ",".join(entry.principals)
        before = parse_ssh_time(entry.options.get("valid-before", ""))
        after = parse_ssh_time(entry.options.get("valid-after", ""))
        if before and now > before:
            return f"the key of {who} expired at {iso_utc(before)} (valid-before in the allowed-signers file)"
        if after and now < after:
            return f"the key of {who} is only valid from {iso_utc(after)} (valid-after in the allowed-signers file)"
        namespaces = entry.options.get("namespaces")
        if namespaces and SIGNATURE_NAMESPACE not in namespaces.split(","):
            return f"the key of {who} is not allowed to sign the {SIGNATURE_NAMESPACE} namespace"
    return f"ssh-keygen found no principal allowed to sign with key {sig.fingerprint}"


def verify_ssh_signature(
    plan_data: bytes,
    signature_path: str,
    allowed_signers_path: str,
    signers: list[AllowedSigner],
    now: dt.datetime,
    run: Runner = _run,
) -> tuple[str, str]:
    """Check one approver's signature over the plan file bytes; return (principal, key fingerprint)."""
    try:
        with open(signature_path, "rb") as stream:
            sig = parse_ssh_signature(stream.read())
    except OSError as error:
        raise SignatureRefused(f"cannot read the signature file: {error.strerror}") from None
    except ValueError:
        raise SignatureRefused("not an SSH signature (make it with ssh-keygen -Y sign -n keyops-plan)") from None
    if sig.namespace != SIGNATURE_NAMESPACE:
        raise SignatureRefused(
            f"signed for namespace {sig.namespace!r}, not {SIGNATURE_NAMESPACE!r}", fingerprint=sig.fingerprint
        )

    tool = ssh_keygen()
    when = f"verify-time={ssh_time(now)}"
    rc, out, _err = run(
        [tool, "-Y", "find-principals", "-O", when, "-f", allowed_signers_path, "-s", signature_path], b""
    )
    principals = [line.strip() for line in out.splitlines() if line.strip()] if rc == 0 else []
    if not principals:
        raise SignatureRefused(_explain_no_principal(sig, signers, now), fingerprint=sig.fingerprint)
    # ssh-keygen names only the first principal holding the key; a key shared by several people proves no one.
    holders = {name for entry in signers if entry.key_blob == sig.key_blob for name in entry.principals}
    principals = sorted(set(principals) | holders) if len(holders) > 1 else principals
    if len(principals) > 1:
        raise SignatureRefused(
            f"key {sig.fingerprint} is listed for several principals ({', '.join(principals)}); one approver, one key",
            fingerprint=sig.fingerprint,
        )
    principal = principals[0]
    rc, _out, _err = run(
        [
            tool,
            "-Y",
            "verify",
            "-O",
            when,
            "-f",
            allowed_signers_path,
            "-I",
            principal,
            "-n",
            SIGNATURE_NAMESPACE,
            "-s",
            signature_path,
        ],
        plan_data,
    )
    if rc != 0:
        raise SignatureRefused(
            "the signature is not over this plan file: it was made over other content (another "
            "plan, or this plan before it was changed)",
            principal,
            sig.fingerprint,
        )
    return principal, sig.fingerprint


# ---------------------------------------------------------------------------------------------------------------
# The approval rules
# ---------------------------------------------------------------------------------------------------------------


def load_approvers(path: str | None) -> dict[str, dict[str, Any]]:
    """The approvers file: ``approvers: {principal: {name, team, key_classes, awx_user}}``."""
    if not path:
        return {}
    from yaml import YAMLError  # PyYAML comes with ansible-core; imported here for the import sanity test

    try:
        with open(path, encoding="utf-8") as stream:
            document = yaml_load(stream) or {}
    except OSError as error:
        raise InvalidInput(
            "Verify approvals",
            None,
            f"cannot read approvers file {path}: {error.strerror}",
            "Check the approvers_file option",
        ) from None
    except YAMLError:
        raise InvalidInput(
            "Verify approvals", None, f"approvers file {path} is not valid YAML", "Fix the approvers_file"
        ) from None
    approvers = document.get("approvers") if isinstance(document, dict) else None
    if not isinstance(approvers, dict):
        raise InvalidInput(
            "Verify approvals",
            None,
            f"approvers file {path} has no 'approvers' mapping",
            "Write 'approvers: {principal: {team: ..., key_classes: [...]}}'",
        )
    return {str(principal): dict(entry or {}) for principal, entry in approvers.items()}


def classes_needing_approval(plan: dict[str, Any]) -> set[str]:
    """Key classes of the dual-controlled actions; an unclassified key needs an approver allowed for '*'."""
    return {
        action.get("key_class") or "unclassified"
        for action in plan.get("actions") or []
        if action.get("requires_approval")
    }


def _class_refusal(entry: dict[str, Any], needed: set[str]) -> str | None:
    allowed = set(entry.get("key_classes") or [])
    if "*" in allowed:
        return None
    missing = sorted(needed - allowed)
    if missing:
        return f"not allowed to approve changes to key class {', '.join(missing)} (approvers file)"
    return None


@dataclasses.dataclass
class Candidate:
    """One offered approval, before the rules decide whether it counts."""

    label: str
    principal: str | None = None
    fingerprint: str | None = None
    signed_at: str | None = None
    source: str = "ssh"
    team: str | None = None
    refusal: str | None = None
    # What a module needs to check the approval again on its own (the signature text, the AWX node).
    evidence: dict[str, Any] = dataclasses.field(default_factory=dict)


def apply_rules(
    plan: dict[str, Any],
    candidates: list[Candidate],
    approvers: dict[str, dict[str, Any]],
    quorum: int,
    distinct_teams: bool,
    now: dt.datetime,
) -> dict[str, Any]:
    """Count the candidates that pass every rule; refuse, with every reason, when fewer than the quorum do."""
    requester = plan.get("requester")
    needed = classes_needing_approval(plan)
    counted: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    seen_principals: set[str] = set()
    seen_keys: set[str] = set()
    seen_teams: set[str] = set()
    for candidate in candidates:
        reason = candidate.refusal
        entry = approvers.get(candidate.principal or "")
        team = (entry or {}).get("team") or candidate.team
        if reason is None and candidate.principal == requester:
            reason = f"{candidate.principal} requested this change and cannot approve it"
        if reason is None and entry is None:
            reason = f"{candidate.principal} is not in the approvers file"
        if reason is None and entry is not None:
            reason = _class_refusal(entry, needed)
        if reason is None and candidate.principal in seen_principals:
            reason = f"{candidate.principal} already approved; one approver counts once"
        if reason is None and candidate.fingerprint and candidate.fingerprint in seen_keys:
            reason = f"key {candidate.fingerprint} already approved under another principal; one key counts once"
        if reason is None and distinct_teams and team in seen_teams:
            reason = f"team {team!r} already approved; the policy needs approvers from different teams"
        if reason is not None:
            rejected.append({"signature": candidate.label, "principal": candidate.principal, "reason": reason})
            continue
        seen_principals.add(candidate.principal or "")
        seen_teams.add(team)
        if candidate.fingerprint:
            seen_keys.add(candidate.fingerprint)
        counted.append(
            {
                "approver": candidate.principal,
                "principal": candidate.principal,
                "name": entry.get("name"),
                "team": team,
                "key_fingerprint": candidate.fingerprint,
                "digest": plan["digest"],
                "signed_at": candidate.signed_at,
                "source": candidate.source,
                "verified": True,
                **candidate.evidence,
            }
        )
    required = bool(plan.get("requires_approval"))
    outcome = {
        "approvals": counted,
        "rejected": rejected,
        "digest": plan["digest"],
        "requester": requester,
        "change_ref": plan.get("change_ref"),
        "required": required,
        "quorum": quorum,
        "verified_at": iso_utc(now),
    }
    if required and len(counted) < quorum:
        reasons = "; ".join(f"{item['signature']}: {item['reason']}" for item in rejected) or "no approvals offered"
        raise PolicyViolation(
            "Verify approvals",
            None,
            f"plan {plan['digest'][:16]} ({plan.get('change_ref')}) has {len(counted)} valid approval(s) of the "
            f"{quorum} needed; refused: {reasons}",
            "Have distinct approvers, none of them the requester, each allowed for the key class, sign this exact plan "
            "file (ssh-keygen -Y sign -n keyops-plan) or approve the AWX approval nodes",
            **outcome,
        )
    return outcome


def verify_plan_state(plan: dict[str, Any], expected_digest: str | None, now: dt.datetime) -> None:
    if expected_digest and expected_digest != plan["digest"]:
        raise PolicyViolation(
            "Verify approvals",
            None,
            f"the approved plan has digest {plan['digest']}, but the run recomputed {expected_digest}",
            "Make a new plan and have it approved again",
            digest=plan["digest"],
        )
    if plan_expired(plan, now):
        raise PolicyViolation(
            "Verify approvals",
            None,
            f"plan {plan['digest'][:16]} ({plan.get('change_ref')}) "
            f"expired at {plan.get('expires')}; its approvals no longer count",
            "Make a new plan and have it approved again",
            digest=plan["digest"],
        )


def verify_ssh_approvals(
    plan_path: str,
    signature_paths: list[str],
    allowed_signers_path: str,
    approvers: dict[str, dict[str, Any]],
    quorum: int,
    distinct_teams: bool = False,
    expected_digest: str | None = None,
    now: dt.datetime | None = None,
    run: Runner = _run,
) -> dict[str, Any]:
    """Verify approvers' SSH signatures over a plan file against the allowed signers and the approval rules."""
    now = now or utc_now()
    plan, data = load_plan(plan_path)
    verify_plan_state(plan, expected_digest, now)
    try:
        with open(allowed_signers_path, encoding="utf-8") as stream:
            signers = parse_allowed_signers(stream.read())
    except OSError as error:
        raise InvalidInput(
            "Verify approvals",
            None,
            f"cannot read allowed-signers file {allowed_signers_path}: {error.strerror}",
            "Check the allowed_signers option",
        ) from None

    candidates = []
    for path in signature_paths:
        candidate = Candidate(label=os.path.basename(path), source="ssh")
        try:
            candidate.principal, candidate.fingerprint = verify_ssh_signature(
                data, path, allowed_signers_path, signers, now, run
            )
            # SSH signatures carry no time: this is when the signature file was written, for the record only.
            candidate.signed_at = iso_utc(os.stat(path).st_mtime)
            with open(path, encoding="ascii", errors="replace") as stream:
                candidate.evidence = {"signature": stream.read()}
        except SignatureRefused as refusal:
            candidate.refusal, candidate.principal, candidate.fingerprint = (
                refusal.reason,
                refusal.principal,
                refusal.fingerprint,
            )
        candidates.append(candidate)
    outcome = apply_rules(plan, candidates, approvers, quorum, distinct_teams, now)
    # The plan travels with each approval (it holds no secret), so a module can check the approval on its own.
    plan_text = data.decode("utf-8")
    for approval in outcome["approvals"]:
        approval.update(plan_path=os.path.abspath(plan_path), plan_text=plan_text)
    outcome["plan"] = plan
    return outcome


def verify_awx_approvals(
    plan: dict[str, Any],
    awx_approvals: list[dict[str, Any]],
    workflow_job_id: Any,
    approvers: dict[str, dict[str, Any]],
    quorum: int,
    distinct_teams: bool = True,
    expected_digest: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Apply the approval rules to the approvers of an AWX workflow's approval nodes.

    AWX enforces that the nodes were approved before this job ran; who approved them is taken as given.
    """
    now = now or utc_now()
    check_plan(plan, "the plan passed from the workflow's plan job")
    verify_plan_state(plan, expected_digest, now)
    if not workflow_job_id:
        raise PolicyViolation(
            "Verify approvals",
            None,
            "AWX approvals were offered outside an AWX workflow job (awx_workflow_job_id is not set)",
            "Run the apply job template from its workflow, behind the approval nodes, or use SSH-signed approvals",
        )
    by_awx_user = {
        str(entry.get("awx_user")): principal for principal, entry in approvers.items() if entry.get("awx_user")
    }
    candidates = []
    for item in awx_approvals:
        user = str(item.get("approver") or "")
        principal = by_awx_user.get(user, user)
        candidates.append(
            Candidate(
                label=f"AWX workflow job {workflow_job_id} node {item.get('node', '?')}",
                principal=principal,
                signed_at=iso_utc(item.get("approved_at")),
                source="awx",
                team=item.get("team"),
                refusal=None if user else "the approval names no approver",
                evidence={"awx_workflow_job_id": str(workflow_job_id), "node": item.get("node")},
            )
        )
    requester = plan.get("requester")
    offered_plan = plan
    plan = dict(plan, requester=by_awx_user.get(str(requester), requester))
    outcome = apply_rules(plan, candidates, approvers, quorum, distinct_teams, now)
    plan_text = plan_bytes(offered_plan).decode("utf-8")
    for approval in outcome["approvals"]:
        approval["plan_text"] = plan_text
    outcome["plan"] = plan
    outcome["awx_workflow_job_id"] = str(workflow_job_id)
    return outcome


# ---------------------------------------------------------------------------------------------------------------
# Demo approvers for the lab
# ---------------------------------------------------------------------------------------------------------------

DEMO_APPROVERS = (
    ("alice@keyops.lab", "Alice Adeyemi", "security", ["*"], "alice"),
    ("bob@keyops.lab", "Bob Baptiste", "platform", ["*"], "bob"),
    ("carol@keyops.lab", "Carol Chen", "platform", ["kek", "dek", "tls-cert"], "carol"),
)


def create_demo_approvers(folder: str, valid_days: int = 365, run: Runner = _run) -> dict[str, Any]:
    """Make three demo approvers: ed25519 keys (private keys 0600 in ``folder``), allowed_signers, approvers.yml."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    tool = ssh_keygen()
    valid_before = ssh_time(utc_now() + dt.timedelta(days=valid_days))
    lines = [f"# keyops demo approvers; keys valid until {valid_before}"]
    approvers: dict[str, dict[str, Any]] = {}
    keys = {}
    for principal, name, team, classes, awx_user in DEMO_APPROVERS:
        key_path = os.path.join(folder, awx_user)
        if not os.path.exists(key_path):
            rc, _out, err = run([tool, "-q", "-t", "ed25519", "-N", "", "-C", principal, "-f", key_path], b"")
            if rc != 0:
                raise KeyopsError(
                    "Create demo approvers",
                    None,
                    f"ssh-keygen could not make a key: {err.strip()[:200]}",
                    "Check that the folder is writable",
                )
        os.chmod(key_path, 0o600)
        with open(key_path + ".pub", encoding="utf-8") as stream:
            key_type, key_b64 = stream.read().split()[:2]
        lines.append(
            f'{principal} namespaces="{SIGNATURE_NAMESPACE}",valid-before="{valid_before}" {key_type} {key_b64}'
        )
        approvers[principal] = {"name": name, "team": team, "key_classes": classes, "awx_user": awx_user}
        keys[principal] = key_path
    allowed_signers = os.path.join(folder, "allowed_signers")
    approvers_file = os.path.join(folder, "approvers.yml")
    write_private_file(allowed_signers, ("\n".join(lines) + "\n").encode("utf-8"))
    write_private_file(approvers_file, yaml_dump({"approvers": approvers}, sort_keys=True).encode("utf-8"))
    return {"allowed_signers": allowed_signers, "approvers_file": approvers_file, "keys": keys}


def sign_plan(plan_path: str, key_path: str, principal: str, out_path: str | None = None, run: Runner = _run) -> str:
    """Sign a plan file as an approver (ssh-keygen -Y sign -n keyops-plan); return the signature path."""
    load_plan(plan_path)
    target = out_path or f"{plan_path}.{re.sub(r'[^A-Za-z0-9_.@-]', '_', principal)}.sig"
    with open(plan_path, "rb") as stream:
        data = stream.read()
    rc, out, err = run([ssh_keygen(), "-Y", "sign", "-q", "-f", key_path, "-n", SIGNATURE_NAMESPACE], data)
    if rc != 0 or SSHSIG_ARMOR[0] not in out:
        raise KeyopsError(
            "Sign change plan",
            None,
            f"ssh-keygen could not sign with {key_path}: {err.strip()[:200]}",
            "Check the key path and its passphrase (use ssh-agent for keys with a passphrase)",
        )
    write_private_file(target, out.encode("ascii"))
    return target
