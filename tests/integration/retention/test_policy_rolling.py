"""Policy 1.3 on real Kafka and PostgreSQL: usage data purged monthly past 13 months while open."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.contract import events as ev
from tests.integration.retention.harness import (
    DAY,
    T0,
    Harness,
    closed,
    event,
    eventually,
    hold,
    signed_up,
)

pytestmark = pytest.mark.integration
FIRST = datetime(2027, 12, 26, 10, 0, tzinfo=UTC)  # T0 + 13 months
SECOND = datetime(2028, 1, 26, 10, 0, tzinfo=UTC)


def purged(subject: str, job_id: str, records: int) -> ev.PurgeCompleted:
    data = ev.PurgeCompletedData(job_id=job_id, owner="analytics", records_deleted=records)
    return event(ev.PurgeCompleted, subject, data, source="owner")


async def test_open_accounts_get_monthly_purges_tracked_to_receipts_and_holds_skip_a_round(
    infra, topics, schema
):
    h = await Harness.start(infra, topics, schema)
    try:
        await h.send(
            topics.accounts_lifecycle, signed_up("usr_p", "acc_p"), signed_up("usr_q", "acc_q")
        )
        await h.send(topics.legal_holds, hold("h_q", "usr_q", reason="subpoena"))
        view = await eventually(
            lambda: h.get("/v1/subjects/usr_p/retention"),
            lambda v: any(c["rolling"] and c["rolling"]["next_purge"] for c in v["categories"]),
        )
        usage = next(c for c in view["categories"] if c["category"] == "usage_data")
        assert usage["rolling"]["keep"] == "P13M"
        assert usage["rolling"]["next_purge"] == FIRST.isoformat().replace("+00:00", "Z")
        assert usage["rolling"]["purges_before"].startswith(T0.date().isoformat())
        assert all(c["rolling"] is None for c in view["categories"] if c is not usage)
        when = (FIRST + DAY).isoformat()
        page = await h.get("/v1/retention/dry-run", at=when)
        assert [(r["category"], r["purges_due"]) for r in page["rolling"]] == [("usage_data", 2)]
        mine = await h.get("/v1/subjects/usr_p/retention", at=when)
        assert [a["category"] for a in mine["dry_run"] if a["action"] == "purge"] == ["usage_data"]

        await eventually(lambda: h.fetch("SELECT 1 FROM holds"), bool)
        await h.advance(FIRST - T0 + timedelta(hours=1))
        job = (await h.jobs("kind = 'purge'"))[0]
        assert (job["subject_id"], job["category"], job["owner"]) == (
            "usr_p",
            "usage_data",
            "analytics",
        )
        published = await h.published(
            topics.privacy_jobs, lambda rs: any(r.value and b"purge.job.v1" in r.value for r in rs)
        )
        issued = [e for _, e in published if isinstance(e, ev.PurgeJob)]
        assert [(e.subject, e.data.before, e.data.keep) for e in issued] == [("usr_p", T0, "P13M")]
        # usr_q is under a hold: no job, its timer waits for the next round
        skipped = await eventually(
            lambda: h.fetch("SELECT due_at FROM purge_timers WHERE subject_id = 'usr_q'"),
            lambda rows: bool(rows) and rows[0]["due_at"] == SECOND,
        )
        assert skipped[0]["due_at"] == SECOND
        assert not await h.fetch("SELECT 1 FROM jobs WHERE subject_id = 'usr_q'")

        await h.send(topics.privacy_receipts, purged("usr_p", job["job_id"], 41))
        done = await h.jobs("status = 'completed' AND records_deleted = 41")
        assert done[0]["job_id"] == job["job_id"]
        rearmed = await eventually(
            lambda: h.fetch("SELECT status, due_at FROM purge_timers WHERE subject_id = 'usr_p'"),
            lambda rows: rows[0]["status"] == "pending",
        )
        assert (rearmed[0]["status"], rearmed[0]["due_at"]) == ("pending", SECOND)

        # closure: the closure's timers take over, no more rolling purges
        await h.send(topics.accounts_lifecycle, closed("usr_p", "acc_p", at=FIRST + DAY))
        await eventually(
            lambda: h.fetch("SELECT 1 FROM purge_timers WHERE status = 'stopped'"), bool
        )
        await h.advance(SECOND - FIRST)
        await h.quiet()
        assert len(await h.fetch("SELECT 1 FROM jobs WHERE kind = 'purge'")) == 1
    finally:
        await h.stop()
