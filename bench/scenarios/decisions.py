"""Scenario 2: decision latency over HTTP (open loop, own process) and the client's may_process."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import Any

from bench.harness import API_TOKEN, RESULTS, Bench, Child, read_json_lines
from bench.report import Row, Target
from bench.scenarios.common import fail_note
from bench.scenarios.ingest import ConsentStage, run_service
from bench.stats import highest_sustained
from bench.workload import CONSENT_PURPOSES, ConsentWorkload, subject_id

P99_LIMIT_MS = 10.0
FIXED_RATE = 2_000
REPEATS = 3
"""Every loadgen step (the fixed rate too) runs this many times; the median attempt counts."""
TIMEOUT_MS = 1000.0
"""A request unanswered this long after its scheduled time is a timeout (counted as this)."""
STEPS = [500, 1_000, 1_500, 2_000, 3_000, 4_000, 5_000, 6_000, 8_000]


def paths_file(bench: Bench, subjects: int) -> str:
    rng = random.Random(11)
    lines = [
        f"/v1/subjects/{subject_id(rng.randrange(subjects))}/decisions"
        f"?purpose={rng.choice(CONSENT_PURPOSES)}"
        for _ in range(min(200_000, subjects * 2))
    ]
    path = RESULTS / "work" / bench.run_id / "paths.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return str(path)


async def load(
    bench: Bench,
    target: Child,
    paths: str,
    rates: Sequence[float],
    seconds: float,
    name: str,
    extra: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Run the load generator in its own process against `target`; its steps (`extra`
    arguments override the defaults)."""
    argv = ["-m", "bench.loadgen", "--port", str(target.port), "--token", API_TOKEN]
    argv += ["--paths-file", paths, "--duration", str(seconds), "--rates", *map(str, rates)]
    argv += ["--repeats", str(REPEATS), "--timeout-ms", str(TIMEOUT_MS)]
    argv += ["--stop-on-miss", "--p99-limit", str(P99_LIMIT_MS)] if len(rates) > 1 else []
    gen = bench.spawn(name, [*argv, *extra])
    within = 60 + (seconds + 1) * len(rates) * REPEATS * 2
    result = await read_json_lines(gen, "steps", within)
    gen.stop()
    steps: list[dict[str, Any]] = result["steps"]
    return steps


def ladder_note(steps: list[dict[str, Any]]) -> str:
    """Every step: the p99 of each of its attempts, the median attempt's errors and timeouts
    (both counted in its p99 as the timeout), and its verdict."""
    notes = []
    for step in steps:
        p99s = "/".join(f"{p:.1f}" for p in step.get("attempts") or [step["p99_ms"]])
        verdict = "kept up" if sustained([step]) else "missed"
        notes.append(f"{step['offered']:,.0f} req/s p99 {p99s} ms, {failures(step)}: {verdict}")
    return f"each step run {REPEATS} times, the median attempt counts; " + "; ".join(notes)


def failures(step: dict[str, Any]) -> str:
    """The median attempt's failed requests, e.g. `3 errors, 0 timeouts of 10,000`."""
    return f"{step['errors']} errors, {step['timeouts']} timeouts of {step['sent']:,}"


def fixed_note(step: dict[str, Any]) -> str:
    """The fixed-rate run's attempts and failures, and how failures enter its percentiles."""
    tries = "/".join(f"{p:.1f}" for p in step.get("attempts") or [step["p99_ms"]])
    return (
        f"run {REPEATS} times, median attempt (p99s {tries} ms); {failures(step)}; a failed or "
        f"late request counts as {step['timeout_ms']:,.0f} ms"
    )


def sustained(steps: list[dict[str, Any]]) -> float:
    return highest_sustained(
        [(s["offered"], s["achieved"], s["p99_ms"]) for s in steps], P99_LIMIT_MS
    )


async def seed_more_subjects(bench: Bench, stage: ConsentStage, subjects: int) -> None:
    """Bring the consent service to `subjects` subjects (one grant for each new one)."""
    extra = subjects - stage.subjects
    if extra <= 0:
        return
    workload = ConsentWorkload(
        events=extra, subjects=extra, first_subject=stage.subjects, seed=8, id_prefix="d"
    )
    await run_service(bench, workload, stage, within=300)
    stage.subjects = subjects
    stage.events += extra


async def may_process(bench: Bench, stage: ConsentStage) -> Row:
    """µs per call of the consent client's local decision, against a bare two-dict lookup."""
    from shared.consent_client import ConsentClient

    row = Row("2 decisions", "may_process (client, local)", None, "µs/call", target=Target("<", 5))
    row.baseline_what = "plain function, two dict look-ups"
    assert stage.topics is not None
    client = ConsentClient(bench.kafka, stage.topics.consent_state)
    started = time.perf_counter()
    await client.start()
    try:
        await asyncio.wait_for(client.wait_until_caught_up(), 600)
        caught_up = time.perf_counter() - started
        rng = random.Random(5)
        calls = [
            (subject_id(rng.randrange(stage.subjects)), rng.choice(CONSENT_PURPOSES))
            for _ in range(200_000)
        ]
        table = {s: dict.fromkeys(CONSENT_PURPOSES, True) for s, _ in calls}

        def bare(subject: str, purpose: str) -> bool:
            known = table.get(subject)
            return known.get(purpose, False) if known is not None else False

        row.baseline = per_call_us(bare, calls)
        row.value = per_call_us(client.may_process, calls)
        row.workload = (
            f"{len(client.cache):,} subjects cached; catch-up of the topic took {caught_up:.1f} s"
        )
    finally:
        await client.stop()
    return row


def per_call_us(fn: Any, calls: list[tuple[str, str]], rounds: int = 3) -> float:
    """Best of `rounds` passes over `calls`, in microseconds per call."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for subject, purpose in calls:
            fn(subject, purpose)
        best = min(best, time.perf_counter() - t0)
    return best / len(calls) * 1e6


async def run(bench: Bench, stage: ConsentStage) -> list[Row]:
    subjects = bench.size(100_000)
    seconds = max(3.0, 10 * min(1.0, bench.scale * 5))
    step_seconds = max(3.0, 5 * min(1.0, bench.scale * 5))
    p99 = Row(
        "2 decisions", f"p99 at {FIXED_RATE:,} req/s", None, "ms", target=Target("<", P99_LIMIT_MS)
    )
    p50 = Row("2 decisions", f"p50 at {FIXED_RATE:,} req/s", None, "ms")
    top = Row("2 decisions", "max rate with p99 < 10 ms", None, "req/s", target=Target(">=", 3_000))
    rows = [p50, p99, top]
    base_what = "trivial FastAPI route, same uvicorn, same generator"
    for row in rows:
        row.baseline_what = base_what
        row.workload = (
            f"{subjects:,} subjects, open loop, {seconds:.0f} s (steps {step_seconds:.0f} s)"
        )
    paths = paths_file(bench, subjects)
    try:
        trivial = bench.service("trivial", "bench.trivial_app:create", {})
        await trivial.wait_ready("/docs")
        fixed = (await load(bench, trivial, paths, [FIXED_RATE], seconds, "loadgen-trivial"))[0]
        p50.baseline, p99.baseline = fixed["p50_ms"], fixed["p99_ms"]
        base_steps = await load(bench, trivial, paths, STEPS, step_seconds, "steps-trivial")
        top.baseline = sustained(base_steps)
        p99.extra["baseline_fixed"], top.extra["baseline_steps"] = fixed, base_steps
        base_failures = (
            f"baseline: fixed rate {failures(fixed)}; errors+timeouts per step "
            + ", ".join(f"{s['offered']:,.0f}: {s['errors']}+{s['timeouts']}" for s in base_steps)
        )
        trivial.stop()
    except Exception as exc:
        base_failures = ""
        for row in rows:
            row.note = f"baseline failed: {fail_note(exc)}"
    if stage.child is None or not stage.child.alive():
        for row in rows:
            row.note = "consent service not running (ingest scenario failed?)"
        return rows
    try:
        await seed_more_subjects(bench, stage, subjects)
        with bench.profiled(stage.child, "consent-decisions") as phase:
            fixed = (
                await load(bench, stage.child, paths, [FIXED_RATE], seconds, "loadgen-consent")
            )[0]
        p50.value, p99.value = fixed["p50_ms"], fixed["p99_ms"]
        p50.note = p99.note = f"{fixed_note(fixed)}; {phase.note('consent')}"
        p99.extra["fixed"] = fixed
        steps = await load(bench, stage.child, paths, STEPS, step_seconds, "steps-consent")
        top.value = sustained(steps)
        top.extra["steps"] = steps
        top.note = "; ".join(part for part in (ladder_note(steps), base_failures) if part)
    except Exception as exc:
        for row in rows:
            row.note = fail_note(exc, stage.child)
    try:
        rows.append(await may_process(bench, stage))
    except Exception as exc:
        rows.append(Row("2 decisions", "may_process", None, "µs/call", note=fail_note(exc)))
    return rows
