"""Scenario 6: resident memory of each idle service, next to a bare interpreter's."""

from __future__ import annotations

import asyncio

from bench import services
from bench.harness import Bench, read_json_lines
from bench.report import Row, Target
from bench.scenarios.common import fail_note, has_service

TARGET = Target("<", 150)
IDLE_SECONDS = 5.0


async def bare_rss(bench: Bench, name: str) -> float | None:
    """RSS of `python -c` that imports what the service process imports, then idles."""
    code = (
        f"import json, time, uvicorn, services.{name}.app; "
        "print(json.dumps({'ready': time.time()}), flush=True); time.sleep(120)"
    )
    child = bench.spawn(f"bare-{name}", ["-c", code])
    try:
        await read_json_lines(child, "ready", 60)
        await asyncio.sleep(1.0)
        return child.rss_mb()
    finally:
        child.stop()


async def one(bench: Bench, name: str) -> Row:
    row = Row("6 footprint", f"{name} idle RSS", None, "MB", target=TARGET)
    row.baseline_what = "bare python importing the same modules"
    row.workload = f"fresh process, ready, then {IDLE_SECONDS:.0f} s idle"
    if not has_service(name):
        row.note = f"services/{name}/app.py not available yet"
        return row
    child = None
    try:
        row.baseline = await bare_rss(bench, name)
        topics = await bench.topics(f"idle{name}")
        schema = bench.schema(f"idle{name}")
        child = await services.start(bench, name, f"idle-{name}", schema, topics)
        await asyncio.sleep(IDLE_SECONDS)
        row.value = child.rss_mb()
    except Exception as exc:
        row.note = fail_note(exc, child)
    finally:
        if child is not None:
            child.stop()
    return row


async def run(bench: Bench) -> list[Row]:
    return [await one(bench, name) for name in ("consent", "retention", "export")]
