"""Replicas share due timers without doubling; a restart (with changed rules) loses none."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from services.retention import workflow
from shared.catalogue import RETENTION_FILE
from shared.contract.events import DeletionJob
from shared.plumbing.clock import ManualClock
from tests.integration.retention.harness import (
    DAY,
    T0,
    Harness,
    closed,
    eventually,
    signed_up,
)

pytestmark = pytest.mark.integration

SUBJECTS = 150
CATEGORIES = 6


async def test_two_replicas_fire_the_same_due_timers_and_never_issue_a_job_twice(
    infra, topics, schema, monkeypatch
):
    claims: Counter[int] = Counter()
    real_fire = workflow.fire

    async def counting_fire(conn, ctx, out, claimed, now):  # type: ignore[no-untyped-def]
        claims[id(ctx)] += len(claimed)
        return await real_fire(conn, ctx, out, claimed, now)

    monkeypatch.setattr(workflow, "fire", counting_fire)
    clock = ManualClock(T0)
    first = await Harness.start(infra, topics, schema, clock, claim_batch=20)
    second = await Harness.start(infra, topics, schema, clock, claim_batch=20)
    try:
        subjects = [f"usr_{i}" for i in range(SUBJECTS)]
        await first.send(
            topics.accounts_lifecycle,
            *(signed_up(s, "acc_big") for s in subjects),
            closed(subjects[0], "acc_big"),
        )
        expected = SUBJECTS * CATEGORIES
        timers = await eventually(
            lambda: first.fetch("SELECT 1 FROM timers"), lambda r: len(r) == expected
        )
        # sign-ups and the closure run on both replicas at once: none may miss the closure
        assert len(timers) == expected
        clock.advance(8 * 366 * DAY)
        jobs = await first.jobs(count=expected, timeout=60)
        assert len(jobs) == expected

        published = await first.published(
            topics.privacy_jobs, until=lambda r: len(r) >= expected, settle=1.0
        )
        # marketing jobs of day 0 are re-issued (attempt 2) after 8 years without a receipt
        issues = Counter(
            (e.data.job_id, e.data.attempt) for _, e in published if isinstance(e, DeletionJob)
        )
        assert max(issues.values()) == 1
        assert len({job_id for job_id, attempt in issues if attempt == 1}) == expected
        assert len(claims) == 2, "both replicas claimed due timers"
        assert sum(claims.values()) == expected
        fired = await first.fetch("SELECT count(*) AS n FROM timers WHERE status = 'fired'")
        assert fired[0]["n"] == expected
    finally:
        await second.stop()
        await first.stop()


async def test_a_restart_mid_way_loses_no_timer_and_changed_rules_reschedule_pending_ones(
    infra, topics, schema, tmp_path: Path
):
    clock = ManualClock(T0)
    h = await Harness.start(infra, topics, schema, clock, claim_batch=3)
    subjects = [f"usr_{i}" for i in range(20)]
    await h.send(
        topics.accounts_lifecycle,
        *(signed_up(s, "acc_r") for s in subjects),
        closed(subjects[0], "acc_r"),
    )
    await eventually(lambda: h.fetch("SELECT 1 FROM timers"), lambda r: len(r) == 20 * CATEGORIES)
    clock.advance(31 * DAY)
    await h.jobs("category = 'usage_data'", count=1)
    await h.stop()  # mid-way: some of day 31's timers have fired, others not yet

    changed = tmp_path / "retention.yaml"
    changed.write_text(RETENTION_FILE.read_text().replace("period: P90D", "period: P120D", 1))
    clock.advance(70 * DAY)  # day 101, while no replica runs
    with capture_logs() as logs:
        h = await Harness.start(infra, topics, schema, clock, rules=changed)
        try:
            due_by_101 = {"marketing_profile", "usage_data", "crm_data"}
            rows = await h.jobs(count=20 * len(due_by_101))
            await h.quiet()
            rows = await h.fetch("SELECT category FROM jobs")
            assert Counter(r["category"] for r in rows) == dict.fromkeys(due_by_101, 20)

            clock.advance(20 * DAY)  # day 121: account_profile under the new 120 days
            rows = await h.jobs("category = 'account_profile'", count=20)
            assert len(rows) == 20
            assert {r["due_by"].date() for r in rows} == {(T0 + 128 * DAY).date()}
        finally:
            await h.stop()
    changes = [e for e in logs if e["event"] == "retention_rules_changed"]
    assert len(changes) == 1
    assert changes[0]["timers_rescheduled"] == 20
