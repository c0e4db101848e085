"""The benchmark run: infrastructure, every scenario in turn, the table, cleanup."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from bench import report, sqltime
from bench.harness import RESULTS, ROOT, Bench
from bench.infra import provide
from bench.profile import render
from bench.report import Row
from bench.scenarios import decisions, export, footprint, ingest, overload, replay, timers
from bench.scenarios.ingest import ConsentStage


def log(message: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.decode().strip()


def scenarios(bench: Bench) -> list[tuple[str, Callable[[], Awaitable[list[Row]]]]]:
    stage = ConsentStage()
    return [
        ("footprint", lambda: footprint.run(bench)),
        ("ingest", lambda: ingest.run(bench, stage)),
        ("decisions", lambda: decisions.run(bench, stage)),
        ("replay", lambda: replay.run(bench, stage)),
        ("timers", lambda: timers.run(bench)),
        ("export", lambda: export.run(bench)),
        ("overload", lambda: overload.run(bench)),
    ]


async def reachable(bench: Bench) -> bool:
    """Both Kafka and PostgreSQL answer."""
    try:
        conn = await bench.connect()
        await conn.close()
        admin = AIOKafkaAdminClient(bootstrap_servers=bench.kafka, request_timeout_ms=5000)
        await admin.start()
        await admin.close()
    except Exception:
        return False
    return True


async def run_all(
    bench: Bench, only: set[str], restart: Callable[[], tuple[str, str]] | None
) -> list[Row]:
    rows: list[Row] = []
    for name, scenario in scenarios(bench):
        if only and name not in only:
            continue
        if restart is not None and not await reachable(bench):
            log("Kafka or PostgreSQL went away (stopped from outside the bench?): starting again")
            bench.kafka, bench.database_url = await asyncio.to_thread(restart)
            bench.notes["infra"] = f"infrastructure restarted before {name}"
        log(f"{name} …")
        started = time.monotonic()
        try:
            found = await scenario()
        except Exception as exc:  # one broken scenario must not hide the others
            found = [Row(name, "scenario failed", None, "", note=f"{type(exc).__name__}: {exc}")]
        for row in found:
            row.extra["scenario_seconds"] = round(time.monotonic() - started, 1)
            log(f"  {row.figure}: {report.number(row.value)} {row.unit} {row.note}")
        rows.extend(found)
    return rows


def meta(bench: Bench, origin: str, seconds: float) -> dict[str, Any]:
    return {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "commit": commit(),
        "scale": bench.scale,
        "infrastructure": origin,
        "run": bench.run_id,
        "wall": f"{seconds:.0f} s",
        **({"warning": bench.notes["infra"]} if "infra" in bench.notes else {}),
    }


async def main_async() -> int:
    scale = float(os.environ.get("BENCH_SCALE", "1"))
    only = {s.strip() for s in os.environ.get("BENCH_ONLY", "").split(",") if s.strip()}
    started = time.monotonic()
    with provide() as infra:
        profile = os.environ.get("BENCH_PROFILE", "") not in ("", "0")
        bench = Bench(infra.kafka, infra.database_url, scale, profile=profile)
        log(f"run {bench.run_id}: scale {scale}, {os.cpu_count()} cores, {infra.origin}")
        try:
            t0 = time.monotonic()
            segments = await bench.warm_wal()
            log(f"PostgreSQL WAL warmed: {segments} segments in {time.monotonic() - t0:.0f} s")
            rows = await run_all(bench, only, infra.restart)
        finally:
            log("cleaning up (processes, schemas, topics)")
            await bench.cleanup()
        info = meta(bench, infra.origin, time.monotonic() - started)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    paths = report.write(RESULTS, rows, info, stamp)
    print(report.markdown(rows, info))
    sections = [render(label, found) for label, found in bench.profiles.items()]
    for found in sorted((RESULTS / "profiles").glob(f"{bench.run_id}-*-sql.json")):
        name = found.name.removeprefix(f"{bench.run_id}-").removesuffix("-sql.json")
        sections.append(sqltime.render(name, sqltime.summary(json.loads(found.read_text()))))
    if sections:
        path = RESULTS / f"profiles-{stamp}.md"
        heading = "# Profiles (py-spy: share of busy samples; SQL: wall time awaited)\n\n"
        path.write_text(heading + "\n".join(sections))
        paths.append(path)
        print("\n".join(sections))
    log("written: " + ", ".join(str(p.relative_to(ROOT)) for p in paths))
    return 0


def main() -> None:
    sys.exit(asyncio.run(main_async()))
