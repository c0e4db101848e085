"""Jobs tracked to a receipt: re-issue on failure or silence, overdue, certificates, rectification."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.retention.api import verify_certificates
from shared.contract.events import (
    DeletionJob,
    RectificationCompleted,
    RectificationCompletedData,
    RectificationJob,
    RectificationRequested,
    RectificationRequestedData,
)
from tests.integration.retention.harness import (
    DAY,
    Harness,
    closed,
    completed,
    event,
    eventually,
    failed,
    signed_up,
)

pytestmark = pytest.mark.integration
HOUR = timedelta(hours=1)


async def test_failed_and_missing_receipts_reissue_and_late_jobs_are_overdue(infra, topics, schema):
    h = await Harness.start(
        infra,
        topics,
        schema,
        receipt_timeout=HOUR,
        retry_backoff=timedelta(minutes=10),
        job_due=2 * DAY,
    )
    try:
        await h.send(
            topics.accounts_lifecycle, signed_up("usr_r", "acc_r"), closed("usr_r", "acc_r")
        )
        marketing = (await h.jobs())[0]
        await h.send(
            topics.privacy_receipts, completed("usr_r", marketing["job_id"], "marketing", 7)
        )
        await eventually(lambda: h.fetch("SELECT 1 FROM jobs WHERE status = 'completed'"), bool)
        await h.advance(31 * DAY)
        usage = (await h.jobs("category = 'usage_data'"))[0]
        await h.send(
            topics.privacy_receipts, failed("usr_r", usage["job_id"], "analytics", retryable=True)
        )
        await eventually(lambda: h.fetch("SELECT 1 FROM jobs WHERE last_error IS NOT NULL"), bool)
        await h.advance(11 * timedelta(minutes=1))  # the retry backoff is over: attempt 2
        retried = await h.jobs(f"job_id = '{usage['job_id']}' AND attempt = 2")
        assert retried[0]["status"] == "issued"

        await h.advance(2 * HOUR)  # no receipt for attempt 2 (its wait doubled): attempt 3
        assert await h.jobs(f"job_id = '{usage['job_id']}' AND attempt = 3")

        await h.send(topics.privacy_receipts, failed("usr_r", usage["job_id"], "analytics", False))
        gone = await h.jobs("status = 'failed'")
        assert gone[0]["job_id"] == usage["job_id"]

        await h.advance(15 * DAY)  # crm_data issued at day 46; then nobody answers for 3 days
        crm = (await h.jobs("category = 'crm_data'"))[0]
        await h.advance(3 * DAY)
        overdue = await eventually(
            lambda: h.get("/v1/jobs", overdue="true", status="issued"),
            lambda r: len(r["jobs"]) == 1,
        )
        assert [j["job_id"] for j in overdue["jobs"]] == [crm["job_id"]]
        gauge = 'pp_retention_jobs_overdue{service="retention"} 1.0'
        metrics = await eventually(lambda: h.http.get("/metrics"), lambda r: gauge in r.text)
        assert gauge in metrics.text

        published = await h.published(
            topics.privacy_jobs,
            until=lambda r: len(r) >= 5,
        )
        attempts = sorted(
            (e.data.category, e.data.attempt) for _, e in published if isinstance(e, DeletionJob)
        )
        assert ("usage_data", 2) in attempts
        assert ("usage_data", 3) in attempts
        assert ("marketing_profile", 2) not in attempts

        async with h.runtime.pool.acquire() as conn:
            assert await verify_certificates(conn) == []
            await conn.execute("ALTER TABLE certificates DISABLE TRIGGER certificates_append_only")
            await conn.execute(
                "UPDATE certificates SET body = jsonb_set(body, '{records_deleted}', '0')"
            )
            problems = await verify_certificates(conn)
            assert problems == [f"{marketing['job_id']}: content does not match its hash (altered)"]
            await conn.execute("DELETE FROM certificates")
            assert await verify_certificates(conn) == [
                f"{marketing['job_id']}: completed without a certificate"
            ]
    finally:
        await h.stop()


async def test_rectification_becomes_a_job_for_the_owner_tracked_to_its_receipt(
    infra, topics, schema
):
    h = await Harness.start(infra, topics, schema)
    try:
        data = RectificationRequestedData(
            request_id="req_r", category="crm_data", fields={"name": "Ada L."}
        )
        await h.send(topics.privacy_requests, event(RectificationRequested, "usr_q", data))
        job = (await h.jobs())[0]
        assert (job["kind"], job["owner"], job["category"]) == ("rectification", "crm", "crm_data")
        sent = await h.published(topics.privacy_jobs, until=lambda r: len(r) >= 1)
        assert isinstance(sent[0][1], RectificationJob)
        assert sent[0][1].data.fields == {"name": "Ada L."}

        receipt = RectificationCompletedData(job_id=job["job_id"], owner="crm")
        await h.send(topics.privacy_receipts, event(RectificationCompleted, "usr_q", receipt))
        view = await eventually(
            lambda: h.get("/v1/requests/req_r"), lambda r: r["status"] == "completed"
        )
        assert view["status"] == "completed"
        assert view["jobs"][0]["status"] == "completed"
        stored = await h.fetch("SELECT fields FROM jobs")
        assert stored[0]["fields"] is None  # the corrected values are not kept after the receipt
    finally:
        await h.stop()
