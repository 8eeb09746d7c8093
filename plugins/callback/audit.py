# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: audit
type: notification
short_description: Write every keyops key operation to tamper-evident audit sinks
description:
  - Collects the C(audit_events) that keyops.runbooks modules return (loop items included), adds who, where, when
    and under which change, chains them with SHA-256 (C(prev_hash), C(hash) over canonical JSON) and writes them
    to every configured sink.
  - Failed, skipped and unreachable keyops tasks that returned no events get one event with outcome C(failure) or
    C(skipped) and a fixed reason code; a module's failure message is never copied into an event.
  - Events are rebuilt from the allow-list of M(keyops.runbooks.audit_verify)'s schema before they are written,
    whatever a module returned, so no key material, PIN, token or plaintext can reach a sink.
  - A sink that is down loses nothing; events wait in a spool file and are sent, in order, on the next event or
    the next run. The chain continues across runs from the last hash written.
  - At the end of a run a summary (run id, last seq, last hash, count) goes to the anchor sink, and the run's
    events go to the S3 archive when C(s3) is a sink.
  - Audit problems never fail a playbook unless O(fail_closed) is true. Then the run is stopped the way Ctrl-C
    stops it (exit code 99) as soon as a required sink cannot take an event. Run
    M(keyops.runbooks.audit_sink_check) before any change to refuse to start instead.
version_added: 0.1.0
requirements:
  - boto3 on the controller for the C(s3) sink
options:
  sinks:
    description: Where events go. C(file) is the local JSON-lines log; C(s3) receives one archive per run.
    type: list
    elements: str
    default: [file]
    ini: [{section: keyops_audit, key: sinks}]
    env: [{name: KEYOPS_AUDIT_SINKS}]
    vars: [{name: keyops_audit_sinks}]
  path:
    description:
      - The local JSON-lines log (mode 0600, flushed and fsynced per event).
      - The lab's demo sets it to C(outputs/audit/audit.jsonl).
    type: path
    default: ~/.keyops/audit/audit.jsonl
    ini: [{section: keyops_audit, key: path}]
    env: [{name: KEYOPS_AUDIT_PATH}]
    vars: [{name: keyops_audit_path}]
  spool_dir:
    description: Folder for events a sink has not taken yet and for the chain's head (mode 0700).
    type: path
    default: ~/.keyops/audit/spool
    ini: [{section: keyops_audit, key: spool_dir}]
    env: [{name: KEYOPS_AUDIT_SPOOL_DIR}]
    vars: [{name: keyops_audit_spool_dir}]
  timeout:
    description: Seconds to wait for a network sink to connect or answer before the event is spooled.
    type: float
    default: 2.0
    ini: [{section: keyops_audit, key: timeout}]
    env: [{name: KEYOPS_AUDIT_TIMEOUT}]
  retry_interval:
    description:
      - Seconds a sink that failed is left alone (its events go straight to the spool) before it is tried again.
      - The end of a run always tries once more.
    type: float
    default: 30.0
    ini: [{section: keyops_audit, key: retry_interval}]
    env: [{name: KEYOPS_AUDIT_RETRY_INTERVAL}]
    vars: [{name: keyops_audit_retry_interval}]
  fail_closed:
    description: Stop the run when a required sink cannot take an event (its events stay spooled).
    type: bool
    default: false
    ini: [{section: keyops_audit, key: fail_closed}]
    env: [{name: KEYOPS_AUDIT_FAIL_CLOSED}]
    vars: [{name: keyops_audit_fail_closed}]
  required_sinks:
    description: The sinks O(fail_closed) insists on. Default, every configured sink.
    type: list
    elements: str
    ini: [{section: keyops_audit, key: required_sinks}]
    env: [{name: KEYOPS_AUDIT_REQUIRED_SINKS}]
    vars: [{name: keyops_audit_required_sinks}]
  anchor:
    description:
      - Where the run summary goes. Default C(syslog) when it is a sink, else C(hec), else C(file) (a second
        file, O(anchor_path)). C(none) writes no anchor.
    type: str
    choices: [syslog, hec, file, none]
    ini: [{section: keyops_audit, key: anchor}]
    env: [{name: KEYOPS_AUDIT_ANCHOR}]
    vars: [{name: keyops_audit_anchor}]
  anchor_path:
    description: The anchor file when O(anchor=file). Default, O(path) with C(.anchors) appended.
    type: path
    ini: [{section: keyops_audit, key: anchor_path}]
    env: [{name: KEYOPS_AUDIT_ANCHOR_PATH}]
    vars: [{name: keyops_audit_anchor_path}]
  syslog_host:
    description: The syslog server.
    type: str
    default: 127.0.0.1
    ini: [{section: keyops_audit, key: syslog_host}]
    env: [{name: KEYOPS_AUDIT_SYSLOG_HOST}]
    vars: [{name: keyops_audit_syslog_host}]
  syslog_port:
    description: The syslog server's TCP port.
    type: int
    default: 514
    ini: [{section: keyops_audit, key: syslog_port}]
    env: [{name: KEYOPS_AUDIT_SYSLOG_PORT}]
    vars: [{name: keyops_audit_syslog_port}]
  syslog_tls:
    description: Speak TLS to the syslog server (RFC 5425).
    type: bool
    default: false
    ini: [{section: keyops_audit, key: syslog_tls}]
    env: [{name: KEYOPS_AUDIT_SYSLOG_TLS}]
    vars: [{name: keyops_audit_syslog_tls}]
  syslog_ca:
    description: CA bundle that signed the syslog server's certificate. Default, the system's.
    type: path
    ini: [{section: keyops_audit, key: syslog_ca}]
    env: [{name: KEYOPS_AUDIT_SYSLOG_CA}]
    vars: [{name: keyops_audit_syslog_ca}]
  hec_url:
    description: The HTTP event collector's endpoint, for example C(https://splunk.example.com:8088/services/collector/event).
    type: str
    ini: [{section: keyops_audit, key: hec_url}]
    env: [{name: KEYOPS_AUDIT_HEC_URL}]
    vars: [{name: keyops_audit_hec_url}]
  hec_token:
    description: "The collector's token, sent as C(Authorization: Splunk <token>). Never logged."
    type: str
    env: [{name: KEYOPS_AUDIT_HEC_TOKEN}]
    vars: [{name: keyops_audit_hec_token}]
  hec_index:
    description: The index events go to. Default, the token's.
    type: str
    ini: [{section: keyops_audit, key: hec_index}]
    env: [{name: KEYOPS_AUDIT_HEC_INDEX}]
    vars: [{name: keyops_audit_hec_index}]
  hec_ca:
    description: CA bundle for an C(https) collector. Default, the system's.
    type: path
    ini: [{section: keyops_audit, key: hec_ca}]
    env: [{name: KEYOPS_AUDIT_HEC_CA}]
    vars: [{name: keyops_audit_hec_ca}]
  validate_certs:
    description: Verify the TLS certificates of the syslog server and the collector.
    type: bool
    default: true
    ini: [{section: keyops_audit, key: validate_certs}]
    env: [{name: KEYOPS_AUDIT_VALIDATE_CERTS}]
    vars: [{name: keyops_audit_validate_certs}]
  s3_bucket:
    description: Bucket with Object Lock enabled that receives one archive object per run.
    type: str
    ini: [{section: keyops_audit, key: s3_bucket}]
    env: [{name: KEYOPS_AUDIT_S3_BUCKET}]
    vars: [{name: keyops_audit_s3_bucket}]
  s3_prefix:
    description: Key prefix of the archives (C(<prefix>/YYYY/MM/DD/<run_id>.jsonl)).
    type: str
    default: keyops-audit
    ini: [{section: keyops_audit, key: s3_prefix}]
    env: [{name: KEYOPS_AUDIT_S3_PREFIX}]
    vars: [{name: keyops_audit_s3_prefix}]
  s3_endpoint_url:
    description: S3 endpoint, for a non-AWS store or a local one. Default, boto3's (also C(AWS_ENDPOINT_URL)).
    type: str
    ini: [{section: keyops_audit, key: s3_endpoint_url}]
    env: [{name: KEYOPS_AUDIT_S3_ENDPOINT_URL}]
    vars: [{name: keyops_audit_s3_endpoint_url}]
  s3_region:
    description: The bucket's region. Default, boto3's (C(AWS_DEFAULT_REGION)).
    type: str
    ini: [{section: keyops_audit, key: s3_region}]
    env: [{name: KEYOPS_AUDIT_S3_REGION}]
    vars: [{name: keyops_audit_s3_region}]
  s3_retention_days:
    description: Days each archive is retained in compliance mode; nobody can delete it or shorten this.
    type: int
    default: 365
    ini: [{section: keyops_audit, key: s3_retention_days}]
    env: [{name: KEYOPS_AUDIT_S3_RETENTION_DAYS}]
    vars: [{name: keyops_audit_s3_retention_days}]
  operator:
    description:
      - Who runs the playbook. Default, the AWX user who launched the job (C(awx_user_name), C(tower_user_name)),
        else the controller's login name.
    type: str
    ini: [{section: keyops_audit, key: operator}]
    env: [{name: KEYOPS_AUDIT_OPERATOR}]
    vars: [{name: keyops_audit_operator}]
  change_ref_var:
    description:
      - The play or extra variable holding the change reference, written into events whose module gave none.
    type: str
    default: change_ref
    ini: [{section: keyops_audit, key: change_ref_var}]
    env: [{name: KEYOPS_AUDIT_CHANGE_REF_VAR}]
notes:
  - Enable it with C(callbacks_enabled = keyops.runbooks.audit) in ansible.cfg (the collection's own file does).
  - Options set as extra vars (C(-e keyops_audit_sinks=...)) apply from the first play on.
  - Tasks with C(no_log) hide their whole result from every callback, C(audit_events) included; for keyops modules
    the callback then writes one event with the module's action, outcome and reason code C(no_log).
  - Syslog over TCP has no acknowledgement. A record counts as delivered when the server has read it (it closes
    the connection after our half-close); delivery is at least once, so a copy may appear twice in a syslog file.
seealso:
  - module: keyops.runbooks.audit_sink_check
  - module: keyops.runbooks.audit_verify
"""

import getpass
import os
import signal
import socket
import uuid
from typing import Any

from ansible import context
from ansible.plugins.callback import CallbackBase

from ansible_collections.keyops.runbooks.plugins.module_utils.audit import (
    ACTIONS,
    MAX_TEXT,
    anchor_record,
    audit_event,
    sanitize_event,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.audit_sinks import AuditSettings, AuditTrail
from ansible_collections.keyops.runbooks.plugins.module_utils.canonical import canonical_json
from ansible_collections.keyops.runbooks.plugins.module_utils.records import utc_now

COLLECTION = "keyops.runbooks."
# Task arguments that name a key; nothing else of a task's arguments is ever read.
KEY_ARGUMENTS = ("key_ref", "name", "key", "key_name", "key_id", "label", "alias", "path")
ACTION_WORDS = {
    "generate": "create",
    "import": "create",
    "escrow": "backup",
    "info": "scan",
    "inventory": "scan",
    "check": "verify",
    "schedule_deletion": "schedule_deletion",
    "cancel_deletion": "cancel_deletion",
}
BACKEND_PREFIXES = (
    ("vault_", "vault"),
    ("bao_", "vault"),
    ("aws_kms", "aws_kms"),
    ("kms_", "aws_kms"),
    ("pkcs11_", "pkcs11"),
    ("hsm_", "pkcs11"),
    ("x509", "x509"),
    ("cert", "x509"),
    ("acme", "x509"),
)
STATUS_OUTCOME = {
    "failed": ("failure", "task_failed"),
    "unreachable": ("failure", "host_unreachable"),
    "skipped": ("skipped", "task_skipped"),
}


def action_of(module: str, arguments: dict[str, Any]) -> str:
    """The audit action a keyops task stood for, from its arguments or its module's name."""
    if arguments.get("rotate") is True or arguments.get("state") == "rotated":
        return "rotate"
    if arguments.get("state") == "absent":
        return "destroy"
    short = module.removeprefix(COLLECTION)
    for words, action in ACTION_WORDS.items():
        if words in short:
            return action
    return next((word for word in short.split("_") if word in ACTIONS), "configure")


def backend_of(module: str) -> str:
    short = module.removeprefix(COLLECTION)
    return next((backend for prefix, backend in BACKEND_PREFIXES if short.startswith(prefix)), "keyops")


def key_ref_of(arguments: dict[str, Any]) -> str:
    for name in KEY_ARGUMENTS:
        value = arguments.get(name)
        if isinstance(value, str) and value and "{{" not in value and "NO_LOG" not in value:
            return value[:MAX_TEXT]
    return "-"


def timestamp() -> str:
    return utc_now().isoformat(timespec="milliseconds").replace("+00:00", "Z")


def plain(value: Any) -> str | None:
    """A variable's value when it is a plain string or number (never an unrendered template)."""
    if isinstance(value, (str, int)) and not isinstance(value, bool) and "{{" not in str(value):
        return str(value)[:MAX_TEXT]
    return None


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "keyops.runbooks.audit"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_id = uuid.uuid4().hex
        self.seq = 0
        self.first_prev_hash: str | None = None
        self.last_hash: str | None = None
        self.run_events: list[dict[str, Any]] = []
        self.context: dict[str, Any] = {"run_id": self.run_id}
        self.change_ref: str | None = None
        self.trail: AuditTrail | None = None
        self.settings = AuditSettings()
        self.failing: set[str] = set()
        self.stopped = False

    # -- configuration -------------------------------------------------------------------------------------

    def set_options(self, task_keys: Any = None, var_options: Any = None, direct: Any = None) -> None:
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        self.settings = AuditSettings.from_options(self.get_option)
        for problem in self.settings.problems():
            self._display.warning(f"keyops audit: {problem}")
        self.trail = AuditTrail(self.settings, socket.gethostname())

    def v2_playbook_on_start(self, playbook: Any) -> None:
        name = getattr(playbook, "_file_name", "") or ""
        relative = os.path.relpath(name) if name and not os.path.relpath(name).startswith("..") else name
        self.context["playbook"] = relative[:MAX_TEXT]

    def v2_playbook_on_play_start(self, play: Any) -> None:
        variables = dict(play.get_vars() or {})
        manager = play.get_variable_manager()
        if manager is not None:
            variables.update(manager.extra_vars or {})
        if any(name.startswith("keyops_audit_") for name in variables):
            self.set_options(var_options=variables)

        awx_user = plain(variables.get("awx_user_name") or variables.get("tower_user_name"))
        awx_job = plain(variables.get("awx_job_id") or variables.get("tower_job_id"))
        self.context.update(play=plain(play.get_name()) or "", awx_job_id=awx_job, awx_user=awx_user)
        self.context["operator"] = self.get_option("operator") or awx_user or getpass.getuser()
        self.change_ref = plain(variables.get(self.get_option("change_ref_var")))

    # -- task results: every hook ends in _record --------------------------------------------------------------

    def v2_runner_on_ok(self, result: Any) -> None:
        self._record(result, "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result, "unreachable")

    def _record(self, result: Any, status: str) -> None:
        task, data = result.task, result.result
        module = str(task.resolved_action or task.action or "")
        items = [item for item in data.get("results") or [] if isinstance(item, dict)] or [data]
        where = dict(
            self.context,
            host=result.host.get_name(),
            task=task.get_name()[:MAX_TEXT],
            module=module.removeprefix(COLLECTION),
        )
        where = {name: value for name, value in where.items() if value is not None}
        for item in items:
            events = item.get("audit_events") or []
            if not events and module.startswith(COLLECTION) and (status != "ok" or item.get("censored")):
                events = [self._own_event(module, item, task, status)]
            for event in events:
                clean = sanitize_event(event) if isinstance(event, dict) else None
                if clean is None:
                    self._display.warning(
                        f"keyops audit: task '{where['task']}' returned an audit event that is "
                        "not in the event schema; it was not written"
                    )
                    continue
                if clean["change_ref"] is None:
                    clean["change_ref"] = self.change_ref
                self._emit(dict(where, **clean))

    def _own_event(self, module: str, item: dict[str, Any], task: Any, status: str) -> dict[str, Any]:
        """The event for a keyops task that returned none: what it was, on which key, and a fixed reason."""
        if item.get("censored"):
            outcome, reason = (("changed" if item.get("changed") else "unchanged"), "no_log")
        else:
            outcome, reason = STATUS_OUTCOME.get(
                status if not item.get("failed") else "failed", ("failure", "task_failed")
            )
        arguments = dict(task.args or {})
        arguments.update((item.get("invocation") or {}).get("module_args") or {})
        check_mode = task.check_mode if isinstance(task.check_mode, bool) else bool(context.CLIARGS.get("check"))
        return audit_event(
            action_of(module, arguments),
            backend_of(module),
            key_ref_of(arguments),
            outcome,
            check_mode,
            detail={"outcome_reason": reason},
        )

    # -- the one emit path ---------------------------------------------------------------------------------

    def _emit(self, event: dict[str, Any]) -> None:
        if self.trail is None:
            return
        self.seq += 1
        record = dict(event, ts=timestamp(), seq=self.seq)
        try:
            chained, deliveries = self.trail.append(record)
        except OSError as error:
            self._sink_trouble(
                "file", f"the chain state in {self.settings.spool_dir} cannot be written ({error.strerror})", 0
            )
            return
        self.first_prev_hash = self.first_prev_hash or chained["prev_hash"]
        self.last_hash = chained["hash"]
        self.run_events.append(chained)
        for delivery in deliveries:
            if delivery.ok:
                self.failing.discard(delivery.sink)
            else:
                self._sink_trouble(delivery.sink, delivery.reason, delivery.spooled)

    def _sink_trouble(self, sink: str, reason: str, spooled: int) -> None:
        if sink not in self.failing:
            where = f"; {spooled} event(s) spooled in {self.settings.spool_dir}" if spooled else ""
            self._display.warning(f"keyops audit: sink '{sink}' is unavailable: {reason}{where}")
            self.failing.add(sink)
        if self.settings.fail_closed and sink in self.settings.required and not self.stopped:
            self.stopped = True
            self._display.error(
                f"keyops audit: stopping the run because the required audit sink '{sink}' cannot "
                "take events (fail_closed). Bring the sink back (spooled events are sent on the "
                "next run), or remove it from required_sinks."
            )
            # The same path as Ctrl-C: the task queue manager tells its workers and the run ends with exit code 99.
            os.kill(os.getpid(), signal.SIGINT)

    # -- end of the run: anchor, archive, last flush ------------------------------------------------------

    def v2_playbook_on_stats(self, stats: Any) -> None:
        if self.trail is None:
            return
        deliveries = self.trail.flush()
        if self.seq and self.last_hash:
            anchor = anchor_record(
                self.run_id, self.seq, self.last_hash, len(self.run_events), self.first_prev_hash or "", timestamp()
            )
            if self.settings.anchor_sink:
                deliveries.append(self.trail.deliver_to(self.settings.anchor_sink, [anchor]))
            if "s3" in self.trail.sinks:
                body = "".join(canonical_json(record).decode() + "\n" for record in [*self.run_events, anchor])
                key = self.trail.sinks["s3"].object_key(self.run_id, anchor["ts"])  # type: ignore[attr-defined]
                deliveries.append(self.trail.deliver_to("s3", [{"key": key, "body": body}]))
        for delivery in deliveries:
            if not delivery.ok:
                self.failing.discard(delivery.sink)
                self._sink_trouble(delivery.sink, delivery.reason, delivery.spooled)
