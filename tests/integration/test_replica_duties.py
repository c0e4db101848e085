"""Two replicas of retention and of export at once, on real Kafka and PostgreSQL: every duty
that only one replica may do is done exactly once (docs/scaling.md lists them).

Retention: the rules in force are recorded once, due timers fire once (also
tests/integration/retention/test_replicas_and_restart.py), unanswered jobs are re-issued once per
attempt, a request past its deadline is reported overdue once. Export: each request's bundle is
assembled once (the assembly lease), downloads work through either replica (shared storage),
and each expired bundle is deleted once. The outbox relay's single leader (advisory lock and
transactional.id fencing) is under all of it: nothing published twice.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from services.export import loops
from services.export.app import build_runtime as build_export
from services.export.settings import default_owners
from services.export.storage import FolderStorage
from shared.contract.codec import decode
from shared.contract.events import DeletionJob, RequestStatusChanged
from shared.plumbing.clock import ManualClock
from tests.integration.export.harness import (
    TOKEN,
    Harness,
    inline_parts,
    records_for,
    settings_for,
)
from tests.integration.retention.harness import (
    DAY,
    T0,
    closed,
    erasure,
    eventually,
    signed_up,
)
from tests.integration.retention.harness import Harness as Retention
from tests.support.kafka import read_topic

pytestmark = pytest.mark.integration

ERASED = 12


async def test_two_retention_replicas_reissue_and_report_overdue_once_each(infra, topics, schema):
    clock = ManualClock(T0)
    with capture_logs() as logs:
        first = await Retention.start(infra, topics, schema, clock, claim_batch=5)
        second = await Retention.start(infra, topics, schema, clock, claim_batch=5)
    try:
        subjects = [f"usr_{i}" for i in range(ERASED)]
        await first.send(
            topics.accounts_lifecycle,
            *(signed_up(s, f"acc_{s}") for s in subjects),
            *(closed(s, f"acc_{s}") for s in subjects),
        )
        await first.send(
            topics.privacy_requests,
            *(erasure(s, f"req_{s}", at=T0 + timedelta(hours=1)) for s in subjects),
        )
        clock.advance(timedelta(hours=2))
        issued = await first.jobs("attempt = 1", count=ERASED)  # at least one job each
        count = len(await first.fetch("SELECT 1 FROM jobs"))
        clock.advance(3 * DAY)  # past the receipt timeout: every job goes out again, once
        await eventually(
            lambda: first.fetch("SELECT 1 FROM jobs WHERE attempt >= 2"),
            lambda rows: len(rows) == count,
        )
        clock.advance(40 * DAY)  # past every request's one-month deadline
        overdue = await eventually(
            lambda: first.fetch("SELECT request_id FROM requests WHERE overdue"),
            lambda rows: len(rows) == ERASED,
        )
        assert len(overdue) == ERASED
        await first.quiet()
        stored = await first.fetch("SELECT job_id, attempt FROM jobs WHERE kind = 'deletion'")
        expected = sum(r["attempt"] for r in stored)
        jobs = await first.published(
            topics.privacy_jobs,
            until=lambda r: sum(isinstance(decode(x.value), DeletionJob) for x in r) >= expected,
            settle=0.5,
        )
        statuses = await first.published(topics.requests_status, until=bool, settle=0.5)
    finally:
        await second.stop()
        await first.stop()

    assert issued
    recorded = [
        e for e in logs if e["event"] in ("retention_rules_recorded", "retention_rules_changed")
    ]
    assert [e["event"] for e in recorded] == ["retention_rules_recorded"]
    sent = Counter((e.data.job_id, e.data.attempt) for _, e in jobs if isinstance(e, DeletionJob))
    assert max(sent.values()) == 1  # no job issued twice at one attempt
    attempts: dict[str, set[int]] = {}
    for job_id, attempt in sent:
        attempts.setdefault(job_id, set()).add(attempt)
    # every attempt the database recorded went out once; none beyond it
    assert attempts == {r["job_id"]: set(range(1, r["attempt"] + 1)) for r in stored}
    assert len(stored) >= count
    reported = Counter(
        e.data.request_id
        for _, e in statuses
        if isinstance(e, RequestStatusChanged)
        and e.data.overdue
        and e.data.status.value in ("pending", "in_progress")
    )
    assert set(reported) == {f"req_{s}" for s in subjects}
    assert set(reported.values()) == {1}


REQUESTS = 4


async def test_two_export_replicas_assemble_and_delete_each_bundle_once(
    infra, topics, schema, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    deleted: Counter[str] = Counter()
    real_delete = FolderStorage.delete

    def counting_delete(self: FolderStorage, key: str) -> None:
        deleted[key] += 1
        real_delete(self, key)

    monkeypatch.setattr(FolderStorage, "delete", counting_delete)
    written: Counter[str] = Counter()
    real_write = loops.write_bundle  # type: ignore[attr-defined]

    def counting_write(storage: Any, key: str, bundle: Any) -> dict[str, Any]:
        written[key] += 1
        return real_write(storage, key, bundle)

    monkeypatch.setattr(loops, "write_bundle", counting_write)
    clock = ManualClock(T0)
    settings = settings_for(infra, topics, schema, tmp_path)  # one storage for both: the volume
    replicas = [build_export(settings, clock), build_export(settings, clock)]
    for runtime in replicas:
        await runtime.start()
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=r.asgi()), base_url="http://export")
        for r in replicas
    ]
    one = Harness(infra, topics, schema, settings, clock, replicas[0], clients[0])
    try:
        request_ids = [f"req_{i}" for i in range(REQUESTS)]
        for i, request_id in enumerate(request_ids):
            await one.request_export(f"usr_{i}", request_id)
        for request_id in request_ids:
            jobs = await one.jobs(request_id, len(default_owners()))
            await one.send(
                *(
                    part
                    for job in jobs.values()
                    for category in job.data.categories
                    for part in inline_parts(
                        job, category, records_for(job.data.owner, category, 2)
                    )
                )
            )
        done = {r: await one.wait_status(r, "completed") for r in request_ids}
        bundles = sorted((tmp_path / "storage" / "bundles").iterdir())
        assert len(bundles) == REQUESTS  # one zip per request: no second assembly's file
        for n, request_id in enumerate(request_ids):
            # the link one replica signs is served by the other: they share the storage
            view = await clients[n % 2].get(
                f"/v1/exports/{request_id}", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            download = await clients[(n + 1) % 2].get(view.json()["download_url"])
            assert download.status_code == 200, download.text

        deleted.clear()  # writing a bundle clears its key first: count the expiry's alone
        clock.advance(settings.bundle_ttl + timedelta(minutes=1))
        rows = await one.poll_db(
            "SELECT request_id FROM requests WHERE bundle_deleted_at IS NOT NULL",
            until=lambda found: len(found) == REQUESTS,
        )
        assert len(rows) == REQUESTS
        records = await read_topic(infra.kafka, topics.requests_status, settle=0.5)
    finally:
        for client in clients:
            await client.aclose()
        for runtime in replicas:
            await runtime.stop()

    completed = Counter(
        e.data.request_id
        for e in (decode(r.value) for r in records)
        if isinstance(e, RequestStatusChanged) and e.data.status.value == "completed"
    )
    assert completed == dict.fromkeys(request_ids, 1)
    keys = {f"bundles/{d.data.bundle_id}.zip" for d in done.values()}
    assert written == dict.fromkeys(keys, 1)  # each assembled once, by one replica
    assert {k: deleted[k] for k in keys} == dict.fromkeys(keys, 1)
    assert list((tmp_path / "storage" / "bundles").iterdir()) == []
    attempts = await _attempts(one)
    assert attempts == dict.fromkeys(request_ids, 1)


async def _attempts(h: Harness) -> dict[str, Any]:
    rows = await h.db("SELECT request_id, assembly_attempt AS attempt FROM requests")
    return {r["request_id"]: r["attempt"] for r in rows}
