"""Rolling SIGTERM and rebalance on the plumbing alone (toy service, toy timers).

The broker and database restarts run against the real services in test_outages.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.contract.codec import new_event
from shared.contract.envelope import CloudEvent
from shared.contract.events import AccountClosed, AccountClosedData
from shared.contract.topics import Topics
from tests.faults.harness import (
    STOP_GRACE,
    ServiceProcess,
    copies,
    group_caught_up,
    outbox_published,
    poll,
    processes,
    query,
    read_all,
    rebalance_under_load,
    send,
    service_env,
)
from tests.faults.stats import STATS
from tests.faults.test_kill9_toy import seen_counts, signups
from tests.faults.toy_app import derived_id
from tests.support.infra import Infra

pytestmark = pytest.mark.faults


def replica(infra: Infra, topics: Topics, schema: str, logs: Path, label: str) -> ServiceProcess:
    env = service_env("TOY_", infra, topics, schema, extra={"TOY_BATCH_MAX_RECORDS": "100"})
    return ServiceProcess(f"{label}-{schema}", env, logs, app_module="tests.faults.toy_app")


async def assert_exactly_once(
    infra: Infra,
    topics: Topics,
    schema: str,
    events: Sequence[CloudEvent[Any]],
) -> None:
    """Every event applied once, its outbound event present, no conflicts, no dead letters."""

    async def all_seen() -> bool:
        return len(await seen_counts(infra, schema)) >= len(events)

    await poll(all_seen, timeout=120, what=f"{len(events)} events in the projection")
    outbound = await read_all(
        infra.kafka, topics.consent_state, until=lambda r: len(r) >= len(events), timeout=90
    )
    # positive signal: the group committed the end of what was sent, the outbox is empty
    await group_caught_up(infra.kafka, f"g-{schema}", [topics.accounts_lifecycle], 120)
    await outbox_published(infra.database_url, schema, 120)
    dead = await read_all(infra.kafka, topics.deadletter, timeout=30)
    counts = await seen_counts(infra, schema)
    lost = {e.id for e in events} - set(counts)
    doubled = [i for i, n in counts.items() if n > 1]
    out = copies(outbound)
    expected = {derived_id(e.source, e.id) for e in events}
    STATS.lost += len(lost) + len(expected - out.ids)
    STATS.doubled += len(doubled) + out.conflicts
    assert not lost
    assert not doubled
    assert out.ids == expected
    assert out.conflicts == 0
    assert [dict(r.headers).get("error") for r in dead] == []


@pytest.mark.timeout(300)
async def test_rolling_sigterm_commits_what_is_held_flushes_the_outbox_and_exits_in_time(
    infra, topics, schema, service_logs
):
    events = signups(4000)
    first = replica(infra, topics, schema, service_logs, "toy-roll-a")
    second = replica(infra, topics, schema, service_logs, "toy-roll-b")
    async with processes(first, second):
        first.start()
        second.start()
        await first.wait_ready()
        await second.wait_ready()
        producing = asyncio.create_task(
            send(infra.kafka, topics.accounts_lifecycle, events, chunk=100, pace=0.1)
        )
        for old in (first, second):
            await asyncio.sleep(1.0)
            # by itself within the deployment's grace (terminate() fails if it had to kill)
            code, _ = await old.terminate(timeout=STOP_GRACE)
            assert code in (0, -15)
            assert old.stopped_cleanly()
            old.start()
            await old.wait_ready()
        await producing
        await assert_exactly_once(infra, topics, schema, events)
        for old in (first, second):
            await old.terminate(timeout=45)
            assert old.stopped_cleanly()
    backlog = await query(infra.database_url, f'SELECT count(*) AS n FROM "{schema}".outbox')
    assert backlog[0]["n"] == 0


def closures(count: int) -> list[AccountClosed]:
    return [
        new_event(
            AccountClosed,
            subject=f"usr_c{i}",
            source="accounts-service",
            data=AccountClosedData(account_id=f"acc_c{i}", closed_at=datetime.now(UTC)),
        )
        for i in range(count)
    ]


@pytest.mark.timeout(300)
async def test_rebalance_three_replicas_one_killed_one_added_timers_fire_once(
    infra, topics, schema, service_logs
):
    rng = random.Random(4)
    events: list[CloudEvent[Any]] = [*signups(3000), *closures(600)]
    rng.shuffle(events)
    replicas = [replica(infra, topics, schema, service_logs, f"toy-rb{n}") for n in range(4)]
    async with processes(*replicas):
        await rebalance_under_load(
            replicas,
            lambda: send(infra.kafka, topics.accounts_lifecycle, events, chunk=100, pace=0.1),
            rng,
            add_after=(0.5, 1.5),
        )
        await assert_exactly_once(infra, topics, schema, events)
        closed = [e for e in events if isinstance(e, AccountClosed)]

        async def all_fired() -> bool:
            rows = await query(infra.database_url, f'SELECT count(*) AS n FROM "{schema}".fired')
            return int(rows[0]["n"]) >= len(closed)

        await poll(all_fired, timeout=60, what="every timer fired")
        jobs = await read_all(
            infra.kafka, topics.privacy_jobs, until=lambda r: len(r) >= len(closed), timeout=60
        )
        firings = await query(
            infra.database_url,
            f'SELECT timer_id, count(*) AS n, count(DISTINCT replica) AS r FROM "{schema}".fired GROUP BY 1',
        )
        for r in (replicas[0], replicas[2], replicas[3]):
            await r.terminate()
    assert {row["timer_id"] for row in firings} == {e.id for e in closed}
    twice = [row["timer_id"] for row in firings if row["n"] > 1]
    STATS.doubled += len(twice)
    assert twice == []
    by_replica = await query(
        infra.database_url, f'SELECT count(DISTINCT replica) AS n FROM "{schema}".fired'
    )
    assert by_replica[0]["n"] >= 2  # the timers really were shared between replicas
    out = copies(jobs)
    assert out.ids == {derived_id("timer", e.id) for e in closed}
    assert out.conflicts == 0
