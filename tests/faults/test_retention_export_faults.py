"""Retention and export under faults: kill -9 at planned points, three replicas with one killed
and one added (timers fire once), export parts delivered twice while the service dies."""

from __future__ import annotations

import asyncio
import base64
import random
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.catalogue import load_retention
from shared.contract.codec import decode, new_event
from shared.contract.envelope import CloudEvent
from shared.contract.events import (
    ExportJob,
    ExportPart,
    ExportRequested,
    ExportRequestedData,
)
from shared.contract.sealing import sealed_parts
from shared.contract.topics import Topics
from tests.faults.harness import (
    ServiceProcess,
    copies,
    poll,
    processes,
    query,
    read_all,
    rebalance_under_load,
    send,
    service_env,
    settled_dead_letters,
    wait_inbox,
)
from tests.faults.stats import STATS
from tests.faults.workloads import closed, marker, signed_up
from tests.support.infra import ROOT, Infra

pytestmark = pytest.mark.faults

CATEGORIES = sorted(load_retention().categories)


def retention(infra: Infra, topics: Topics, schema: str, logs: Path, label: str) -> ServiceProcess:
    env = service_env(
        "RETENTION_",
        infra,
        topics,
        schema,
        extra={"RETENTION_BATCH_MAX_RECORDS": "100", "RETENTION_CLAIM_BATCH": "50"},
    )
    return ServiceProcess(f"{label}-{schema}", env, logs, app_module="services.retention.app")


def lifecycles(subjects: int, tag: str) -> tuple[list[Any], list[str]]:
    """Sign-up then closure (8 years ago: every retention timer is due at once) per subject."""
    now = datetime.now(UTC)
    names = [f"usr_{tag}_{n}" for n in range(subjects)]
    events: list[Any] = []
    for name in names:
        events.append(signed_up(name, f"acc_{name}", now - timedelta(days=3000)))
        events.append(
            closed(name, f"acc_{name}", now - timedelta(days=2999), now - timedelta(days=2920))
        )
    return events, names


async def assert_every_timer_fired_once(
    infra: Infra, topics: Topics, schema: str, names: list[str]
) -> None:
    expected = len(names) * len(CATEGORIES)

    async def all_jobs() -> bool:
        rows = await query(
            infra.database_url,
            f"SELECT count(*) AS n FROM \"{schema}\".jobs WHERE kind = 'deletion'",
        )
        return int(rows[0]["n"]) >= expected

    await poll(all_jobs, timeout=120, what=f"{expected} deletion jobs")
    records = await read_all(
        infra.kafka,
        topics.privacy_jobs,
        until=lambda r: len(r) >= expected,
        timeout=90,
        settle=2,
    )
    # deletion jobs only: rolling purges (usage data kept 13 months while open) go out beside them
    deletions = [r for r in records if orjson.loads(r.value)["type"] == "deletion.job.v1"]
    jobs = list({j["id"]: j for j in (orjson.loads(r.value) for r in deletions)}.values())
    pairs = Counter(
        (j["subject"], j["data"]["category"]) for j in jobs if j["data"].get("attempt", 1) == 1
    )
    out = copies(deletions)
    timers = await query(
        infra.database_url,
        f'SELECT status, count(*) AS n FROM "{schema}".timers GROUP BY 1',
    )
    table = await query(
        infra.database_url,
        f"SELECT count(*) AS n, count(DISTINCT (subject_id, category)) AS pairs "
        f"FROM \"{schema}\".jobs WHERE kind = 'deletion'",
    )
    dead = await settled_dead_letters(infra, topics, schema, "services.retention.app")
    twice = {p: n for p, n in pairs.items() if n > 1}
    STATS.doubled += len(twice) + out.conflicts
    STATS.lost += max(0, expected - len(pairs))
    assert twice == {}
    assert set(pairs) == {(s, c) for s in names for c in CATEGORIES}
    assert out.conflicts == 0
    assert {r["status"]: r["n"] for r in timers} == {"fired": expected}
    assert (table[0]["n"], table[0]["pairs"]) == (expected, expected)
    assert dead == []
    STATS.notes.append(
        f"retention: {expected} timers fired once each; {out.extra_copies} re-sent job copies"
    )


@pytest.mark.timeout(400)
async def test_kill_9_retention_at_every_point_fires_each_timer_once(
    infra, topics, schema, service_logs
):
    events, names = lifecycles(600, "rk")
    plans = ["apply:2", "commit:2", "relay:700", "", "relay:30"]
    rng = random.Random(6)
    service = retention(infra, topics, schema, service_logs, "retention-kill9")
    async with processes(service):
        size = len(events) // (len(plans) + 1) // 2 * 2  # keep each sign-up with its closure
        for n, plan in enumerate(plans):
            service.start(kill_at=plan)
            part = events[n * size : (n + 1) * size]
            producing = asyncio.create_task(send(infra.kafka, topics.accounts_lifecycle, part))
            if plan:
                await service.wait_exit(120)
            else:
                await service.wait_ready()
                await asyncio.sleep(rng.uniform(0.3, 1.5))
                service.kill()
            await producing
        service.start()
        await send(infra.kafka, topics.accounts_lifecycle, events[len(plans) * size :])
        await wait_inbox(infra, schema, len(events))
        await assert_every_timer_fired_once(infra, topics, schema, names)
        await service.terminate()
    assert service.stopped_cleanly()
    assert service.planned_kills() == sum(1 for p in plans if p)


@pytest.mark.timeout(300)
async def test_kill_9_retention_while_timers_fire_fires_each_timer_once(
    infra, topics, schema, service_logs
):
    events, names = lifecycles(100, "rf")
    plans = ["fire:2", "fire:3"]  # inside a timer batch's transaction, before its commit
    service = retention(infra, topics, schema, service_logs, "retention-fire9")
    async with processes(service):
        for n, plan in enumerate(plans):
            service.start(kill_at=plan)
            if n == 0:
                await send(infra.kafka, topics.accounts_lifecycle, events)
            assert await service.wait_exit(120) == -signal.SIGKILL
        service.start()
        await wait_inbox(infra, schema, len(events))
        await assert_every_timer_fired_once(infra, topics, schema, names)
        await service.terminate()
    assert service.stopped_cleanly()
    assert service.planned_kills() == len(plans)


@pytest.mark.timeout(400)
async def test_three_retention_replicas_one_killed_one_added_fire_each_timer_once(
    infra, topics, schema, service_logs
):
    events, names = lifecycles(800, "rb")
    rng = random.Random(7)
    replicas = [
        retention(infra, topics, schema, service_logs, f"retention-rb{n}") for n in range(4)
    ]
    async with processes(*replicas):
        await rebalance_under_load(
            replicas,
            lambda: send(infra.kafka, topics.accounts_lifecycle, events, chunk=100, pace=0.1),
            rng,
            kill_after=(0.8, 1.6),
        )
        await wait_inbox(infra, schema, len(events))
        await assert_every_timer_fired_once(infra, topics, schema, names)
        for r in (replicas[0], replicas[2], replicas[3]):
            await r.terminate()
            assert r.stopped_cleanly()


# ------------------------------------------------------------------------ export ----


def export_service(
    infra: Infra, topics: Topics, schema: str, logs: Path, label: str
) -> ServiceProcess:
    root = ROOT / ".local" / "fault-export" / schema
    env = service_env(
        "EXPORT_",
        infra,
        topics,
        schema,
        extra={
            "EXPORT_SERVICE_KEY": base64.b64encode(bytes(range(32))).decode(),
            "EXPORT_LINK_SECRET": "fault-suite-link-secret-0123456789",
            "EXPORT_STORAGE_DIR": str(root / "storage"),
            "EXPORT_EXCHANGE_DIR": str(root / "exchange"),
            "EXPORT_LOOP_INTERVAL": "0.2",
            "EXPORT_BATCH_MAX_RECORDS": "20",
            "EXPORT_LINK_TTL": "PT3S",
            "EXPORT_ASSEMBLY_LEASE": "PT5S",  # a replica killed mid-assembly: retried soon
        },
    )
    return ServiceProcess(f"{label}-{schema}", env, logs, app_module="services.export.app")


def owner_answer(job: ExportJob, rng: random.Random) -> list[ExportPart]:
    """An owner's parts for every category of its job, with personal marker records."""
    parts: list[ExportPart] = []
    for category in job.data.categories:
        records = [
            {"email": marker("email", "export"), "note": f"record {i}", "n": i}
            for i in range(rng.randint(0, 6))
        ]
        parts.extend(
            new_event(ExportPart, subject=job.subject, source=f"{job.data.owner}-svc", data=data)
            for data in sealed_parts(job.data, category, records, max_bytes=200)
        )
    return parts


@pytest.mark.timeout(400)
async def test_kill_9_export_while_parts_arrive_twice_gives_one_bundle_per_request(
    infra, topics, schema, service_logs
):
    rng = random.Random(11)
    requests = [
        new_event(
            ExportRequested,
            subject=f"usr_exp_{n}",
            source="portal",
            data=ExportRequestedData(request_id=f"req_{schema}_{n}", verified_by="portal:1"),
        )
        for n in range(12)
    ]
    service = export_service(infra, topics, schema, service_logs, "export-kill9")
    async with processes(service):
        service.start()
        await service.wait_ready()
        await send(infra.kafka, topics.privacy_requests, requests)

        def jobs_of(records: list[Any]) -> list[ExportJob]:
            found = [decode(r.value) for r in records]
            return [e for e in found if isinstance(e, ExportJob)]

        owners = len(_owners())
        records = await read_all(
            infra.kafka,
            topics.privacy_jobs,
            until=lambda r: len({j.data.job_id for j in jobs_of(r)}) >= owners * len(requests),
            timeout=60,
        )
        jobs = {j.data.job_id: j for j in jobs_of(records)}
        assert len(jobs) == owners * len(requests)
        parts = [p for job in jobs.values() for p in owner_answer(job, rng)]
        redelivered = [*parts, *rng.sample(parts, len(parts) // 2)]  # same ids again
        retried = [
            p.model_copy(update={"id": f"retry-{p.id}"}) for p in rng.sample(parts, len(parts) // 4)
        ]  # an owner that answered twice: same part, new event id
        stream = redelivered + retried
        rng.shuffle(stream)
        stream.sort(key=lambda p: p.subject)  # each subject's parts in one partition order
        plans = ["apply:2", "commit:3", "relay:2", ""]
        size = len(stream) // (len(plans) + 1)
        await service.terminate()
        for n, plan in enumerate(plans):
            service.start(kill_at=plan)
            chunk = stream[n * size : (n + 1) * size]
            producing = asyncio.create_task(send(infra.kafka, topics.privacy_receipts, chunk))
            if plan:
                await service.wait_exit(120)
            else:
                await service.wait_ready()
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                service.kill()
            await producing
        service.start()
        await send(infra.kafka, topics.privacy_receipts, stream[len(plans) * size :])

        async def all_completed() -> bool:
            rows = await query(
                infra.database_url,
                f"SELECT count(*) AS n FROM \"{schema}\".requests WHERE status = 'completed'",
            )
            return int(rows[0]["n"]) >= len(requests)

        await poll(all_completed, timeout=120, what="every export completed")
        stored = await query(
            infra.database_url,
            f'SELECT request_id, owner, category, count(*) AS n FROM "{schema}".parts GROUP BY 1, 2, 3, part_index',
        )
        await check_download_links(service, [r.data.request_id for r in requests[:2]])
        dead = await settled_dead_letters(infra, topics, schema, "services.export.app")
        statuses = await read_all(infra.kafka, topics.requests_status)  # outbox published
        await service.terminate()
    assert service.stopped_cleanly()
    assert service.planned_kills() == sum(1 for p in plans if p)
    assert all(r["n"] == 1 for r in stored)
    assert len(stored) == len({(p.data.job_id, p.data.category, p.data.part_index) for p in parts})
    out = copies(statuses)
    STATS.doubled += out.conflicts
    status_events = {e["id"]: e for e in (orjson.loads(r.value) for r in statuses)}
    completed = Counter(
        e["data"]["request_id"]
        for e in status_events.values()
        if e["data"]["status"] == "completed"
    )
    distinct_completed = set(completed)
    assert distinct_completed == {r.data.request_id for r in requests}
    assert out.conflicts == 0
    assert [r for r, n in completed.items() if n > 1] == []  # one completion per request
    bundles = list((ROOT / ".local" / "fault-export" / schema / "storage").rglob("*.zip"))
    assert len(bundles) == len(requests)
    assert dead == []
    STATS.notes.append(
        f"export: {len(stream)} part deliveries ({len(parts)} distinct parts) -> "
        f"{len(bundles)} bundles; {out.extra_copies} re-sent status copies"
    )


def export_requests(schema: str, count: int, tag: str) -> list[ExportRequested]:
    return [
        new_event(
            ExportRequested,
            subject=f"usr_{tag}_{n}",
            source="portal",
            data=ExportRequestedData(request_id=f"req_{schema}_{tag}_{n}", verified_by="portal:1"),
        )
        for n in range(count)
    ]


async def answer_every_job(
    infra: Infra, topics: Topics, requests: list[ExportRequested], rng: random.Random
) -> None:
    """Read every owner's job for `requests` (privacy.jobs from offset 0) and send its parts."""

    def jobs_of(records: list[Any]) -> dict[str, ExportJob]:
        found = (decode(r.value) for r in records)
        return {e.data.job_id: e for e in found if isinstance(e, ExportJob)}

    wanted = len(_owners()) * len(requests)
    records = await read_all(
        infra.kafka,
        topics.privacy_jobs,
        until=lambda r: len(jobs_of(r)) >= wanted,
        timeout=60,
    )
    jobs = jobs_of(records)
    assert len(jobs) == wanted
    parts = [p for job in jobs.values() for p in owner_answer(job, rng)]
    await send(infra.kafka, topics.privacy_receipts, parts)


async def requests_where(infra: Infra, schema: str, condition: str) -> int:
    rows = await query(
        infra.database_url, f'SELECT count(*) AS n FROM "{schema}".requests WHERE {condition}'
    )
    return int(rows[0]["n"])


async def one_completion_per_request(
    infra: Infra, topics: Topics, requests: list[ExportRequested]
) -> int:
    """request.status from offset 0: one `completed` (one id, one content) per request; the
    number of re-sent copies."""
    wanted = {r.data.request_id for r in requests}

    def completions(records: list[Any]) -> Counter[str]:
        events = {e["id"]: e for e in (orjson.loads(r.value) for r in records)}
        return Counter(
            e["data"]["request_id"] for e in events.values() if e["data"]["status"] == "completed"
        )

    statuses = await read_all(
        infra.kafka,
        topics.requests_status,
        until=lambda r: set(completions(r)) >= wanted,
        timeout=60,
        settle=2,
    )
    out = copies(statuses)
    completed = completions(statuses)
    twice = [r for r, n in completed.items() if n > 1]
    STATS.doubled += len(twice) + out.conflicts
    STATS.lost += len(wanted - set(completed))
    assert set(completed) == wanted
    assert twice == []
    assert out.conflicts == 0
    return out.extra_copies


def storage_files(schema: str) -> list[Path]:
    """Every file in the export's storage (bundles, parts and temporary files alike)."""
    root = ROOT / ".local" / "fault-export" / schema / "storage"
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.timeout(300)
async def test_kill_9_export_assembler_mid_zip_and_before_its_commit_gives_one_bundle_each(
    infra, topics, schema, service_logs
):
    rng = random.Random(21)
    requests = export_requests(schema, 5, "asm")
    plans = ["zip:1", "bundle:2"]  # mid-zip; then the zip written, the finish not committed
    service = export_service(infra, topics, schema, service_logs, "export-asm9")
    async with processes(service):
        service.start(kill_at=plans[0])
        await service.wait_ready()
        await send(infra.kafka, topics.privacy_requests, requests)
        await answer_every_job(infra, topics, requests, rng)
        assert await service.wait_exit(120) == -signal.SIGKILL
        service.start(kill_at=plans[1])  # the killed assembly's lease (5 s) runs out meanwhile
        assert await service.wait_exit(120) == -signal.SIGKILL
        service.start()

        async def all_completed() -> bool:
            return await requests_where(infra, schema, "status = 'completed'") >= len(requests)

        await poll(all_completed, timeout=120, what="every export completed")
        extra = await one_completion_per_request(infra, topics, requests)
        dead = await read_all(infra.kafka, topics.deadletter, until=lambda r: True, timeout=3)
        with_bundle = await requests_where(infra, schema, "bundle_id IS NOT NULL")
        await service.terminate()
    assert service.stopped_cleanly()
    assert service.planned_kills() == len(plans)
    assert with_bundle == len(requests)
    files = storage_files(schema)
    # one zip per request, and nothing else: no half-written zip, no part left behind
    left = [f.name for f in files if f.parent.name != "bundles" or f.suffix != ".zip"]
    STATS.leaked += len(left)
    assert left == []
    assert len(files) == len(requests)
    assert dead == []
    STATS.notes.append(
        f"export assembler: {len(requests)} bundles through kills mid-zip and before the "
        f"commit; {extra} re-sent status copies"
    )


@pytest.mark.timeout(300)
async def test_kill_9_bundle_cleaner_before_its_commit_deletes_every_expired_bundle(
    infra, topics, schema, service_logs
):
    rng = random.Random(22)
    requests = export_requests(schema, 4, "cln")
    service = export_service(infra, topics, schema, service_logs, "export-clean9")
    async with processes(service):
        service.start()
        await service.wait_ready()
        await send(infra.kafka, topics.privacy_requests, requests)
        await answer_every_job(infra, topics, requests, rng)

        async def all_completed() -> bool:
            return await requests_where(infra, schema, "status = 'completed'") >= len(requests)

        await poll(all_completed, timeout=120, what="every export completed")
        await service.terminate()
        assert len(storage_files(schema)) == len(requests)
        # the bundles' week is over
        await query(
            infra.database_url,
            f"UPDATE \"{schema}\".requests SET bundle_expires_at = now() - interval '1 second'",
        )
        service.start(kill_at="clean:1")  # the files deleted, the transaction not committed
        assert await service.wait_exit(120) == -signal.SIGKILL
        service.start()

        async def all_deleted() -> bool:
            return await requests_where(infra, schema, "bundle_deleted_at IS NOT NULL") >= len(
                requests
            )

        await poll(all_deleted, timeout=60, what="every expired bundle marked deleted")
        dead = await read_all(infra.kafka, topics.deadletter, until=lambda r: True, timeout=3)
        await service.terminate()
    assert service.stopped_cleanly()
    assert service.planned_kills() == 1
    left = storage_files(schema)
    STATS.leaked += len(left)
    assert left == []
    assert dead == []
    STATS.notes.append(f"export cleaner: {len(requests)} expired bundles deleted through a kill")


def _owners() -> dict[str, list[str]]:
    from services.export.settings import default_owners

    return default_owners()


# -------------------------------------------------------------------- resurrection ----


@pytest.mark.timeout(300)
async def test_after_erasure_late_lifecycle_events_and_export_parts_bring_nothing_back(
    infra, spaces, service_logs
):
    from shared.contract.events import (
        SubscriptionChanged,
        SubscriptionChangedData,
    )
    from tests.faults.workloads import erasure

    now = datetime.now(UTC)
    victim, account = "usr_lazarus", "acc_lazarus"
    r_topics, r_schema = await spaces()
    e_topics, e_schema = await spaces()
    keeper = retention(infra, r_topics, r_schema, service_logs, "retention-resurrect")
    exporter = export_service(infra, e_topics, e_schema, service_logs, "export-resurrect")
    async with processes(keeper, exporter):
        keeper.start()
        exporter.start()
        await keeper.wait_ready()
        await exporter.wait_ready()
        # retention: a closed account, then an erasure of everything
        await send(
            infra.kafka,
            r_topics.accounts_lifecycle,
            [
                signed_up(victim, account, now - timedelta(days=400)),
                closed(victim, account, now - timedelta(days=2), now - timedelta(days=2)),
            ],
        )
        await send(infra.kafka, r_topics.privacy_requests, [erasure(victim, now, "req_erase")])
        await wait_inbox(infra, r_schema, 3)
        settled = await _retention_footprint(infra, r_schema, victim)
        # export: an open request, then the erasure, then the owners' (late) parts
        request = new_event(
            ExportRequested,
            subject=victim,
            source="portal",
            data=ExportRequestedData(request_id="req_lazarus_export", verified_by="portal:1"),
        )
        await send(infra.kafka, e_topics.privacy_requests, [request])
        jobs = await read_all(
            infra.kafka,
            e_topics.privacy_jobs,
            until=lambda r: len(r) >= len(_owners()),
            timeout=60,
        )
        export_jobs = [e for e in (decode(r.value) for r in jobs) if isinstance(e, ExportJob)]
        await send(infra.kafka, e_topics.privacy_requests, [erasure(victim, now, "req_erase")])
        await wait_inbox(infra, e_schema, 2)
        rng = random.Random(2)
        late_parts = [p for job in export_jobs for p in owner_answer(job, rng)]
        late_lifecycle: list[CloudEvent[Any]] = [
            signed_up(victim, account, now + timedelta(minutes=1)),
            closed(victim, account, now + timedelta(minutes=2), now + timedelta(minutes=2)),
            new_event(
                SubscriptionChanged,
                subject=victim,
                source="accounts-service",
                data=SubscriptionChangedData(account_id=account, plan="pro", crm_retention_days=3),
            ),
        ]
        await send(infra.kafka, e_topics.privacy_receipts, late_parts)
        await send(infra.kafka, r_topics.accounts_lifecycle, late_lifecycle)
        await wait_inbox(infra, e_schema, 2 + len(late_parts))
        await wait_inbox(infra, r_schema, 3 + len(late_lifecycle))
        after = await _retention_footprint(infra, r_schema, victim)
        parts = await query(
            infra.database_url,
            f'SELECT count(*) AS n FROM "{e_schema}".parts WHERE request_id = $1',
            "req_lazarus_export",
        )
        request_row = await query(
            infra.database_url,
            f'SELECT status, sealed_key IS NULL AS shredded FROM "{e_schema}".requests WHERE request_id = $1',
            "req_lazarus_export",
        )
        await keeper.terminate()
        await exporter.terminate()
    bundles = list((ROOT / ".local" / "fault-export" / e_schema / "storage").rglob("*.zip"))
    back = (after != settled) + parts[0]["n"] + len(bundles)
    STATS.leaked += int(back)
    assert after == settled
    assert parts[0]["n"] == 0
    assert bundles == []
    assert dict(request_row[0]) == {"status": "cancelled", "shredded": True}


async def _retention_footprint(infra: Infra, schema: str, subject: str) -> dict[str, Any]:
    """What retention holds of `subject`: erasure mark, live timers, jobs."""
    subject_row = await query(
        infra.database_url,
        f'SELECT erased_at IS NOT NULL AS erased FROM "{schema}".subjects WHERE subject_id = $1',
        subject,
    )
    timers = await query(
        infra.database_url,
        f"SELECT category, status FROM \"{schema}\".timers WHERE subject_id = $1 AND status IN ('pending', 'blocked') ORDER BY 1, 2",
        subject,
    )
    jobs = await query(
        infra.database_url,
        f'SELECT job_id FROM "{schema}".jobs WHERE subject_id = $1 ORDER BY 1',
        subject,
    )
    return {
        "erased": [r["erased"] for r in subject_row],
        "timers": [tuple(r) for r in timers],
        "jobs": [r["job_id"] for r in jobs],
    }


@pytest.mark.timeout(300)
async def test_retention_streams_replayed_twice_and_shuffled_give_the_same_timers_and_jobs(
    infra, spaces, service_logs
):
    from tests.faults.test_consent_faults import replayed_and_shuffled

    events, names = lifecycles(300, "rr")
    rng = random.Random(12)
    clean_topics, clean_schema = await spaces()
    topics, schema = await spaces()
    shuffled = replayed_and_shuffled(events, rng)
    shuffled += rng.sample(events, len(events) // 3)  # and stragglers at the very end
    for topics_, schema_, stream in (
        (clean_topics, clean_schema, events),
        (topics, schema, shuffled),
    ):
        service = retention(infra, topics_, schema_, service_logs, "retention-replay")
        async with processes(service):
            service.start()
            await service.wait_ready()
            await send(infra.kafka, topics_.accounts_lifecycle, stream)
            await wait_inbox(infra, schema_, len(events))
            await assert_every_timer_fired_once(infra, topics_, schema_, names)
            await service.terminate()
    assert await _decisions(infra, schema) == await _decisions(infra, clean_schema)


async def _decisions(infra: Infra, schema: str) -> list[tuple[Any, ...]]:
    """Retention's decisions, without the times of issue: timers and jobs per subject."""
    timers = await query(
        infra.database_url,
        f'SELECT subject_id, category, owner, mode, reason, due_at, status FROM "{schema}".timers ORDER BY 1, 2, 6',
    )
    jobs = await query(
        infra.database_url,
        # rolling purges depend on when the loop ran, not on the stream: deletion jobs only
        f'SELECT subject_id, category, owner, mode, reason, status FROM "{schema}".jobs '
        "WHERE kind = 'deletion' ORDER BY 1, 2",
    )
    return [tuple(r) for r in timers] + [tuple(r) for r in jobs]


async def check_download_links(service: ServiceProcess, request_ids: list[str]) -> None:
    """A link downloads once fetched; not for another request, not tampered, not expired."""
    import httpx

    token = {"Authorization": "Bearer fault-token-0123456"}
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        views = [(await client.get(f"/v1/exports/{r}", headers=token)).json() for r in request_ids]
        urls = [httpx.URL(v["download_url"]) for v in views]
        first = await client.get(urls[0].path, params=urls[0].params)
        assert first.status_code == 200
        assert first.content[:2] == b"PK"  # a zip
        assert (await client.get(f"/v1/exports/{request_ids[0]}")).status_code == 401
        other_bundle = urls[1].path.rsplit("/", 1)[1]
        swapped = urls[0].path.rsplit("/", 1)[0] + "/" + other_bundle
        answers = [
            await client.get(swapped, params=urls[0].params),  # another request's bundle
            await client.get(urls[0].path, params=urls[0].params.set("sig", "A" * 43)),
            await client.get(urls[0].path, params=urls[0].params.set("expires", "9999999999")),
            await client.get("/v1/downloads/guessed", params={"expires": "9999999999", "sig": "x"}),
        ]
        assert [a.status_code for a in answers] == [403, 403, 403, 403]

        async def expired() -> bool:
            again = await client.get(urls[0].path, params=urls[0].params)
            assert again.status_code in (200, 410)
            return again.status_code == 410

        await poll(expired, timeout=15, interval=0.5, what="the download link to expire")
