"""Legal holds block and release; marketing withdrawal issues its job at once; tombstones pass."""

from __future__ import annotations

import pytest

from shared.contract.codec import decode
from shared.contract.events import DeletionCompleted
from tests.integration.retention.harness import (
    DAY,
    Harness,
    closed,
    completed,
    consent_state,
    eventually,
    hold,
    release,
    signed_up,
)
from tests.support.kafka import read_topic

pytestmark = pytest.mark.integration


async def test_account_hold_blocks_due_timers_and_its_release_issues_them(infra, topics, schema):
    h = await Harness.start(infra, topics, schema)
    try:
        await h.send(
            topics.accounts_lifecycle, signed_up("usr_h1", "acc_h"), signed_up("usr_h2", "acc_h")
        )
        await h.send(
            topics.legal_holds,
            hold(
                "hold_1",
                "acc_h",
                scope="account",
                account_id="acc_h",
                categories=["usage_data"],
                reason="court_order",
            ),
        )
        listed = await eventually(lambda: h.get("/v1/holds"), lambda r: len(r["holds"]) == 1)
        assert listed["holds"][0]["hold_id"] == "hold_1"
        assert "usage_data" in listed["holds"][0]["explanation"]
        assert "every subject of account acc_h" in listed["holds"][0]["explanation"]
        assert "court" in listed["holds"][0]["explanation"]

        await h.send(topics.accounts_lifecycle, closed("usr_h1", "acc_h"))
        await h.jobs("category = 'marketing_profile'", count=2)  # not held: issued at closure

        dry = await h.get(
            "/v1/subjects/usr_h2/retention", at=(h.clock.now() + 31 * DAY).isoformat()
        )
        blocked = [a for a in dry["dry_run"] if a["action"] == "blocked"]
        assert [(a["category"], a["hold_ids"]) for a in blocked] == [("usage_data", ["hold_1"])]
        assert [x["hold_id"] for x in dry["holds"]] == ["hold_1"]
        usage = next(c for c in dry["categories"] if c["category"] == "usage_data")
        assert (usage["owner"], usage["period"], usage["next"]["status"]) == (
            "analytics",
            "P30D",
            "pending",
        )

        await h.advance(31 * DAY)
        timers = await eventually(
            lambda: h.fetch("SELECT status FROM timers WHERE category = 'usage_data'"),
            lambda rows: {r["status"] for r in rows} == {"blocked"},
        )
        assert [r["status"] for r in timers] == ["blocked", "blocked"]
        await h.quiet()
        assert await h.fetch("SELECT 1 FROM jobs WHERE category = 'usage_data'") == []

        await h.send(
            topics.legal_holds, release("hold_1", "acc_h", scope="account", account_id="acc_h")
        )
        issued = await h.jobs("category = 'usage_data'", count=2)
        assert {j["subject_id"] for j in issued} == {"usr_h1", "usr_h2"}
        assert (await h.get("/v1/holds"))["holds"] == []
    finally:
        await h.stop()


async def test_marketing_withdrawal_issues_its_job_once_and_tombstones_are_skipped(
    infra, topics, schema
):
    h = await Harness.start(infra, topics, schema)
    try:
        state = topics.consent_state
        await h.send(state, consent_state("usr_m", 1, "granted", True))
        await h.send(state, consent_state("usr_m", 2, "withdrawn", False))
        jobs = await h.jobs("subject_id = 'usr_m'")
        assert [(j["category"], j["reason"], j["mode"]) for j in jobs] == [
            ("marketing_profile", "consent_withdrawn", "delete")
        ]
        # the same state again, an older one, and a tombstone: no new job, nothing dead-lettered
        await h.send(
            state,
            consent_state("usr_m", 3, "withdrawn", False),
            consent_state("usr_m", 1, "granted", True),
            (b"usr_m", None),
            consent_state("usr_n", 1, "default", False),
            consent_state("usr_p", 1, "granted", True),
            consent_state("usr_p", 2, "granted", False, restrictions=["marketing_email"]),
        )
        await h.send(topics.privacy_receipts, completed("usr_m", "job_unknown", "marketing"))
        dead = await read_topic(
            infra.kafka, topics.deadletter, until=lambda r: len(r) >= 1, settle=1.0
        )
        assert len(dead) == 1
        assert dict(dead[0].headers)["error"] == b"unknown job job_unknown"
        receipt = decode(dead[0].value)
        assert isinstance(receipt, DeletionCompleted)
        assert receipt.data.job_id == "job_unknown"
        await h.quiet()
        assert len(await h.fetch("SELECT 1 FROM jobs")) == 1

        await h.send(state, consent_state("usr_m", 4, "granted", True))
        await h.send(state, consent_state("usr_m", 5, "withdrawn", False))
        assert len(await h.jobs("subject_id = 'usr_m'", count=2)) == 2
        # a restriction keeps the data; an objection to direct marketing deletes it
        await h.send(
            state, consent_state("usr_p", 3, "granted", False, objections=["marketing_email"])
        )
        objected = await h.jobs("subject_id = 'usr_p'")
        assert [(j["category"], j["reason"]) for j in objected] == [
            ("marketing_profile", "consent_withdrawn")
        ]
    finally:
        await h.stop()
