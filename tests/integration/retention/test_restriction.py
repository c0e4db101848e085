"""Policy 5.4 (GDPR Art. 18) and Art. 21(3) in the running retention service, on real Kafka and
PostgreSQL: restriction jobs and their lifting reach the owners and are tracked to receipts;
grounds (b)/(c) hold the deletions until the lift; an objection to marketing deletes its data."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from shared.contract import events as ev
from shared.contract.envelope import CloudEvent
from tests.integration.retention.harness import (
    DAY,
    Harness,
    closed,
    consent_state,
    event,
    eventually,
    signed_up,
)
from tests.support import events as make

pytestmark = pytest.mark.integration


def receipt(
    subject: str, job_id: str, owner: str, ok: bool = True, retryable: bool = True
) -> CloudEvent[Any]:
    if ok:
        done = ev.RestrictionCompletedData(job_id=job_id, owner=owner)
        return event(ev.RestrictionCompleted, subject, done, source="owner")
    failed = ev.RestrictionFailedData(
        job_id=job_id, owner=owner, error="db busy", retryable=retryable
    )
    return event(ev.RestrictionFailed, subject, failed, source="owner")


async def test_a_restriction_for_legal_claims_holds_deletions_until_lifted(infra, topics, schema):
    h = await Harness.start(infra, topics, schema)
    try:
        await h.send(topics.accounts_lifecycle, signed_up("usr_rc", "acc_rc"))
        await h.send(topics.accounts_lifecycle, closed("usr_rc", "acc_rc"))
        await h.send(
            topics.consent_changes,
            make.restricted(
                "usr_rc",
                categories=["crm_data"],
                grounds="needed_for_legal_claims",
                at=h.clock.now(),
            ),
        )
        (job,) = await h.jobs("kind = 'restriction'")
        assert (job["category"], job["owner"], job["reason"]) == (
            "crm_data",
            "crm",
            "needed_for_legal_claims",
        )
        published = await h.published(
            topics.privacy_jobs, lambda r: any(b'"restriction.job.v1"' in x.value for x in r)
        )
        (issued,) = [e for _, e in published if isinstance(e, ev.RestrictionJob)]
        assert (issued.data.job_id, issued.data.grounds) == (
            job["job_id"],
            "needed_for_legal_claims",
        )
        await h.send(topics.privacy_receipts, receipt("usr_rc", job["job_id"], "crm"))
        await h.jobs("kind = 'restriction' AND status = 'completed'")

        await h.advance(31 * DAY)  # crm_data and usage_data fall due: only usage_data goes
        await h.jobs("kind = 'deletion' AND category = 'usage_data'")
        timers = await eventually(
            lambda: h.fetch("SELECT status FROM timers WHERE category = 'crm_data'"),
            lambda rows: [r["status"] for r in rows] == ["blocked"],
        )
        assert [r["status"] for r in timers] == ["blocked"]
        await h.quiet()
        assert (
            await h.fetch("SELECT 1 FROM jobs WHERE kind = 'deletion' AND category = 'crm_data'")
            == []
        )

        await h.send(
            topics.consent_changes,
            make.restriction_lifted("usr_rc", categories=["crm_data"], at=h.clock.now()),
        )
        (lift,) = await h.jobs("kind = 'restriction_lift'")
        assert (lift["category"], lift["owner"]) == ("crm_data", "crm")
        await h.jobs("kind = 'deletion' AND category = 'crm_data'")  # the held deletion goes now
        assert (await h.get("/v1/holds"))["holds"] == []
    finally:
        await h.stop()


async def test_a_restriction_of_a_contract_purpose_reaches_its_owners_and_is_reissued(
    infra, topics, schema
):
    h = await Harness.start(infra, topics, schema)
    try:
        await h.send(
            topics.consent_changes,
            make.restricted(
                "usr_rt",
                purposes=["transactional_email"],
                grounds="accuracy_contested",
                at=h.clock.now(),
            ),
        )
        jobs = await h.jobs("kind = 'restriction'", count=2)
        assert [(j["category"], j["owner"]) for j in jobs] == [
            ("account_profile", "accounts"),
            ("billing_records", "billing"),
        ]
        assert await h.fetch("SELECT 1 FROM holds") == []  # accuracy contested: nothing held
        account, billing = jobs
        await h.send(
            topics.privacy_receipts,
            receipt("usr_rt", billing["job_id"], "billing", ok=False, retryable=False),
        )
        await h.jobs(f"job_id = '{billing['job_id']}' AND status = 'failed'")
        await h.advance(DAY + timedelta(minutes=1))  # no receipt from accounts: issued again
        await h.jobs(f"job_id = '{account['job_id']}' AND attempt = 2")
        published = await h.published(
            topics.privacy_jobs,
            lambda r: sum(b'"restriction.job.v1"' in x.value for x in r) >= 3,
        )
        attempts = sorted(
            (e.data.category, e.data.attempt)
            for _, e in published
            if isinstance(e, ev.RestrictionJob)
        )
        assert attempts == [("account_profile", 1), ("account_profile", 2), ("billing_records", 1)]
        await h.advance(8 * DAY)
        overdue = await h.jobs(f"job_id = '{account['job_id']}' AND overdue")
        assert overdue[0]["status"] == "issued"
    finally:
        await h.stop()


async def test_an_objection_to_the_marketing_category_deletes_its_data(infra, topics, schema):
    h = await Harness.start(infra, topics, schema)
    try:
        state = topics.consent_state
        await h.send(state, consent_state("usr_ob", 1, "granted", True))
        await h.send(
            state, consent_state("usr_ob", 2, "granted", False, objections=["marketing_profile"])
        )
        jobs = await h.jobs("subject_id = 'usr_ob'")
        assert [(j["category"], j["mode"]) for j in jobs] == [("marketing_profile", "delete")]
        await h.send(
            state, consent_state("usr_ob", 3, "granted", False, objections=["marketing_profile"])
        )
        await h.quiet()
        assert len(await h.fetch("SELECT 1 FROM jobs WHERE subject_id = 'usr_ob'")) == 1
    finally:
        await h.stop()
