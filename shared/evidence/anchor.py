"""The checkpoints as published: read from the kept `privacy.audit` topic, or an export of it.

This is the anchor outside the database: verifiers read checkpoints here, never from the
database's own `checkpoints` table (whoever can rewrite a log could rewrite that too).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from shared.contract.codec import DecodeError, decode
from shared.contract.events import AuditCheckpoint
from shared.evidence.checkpoint import Checkpoint
from shared.plumbing.settings import KafkaSecurity


async def published(
    bootstrap: str, topic: str, security: KafkaSecurity | None = None
) -> list[Checkpoint]:
    """Every checkpoint on `topic`, from its start to its current end, in published order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",  # the relays publish in transactions
        **(security or KafkaSecurity()).client_kwargs(),
    )
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return []
        consumer.subscribe([topic])  # no group: every partition is assigned to this consumer
        for _ in range(200):
            if consumer.assignment():
                break
            await asyncio.sleep(0.05)
        parts = sorted(consumer.assignment(), key=lambda tp: tp.partition)
        partitions = [tp.partition for tp in parts]
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        found: dict[int, list[Checkpoint]] = {p: [] for p in partitions}
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp]:
                        found[tp.partition].extend(_checkpoint(record.value))
        return [c for p in partitions for c in found[p]]
    finally:
        await consumer.stop()


def _checkpoint(value: bytes | None) -> list[Checkpoint]:
    try:
        event = decode(value)
    except DecodeError:
        return []  # not ours to judge here: only signed checkpoints count
    if not isinstance(event, AuditCheckpoint):
        return []
    return [Checkpoint.from_record(event.data.model_dump(mode="json"))]


def write_export(path: Path, checkpoints: Iterable[Checkpoint]) -> int:
    """Write checkpoints as JSON lines (an offline copy of the topic); returns how many."""
    lines = [json.dumps(c.record(), sort_keys=True) for c in checkpoints]
    path.write_text("".join(f"{line}\n" for line in lines))
    return len(lines)


def read_export(path: Path) -> list[Checkpoint]:
    """The checkpoints of an export file (JSON lines)."""
    return [
        Checkpoint.from_record(json.loads(line))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
