"""Relay failover under load: a leader deposed mid-batch never lands a record after its successor.

Two consent replicas take a stream of consent changes. Ten times, the leading relay's batch is
held in flight (`fencing_app`) and its PostgreSQL connection (the one holding the relay's
advisory lock) is terminated: the other replica takes the lock and publishes, then the held
batch goes on. At the end `consent.state`, read from offset 0 with read_committed as our
consumers read it, must hold for every subject its final state (the projection's version) as
its last record: none lost, none stale (an older version last).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from shared.contract.topics import Topics
from tests.faults.harness import ServiceProcess, copies, poll, processes, query, send, service_env
from tests.faults.stats import STATS
from tests.faults.workloads import consent_stream
from tests.support.infra import Infra

pytestmark = pytest.mark.faults

EVENTS = 30_000
"""At most: the stream stops once the faults are done."""
SUBJECTS = 150
ROUNDS = 10
PAUSE = 4.0
"""Seconds the leader's batch stays in flight: more than the standby needs to take over."""
LAST_PAUSE = 20.0
"""The last round's: the load ends and the successor publishes everything meanwhile."""

LOCK_HOLDER = """
SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND d.datname = current_database()
  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtext($1)::bigint
"""
"""The backend holding `pg_try_advisory_lock(hashtext('relay:<schema>'))` (a bigint key:
its high half in classid, its low half in objid)."""


def replica(
    infra: Infra, topics: Topics, schema: str, logs: Path, label: str, folder: Path
) -> ServiceProcess:
    env = service_env(
        "CONSENT_",
        infra,
        topics,
        schema,
        extra={
            "CONSENT_LEDGER_KEY": "fault-suite-ledger-key",
            "CONSENT_BATCH_MAX_RECORDS": "200",
            "PP_FENCE_DIR": str(folder),
        },
    )
    return ServiceProcess(
        f"{label}-{schema}", env, logs, app_module="tests.faults.fencing_app", chaos=False
    )


async def lock_holder(infra: Infra, schema: str) -> int | None:
    """The backend holding `schema`'s relay lock, if any."""
    rows = await query(infra.database_url, LOCK_HOLDER, f"relay:{schema}")
    return int(rows[0]["pid"]) if rows else None


async def exists(path: Path) -> bool:
    return path.exists()


async def depose_mid_batch(
    infra: Infra,
    schema: str,
    folder: Path,
    round_: int,
    seconds: float = PAUSE,
    meanwhile: Callable[[], Awaitable[None]] | None = None,
) -> bool:
    """Hold the leader's next batch in flight for `seconds` and terminate its lock connection
    meanwhile (then run `meanwhile`); True once the held batch went on."""
    (folder / "pause.tmp").write_text(f"{round_} {seconds}")
    (folder / "pause.tmp").replace(folder / "pause")
    paused, resumed = folder / f"paused.{round_}", folder / f"resumed.{round_}"
    try:
        await poll(lambda: exists(paused), timeout=15, interval=0.05, what="a batch in flight")
    except AssertionError:
        return False  # no batch came
    backend = await lock_holder(infra, schema)
    assert backend is not None, "a relay holds a batch in flight but nobody holds the lock"
    await query(infra.database_url, "SELECT pg_terminate_backend($1)", backend)
    STATS.faults_injected += 1
    if meanwhile is not None:
        await meanwhile()
    assert not resumed.exists(), "the held batch went on too early for this round"
    await poll(lambda: exists(resumed), timeout=seconds + 15, what="the held batch going on")
    return True


async def read_committed(bootstrap: str, topic: str, enough: Any, timeout: float = 60) -> list[Any]:
    """Every committed record of `topic` from offset 0, once `enough(records)` held for 1 s."""
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
        satisfied_at: float | None = None
        while time.monotonic() < deadline:
            for part in (await consumer.getmany(timeout_ms=200, max_records=5000)).values():
                records.extend(part)
            if enough(records):
                satisfied_at = satisfied_at or time.monotonic()
                if time.monotonic() - satisfied_at >= 1.0:
                    break
            else:
                satisfied_at = None
        return records
    finally:
        await consumer.stop()


def judge(records: list[Any], expected: dict[str, int]) -> dict[str, list[str]]:
    """Per subject: lost (its final version never published), stale (the last record is not
    the highest version), and regressions (a lower version after a higher one: re-sends)."""
    last: dict[str, int] = {}
    highest: dict[str, int] = {}
    regressions = 0
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        subject = record.key.decode()
        version = int(orjson.loads(record.value)["data"]["version"])
        if version < last.get(subject, 0):
            regressions += 1
        last[subject] = version
        highest[subject] = max(version, highest.get(subject, 0))
    return {
        "lost": [s for s, v in expected.items() if highest.get(s, 0) < v],
        "stale": [
            f"{s}: last v{last[s]}, highest v{highest[s]}" for s in last if last[s] < highest[s]
        ],
        "regressions": [str(regressions)],
    }


@pytest.mark.timeout(240)
async def test_a_relay_deposed_mid_batch_never_lands_a_record_after_its_successor(
    infra, spaces, service_logs, tmp_path
):
    topics, schema = await spaces()
    folder = tmp_path / "fence"
    folder.mkdir()
    replicas = [replica(infra, topics, schema, service_logs, f"fence{n}", folder) for n in (1, 2)]
    events = consent_stream(EVENTS, SUBJECTS, seed=41, tag="fence")
    faults_done = asyncio.Event()

    def stream() -> Any:
        """Changes until the faults are done: they end right after the last one, so a stale
        record a deposed leader landed would not be covered by a later change."""
        for event in events:
            if faults_done.is_set():
                return
            yield event

    async with processes(*replicas):
        for r in replicas:
            r.start()
        for r in replicas:
            await r.wait_ready()
        loading = asyncio.create_task(
            send(infra.kafka, topics.consent_changes, stream(), pace=0.3, chunk=100)
        )

        async def settled() -> bool:
            if not loading.done():
                return False
            rows = await query(
                infra.database_url,
                f'SELECT (SELECT count(*) FROM "{schema}".inbox) AS seen,'
                f' (SELECT count(*) FROM "{schema}".outbox) AS waiting',
            )
            return bool(rows[0]["seen"] >= loading.result() and rows[0]["waiting"] == 0)

        async def end_load_and_let_the_successor_publish_all() -> None:
            faults_done.set()
            await poll(settled, timeout=LAST_PAUSE - 3, interval=0.2, what="the successor")

        deposed = 0
        for round_ in range(1, ROUNDS):  # under load
            deposed += await depose_mid_batch(infra, schema, folder, round_)
        # the last one: the held batch goes on only once the successor published everything,
        # so a stale record it landed would stay the last of its key
        deposed += await depose_mid_batch(
            infra, schema, folder, ROUNDS, LAST_PAUSE, end_load_and_let_the_successor_publish_all
        )
        sent = loading.result()
        await asyncio.sleep(2)  # whatever the held batch may still land
        await poll(settled, timeout=60, interval=0.5, what="every change applied and relayed")
        stepped_down = sum(
            p.read_text(errors="replace").count("outbox_relay_stepped_down")
            for r in replicas
            for p in r.log_files
        )
    rows = await query(infra.database_url, f'SELECT subject_id, version FROM "{schema}".subjects')
    expected = {r["subject_id"]: int(r["version"]) for r in rows}

    def enough(records: list[Any]) -> bool:
        highest: dict[str, int] = {}
        for r in records:
            v = int(orjson.loads(r.value)["data"]["version"])
            highest[r.key.decode()] = max(v, highest.get(r.key.decode(), 0))
        return all(highest.get(s, 0) >= v for s, v in expected.items())

    records = await read_committed(infra.kafka, topics.consent_state, enough)
    verdict = judge(records, expected)
    extra = copies(records).extra_copies
    STATS.lost += len(verdict["lost"])
    figures = (
        f"relay fencing: {deposed} leaders deposed mid-batch ({stepped_down} stepped down on"
        f" fencing), {sent} changes sent, {len(records)} consent.state records for"
        f" {len(expected)} subjects; lost {len(verdict['lost'])}, stale {len(verdict['stale'])},"
        f" re-sent copies {extra}, version regressions (re-sends) {verdict['regressions'][0]}"
    )
    STATS.notes.append(figures)
    print(figures)
    assert deposed == ROUNDS
    assert verdict["lost"] == [], verdict["lost"][:10]
    assert verdict["stale"] == [], verdict["stale"][:10]
