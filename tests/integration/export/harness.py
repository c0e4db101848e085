"""A running export service with simulated data owners (real Kafka + PostgreSQL)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from services.export.parts import KeyVault
from services.export.settings import ExportSettings
from shared.contract.codec import decode, new_event
from shared.contract.events import (
    ExportJob,
    ExportPart,
    ExportPartData,
    ExportRequested,
    RequestStatusChanged,
)
from shared.contract.sealing import records_bytes, sealed_parts
from shared.contract.topics import Topics
from shared.plumbing.clock import ManualClock
from shared.plumbing.service import Runtime
from tests.support import events as make
from tests.support.infra import Infra
from tests.support.kafka import produce, read_topic

SERVICE_KEY = bytes(range(32))
TOKEN = "export-t0ken-for-tests"
OWNER_SOURCE = "owner-simulator"


def settings_for(infra: Infra, topics: Topics, schema: str, root: Path) -> ExportSettings:
    return ExportSettings(
        kafka_bootstrap_servers=infra.kafka,
        database_url=infra.database_url,
        db_schema=schema,
        group_id=f"g-{schema}",
        topics=topics,
        api_token=TOKEN,
        service_key=base64.b64encode(SERVICE_KEY).decode(),
        link_secret="link-secret-for-tests-0123456789",
        storage_dir=root / "storage",
        exchange_dir=root / "exchange",
        loop_interval=0.1,
        batch_timeout_ms=20,
    )


@dataclass
class Harness:
    infra: Infra
    topics: Topics
    schema: str
    settings: ExportSettings
    clock: ManualClock
    runtime: Runtime[Any]
    http: httpx.AsyncClient
    jobs_seen: dict[str, list[ExportJob]] = field(default_factory=dict)

    @property
    def storage(self) -> Path:
        return self.settings.storage_dir

    @property
    def exchange(self) -> Path:
        return self.settings.exchange_dir

    async def request_export(self, subject: str, request_id: str) -> ExportRequested:
        event = make.export_requested(
            subject, request_id, verified_by="portal:session", at=self.clock.now()
        )
        await produce(self.infra.kafka, self.topics.privacy_requests, [event])
        return event

    async def cancel(self, subject: str, request_id: str) -> None:
        event = make.request_cancelled(subject, request_id, at=self.clock.now())
        await produce(self.infra.kafka, self.topics.privacy_requests, [event])

    async def jobs(self, request_id: str, count: int) -> dict[str, ExportJob]:
        """The export jobs of a request, as owners read them from privacy.jobs."""

        def enough(records: list[Any]) -> bool:
            return len(_jobs_of(records, request_id)) >= count

        records = await read_topic(self.infra.kafka, self.topics.privacy_jobs, until=enough)
        found = _jobs_of(records, request_id)
        assert len(found) == count, f"expected {count} jobs, got {sorted(found)}"
        return found

    async def send(self, *events: Any) -> None:
        await produce(self.infra.kafka, self.topics.privacy_receipts, list(events))

    async def statuses(
        self, request_id: str, until: Callable[[list[RequestStatusChanged]], bool]
    ) -> list[RequestStatusChanged]:
        def mine(records: list[Any]) -> list[RequestStatusChanged]:
            events = [decode(r.value) for r in records]
            return [
                e
                for e in events
                if isinstance(e, RequestStatusChanged) and e.data.request_id == request_id
            ]

        records = await read_topic(
            self.infra.kafka, self.topics.requests_status, until=lambda r: until(mine(r))
        )
        found = mine(records)
        assert until(found), [e.data.status.value for e in found]
        return found

    async def wait_status(self, request_id: str, status: str) -> RequestStatusChanged:
        found = await self.statuses(
            request_id, lambda events: any(e.data.status.value == status for e in events)
        )
        return next(e for e in found if e.data.status.value == status)

    async def db(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.infra.database_url)
        try:
            await conn.execute(f'SET search_path TO "{self.schema}"')
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    async def poll_db(
        self, query: str, *args: Any, until: Callable[[list[asyncpg.Record]], bool]
    ) -> list[asyncpg.Record]:
        deadline = time.monotonic() + 30
        while True:
            rows = await self.db(query, *args)
            if until(rows) or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.1)

    async def private_key(self, request_id: str) -> bytes | None:
        """What the service holds of the request's key (decrypted as the service would)."""
        rows = await self.db("SELECT sealed_key FROM requests WHERE request_id = $1", request_id)
        sealed = rows[0]["sealed_key"]
        return None if sealed is None else KeyVault(SERVICE_KEY).open(bytes(sealed))

    async def export_view(self, request_id: str) -> dict[str, Any]:
        response = await self.http.get(
            f"/v1/exports/{request_id}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def _jobs_of(records: list[Any], request_id: str) -> dict[str, ExportJob]:
    jobs = {}
    for record in records:
        event = decode(record.value)
        if isinstance(event, ExportJob) and event.data.request_id == request_id:
            jobs[event.data.owner] = event
    return jobs


def inline_parts(
    job: ExportJob, category: str, records: list[dict[str, Any]], max_bytes: int = 256 * 1024
) -> list[ExportPart]:
    """What an owner sends: its records sealed to the job's key, in numbered chunks."""
    return [
        new_event(ExportPart, subject=job.subject, source=f"{job.data.owner}-service", data=data)
        for data in sealed_parts(job.data, category, records, max_bytes=max_bytes)
    ]


def reference_part(
    job: ExportJob, category: str, records: list[dict[str, Any]], folder: Path
) -> ExportPart:
    """A part left in the exchange folder, named by a file:// location."""
    import hashlib

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.json"
    plaintext = records_bytes(records)
    path.write_bytes(plaintext)
    digest = hashlib.sha256(plaintext).hexdigest()
    return part_event(job, category, 0, 1, sha256=digest, location=path.as_uri(),
                      record_count=len(records))  # fmt: skip


def part_event(job: ExportJob, category: str, index: int, count: int, **fields: Any) -> ExportPart:
    data = ExportPartData(
        job_id=job.data.job_id,
        request_id=job.data.request_id,
        owner=job.data.owner,
        category=category,
        part_index=index,
        part_count=count,
        **fields,
    )
    return new_event(ExportPart, subject=job.subject, source=f"{job.data.owner}-service", data=data)


def records_for(owner: str, category: str, count: int) -> list[dict[str, Any]]:
    return [
        {"id": f"{owner}-{i}", "category": category, "note": f"record {i} of {owner}", "n": i}
        for i in range(count)
    ]


def open_zip(content: bytes) -> tuple[zipfile.ZipFile, dict[str, Any]]:
    archive = zipfile.ZipFile(io.BytesIO(content))
    return archive, json.loads(archive.read("manifest.json"))


def at(clock: ManualClock, when: datetime) -> None:
    clock.set(when)
