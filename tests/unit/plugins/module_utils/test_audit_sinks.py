"""Sinks and the spool: events land, in order, once the sink is back; nothing secret reaches them."""

from __future__ import annotations

import json
import os
import stat

import pytest
import trustme

from ansible_collections.keyops.runbooks.plugins.module_utils.audit import (
    audit_event,
    sanitize_event,
    verify_chain,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.audit_sinks import (
    AuditSettings,
    AuditTrail,
    HecSink,
    SinkError,
    Spool,
    SyslogSink,
)
from tests.support.audit_peers import HecCollector, SyslogListener, free_port
from tests.support.key_files import fresh_private_key_pem

TOKEN = "hec-token-canary-7f3a"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def event(n: int) -> dict:
    return dict(audit_event("rotate", "vault_transit", f"transit/k{n}", "changed", False), run_id="r", seq=n)


def settings(tmp_path, **options) -> AuditSettings:
    return AuditSettings(path=str(tmp_path / "log" / "audit.jsonl"), spool_dir=str(tmp_path / "spool"), **options)


def test_file_sink_is_private_and_the_chain_continues_across_runs(tmp_path):
    config = settings(tmp_path)
    AuditTrail(config).append(event(1))
    AuditTrail(config).append(event(2))  # a second run: a new trail, same files

    log = tmp_path / "log" / "audit.jsonl"
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "log").st_mode) == 0o700
    assert verify_chain(log.read_text().splitlines())["count"] == 2


def test_a_syslog_sink_that_was_down_gets_every_spooled_event_in_order(tmp_path):
    port, clock = free_port(), Clock()
    config = settings(tmp_path, sinks=["file", "syslog"], syslog_port=port, retry_interval=30)
    trail = AuditTrail(config, clock=clock)

    outcomes = [trail.append(event(n))[1][1] for n in (1, 2)]
    assert [(o.ok, o.spooled) for o in outcomes] == [(False, 1), (False, 2)]
    spool = Spool(config.spool_dir, "syslog")
    assert stat.S_IMODE(os.stat(spool.path).st_mode) == 0o600

    with SyslogListener(port) as listener:
        # Within the retry interval the sink is left alone; the event joins the spool.
        assert trail.append(event(3))[1][1].spooled == 3
        assert listener.messages == []
        clock.now += 31
        assert trail.append(event(4))[1][1].ok

    keys = [json.loads(message.split(" - ", 1)[1])["key_ref"] for message in listener.messages]
    assert keys == ["transit/k1", "transit/k2", "transit/k3", "transit/k4"]
    assert spool.load() == []
    assert listener.messages[0].startswith("<109>1 ")  # facility log audit, notice, RFC 5424 version 1


def test_syslog_over_tls_checks_the_servers_certificate(tmp_path):
    authority = trustme.CA()
    server_context = __import__("ssl").SSLContext(__import__("ssl").PROTOCOL_TLS_SERVER)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))

    with SyslogListener(context=server_context) as listener:
        SyslogSink("127.0.0.1", listener.port, tls=True, ca=str(ca_file)).deliver([event(1)])
        with pytest.raises(SinkError, match="TLS handshake"):
            SyslogSink("127.0.0.1", listener.port, tls=True).deliver([event(2)])  # system CAs do not know it

    assert len(listener.messages) == 1


def test_hec_sends_envelopes_with_the_token_and_never_names_it_in_errors():
    with HecCollector(TOKEN) as collector:
        HecSink(collector.url, TOKEN, index="keyops").deliver([event(1), event(2)])
        with pytest.raises(SinkError) as refused:
            HecSink(collector.url, "wrong-token").deliver([event(3)])

    assert [envelope["event"]["seq"] for envelope in collector.events] == [1, 2]
    assert collector.events[0]["index"] == "keyops" and collector.events[0]["sourcetype"] == "keyops:audit"
    assert collector.requests[0]["authorization"] == f"Splunk {TOKEN}"
    assert "401" in str(refused.value) and "wrong-token" not in str(refused.value)


def test_sink_check_reports_down_sinks_and_spooled_counts(tmp_path):
    port = free_port()
    config = settings(tmp_path, sinks=["file", "syslog"], syslog_port=port)
    AuditTrail(config).append(event(1))

    checks = {check.sink: check for check in AuditTrail(config).check()}

    assert checks["file"].ok and checks["spool"].ok
    assert not checks["syslog"].ok and checks["syslog"].spooled == 1
    assert f"127.0.0.1:{port}" in checks["syslog"].reason


SECRET = fresh_private_key_pem().decode()
REDACTION = [
    ("unknown top-level field", {"plaintext": SECRET}),
    ("unknown state field", {"before": {"key_material": SECRET}}),
    ("nested value in an allowed field", {"after": {"versions": {"1": {"key": SECRET}}}}),
    ("text longer than an identifier", {"detail": {"path": SECRET * 10}}),
    ("approval with extra fields", {"approvals": [{"approver": "alice", "signature_blob": SECRET}]}),
]


@pytest.mark.parametrize(("name", "extra"), REDACTION, ids=[row[0] for row in REDACTION])
def test_sanitize_keeps_only_allow_listed_fields(name, extra):
    raw = dict(audit_event("rotate", "vault_transit", "transit/k", "changed", False), **extra)

    clean = sanitize_event(raw)

    assert clean is not None and SECRET not in json.dumps(clean)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"sinks": ["file", "kafka"]}, "unknown sink 'kafka'"),
        ({"sinks": ["hec"], "hec_url": "http://127.0.0.1:1/"}, "needs hec_url and hec_token"),
        ({"sinks": ["s3"]}, "needs s3_bucket"),
        ({"sinks": ["file"], "anchor": "syslog"}, "anchor 'syslog' is not among sinks"),
    ],
)
def test_settings_that_cannot_work_name_the_option(tmp_path, options, problem):
    assert any(problem in text for text in settings(tmp_path, **options).problems())


def test_anchor_goes_to_syslog_then_hec_then_a_second_file(tmp_path):
    assert settings(tmp_path, sinks=["file", "hec", "syslog"]).anchor_sink == "syslog"
    assert settings(tmp_path, sinks=["file", "hec"]).anchor_sink == "hec"
    file_only = settings(tmp_path)
    assert (file_only.anchor_sink, file_only.anchor_file) == ("file", file_only.path + ".anchors")
