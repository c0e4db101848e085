"""kill -9 on the plumbing itself (toy service): before, inside and after the commit, in the relay."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from shared.contract.codec import new_event
from shared.contract.events import AccountSignedUp, AccountSignedUpData
from shared.contract.topics import Topics
from tests.faults.harness import (
    ServiceProcess,
    copies,
    group_caught_up,
    outbox_published,
    poll,
    processes,
    query,
    read_all,
    send,
    service_env,
)
from tests.faults.stats import STATS
from tests.faults.toy_app import derived_id
from tests.support.infra import Infra

pytestmark = pytest.mark.faults

EVENTS = 6_000
PLANS = ["apply:2", "commit:3", "relay:150", "", "apply:4", "commit:2", ""]
"""Planned kill points per start; "" = a SIGKILL from outside at a random moment."""


def toy(infra: Infra, topics: Topics, schema: str, logs: Path, label: str) -> ServiceProcess:
    return ServiceProcess(
        label,
        service_env("TOY_", infra, topics, schema, extra={"TOY_BATCH_MAX_RECORDS": "100"}),
        logs,
        app_module="tests.faults.toy_app",
    )


def signups(count: int, subjects: int = 400) -> list[AccountSignedUp]:
    return [
        new_event(
            AccountSignedUp,
            subject=f"usr_{i % subjects}",
            source="accounts-service",
            data=AccountSignedUpData(account_id=f"acc_{i}", jurisdiction="DE", policy_version="1"),
        )
        for i in range(count)
    ]


async def seen_counts(infra: Infra, schema: str) -> dict[str, int]:
    rows = await query(
        infra.database_url, f'SELECT event_id, count(*) AS n FROM "{schema}".seen GROUP BY 1'
    )
    return {r["event_id"]: r["n"] for r in rows}


@pytest.mark.timeout(420)
async def test_kill_9_at_every_point_loses_and_doubles_nothing(infra, topics, schema, service_logs):
    rng = random.Random(8)
    events = signups(EVENTS)
    service = toy(infra, topics, schema, service_logs, f"toy-kill9-{schema}")
    async with processes(service):
        slice_size = EVENTS // (len(PLANS) + 1)
        for n, plan in enumerate(PLANS):
            service.start(kill_at=plan)
            part = events[n * slice_size : (n + 1) * slice_size]
            producing = asyncio.create_task(send(infra.kafka, topics.accounts_lifecycle, part))
            if plan:
                await service.wait_exit(90)
            else:
                await service.wait_ready()
                await asyncio.sleep(rng.uniform(0.2, 1.5))
                service.kill()
            await producing
        service.start()
        await send(infra.kafka, topics.accounts_lifecycle, events[len(PLANS) * slice_size :])
        await service.wait_ready()

        async def all_seen() -> bool:
            return len(await seen_counts(infra, schema)) >= EVENTS

        await poll(all_seen, timeout=180, what=f"{EVENTS} events in the projection")
        outbound = await read_all(
            infra.kafka, topics.consent_state, until=lambda r: len(r) >= EVENTS, timeout=120
        )
        # positive signal: the group committed the end of what was sent, the outbox is empty
        await group_caught_up(infra.kafka, f"g-{schema}", [topics.accounts_lifecycle], 120)
        await outbox_published(infra.database_url, schema, 120)
        dead = await read_all(infra.kafka, topics.deadletter, timeout=30)
        code, _ = await service.terminate()

    assert service.planned_kills() == sum(1 for p in PLANS if p)
    counts = await seen_counts(infra, schema)
    lost = {e.id for e in events} - set(counts)
    doubled = {i: n for i, n in counts.items() if n > 1}
    out = copies(outbound)
    expected_out = {derived_id(e.source, e.id) for e in events}
    STATS.lost += len(lost) + len(expected_out - out.ids)
    STATS.doubled += len(doubled) + out.conflicts
    assert not lost
    assert not doubled
    assert out.ids == expected_out
    assert out.conflicts == 0
    assert dead == []
    assert code in (0, -15)
    assert service.stopped_cleanly()
    STATS.notes.append(
        f"toy kill -9: {EVENTS} events, {len(PLANS)} kills, "
        f"{out.extra_copies} outbound re-sends (same id and bytes) removed by id"
    )
