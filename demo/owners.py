"""Simulated data owners: the CRM, billing, marketing, analytics, support desk and accounts.

These are NOT part of Privacy Plane. In production they are other services that read their jobs
from `privacy.jobs` and answer on `privacy.receipts`; here one small asyncio loop plays all of
them, with its own consumer group, for the people the demo created:

- `deletion.job.v1`       → `deletion.completed.v1` (a few records deleted)
- `rectification.job.v1`  → `rectification.completed.v1`
- `export.job.v1`         → the owner's records sealed to the job's key, as numbered
                            `export.part.v1` parts (`shared.contract.sealing.sealed_parts`)

The `consent` owner's export job is left alone: the consent service answers it with the
subject's consent ledger itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.contract.codec import DecodeError, decode, encode, new_event
from shared.contract.envelope import CloudEvent
from shared.contract.events import (
    DeletionCompleted,
    DeletionCompletedData,
    DeletionJob,
    ExportJob,
    ExportPart,
    RectificationCompleted,
    RectificationCompletedData,
    RectificationJob,
)
from shared.contract.sealing import sealed_parts
from shared.contract.topics import Topics

SELF_ANSWERING = frozenset({"consent"})  # the consent service answers its own export job
Job = DeletionJob | ExportJob | RectificationJob


class OwnersTimeout(Exception):
    """What the owners were waiting for did not show up in time."""


def records_for(owner: str, category: str, subject: str) -> list[dict[str, Any]]:
    """A few made-up records an owner holds about the person (1 to 3 per category)."""
    count = 1 + sum(map(ord, category)) % 3
    return [
        {"id": f"{owner}-{category}-{i + 1}", "subject": subject, "note": f"{category} #{i + 1}"}
        for i in range(count)
    ]


class SimulatedOwners:
    """Consumes privacy.jobs (own consumer group) and answers every job for known people."""

    def __init__(self, bootstrap: str, topics: Topics, group_id: str) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.group_id = group_id
        self.people: set[str] = set()
        self.seen: list[Job] = []
        self.answers = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    def add_person(self, subject: str) -> None:
        """The owners hold data about `subject` from now on (jobs for others are ignored)."""
        self.people.add(subject)

    async def __aenter__(self) -> SimulatedOwners:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, enable_idempotence=True, acks="all"
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            self.topics.privacy_jobs,
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",  # retention's relay publishes in transactions
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="simulated-owners")
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    await self._handle(record.value)
            if batch:
                await self._consumer.commit()

    async def _handle(self, value: bytes | None) -> None:
        try:
            event = decode(value)
        except DecodeError:
            return  # not ours to judge: Privacy Plane dead-letters what it cannot read
        if not isinstance(event, Job) or event.subject not in self.people:
            return
        answers = self.answer(event)
        for answer in answers:
            await self._send(answer)
        async with self._changed:
            self.seen.append(event)
            self.answers += len(answers)
            self._changed.notify_all()

    def answer(self, job: Job) -> list[CloudEvent[Any]]:
        """What the owner sends back for one job."""
        owner = job.data.owner
        source = f"demo-owner-{owner}"
        if isinstance(job, DeletionJob):
            deleted = len(records_for(owner, job.data.category, job.subject))
            data = DeletionCompletedData(
                job_id=job.data.job_id, owner=owner, records_deleted=deleted
            )
            return [new_event(DeletionCompleted, subject=job.subject, source=source, data=data)]
        if isinstance(job, RectificationJob):
            done = RectificationCompletedData(job_id=job.data.job_id, owner=owner)
            fixed = new_event(RectificationCompleted, subject=job.subject, source=source, data=done)
            return [fixed]
        if owner in SELF_ANSWERING:
            return []
        return [
            new_event(ExportPart, subject=job.subject, source=source, data=part)
            for category in job.data.categories
            for part in sealed_parts(job.data, category, records_for(owner, category, job.subject))
        ]

    async def _send(self, event: CloudEvent[Any]) -> None:
        assert self._producer is not None
        key, value = encode(event)
        await self._producer.send_and_wait(self.topics.privacy_receipts, value=value, key=key)

    async def wait_for(
        self, what: str, matches: Callable[[Job], bool], count: int, within: float
    ) -> list[Job]:
        """The jobs seen that match, once there are `count`, waiting up to `within` seconds."""
        deadline = time.monotonic() + within
        async with self._changed:
            while True:
                found = [job for job in self.seen if matches(job)]
                if len(found) >= count:
                    return found
                if self._task is not None and self._task.done():
                    error = self._task.exception() if not self._task.cancelled() else None
                    raise OwnersTimeout(f"{what}: the simulated owners stopped ({error!r})")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OwnersTimeout(f"{what} (saw {len(found)} of {count})")
                with contextlib.suppress(TimeoutError):  # wake now and then to see a crash
                    await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
