"""Scenario 1: consent ingest, end to end, against a bare aiokafka + asyncpg consumer."""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench import services
from bench.harness import Bench, Child, produce_all, producer, read_json_lines
from bench.report import Row, Target, number
from bench.scenarios.common import (
    Completion,
    batch_note,
    fail_note,
    has_service,
    metrics,
    read_latest,
    state_purposes,
    wait_group,
)
from bench.stats import rate
from bench.workload import ConsentWorkload, matches
from services.consent.settings import ConsentSettings
from shared.contract.topics import Topics

TARGET = Target(">=", 20_000, min_ratio=0.5)


@dataclass
class ConsentStage:
    """The running consent service other scenarios reuse (decisions, replay)."""

    child: Child | None = None
    replicas: int = 1
    topics: Topics | None = None
    schema: str = ""
    events: int = 0
    subjects: int = 0
    rate: float | None = None
    baseline: float | None = None
    produce_rate: float | None = None
    """How fast the load generator wrote the last workload to Kafka (events/s)."""


def pairs() -> int:
    """Alternating baseline and service runs (BENCH_INGEST_PAIRS, default 3). The figure and its
    baseline are the medians: on a shared machine one run moves by ±10%, and a single pair
    decided the verdict by chance."""
    return max(1, int(os.environ.get("BENCH_INGEST_PAIRS", "3")))


def replicas() -> int:
    """Consent service processes for the ingest: BENCH_CONSENT_REPLICAS, else one per core
    (the consumer group splits the partitions; the first replica also answers decisions)."""
    return int(os.environ.get("BENCH_CONSENT_REPLICAS", os.cpu_count() or 1))


def service_batch() -> int:
    """Records per batch of the consent service as the bench runs it (CONSENT_BATCH_MAX_RECORDS
    or its default): the baseline consumers batch the same."""
    default = ConsentSettings.model_fields["batch_max_records"].default
    return int(os.environ.get("CONSENT_BATCH_MAX_RECORDS", default))


async def baseline(
    bench: Bench, workload: ConsentWorkload, rows: str = "same", processes: int = 1, pair: int = 1
) -> tuple[float, dict[str, Any]]:
    """A bare consumer, on its own topic with the same events. `rows` "full": the service's
    work (its batch read, rows, outbox row and the real relay publishing), timed to the last
    state published as the service is; "same": the service's rows only (no reads, no outbox,
    publishes nothing), timed to its last commit; "slim" a narrower set of rows. `processes`
    > 1: that many in one consumer group (as the service's replicas), done when the group's
    committed offsets reach the end (and, for "full", the outbox is empty). Each `pair` has
    its own topic and schema. The info has the produce rate of the load."""
    name = {"same": f"ingestbase{pair}", "full": f"ingestfull{pair}"}.get(rows, f"ingest{rows}")
    topics = await bench.topics(name)
    schema = bench.schema(name)
    group = f"bench-baseline-{schema}"  # the group bench.baselines joins
    full = rows == "full"
    args: dict[str, Any] = {
        "dsn": bench.database_url,
        "kafka": bench.kafka,
        "schema": schema,
        "topic": topics.consent_changes,
        "state_topic": topics.consent_state,
        "rows": rows,
        "batch": service_batch(),
    }
    if processes == 1 and not full:
        args["expect"] = workload.events
    kind = "ingest-full" if full else "ingest"
    children = [
        bench.spawn(f"baseline-{name}-{n}", ["-m", "bench.baselines", kind, json.dumps(args)])
        for n in range(1, processes + 1)
    ]
    conn = await bench.connect()
    try:
        messages = list(workload.messages())
        for child in children:
            await read_json_lines(child, "ready", 60)
        await wait_group(bench.kafka, group, processes)
        await bench.checkpoint(conn)
        async with producer(bench.kafka) as prod:
            started = time.time()
            await produce_all(prod, topics.consent_changes, messages)
        produced = time.time()
        if processes > 1 or full:
            done = Completion(
                bench.kafka, group, topics.consent_changes, *((conn, schema) if full else ())
            )
            if not await done.wait(600):
                raise TimeoutError("the baseline did not finish in time")
            for child in children:
                child.stop()
        ends = [await read_json_lines(child, "done", 600) for child in children]
        if sum(end["count"] for end in ends) < workload.events:
            raise AssertionError("the baseline consumed fewer events than were produced")
        info = {"produce_rate": rate(workload.events, produced - started)}
        if full:
            latest, last_published = await read_latest(bench.kafka, topics.consent_state)
            if len(latest) < workload.subjects:
                raise AssertionError("the full-work baseline published fewer subjects' states")
            return rate(workload.events, last_published - started), info
        return rate(workload.events, max(end["done"] for end in ends) - started), info
    finally:
        await conn.close()
        for child in children:
            child.stop()


async def start_stage(bench: Bench, stage: ConsentStage, pair: int) -> list[Child]:
    """Fresh topics and schema for `pair`, and the consent replicas on them (ready, in the
    group); `stage` then describes them. The first child is replica 1."""
    stage.topics = await bench.topics(f"consent{pair}")
    stage.schema = bench.schema(f"consent{pair}")
    stage.replicas = replicas()
    children = [
        await services.start(bench, "consent", label, stage.schema, stage.topics)
        for label in [
            f"consent{pair}",
            *(f"consent{pair}-{n}" for n in range(2, stage.replicas + 1)),
        ]
    ]
    stage.child = children[0]
    await wait_group(bench.kafka, f"bench-{stage.schema}", stage.replicas)
    return children


async def run_service(
    bench: Bench, workload: ConsentWorkload, stage: ConsentStage, within: float = 600
) -> float:
    """Produce the workload to the running consent service; the rate until the last state
    was published. Completion is detected from the group's offsets and the outbox, so the
    timed window carries no reader of the output; every subject's final state is then
    checked on `consent.state` (untimed), and a missing or wrong one fails the scenario."""
    assert stage.topics is not None
    messages = list(workload.messages())
    conn = await bench.connect()
    try:
        done = Completion(
            bench.kafka, f"bench-{stage.schema}", stage.topics.consent_changes, conn, stage.schema
        )
        await bench.checkpoint(conn)
        async with producer(bench.kafka) as prod:
            started = time.time()
            await produce_all(prod, stage.topics.consent_changes, messages)
        stage.produce_rate = rate(workload.events, time.time() - started)
        if not await done.wait(within):
            raise TimeoutError(f"the service did not finish {workload.events:,} events in time")
    finally:
        await conn.close()
    latest, last_published = await read_latest(bench.kafka, stage.topics.consent_state)
    wrong = 0
    for subject, expected in workload.final_state().items():
        parsed = state_purposes(latest.get(subject.encode()))
        if parsed is None or not matches(expected, parsed[1]):
            wrong += 1
    if wrong:
        raise AssertionError(f"{wrong} subjects' last published state is not their final state")
    return rate(workload.events, last_published - started)


FULL_WHAT = (
    "full-work baseline: bare aiokafka → asyncpg, {n} process(es) in one group as the service; "
    "per batch the service's one read (states and heads), its rows (inbox, ledger COPY, subjects "
    "and heads upserts), one packed outbox row of a state per event with its NOTIFY, and the real "
    "transactional relay publishing and deleting them; timed to the last state published"
)
ROWS_WHAT = (
    "rows-only baseline (same rows, no outbox/publish): {n} process(es) writing the service's "
    "rows from state kept in memory; no reads, no outbox, publishes nothing"
)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


async def run(bench: Bench, stage: ConsentStage) -> list[Row]:
    events, subjects = bench.size(200_000), bench.size(50_000)
    workload = ConsentWorkload(events=events, subjects=subjects)
    text = f"{events:,} changes over {subjects:,} subjects"
    row = Row(
        "1 consent ingest",
        "end to end (service / full-work baseline)",
        None,
        "events/s",
        target=TARGET,
        workload=text,
    )
    rows_row = Row(
        "1 consent ingest",
        "end to end (service / rows-only baseline)",
        None,
        "events/s",
        target=TARGET,
        workload=text,
    )
    row.baseline_what = FULL_WHAT.format(n=replicas())
    rows_row.baseline_what = ROWS_WHAT.format(n=replicas())
    out = [row, rows_row]
    slim = ""
    try:
        # The narrower baseline of earlier runs, kept for comparison (no ratio is its).
        # It runs first: on a freshly started stack (`make bench`) it takes the cold start of
        # Kafka and PostgreSQL, which a baseline of a ratio would otherwise take alone.
        row.extra["slim_baseline"], _ = await baseline(bench, workload, "slim")
        slim = (
            f"slim baseline (one process; inbox, 6-column ledger, state per purpose): "
            f"{row.extra['slim_baseline']:,.0f} events/s"
        )
    except Exception as exc:
        slim = f"slim baseline failed: {fail_note(exc)}"
    if not has_service("consent"):
        row.note = rows_row.note = "services/consent/app.py not available yet"
        return out
    runs: list[dict[str, float]] = []
    count = pairs()
    for pair in range(1, count + 1):
        each: dict[str, float] = {}
        try:
            each["full"], info = await baseline(bench, workload, "full", replicas(), pair)
            each["full_produce"] = info["produce_rate"]
            each["rows"], info = await baseline(bench, workload, "same", replicas(), pair)
            each["rows_produce"] = info["produce_rate"]
        except Exception as exc:
            row.note = rows_row.note = f"baseline failed: {fail_note(exc)}"
            return out
        try:
            children = await start_stage(bench, stage, pair)
            first_replica = children[0]
            if pair < count:
                each["service"] = await run_service(bench, workload, stage)
                each["service_produce"] = stage.produce_rate or 0.0
                runs.append(each)
                for child in children:
                    child.stop()
                continue
            # the last pair's service stays up for the other scenarios, and is the one profiled
            before = await metrics(first_replica)
            with bench.profiled(first_replica, "consent-ingest") as phase:
                each["service"] = await run_service(bench, workload, stage)
            each["service_produce"] = stage.produce_rate or 0.0
            runs.append(each)
            after = await metrics(first_replica)
        except Exception as exc:
            row.note = rows_row.note = fail_note(exc, stage.child)
            return out

    def med(key: str) -> float | None:
        return median([r[key] for r in runs])

    row.value = rows_row.value = med("service")
    row.baseline = med("full")
    # the replay compares with the rows-only baseline, as before (a rebuild publishes nothing)
    rows_row.baseline = stage.baseline = med("rows")
    row.extra["pairs"] = runs
    produce = {key: med(f"{key}_produce") for key in ("full", "rows", "service")}
    row.extra["produce_rate"] = produce
    listed = ", ".join(
        f"{r['service']:,.0f} / {r['full']:,.0f} ({r['service'] / r['full']:.2f}) / "
        f"{r['rows']:,.0f} ({r['service'] / r['rows']:.2f})"
        for r in runs
    )
    produced = (
        "produce rate (load generator → Kafka, median events/s): "
        + ", ".join(f"{key} {number(value)}" for key, value in produce.items())
        + " (a figure near its produce rate is capped by the producer)"
    )
    wall = workload.events / runs[-1]["service"]
    first = "consent" if stage.replicas == 1 else "replica 1 (its CPU and batches)"
    deployed = f"{stage.replicas} replica(s) of the service (one per core), 6 partitions"
    common = [
        f"median of {len(runs)} pairs, events/s service / full-work baseline (ratio) / "
        f"rows-only baseline (ratio): {listed}",
        produced,
    ]
    row.note = "; ".join(
        part
        for part in (
            *common,
            deployed,
            f"last pair: {phase.note(first)}",
            batch_note(before, after, wall),
            slim,
        )
        if part
    )
    rows_row.note = "; ".join(common)
    stage.events, stage.subjects, stage.rate = events, subjects, row.value
    return out
