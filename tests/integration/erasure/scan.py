"""The logical scan after an erasure: every topic from offset zero, every table of every service
schema, every stored and exchange file, searched for a person's distinctive values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.contract.topics import Topics
from shared.plumbing import identifiers
from shared.plumbing.kafka import DAY_MS, TopicPolicy


@dataclass(frozen=True)
class Finding:
    """One personal value still readable somewhere."""

    value: str
    """The name of the value (what it is, not the value)."""
    where: str
    """`topic:<name>`, `table:<schema>.<table>` or `file:<path>`."""
    window: str
    """When it goes: the topic's retention, or "kept" when nothing makes it go."""


def _needles(values: Mapping[str, str]) -> dict[str, list[bytes]]:
    """Each value as bytes, and as PostgreSQL shows it inside a bytea cast to text (hex)."""
    return {name: [v.encode(), v.encode().hex().encode()] for name, v in values.items()}


def _found(blob: bytes, needles: Mapping[str, list[bytes]]) -> set[str]:
    return {name for name, forms in needles.items() if any(f in blob for f in forms)}


async def _read_everything(bootstrap: str, topic: str) -> list[bytes]:
    """Every record's key, value and headers, from offset zero to the end, aborted
    transactions' records included (read_uncommitted: what the broker's disk holds)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_uncommitted",
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            await consumer._client.force_metadata_update()
            found = consumer.partitions_for_topic(topic) or ()
            partitions = [TopicPartition(topic, p) for p in found]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        blobs: list[bytes] = []
        left = {tp: end for tp, end in ends.items() if end > 0}
        while left:
            batch = await consumer.getmany(*left, timeout_ms=500)
            for records in batch.values():
                for r in records:
                    headers = b"".join(k.encode() + (v or b"") for k, v in r.headers or ())
                    blobs.append((r.key or b"") + b"\0" + (r.value or b"") + b"\0" + headers)
            for tp in list(left):
                if await consumer.position(tp) >= left[tp]:
                    del left[tp]
        return blobs
    finally:
        await consumer.stop()


def _window(topic: str, configs: Mapping[str, Mapping[str, str]]) -> str:
    config = configs[topic]
    retention = int(config.get("retention.ms", "-1"))
    if "compact" in config.get("cleanup.policy", "") or retention < 0:
        return "kept"
    return f"ages out {retention / DAY_MS:g} days after it was written"


async def scan_topics(
    bootstrap: str, topics: Topics, policy: TopicPolicy, values: Mapping[str, str]
) -> list[Finding]:
    """Every topic of the contract, consumed whole."""
    needles, configs = _needles(values), policy.configs(topics)
    findings = []
    for topic in topics.all():
        seen: set[str] = set()
        for blob in await _read_everything(bootstrap, topic):
            seen |= _found(blob, needles)
        findings += [Finding(v, f"topic:{topic}", _window(topic, configs)) for v in sorted(seen)]
    return findings


async def scan_tables(
    conn: asyncpg.Connection, schemas: Iterable[str], values: Mapping[str, str]
) -> list[Finding]:
    """Every row of every table of the schemas, all columns cast to text."""
    needles = _needles(values)
    findings = []
    for schema in schemas:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY 1",
            schema,
        )
        for (table,) in tables:
            name = f"{identifiers.quoted(schema)}.{identifiers.quoted(table)}"
            rows = await conn.fetch(f"SELECT t::text AS row FROM {name} t")
            seen: set[str] = set()
            for row in rows:
                seen |= _found(row["row"].encode(), needles)
            findings += [Finding(v, f"table:{schema}.{table}", "kept") for v in sorted(seen)]
    return findings


def scan_files(folders: Iterable[Path], values: Mapping[str, str]) -> list[Finding]:
    """Every file under the folders, read as raw bytes."""
    needles = _needles(values)
    findings: list[Finding] = []
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            seen = sorted(_found(path.read_bytes(), needles))
            findings.extend(Finding(value, f"file:{path}", "kept") for value in seen)
    return findings
