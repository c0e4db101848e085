"""Closure timers on real Kafka and PostgreSQL: each category at its own time, reopening, dry run."""

from __future__ import annotations

import pytest

from shared.contract.events import DeletionJob
from tests.integration.retention.harness import (
    DAY,
    T0,
    Harness,
    closed,
    reopened,
    signed_up,
    subscription,
)

pytestmark = pytest.mark.integration


async def test_closure_issues_each_category_at_its_time_and_the_dry_run_agrees(
    infra, topics, schema
):
    h = await Harness.start(infra, topics, schema)
    try:
        lifecycle = topics.accounts_lifecycle
        await h.send(
            lifecycle,
            signed_up("usr_a", "acc_1"),
            signed_up("usr_b", "acc_1"),
            signed_up("usr_c", "acc_2"),
            subscription("acc_1", 45),
            closed("usr_a", "acc_1"),
            closed("usr_c", "acc_2"),
            reopened("usr_c", "acc_2", T0 + DAY),
        )
        # marketing_profile is due at closure (P0D): both subjects of acc_1, none of acc_2
        first = await h.jobs(count=2)
        assert {(j["subject_id"], j["category"]) for j in first} == {
            ("usr_a", "marketing_profile"),
            ("usr_b", "marketing_profile"),
        }

        refused = await h.http.get("/v1/jobs", headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401
        answer = await h.get("/v1/subjects/usr_a/retention", at=(T0 + 31 * DAY).date().isoformat())
        due = {a["category"]: a for a in answer["dry_run"] if a["action"] == "delete"}
        assert set(due) == {"usage_data"}
        assert due["usage_data"]["reason"] == "retention_expired"
        kept = {a["category"]: a for a in answer["dry_run"] if a["action"] == "keep"}
        assert {a["category"] for a in answer["dry_run"] if a["action"] == "issued"} == {
            "marketing_profile"
        }
        assert kept["crm_data"]["due_at"].startswith((T0 + 45 * DAY).date().isoformat())
        counts = await h.get("/v1/retention/dry-run", at=(T0 + 31 * DAY).isoformat())
        assert {(c["category"], c["count"]) for c in counts["counts"]} == {("usage_data", 2)}

        await h.advance(31 * DAY)
        issued = await h.jobs("category = 'usage_data'", count=2)
        assert {j["subject_id"] for j in issued} == {"usr_a", "usr_b"}
        await h.quiet()
        rows = await h.fetch("SELECT subject_id, category FROM jobs")
        assert sorted(c for _, c in rows) == sorted(["marketing_profile"] * 2 + ["usage_data"] * 2)

        await h.advance(15 * DAY)  # day 46: the subscription's 45 days of CRM data are over
        assert len(await h.jobs("category = 'crm_data'", count=2)) == 2
        await h.advance(45 * DAY)  # day 91
        assert len(await h.jobs("category = 'account_profile'", count=2)) == 2
        await h.advance(7 * 366 * DAY)
        rows = await h.jobs("kind = 'deletion'", count=12)
        assert len(rows) == 12
        assert {r["category"] for r in rows if r["subject_id"] == "usr_c"} == set()
        # usr_c's account is open again: only its rolling purge of usage data (policy 1.3)
        purges = await h.jobs("kind = 'purge'")
        assert [(r["subject_id"], r["category"]) for r in purges] == [("usr_c", "usage_data")]

        published = await h.published(topics.privacy_jobs, until=lambda r: len(r) >= 12)
        jobs = [(k, e) for k, e in published if isinstance(e, DeletionJob)]
        assert len({e.data.job_id for _, e in jobs}) == 12
        assert all(k == e.subject.encode() for k, e in jobs)
        assert {e.data.reason for _, e in jobs} == {"retention_expired"}
    finally:
        await h.stop()
