"""Judging a consent run from the outside, against the outcome its events imply.

The expectation is folded from the events sent with the pure domain (`apply_event`), never
from the service's own counters; the run is read back from Kafka from offset 0
(read_committed) and from the database once the service has drained its outbox.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from services.consent import domain
from services.consent.state import SubjectState
from shared.catalogue import load_purposes
from shared.contract.envelope import CloudEvent
from shared.contract.topics import Topics
from tests.faults.harness import copies, poll, query, wait_inbox
from tests.faults.stats import Scenario
from tests.support.infra import Infra


def expected_versions(events: Sequence[CloudEvent[Any]]) -> dict[str, int]:
    """Each subject's final state version after `events` in order (one state per version)."""
    catalogue = load_purposes()
    states: dict[str, SubjectState] = {}
    for event in events:
        state = states.get(event.subject) or SubjectState(event.subject)
        states[event.subject] = domain.apply_event(state, event, catalogue).state  # type: ignore[arg-type]
    return {subject: state.version for subject, state in states.items() if state.version}


async def read_to_end(bootstrap: str, topic: str, timeout: float = 90) -> list[Any]:
    """Every committed record of `topic` from offset 0 up to its end offsets at the call."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while not consumer.assignment():
            assert time.monotonic() < deadline, f"no partitions of {topic} assigned"
            await asyncio.sleep(0.05)
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for part in batch.values():
                records.extend(part)
            positions = {tp: await consumer.position(tp) for tp in ends}
            if all(positions[tp] >= end for tp, end in ends.items()):
                return records
            assert time.monotonic() < deadline, f"{topic} not read to its end: {positions}"
    finally:
        await consumer.stop()


async def outbox_empty(infra: Infra, schema: str) -> bool:
    rows = await query(infra.database_url, f'SELECT count(*) AS n FROM "{schema}".outbox')
    return int(rows[0]["n"]) == 0


async def judge_consent(
    infra: Infra,
    topics: Topics,
    schema: str,
    events: Sequence[CloudEvent[Any]],
    figures: Scenario,
    timeout: float = 240,
) -> None:
    """Nothing lost, nothing doubled with other content, no stale last state, no dead letter.

    Identical re-sent copies of a state (same id, same bytes) are allowed and counted apart.
    """
    expected = expected_versions(events)
    await wait_inbox(infra, schema, len(events), timeout=timeout)
    await poll(lambda: outbox_empty(infra, schema), timeout=timeout, what=f"{schema} outbox empty")
    states = await read_to_end(infra.kafka, topics.consent_state)
    dead = await read_to_end(infra.kafka, topics.deadletter)
    wanted = {f"consent-state:{s}:{v}" for s, n in expected.items() for v in range(1, n + 1)}
    out = copies(states)
    last: dict[str, int] = {}
    for record in sorted(states, key=lambda r: (r.partition, r.offset)):
        if record.value is not None:
            last[record.key.decode()] = int(orjson.loads(record.value)["data"]["version"])
    rows = await query(infra.database_url, f'SELECT subject_id, version FROM "{schema}".subjects')
    stored = {r["subject_id"]: int(r["version"]) for r in rows}
    lost = len(wanted - out.ids) + sum(1 for s, v in expected.items() if stored.get(s, 0) < v)
    doubled = (
        out.conflicts
        + len(out.ids - wanted)
        + sum(1 for s, v in stored.items() if v > expected.get(s, 0))
    )
    stale = sum(1 for s, v in expected.items() if last.get(s) != v)
    figures.judged(lost=lost, doubled=doubled, stale=stale, resent=out.extra_copies)
    assert (lost, doubled, stale) == (0, 0, 0), f"lost {lost}, doubled {doubled}, stale {stale}"
    assert dead == [], f"{len(dead)} dead letters: {[r.value[:200] for r in dead[:3]]}"
