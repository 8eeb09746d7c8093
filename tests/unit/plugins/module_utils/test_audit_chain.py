"""The hash chain and its verifier: every kind of tampering is caught, and named, at the first broken event."""

from __future__ import annotations

import copy
import json

import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils.audit import (
    GENESIS_HASH,
    anchor_record,
    audit_event,
    chain_event,
    event_hash,
    verify_chain,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.canonical import canonical_json


def make_run(run_id: str, count: int, prev: str = GENESIS_HASH) -> list[dict]:
    events = []
    for seq in range(1, count + 1):
        event = audit_event(
            "rotate",
            "vault_transit",
            f"transit/k{seq}",
            "changed",
            False,
            before={"latest_version": seq},
            after={"latest_version": seq + 1},
            change_ref="CHG-1",
        )
        chained = chain_event(dict(event, run_id=run_id, seq=seq, ts=f"2026-12-03T10:00:{seq:02d}.000Z"), prev)
        prev = chained["hash"]
        events.append(chained)
    return events


def lines(events: list[dict]) -> list[str]:
    return [canonical_json(event).decode() for event in events]


def anchor_of(events: list[dict]) -> dict:
    return anchor_record(
        events[-1]["run_id"],
        events[-1]["seq"],
        events[-1]["hash"],
        len(events),
        events[0]["prev_hash"],
        "2026-12-03T10:01:00Z",
    )


def rechain(events: list[dict]) -> list[dict]:
    """What an attacker with the code can do: rewrite the whole chain after a change."""
    prev, out = GENESIS_HASH, []
    for event in events:
        body = {key: value for key, value in event.items() if key not in ("prev_hash", "hash")}
        out.append(chain_event(body, prev))
        prev = out[-1]["hash"]
    return out


def edit(events):
    events[3]["after"] = {"latest_version": 99}
    return events


def edit_and_rehash_one(events):
    events[3]["after"] = {"latest_version": 99}
    events[3]["hash"] = event_hash(events[3])
    return events


def delete(events):
    del events[3]
    return events


def insert_forged(events):
    forged = chain_event(dict(events[2], key_ref="transit/forged"), events[2]["hash"])
    events.insert(3, forged)
    return events


def insert_unlinked(events):
    events.insert(3, dict(events[5]))
    return events


def reorder(events):
    events[3], events[4] = events[4], events[3]
    return events


def delete_first(events):
    del events[0]
    return events


def garbage(events):
    return [*events[:3], "not json", *events[3:]]


def truncate_tail(events):
    return events[:-2]


def rewrite_everything(events):
    return rechain(edit(events))


TAMPER = [
    # name, tamper, anchored, (line of the first break or None for an anchor finding), code
    ("edited event", edit, False, 4, "edited"),
    ("edited event with its own hash recomputed", edit_and_rehash_one, False, 5, "deleted"),
    ("deleted event", delete, False, 4, "deleted"),
    ("deleted first event", delete_first, False, 1, "deleted"),
    ("inserted forged event, chained to its predecessor", insert_forged, False, 5, "inserted"),
    ("inserted copy of a later event", insert_unlinked, False, 4, "reordered"),
    ("two events swapped", reorder, False, 4, "reordered"),
    ("a line that is not an event", garbage, False, 4, "malformed"),
    ("tail cut off, caught by the anchor", truncate_tail, True, None, "truncated"),
    ("whole chain rewritten, caught by the anchor", rewrite_everything, True, None, "anchor_mismatch"),
]


@pytest.mark.parametrize(("name", "tamper", "anchored", "line", "code"), TAMPER, ids=[row[0] for row in TAMPER])
def test_tampering_is_detected_at_the_first_broken_event(name, tamper, anchored, line, code):
    events = make_run("run-a", 8)
    anchors = [anchor_of(events)] if anchored else []
    tampered = tamper(copy.deepcopy(events))
    text = [item if isinstance(item, str) else canonical_json(item).decode() for item in tampered]

    report = verify_chain(text, anchors)

    assert report["ok"] is False
    assert report["first_broken"]["code"] == code
    assert report["first_broken"]["line"] == line
    assert report["first_broken"]["reason"]


def test_an_untouched_log_of_several_runs_verifies_with_its_anchors():
    first = make_run("run-a", 5)
    second = make_run("run-b", 3, prev=first[-1]["hash"])

    report = verify_chain(lines(first + second), [anchor_of(first), anchor_of(second)])

    assert report == {
        "ok": True,
        "count": 8,
        "runs": 2,
        "last_hash": second[-1]["hash"],
        "first_broken": None,
        "anchors_checked": 2,
        "anchors_ignored": 0,
    }


def test_a_deleted_whole_run_breaks_the_next_runs_first_link():
    first, second = make_run("run-a", 3), None
    second = make_run("run-b", 2, prev=first[-1]["hash"])
    third = make_run("run-c", 2, prev=second[-1]["hash"])

    report = verify_chain(lines(first + third))

    assert (report["first_broken"]["run_id"], report["first_broken"]["seq"], report["first_broken"]["code"]) == (
        "run-c",
        1,
        "deleted",
    )


def test_a_deleted_last_run_is_caught_by_its_anchor():
    first = make_run("run-a", 3)
    second = make_run("run-b", 2, prev=first[-1]["hash"])

    report = verify_chain(lines(first), [anchor_of(first), anchor_of(second)])

    assert report["first_broken"]["code"] == "truncated"
    assert report["first_broken"]["run_id"] == "run-b"


def test_anchors_inside_the_log_are_read_from_syslog_lines():
    events = make_run("run-a", 3)
    syslog = [
        f"<109>1 {event['ts']} host keyops 1 audit - {line}" for event, line in zip(events, lines(events), strict=True)
    ]
    syslog.append(f"<109>1 2026-12-03T10:01:00Z host keyops 1 anchor - {json.dumps(anchor_of(events))}")

    assert verify_chain(syslog)["ok"] is True
    assert verify_chain(syslog[:2] + syslog[3:])["first_broken"]["code"] == "truncated"


def test_a_rotated_log_verifies_from_the_previous_files_last_hash():
    first = make_run("run-a", 3)
    second = make_run("run-b", 2, prev=first[-1]["hash"])

    assert verify_chain(lines(second))["first_broken"]["code"] == "deleted"
    assert verify_chain(lines(second), start_hash=first[-1]["hash"])["ok"] is True


def test_anchors_of_another_controllers_chain_are_not_this_logs_business():
    ours = make_run("run-a", 3)
    stranger = anchor_record("run-x", 2, "f" * 64, 2, "e" * 64, "2026-12-03T10:01:00Z")

    report = verify_chain(lines(ours), [anchor_of(ours), stranger])

    assert (report["ok"], report["anchors_checked"], report["anchors_ignored"]) == (True, 1, 1)
