"""The export pipeline (inbox, apply, outbox) on a real PostgreSQL schema, records fed directly.

No Kafka: records go straight into `Pipeline.process`, and what would be published is read
from the outbox table. Fast checks of the rules the integration tests do not walk through.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlsplit

import asyncpg
import pytest

from services.export import part_store
from services.export import store as export_store
from services.export.app import MIGRATIONS, build_runtime
from services.export.domain import REKEYED_REASON, deadline_for
from services.export.handlers import HANDLERS
from services.export.loops import delete_exchange_files
from services.export.settings import ExportSettings
from shared.contract.codec import decode, encode
from shared.contract.envelope import CloudEvent
from shared.contract.events import (
    ErasureRequested,
    ExportJob,
    RequestExtended,
    RequestStatusChanged,
)
from shared.contract.sealing import new_keypair
from shared.plumbing import db, outbox
from shared.plumbing.clock import ManualClock
from shared.plumbing.loops import Items
from shared.plumbing.pipeline import Pipeline
from tests.integration.export.harness import (
    inline_parts,
    part_event,
    records_for,
    reference_part,
    settings_for,
)
from tests.support import events as make
from tests.support.records import Record

pytestmark = pytest.mark.db


@dataclass
class Fed:
    pipeline: Pipeline
    pool: asyncpg.Pool
    clock: ManualClock
    offsets: itertools.count[int]

    async def feed(self, *events: CloudEvent[Any]) -> None:
        records = []
        for event in events:
            key, value = encode(event)
            records.append(Record("t", 0, next(self.offsets), key, value))
        await self.pipeline.process(records)

    async def published(self) -> list[tuple[str, Any]]:
        """(kind, event or dead-letter reason) of every outbox row, in order."""
        async with self.pool.acquire() as conn:
            rows = await outbox.pending(conn)
        found: list[tuple[str, Any]] = []
        for row in rows:
            if row.topic.endswith("deadletter"):
                found.append(("dead", row.headers["error"]))
            else:
                found.append(("event", decode(row.value)))
        return found

    async def published_jobs(self, owner: str) -> list[ExportJob]:
        return [
            e
            for kind, e in await self.published()
            if kind == "event" and isinstance(e, ExportJob) and e.data.owner == owner
        ]

    async def dead(self) -> list[str]:
        return [reason for kind, reason in await self.published() if kind == "dead"]

    async def jobs(self) -> dict[str, ExportJob]:
        return {
            e.data.owner: e
            for kind, e in await self.published()
            if kind == "event" and isinstance(e, ExportJob)
        }

    async def statuses(self) -> list[RequestStatusChanged]:
        return [
            e
            for kind, e in await self.published()
            if kind == "event" and isinstance(e, RequestStatusChanged)
        ]


@contextlib.asynccontextmanager
async def _fed(settings: ExportSettings) -> AsyncIterator[Fed]:
    clock = ManualClock()
    runtime = build_runtime(settings, clock)
    dsn = settings.database_url.get_secret_value()
    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn, settings.db_schema, MIGRATIONS)
    finally:
        await conn.close()
    pool = await db.create_pool(dsn, settings.db_schema, min_size=1, max_size=2)
    pipeline = Pipeline(
        service="export",
        schema=settings.db_schema,
        pool=pool,
        deadletter_topic=settings.topics.deadletter,
        accepts=HANDLERS.accepts,
        apply=HANDLERS.apply(runtime.context),
        retry_for=1.0,
    )
    try:
        yield Fed(pipeline, pool, clock, itertools.count())
    finally:
        await pool.close()


@pytest.fixture
async def fed(infra, topics, schema, tmp_path: Path) -> AsyncIterator[Fed]:
    async with _fed(settings_for(infra, topics, schema, tmp_path)) as fed:
        yield fed


def requested(clock: ManualClock, subject: str = "usr_1", request_id: str = "req_1") -> Any:
    return make.export_requested(subject, request_id, at=clock.now())


async def test_a_repeated_request_issues_its_jobs_once_and_a_reused_id_for_another_person_is_refused(
    fed: Fed,
):
    first = requested(fed.clock)
    again = first.model_copy(update={"id": "portal-retry"})
    await fed.feed(first, again, requested(fed.clock, subject="usr_2"))
    jobs = await fed.jobs()
    assert len(jobs) == 7
    assert {j.data.due_by for j in jobs.values()} == {deadline_for(fed.clock.now())}
    assert await fed.dead() == ["contract: request req_1 already exists for another subject"]
    assert [s.data.status.value for s in await fed.statuses()] == ["pending"]


async def test_an_extension_moves_the_deadline_once_and_a_second_one_is_refused(fed: Fed):
    await fed.feed(requested(fed.clock))
    deadline = deadline_for(fed.clock.now())

    def extend(days: int) -> RequestExtended:
        new_deadline = deadline + timedelta(days=days)
        return make.request_extended("usr_1", "req_1", new_deadline, reason="complex")

    await fed.feed(extend(30), extend(40))
    statuses = await fed.statuses()
    assert statuses[-1].data.deadline == deadline + timedelta(days=30)
    assert statuses[-1].data.reason == "extended: complex"
    assert await fed.dead() == ["contract: request was already extended once"]


async def test_cancel_or_extend_of_an_unknown_request_is_left_to_retention(fed: Fed):
    cancel = make.request_cancelled("usr_1", "erasure_9")
    await fed.feed(cancel)
    assert await fed.published() == []


async def test_a_finished_request_cannot_be_cancelled_and_late_parts_are_refused(fed: Fed):
    await fed.feed(requested(fed.clock))
    crm = (await fed.jobs())["crm"]
    await fed.pool.execute("UPDATE requests SET status = 'completed', sealed_key = NULL")
    cancel = make.request_cancelled("usr_1", "req_1")
    await fed.feed(cancel, *inline_parts(crm, "crm_data", records_for("crm", "crm_data", 2)))
    assert await fed.dead() == [
        "contract: request is already completed; too late to cancel",
        "contract: request is completed; the part came too late",
    ]


async def test_parts_that_do_not_belong_to_the_job_are_refused(fed: Fed):
    await fed.feed(requested(fed.clock))
    jobs = await fed.jobs()
    crm = jobs["crm"]
    [good] = inline_parts(crm, "crm_data", records_for("crm", "crm_data", 2))
    other_subject = good.model_copy(update={"id": "p2", "subject": "usr_2"})
    wrong_category = part_event(crm, "billing_records", 0, 1, sha256="0" * 64, sealed="AA==")
    wrong_job = part_event(crm, "crm_data", 0, 1, sha256="0" * 64, sealed="AA==")
    wrong_job = wrong_job.model_copy(
        update={"data": wrong_job.data.model_copy(update={"job_id": jobs["billing"].data.job_id})}
    )
    await fed.feed(other_subject, wrong_category, wrong_job)
    assert await fed.dead() == [
        "contract: subject differs from the request's subject",
        "contract: category 'billing_records' was not asked of owner 'crm'",
        f"contract: job_id {jobs['billing'].data.job_id!r} is not the job issued to 'crm'",
    ]


async def test_a_failed_part_can_be_resent_and_then_completes_the_category(fed: Fed):
    await fed.feed(requested(fed.clock))
    crm = (await fed.jobs())["crm"]
    [good] = inline_parts(crm, "crm_data", records_for("crm", "crm_data", 2))
    bad = good.model_copy(
        update={"id": "bad", "data": good.data.model_copy(update={"sha256": "0" * 64})}
    )
    await fed.feed(bad)
    rows = await fed.pool.fetch("SELECT status, error FROM parts")
    assert [r["status"] for r in rows] == ["failed"]
    assert rows[0]["error"].startswith("sha256 mismatch")
    await fed.feed(good)
    rows = await fed.pool.fetch("SELECT status, record_count FROM parts")
    assert [(r["status"], r["record_count"]) for r in rows] == [("stored", 2)]
    assert await fed.dead() == []


def erasure(subject: str, scope: Any = "all") -> ErasureRequested:
    return make.erasure(
        subject, f"erase_{subject}", scope=scope, verified_by="portal", source="portal"
    )


async def test_an_erasure_cancels_the_open_export_and_deletes_the_finished_bundle_at_once(
    fed: Fed, tmp_path: Path
):
    storage = tmp_path / "storage"
    await fed.feed(
        requested(fed.clock, request_id="req_open"),
        requested(fed.clock, request_id="req_done"),
        requested(fed.clock, subject="usr_2", request_id="req_other"),
    )
    crm = {j.data.request_id: j for j in await fed.published_jobs("crm")}["req_open"]
    await fed.feed(*inline_parts(crm, "crm_data", records_for("crm", "crm_data", 2)))
    assert list(storage.glob("parts/*/crm/crm_data/*.jsonl"))
    expires = fed.clock.now() + timedelta(days=7)
    await fed.pool.execute(
        "UPDATE requests SET status = 'completed', sealed_key = NULL, bundle_id = 'b_done',"
        " bundle_expires_at = $1 WHERE request_id = 'req_done'",
        expires,
    )
    (storage / "bundles").mkdir(parents=True)
    (storage / "bundles" / "b_done.zip").write_bytes(b"PK personal data")

    # scope `all`: an erasure of some categories only trims an open export and keeps a bundle
    # it does not cover (policy 5.1 with 5.3; tests/integration/export/test_policy_export.py)
    await fed.feed(erasure("usr_1"))

    last = {s.data.request_id: s for s in await fed.statuses()}
    assert last["req_open"].data.status.value == "cancelled"
    assert last["req_open"].data.reason == "subject erased"
    assert last["req_other"].data.status.value == "pending"
    done = [s.data.status.value for s in await fed.statuses() if s.data.request_id == "req_done"]
    assert done == ["pending"]  # a finished request is not re-announced, only its bundle goes
    rows = {
        r["request_id"]: r
        for r in await fed.pool.fetch(
            "SELECT request_id, status, sealed_key, bundle_deleted_at FROM requests"
        )
    }
    assert rows["req_open"]["status"] == "cancelled"
    assert rows["req_open"]["sealed_key"] is None
    assert rows["req_done"]["bundle_deleted_at"] is not None
    assert rows["req_other"]["sealed_key"] is not None
    assert not list(storage.glob("parts/*/crm/**/*.jsonl"))
    assert not (storage / "bundles" / "b_done.zip").exists()
    # a late part of the erased subject's request is dropped quietly; a repeat erasure is a no-op
    more = inline_parts(crm, "crm_data", records_for("crm", "crm_data", 1))
    await fed.feed(*more, erasure("usr_1").model_copy(update={"id": "again"}))
    assert await fed.dead() == []
    seen = [s.data.status.value for s in await fed.statuses() if s.data.request_id == "req_open"]
    assert seen == ["pending", "in_progress", "cancelled"]


@pytest.fixture
async def fed_deleting(infra, topics, schema, tmp_path: Path) -> AsyncIterator[Fed]:
    settings = settings_for(infra, topics, schema, tmp_path).model_copy(
        update={"delete_referenced_parts": True, "max_reference_bytes": 2000}
    )
    async with _fed(settings) as fed:
        yield fed


async def test_with_the_setting_a_taken_exchange_file_is_queued_for_deletion_and_an_oversized_one_fails(
    fed_deleting: Fed, tmp_path: Path
):
    fed = fed_deleting
    await fed.feed(requested(fed.clock))
    jobs = await fed.jobs()
    exchange = tmp_path / "exchange"
    small = reference_part(jobs["crm"], "crm_data", records_for("crm", "crm_data", 3), exchange)
    big = reference_part(jobs["support"], "support_communications",
                         records_for("support", "x", 100), exchange)  # fmt: skip
    await fed.feed(small, big)
    parts = {r["owner"]: r for r in await fed.pool.fetch("SELECT owner, status, error FROM parts")}
    assert parts["crm"]["status"] == "stored"
    assert parts["support"]["status"] == "failed"
    assert "over the size limit of 2000" in parts["support"]["error"]
    small_file = Path(urlsplit(small.data.location or "").path).resolve()
    big_file = Path(urlsplit(big.data.location or "").path).resolve()
    queued = [r["path"] for r in await fed.pool.fetch("SELECT path FROM exchange_deletions")]
    assert queued == [str(small_file)]
    assert small_file.exists()  # only after the intake committed, by the cleaner loop
    ctx = cast(Any, SimpleNamespace(pool=fed.pool))
    assert await delete_exchange_files(ctx, Items("test", "cleaner"))
    assert not small_file.exists()
    assert big_file.exists()  # a failed part's file stays for the owner to fix
    assert await fed.pool.fetch("SELECT path FROM exchange_deletions") == []


async def test_an_exchange_file_that_cannot_be_deleted_is_held_back_and_the_others_go(
    fed: Fed, tmp_path: Path
):
    stuck = tmp_path / "a-folder-not-a-file"  # unlink() refuses it whoever runs the test
    (stuck / "inside").mkdir(parents=True)
    files = [tmp_path / f"part-{n}.json" for n in range(3)]
    for file in files:
        file.write_text("{}")
    async with fed.pool.acquire() as conn:
        for path in [files[0], stuck, files[1], files[2]]:
            await part_store.queue_exchange_deletion(conn, str(path), fed.clock.now())
            fed.clock.advance(timedelta(seconds=1))  # queued in this order
    ctx = cast(Any, SimpleNamespace(pool=fed.pool))
    items = Items("test", "cleaner")
    assert await delete_exchange_files(ctx, items)
    assert [f.exists() for f in files] == [False, False, False]
    queued = [r["path"] for r in await fed.pool.fetch("SELECT path FROM exchange_deletions")]
    assert queued == [str(stuck)]
    assert items.held() == [f"exchange:{stuck}"]
    assert not await delete_exchange_files(ctx, items)  # held back: nothing claimed


async def test_export_requests_are_counted_by_status_overdue_and_near_deadline(fed: Fed):
    await fed.feed(requested(fed.clock), requested(fed.clock, subject="usr_2", request_id="req_2"))
    await fed.pool.execute("UPDATE requests SET status = 'ready' WHERE request_id = 'req_2'")

    async def figures() -> tuple[dict[tuple[str, bool], int], int]:
        now = fed.clock.now()
        async with fed.pool.acquire() as conn:
            counts = await export_store.request_counts(conn, now)
            soon = await export_store.due_soon(conn, now, now + timedelta(days=7))
        return counts, soon

    assert await figures() == ({("pending", False): 1, ("in_progress", False): 1}, 0)
    fed.clock.advance(timedelta(days=25))
    assert await figures() == ({("pending", False): 1, ("in_progress", False): 1}, 2)
    fed.clock.advance(timedelta(days=15))
    assert await figures() == ({("pending", True): 1, ("in_progress", True): 1}, 0)


async def test_a_request_keyed_anew_after_a_restore_says_so_and_drops_parts_sealed_to_the_old_key(
    fed: Fed,
):
    request = requested(fed.clock)
    await fed.feed(request)
    old = (await fed.jobs())["crm"]
    old_parts = inline_parts(old, "crm_data", records_for("crm", "crm_data", 2))
    # The restored backup predates the request: its data is gone, Kafka still holds it all.
    for table in ("requests", "inbox", "outbox"):
        await fed.pool.execute(f"DELETE FROM {table}")
    await fed.pool.execute(
        "INSERT INTO restores (backup_taken_at, restored_at, backup) VALUES ($1, $2, 'b')",
        request.time - timedelta(hours=1),
        max(request.time, datetime.now(UTC)) + timedelta(minutes=5),  # after all sent so far
    )
    await fed.feed(old_parts[0])  # before its request is re-consumed: dropped, not refused

    await fed.feed(request)
    new = (await fed.jobs())["crm"]
    assert new.data.job_id == old.data.job_id  # the same job, issued again under its new key
    assert (new.id, new.data.public_key) != (old.id, old.data.public_key)
    assert [s.data.reason for s in await fed.statuses()] == [REKEYED_REASON]

    await fed.feed(*old_parts)
    assert await fed.pool.fetch("SELECT status FROM parts") == []
    await fed.feed(*inline_parts(new, "crm_data", records_for("crm", "crm_data", 2)))
    assert [r["status"] for r in await fed.pool.fetch("SELECT status FROM parts")] == ["stored"]
    assert await fed.dead() == []


async def test_without_a_restore_a_part_sealed_to_another_key_fails(fed: Fed):
    await fed.feed(requested(fed.clock))
    crm = (await fed.jobs())["crm"]
    other = crm.model_copy(
        update={"data": crm.data.model_copy(update={"public_key": new_keypair()[1]})}
    )
    await fed.feed(*inline_parts(other, "crm_data", records_for("crm", "crm_data", 2)))
    assert [r["status"] for r in await fed.pool.fetch("SELECT status FROM parts")] == ["failed"]
    assert (await fed.statuses())[0].data.reason is None
