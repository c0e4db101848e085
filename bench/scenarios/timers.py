"""Scenario 3: retention timers: a burst falling due together, then a steady due rate.

Timers are inserted straight into the retention schema's `timers` table with COPY (producing
1,000,000 account closures and waiting for their retention periods is not a benchmark of the
timer loop); the service's own loop claims them and publishes deletion jobs via its outbox.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from bench import services
from bench.harness import Bench, Child, read_json_lines
from bench.report import Row, Target
from bench.scenarios.common import TopicWatcher, fail_note, has_service, wait_until
from bench.stats import percentile, rate

BURST_TARGET = Target(">=", 10_000)
DELAY_TARGET = Target("<", 2_000)
BURST_CAP_S = 120.0
STEADY_RATE = 1_000
COLUMNS = [
    "subject_id",
    "category",
    "owner",
    "mode",
    "reason",
    "cause",
    "base_at",
    "due_at",
    "created_at",
]


def timer_rows(count: int, first_due: datetime, per_second: float) -> Any:
    """Crm-data deletions of closed accounts; `per_second` 0 means all due at `first_due`."""
    for i in range(count):
        due = first_due + timedelta(seconds=i / per_second) if per_second else first_due
        subject = f"bt_{int(due.timestamp() * 1000)}_{i}"
        yield (subject, "crm_data", "crm", "delete", "retention_expired", "closure", due, due, due)


async def insert_timers(bench: Bench, schema: str, rows: Any) -> float:
    """COPY the timers in one transaction; returns the commit time."""
    conn = await bench.connect()
    try:
        await conn.copy_records_to_table(
            "timers", records=rows, columns=COLUMNS, schema_name=schema
        )
        committed = time.time()
        await conn.execute(f'ANALYZE "{schema}".timers')
    finally:
        await conn.close()
    return committed


async def baseline(bench: Bench, count: int, steady: int) -> dict[str, Any]:
    topics = await bench.topics(f"timerbase{steady}")
    args = {
        "dsn": bench.database_url,
        "kafka": bench.kafka,
        "schema": bench.schema(f"timerbase{steady}"),
        "topic": topics.privacy_jobs,
        "count": count,
        "steady": steady,
    }
    child = bench.spawn(
        f"baseline-timers{steady}", ["-m", "bench.baselines", "timers", json.dumps(args)]
    )
    try:
        await read_json_lines(child, "ready", 120)
        return await read_json_lines(child, "done", 600)
    finally:
        child.stop()


async def start(bench: Bench, label: str) -> tuple[Child, str, Any]:
    topics = await bench.topics(label)
    schema = bench.schema(label)
    child = await services.start(bench, "retention", label, schema, topics)
    return child, schema, topics


async def burst(bench: Bench, count: int) -> Row:
    row = Row("3 retention timers", "jobs issued, burst", None, "jobs/s", target=BURST_TARGET)
    row.workload = f"{count:,} deletions due together (timers COPY-inserted)"
    row.baseline_what = "raw SKIP LOCKED claim + produce per 1,000"
    try:
        found = await baseline(bench, count, 0)
        row.baseline = rate(found["count"], found["seconds"])
        row.extra["baseline"] = found
    except Exception as exc:
        row.note = f"baseline failed: {fail_note(exc)}"
    if not has_service("retention"):
        row.note = "services/retention/app.py not available yet"
        return row
    child = None
    try:
        child, schema, topics = await start(bench, "timerburst")
        watcher = TopicWatcher(bench.kafka, topics.privacy_jobs, lambda _: None)
        await watcher.start()
        try:
            now = datetime.now(UTC) - timedelta(seconds=1)
            with bench.profiled(child, "retention-burst") as phase:
                started = await insert_timers(bench, schema, timer_rows(count, now, 0))
                done = await wait_until(lambda: watcher.count >= count, within=BURST_CAP_S)
            elapsed = (watcher.last_at if done else time.time()) - started
            row.value = rate(watcher.count, elapsed)
            row.note = phase.note("retention")
            if not done:
                row.note += (
                    f"; stopped after {BURST_CAP_S:.0f} s with {watcher.count:,} of {count:,} "
                    "published; rate over that time"
                )
        finally:
            await watcher.stop()
    except Exception as exc:
        row.note = fail_note(exc, child)
    finally:
        if child is not None:
            child.stop()
    return row


async def steady(bench: Bench, seconds: int) -> Row:
    count = STEADY_RATE * seconds
    row = Row("3 retention timers", "p99 due → published", None, "ms", target=DELAY_TARGET)
    row.workload = f"steady {STEADY_RATE:,} due/s for {seconds} s"
    row.baseline_what = "raw loop, 0.1 s poll"
    try:
        found = await baseline(bench, count, STEADY_RATE)
        row.baseline = found["p99_ms"]
        row.extra["baseline"] = found
    except Exception as exc:
        row.note = f"baseline failed: {fail_note(exc)}"
    if not has_service("retention"):
        row.note = "services/retention/app.py not available yet"
        return row
    delays: list[float] = []

    def on_job(record: Any) -> None:
        subject = orjson.loads(record.value).get("subject", "")
        if subject.startswith("bt_"):
            delays.append(record.timestamp - int(subject.split("_")[1]))

    child = None
    try:
        child, schema, topics = await start(bench, "timersteady")
        watcher = TopicWatcher(bench.kafka, topics.privacy_jobs, on_job)
        await watcher.start()
        try:
            first = datetime.now(UTC) + timedelta(seconds=3)
            await insert_timers(bench, schema, timer_rows(count, first, STEADY_RATE))
            done = await wait_until(lambda: len(delays) >= count, within=seconds + 60)
            if not done:
                row.note = f"only {len(delays):,} of {count:,} published within {seconds + 60} s"
            if delays:
                row.value = percentile(delays, 99)
                row.extra["p50_ms"] = percentile(delays, 50)
                row.workload += f"; p50 {percentile(delays, 50):.0f} ms"
        finally:
            await watcher.stop()
    except Exception as exc:
        row.note = fail_note(exc, child)
    finally:
        if child is not None:
            child.stop()
    return row


async def run(bench: Bench) -> list[Row]:
    return [
        await burst(bench, bench.size(1_000_000, minimum=1000)),
        await steady(bench, max(10, int(30 * min(1.0, bench.scale * 3)))),
    ]
