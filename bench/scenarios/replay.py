"""Scenario 5: rebuild the consent projection from its topics, and compare it with the live one.

The live consent service of scenarios 1-2 is topped up towards 1,000,000 consumed events (as
far as the run's time budget allows: the live service must consume them first), then
`python -m services.consent.rebuild` replays everything from offset zero into a new schema in
its own process. Baseline: the bare consumer's rate from scenario 1 (same run).
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

from bench.harness import Bench
from bench.report import Row, Target
from bench.scenarios.common import fail_note, wait_until
from bench.scenarios.ingest import ConsentStage, run_service
from bench.stats import rate
from bench.workload import BASE_TIME, ConsentWorkload

TARGET = Target(">=", 20_000)
TOP_UP_SECONDS = 150.0
COMPARE = """
SELECT count(*) FROM (
    (SELECT subject_id, version, doc FROM "{a}".subjects
     EXCEPT SELECT subject_id, version, doc FROM "{b}".subjects)
    UNION ALL
    (SELECT subject_id, version, doc FROM "{b}".subjects
     EXCEPT SELECT subject_id, version, doc FROM "{a}".subjects)
) AS differences
"""


async def top_up(bench: Bench, stage: ConsentStage, wanted: int) -> str:
    """Feed the live service towards `wanted` events within the time budget; a note."""
    missing = wanted - stage.events
    if missing <= 0 or not stage.rate:
        return ""
    affordable = int(stage.rate * TOP_UP_SECONDS)
    extra = min(missing, affordable)
    workload = ConsentWorkload(
        events=extra,
        subjects=stage.subjects,
        seed=9,
        id_prefix="r",
        start=BASE_TIME + timedelta(days=1),
    )
    await run_service(bench, workload, stage, within=TOP_UP_SECONDS * 3)
    stage.events += extra
    if extra < missing:
        return (
            f"reduced from {wanted:,}: the live service must consume every event first and "
            f"ingests at {stage.rate:,.0f}/s (budget {TOP_UP_SECONDS:.0f} s of top-up)"
        )
    return ""


async def run(bench: Bench, stage: ConsentStage) -> list[Row]:
    wanted = bench.size(1_000_000)
    row = Row("5 replay", "rebuild consent projection", None, "events/s", target=TARGET)
    row.baseline, row.baseline_what = stage.baseline, "rows-only baseline of scenario 1"
    same = Row("5 replay", "rebuilt = live (differing subjects)", None, "subjects")
    same.target = Target("<=", 0)
    if stage.child is None or stage.topics is None or not stage.child.alive():
        row.note = same.note = "consent service not running (ingest scenario failed?)"
        return [row, same]
    try:
        reduced = await top_up(bench, stage, wanted)
        row.workload = f"{stage.events:,} events over {stage.subjects:,} subjects"
        row.note = reduced
        schema = bench.schema("rebuilt")
        env = bench.service_env("CONSENT_", stage.schema, stage.topics)
        env["CONSENT_LEDGER_KEY"] = "bench-ledger-key-" + bench.run_id
        started = time.time()
        workers = int(os.environ.get("BENCH_REBUILD_WORKERS", os.cpu_count() or 1))
        argv = ["-m", "services.consent.rebuild", schema, "--workers", str(workers)]
        child = bench.spawn("rebuild", argv, env)
        cpu: list[float] = []

        def finished() -> bool:
            used = child.cpu_seconds()  # None once it has exited: keep the last reading
            if used is not None:
                cpu.append(used)
            return not child.alive()

        with bench.profiled(child, "consent-rebuild"):
            await wait_until(finished, within=900, every=0.2)
        if child.alive() or child.proc.returncode != 0:
            raise RuntimeError(f"rebuild failed or timed out:\n{child.tail(5)}")
        elapsed = time.time() - started
        row.value = rate(stage.events, elapsed)
        row.extra["log"] = child.tail(2)
        conn = await bench.connect()
        try:
            same.value = await conn.fetchval(COMPARE.format(a=stage.schema, b=schema))
            live = await conn.fetchval(f'SELECT count(*) FROM "{stage.schema}".subjects')
        finally:
            await conn.close()
        same.workload = f"subjects table (id, version, state document) of {live:,} subjects"
        timing = f"process start to exit, incl. migrate; {workers} worker process(es)"
        share = f"rebuild CPU {cpu[-1] / elapsed:.0%} of a core" if cpu and workers == 1 else ""
        row.note = "; ".join(part for part in (reduced, timing, share) if part)
    except Exception as exc:
        row.note = fail_note(exc)
    return [row, same]
