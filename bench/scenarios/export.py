"""Scenario 4: export assembly: 100,000 records from 6 owners into one bundle.

The bench plays the six data owners: it reads their export jobs, seals their records to each
job's key (before the clock starts), then sends every part; the figure is the time from the
first part sent to the request's `completed` status, and the export process's peak RSS.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from bench import services
from bench.harness import RESULTS, Bench, Child, produce_all, producer, read_json_lines
from bench.report import Row, Target
from bench.scenarios.common import TopicWatcher, fail_note, has_service, wait_until
from bench.workload import export_records
from shared.contract.codec import decode, encode, new_event
from shared.contract.events import (
    ExportJob,
    ExportPart,
    ExportRequested,
    ExportRequestedData,
)
from shared.contract.sealing import sealed_parts

SUBJECT = "bsub_export"


async def baseline(bench: Bench, count: int) -> dict[str, Any]:
    path = RESULTS / "work" / bench.run_id / "baseline-bundle.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    args = {"count": count, "path": str(path)}
    child = bench.spawn("baseline-export", ["-m", "bench.baselines", "export", json.dumps(args)])
    try:
        return await read_json_lines(child, "done", 300)
    finally:
        child.stop()
        path.unlink(missing_ok=True)


async def service_run(bench: Bench, count: int) -> tuple[float, float | None, Child]:
    parts_by_owner = export_records(count)
    owners = {owner: [category] for owner, category in parts_by_owner}
    topics = await bench.topics("export")
    child = await services.start(
        bench, "export", "export", bench.schema("export"), topics, owners=json.dumps(owners)
    )
    jobs: dict[str, ExportJob] = {}
    status: dict[str, str] = {}

    def on_job(record: Any) -> None:
        event = decode(record.value)
        if isinstance(event, ExportJob):
            jobs[event.data.owner] = event

    def on_status(record: Any) -> None:
        data = orjson.loads(record.value).get("data", {})
        status[data.get("request_id", "")] = data.get("status", "")

    job_watch = TopicWatcher(bench.kafka, topics.privacy_jobs, on_job)
    status_watch = TopicWatcher(bench.kafka, topics.requests_status, on_status)
    await job_watch.start()
    await status_watch.start()
    try:
        request = new_event(
            ExportRequested,
            subject=SUBJECT,
            source="bench-portal",
            data=ExportRequestedData(request_id=f"req-{bench.run_id}", verified_by="bench"),
        )
        async with producer(bench.kafka) as prod:
            await produce_all(prod, topics.privacy_requests, [encode(request)])
            if not await wait_until(lambda: len(jobs) >= len(owners), within=60):
                raise TimeoutError(f"only {len(jobs)} of {len(owners)} export jobs issued")
            messages = []
            for (owner, category), records in parts_by_owner.items():
                job = jobs[owner]
                for data in sealed_parts(job.data, category, records):
                    part = new_event(
                        ExportPart,
                        subject=SUBJECT,
                        source=f"bench-{owner}",
                        data=data,
                        time=datetime.now(UTC),
                    )
                    messages.append(encode(part))
            request_id = request.data.request_id
            with bench.profiled(child, "export-assembly") as phase:
                started = time.time()
                await produce_all(prod, topics.privacy_receipts, messages)
                finished = await wait_until(
                    lambda: status.get(request_id) in ("completed", "partially_completed"),
                    within=300,
                )
        if not finished:
            raise TimeoutError(f"bundle not completed; status {status.get(request_id)!r}")
        if status[request_id] != "completed":
            raise RuntimeError(f"bundle {status[request_id]} (a part failed)")
        bench.notes["export"] = phase.note("export")
        return status_watch.last_at - started, child.peak_mb(), child
    finally:
        await job_watch.stop()
        await status_watch.stop()


async def run(bench: Bench) -> list[Row]:
    count = bench.size(100_000)
    seconds = Row("4 export assembly", "bundle time", None, "s", target=Target("<", 10))
    peak = Row("4 export assembly", "peak RSS of export", None, "MB", target=Target("<", 300))
    rows = [seconds, peak]
    for row in rows:
        row.workload = f"{count:,} records from 6 owners, sealed inline parts"
        row.baseline_what = "zipfile of the same records, one process"
    try:
        found = await baseline(bench, count)
        seconds.baseline, peak.baseline = found["seconds"], found["peak_mb"]
    except Exception as exc:
        for row in rows:
            row.note = f"baseline failed: {fail_note(exc)}"
    if not has_service("export"):
        for row in rows:
            row.note = "services/export/app.py not available yet"
        return rows
    child = None
    try:
        seconds.value, peak.value, child = await service_run(bench, count)
        seconds.note = "first part sent → completed status (decrypting every part); " + (
            bench.notes.get("export", "")
        )
    except Exception as exc:
        for row in rows:
            row.note = fail_note(exc)
    finally:
        if child is not None:
            child.stop()
    return rows
