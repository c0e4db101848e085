"""Scenario 7: overload held and measured (issue #23).

HTTP: the decisions API is offered three times the rate it sustains (measured first, on the
same process) for 60 s; admission control (`http_max_in_flight`) must keep the accepted
requests' p99 under the decisions target and refuse the rest fast (503 + Retry-After), with
the process's memory flat. Consumer: a flood of events produced onto `consent.changes` while
consent runs; the lag grows, and RSS must stay bounded by the batch and fetch limits (compared
with the same process's peak after a normal-size workload).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench import services
from bench.harness import Bench, Child, produce_all, producer
from bench.report import Row, Target
from bench.scenarios.common import Completion, fail_note
from bench.scenarios.decisions import P99_LIMIT_MS, load, paths_file, sustained
from bench.workload import ConsentWorkload

SECTION = "7 overload"
LADDER = [500, 1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 8_000]
FLOOD_EVENTS = 1_000_000
FLOOD_WINDOW_S = 90.0
"""The flood is watched this long from its first send (the service need not finish it)."""
RSS_GROWTH_LIMIT = 1.5
"""Bounded means: peak RSS under overload at most this times the normal run's peak."""


@dataclass
class Samples:
    """RSS (MB) of a process and an extra reading, every `every` seconds, in the background."""

    child: Child
    probe: Callable[[], Any] | None = None
    every: float = 0.5
    rss: list[float] = field(default_factory=list)
    probes: list[Any] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Samples]:
        async def sample() -> None:
            while True:
                rss = self.child.rss_mb()
                if rss is not None:
                    self.rss.append(round(rss, 1))
                if self.probe is not None:
                    with contextlib.suppress(Exception):
                        self.probes.append(await self.probe())
                await asyncio.sleep(self.every)

        task = asyncio.create_task(sample())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def seeded_consent(
    bench: Bench, label: str, subjects: int, **settings: str
) -> tuple[Child, Any, Any]:
    """A consent service on fresh topics, `subjects` subjects ingested (one grant each)."""
    topics = await bench.topics(label)
    schema = bench.schema(label)
    child = await services.start(bench, "consent", label, schema, topics, **settings)
    workload = ConsentWorkload(events=subjects, subjects=subjects, seed=3, id_prefix="o")
    conn = await bench.connect()
    try:
        done = Completion(bench.kafka, f"bench-{schema}", topics.consent_changes, conn, schema)
        async with producer(bench.kafka) as prod:
            await produce_all(prod, topics.consent_changes, workload.messages())
        if not await done.wait(300):
            raise TimeoutError(f"{label}: the seed workload was not consumed in time")
    finally:
        await conn.close()
    return child, topics, schema


@dataclass
class Offered:
    """One overload run: the load generator's step, RSS before and during, CPU share."""

    step: dict[str, Any]
    before: float
    rss: list[float]
    cpu: str

    @property
    def growth(self) -> float | None:
        return max(self.rss, default=self.before) / self.before if self.before else None

    def note(self) -> str:
        s = self.step
        return (
            f"{s['ok']:,} accepted of {s['sent']:,} ({s['achieved']:,.0f} req/s), "
            f"{s['refused']:,} refused (p99 {s['refused_p99_ms']:,.1f} ms), "
            f"{s['errors'] - s['refused']:,} other errors, {s['timeouts']:,} timeouts; "
            f"accepted p99 {s['accepted_p99_ms']:,.1f} ms; RSS {self.before:.0f} MB before, "
            f"max {max(self.rss, default=self.before):.0f} MB; {self.cpu}"
        )


async def offer(
    bench: Bench, child: Child, paths: str, rate: float, seconds: float, name: str
) -> Offered:
    """`rate` requests/s for `seconds` over 256 connections, RSS sampled meanwhile."""
    before = child.rss_mb() or 0.0
    argv = ["--connections", "256", "--repeats", "1"]
    with bench.profiled(child, name) as phase:
        async with Samples(child).running() as samples:
            step = (await load(bench, child, paths, [rate], seconds, name, argv))[0]
    return Offered(step, before, samples.rss, phase.note("consent"))


async def http_overload(bench: Bench) -> list[Row]:
    """Three times the sustained decision rate for 60 s against one consent process, with
    admission control (the default 32 in flight) and, as the baseline, without it."""
    subjects = bench.size(20_000, 1_000)
    seconds = max(10.0, 60 * min(1.0, bench.scale * 5))
    p99 = Row(SECTION, "decisions at 3x: accepted p99", None, "ms", target=Target("<", 10))
    refused = Row(SECTION, "decisions at 3x: refused (503)", None, "requests")
    refusal = Row(SECTION, "decisions at 3x: refusal p99", None, "ms", target=Target("<", 10))
    rss = Row(SECTION, "decisions at 3x: max RSS / before", None, "x")
    rss.target = Target("<", RSS_GROWTH_LIMIT)
    rows = [p99, refused, refusal, rss]
    in_flight = os.environ.get("BENCH_OVERLOAD_IN_FLIGHT", "")  # default: the service's
    settings = {"http_max_in_flight": in_flight} if in_flight else {}
    child, topics, schema = await seeded_consent(bench, "overload", subjects, **settings)
    paths = paths_file(bench, subjects)
    ladder = await load(bench, child, paths, LADDER, 3, "overload-ladder")
    found = sustained(ladder)
    rate = found or LADDER[0]  # not even the lowest step kept up (a loaded machine): from it
    offered = float(os.environ.get("BENCH_OVERLOAD_RATE", 3 * rate))
    held = await offer(bench, child, paths, offered, seconds, "overload-3x")
    child.stop()
    # the baseline: the same process and data with admission control out of the way
    child = await services.start(
        bench, "consent", "overload-open", schema, topics, http_max_in_flight="1000000"
    )
    unheld = await offer(bench, child, paths, offered, seconds, "overload-3x-open")
    child.stop()
    p99.value, p99.baseline = held.step["accepted_p99_ms"], unheld.step["accepted_p99_ms"]
    refused.value = held.step["refused"]
    refusal.value = held.step["refused_p99_ms"]
    rss.value, rss.baseline = held.growth, unheld.growth
    for row in rows:
        row.baseline_what = "the same overload without admission control (in flight unbounded)"
        row.workload = (
            f"{subjects:,} subjects; sustained {found:,.0f} req/s (ladder, p99 < "
            f"{P99_LIMIT_MS:g} ms, median of 3 attempts), offered {offered:,.0f} req/s for "
            f"{seconds:.0f} s over 256 connections; http_max_in_flight {in_flight or 'default'}"
        )
    p99.note = f"held: {held.note()}; without admission control: {unheld.note()}"
    rss.extra.update(rss_mb=held.rss, rss_mb_open=unheld.rss)
    p99.extra.update(step=held.step, step_open=unheld.step, ladder=ladder)
    return rows


async def lag(kafka: str, group: str, topic: str) -> int:
    """Records on `topic` the group has not committed yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka)
    await admin.start()
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        committed = await admin.list_consumer_group_offsets(group)
        return sum(
            end - (committed[tp].offset if tp in committed else 0) for tp, end in ends.items()
        )
    finally:
        await consumer.stop()
        await admin.close()


async def consumer_flood(bench: Bench) -> list[Row]:
    """A flood onto consent.changes while consent runs: lag grows, RSS stays bounded."""
    normal = bench.size(20_000, 1_000)
    flood = int(os.environ.get("BENCH_FLOOD_EVENTS", bench.size(FLOOD_EVENTS, 10_000)))
    row = Row(SECTION, "consumer flood: max RSS / normal run", None, "x")
    row.target = Target("<", RSS_GROWTH_LIMIT)
    row.baseline_what = f"peak RSS of the same process after {normal:,} events at normal pace"
    child, topics, schema = await seeded_consent(bench, "flood", normal)
    normal_peak = child.peak_mb() or 0.0
    group = f"bench-{schema}"
    workload = ConsentWorkload(events=flood, subjects=flood // 4, seed=4, id_prefix="f")

    async def probe() -> tuple[float, int]:
        return time.monotonic(), await lag(bench.kafka, group, topics.consent_changes)

    started = time.monotonic()
    async with Samples(child, probe, every=1.0).running() as samples:
        async with producer(bench.kafka) as prod:
            await produce_all(prod, topics.consent_changes, workload.messages())
        produced_s = time.monotonic() - started
        await asyncio.sleep(max(0.0, FLOOD_WINDOW_S - produced_s))
    lags = [n for _, n in samples.probes]
    peak = max(samples.rss, default=0.0)
    row.value = peak / normal_peak if normal_peak else None
    consumed = flood - (lags[-1] if lags else flood)
    row.workload = (
        f"{flood:,} changes produced in {produced_s:.0f} s ({flood / produced_s:,.0f}/s) onto "
        f"6 partitions while one consent process consumes; watched {FLOOD_WINDOW_S:.0f} s"
    )
    row.note = (
        f"RSS normal peak {normal_peak:.0f} MB, flood max {peak:.0f} MB; lag max "
        f"{max(lags, default=0):,}, at the end {lags[-1] if lags else 0:,} "
        f"({consumed:,} consumed in the window)"
    )
    row.extra.update(rss_mb=samples.rss, lag=lags)
    child.stop()
    return [row]


async def run(bench: Bench) -> list[Row]:
    """Both parts (BENCH_OVERLOAD_PARTS=http,flood picks)."""
    parts = os.environ.get("BENCH_OVERLOAD_PARTS", "http,flood").split(",")
    rows: list[Row] = []
    for name, part in (("http", http_overload), ("flood", consumer_flood)):
        if name not in parts:
            continue
        try:
            rows.extend(await part(bench))
        except Exception as exc:  # one failed part must not hide the other
            rows.append(Row(SECTION, f"{name} part failed", None, "", note=fail_note(exc)))
    return rows
