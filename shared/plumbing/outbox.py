"""The transactional outbox: what a transaction will publish, packed into one row.

Rows are written in the transaction that causes them and published later by the relay
(`shared.plumbing.relay`), which deletes them once Kafka has them.

A transaction's messages are packed into one row (`packed`, `messages` of them): one insert,
one read and one delete per consumed batch instead of one of each per message. Rows of the
one-message form (written before 0002) are still relayed, in the same id order.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from shared.contract.codec import encode, kafka_headers
from shared.contract.envelope import CloudEvent
from shared.plumbing import tracing
from shared.plumbing.db import Conn

INSERT_PACKED = """
WITH inserted AS (INSERT INTO outbox (packed, messages) VALUES ($1, $2))
SELECT pg_notify($3, '')
"""
SELECT_ALL = "SELECT id, topic, key, value, headers, packed FROM outbox ORDER BY id"


def channel(schema: str) -> str:
    """The NOTIFY channel that wakes the relay of `schema`."""
    return f"outbox_{schema}"


@dataclass(frozen=True)
class OutboxRow:
    """One message to publish: a None value is a tombstone, a None key a random partition."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, str] = field(default_factory=dict)
    event_id: str | None = None


@dataclass
class Outbox:
    """What one transaction will publish; handlers add to it, the pipeline writes it."""

    rows: list[OutboxRow] = field(default_factory=list)
    dead_letters: list[OutboxRow] = field(default_factory=list)
    """The rows that are dead letters: the pipeline writes each only once per poison record."""

    def publish(self, topic: str, event: CloudEvent[Any]) -> None:
        """Publish `event` keyed by its subject once the transaction commits; inside a
        handled event's trace it carries that trace on (`traceparent`, `tracestate`)."""
        carried = tracing.outgoing()
        if carried:
            event = event.model_copy(update=carried)
        key, value = encode(event)
        self.rows.append(OutboxRow(topic, key, value, kafka_headers(), event.id))

    def tombstone(self, topic: str, key: str) -> None:
        """Publish a tombstone (null value) for `key` on a compacted topic."""
        self.rows.append(OutboxRow(topic, key.encode(), None))

    def raw(self, row: OutboxRow) -> None:
        """Publish a prepared row."""
        self.rows.append(row)

    def dead_letter(self, row: OutboxRow) -> None:
        """Publish a dead letter (in order with the rest; see `dead_letters`)."""
        self.rows.append(row)
        self.dead_letters.append(row)


async def write(conn: Conn, rows: list[OutboxRow], schema: str) -> None:
    """Insert `rows` in the caller's transaction and wake the relay at commit (one statement)."""
    if not rows:
        return
    await conn.execute(INSERT_PACKED, pack(rows), len(rows), channel(schema))


PACK_VERSION = b"\x01"
_LENGTHS = struct.Struct("<IiiII")
"""Per message: topic, key, value, headers (JSON), event id; -1 for a null key or value."""


def pack(rows: Sequence[OutboxRow]) -> bytes:
    """Messages as one `packed` value: per message its lengths, then its bytes."""
    lengths = _LENGTHS.pack
    dumps = orjson.dumps
    topics: dict[str, bytes] = {}
    headers_of: dict[int, bytes] = {}  # by identity: handlers share one dict per event type
    parts = [PACK_VERSION]
    extend = parts.extend
    for row in rows:
        topic = topics.get(row.topic)
        if topic is None:
            topic = topics[row.topic] = row.topic.encode()
        headers = headers_of.get(id(row.headers))
        if headers is None:
            headers = headers_of[id(row.headers)] = dumps(row.headers)
        key, value, event_id = row.key, row.value, row.event_id
        event = event_id.encode() if event_id else b""
        extend(
            (
                lengths(
                    len(topic),
                    -1 if key is None else len(key),
                    -1 if value is None else len(value),
                    len(headers),
                    len(event),
                ),
                topic,
                key or b"",
                value or b"",
                headers,
                event,
            )
        )
    return b"".join(parts)


Message = tuple[str, bytes | None, bytes | None, bytes | str]
"""(topic, key, value, headers as JSON) as the relay sends it."""


def unpack(packed: bytes) -> list[OutboxRow]:
    """The rows `pack` packed (headers parsed; an empty event id reads as None)."""
    ids: list[str | None] = []
    return [
        OutboxRow(topic, key, value, orjson.loads(headers), event_id)
        for (topic, key, value, headers), event_id in zip(_unpacked(packed, ids), ids, strict=True)
    ]


def _unpacked(
    packed: bytes, ids: list[str | None] | None = None, *, current: bool = False
) -> list[Message]:
    """The messages of a packed value; their event ids go to `ids` if given, and with
    `current` their headers as `current_headers` has them."""
    if packed[:1] != PACK_VERSION:
        raise ValueError(f"outbox: unknown packing {packed[:1]!r}")
    unpack_from = _LENGTHS.unpack_from
    size = _LENGTHS.size
    topics: dict[bytes, str] = {}
    out: list[Message] = []
    append = out.append
    at, end = 1, len(packed)
    while at < end:
        t, k, v, h, e = unpack_from(packed, at)
        at += size
        raw_topic = packed[at : at + t]
        topic = topics.get(raw_topic)
        if topic is None:
            topic = topics[raw_topic] = raw_topic.decode()
        at += t
        key = None
        if k >= 0:
            key = packed[at : at + k]
            at += k
        value = None
        if v >= 0:
            value = packed[at : at + v]
            at += v
        headers = packed[at : at + h]
        if current and headers[:10] == b'{"ce_type"':  # cheap test first: the relay's hot path
            append((topic, key, value, current_headers(headers)))
        else:
            append((topic, key, value, headers))
        at += h
        if ids is not None:
            ids.append(packed[at : at + e].decode() or None)
        at += e
    return out


def messages(rows: Sequence[asyncpg.Record]) -> list[Message]:
    """The messages of outbox rows of either form, in order (old headers brought up to date)."""
    out: list[Message] = []
    for _, topic, key, value, headers, packed in rows:
        if packed is None:
            out.append((topic, key, value, current_headers(headers)))
        else:
            out.extend(_unpacked(packed, current=True))
    return out


_OLD_HINT = re.compile(rb'\{\s*"ce_type"\s*:\s*"[^"\\]*"\s*\}')
_CURRENT = orjson.dumps(kafka_headers())


def current_headers(raw: bytes | str) -> bytes | str:
    """The headers to send for a stored header document: an event row written before
    structured-mode headers (exactly `{"ce_type": …}`, which makes SDKs read it as binary mode)
    gets `kafka_headers()`; anything else (dead letters keep the original's) is sent as stored."""
    text = raw.encode() if isinstance(raw, str) else raw
    return _CURRENT if _OLD_HINT.fullmatch(text) else raw


async def pending(conn: Conn) -> list[OutboxRow]:
    """Every row not yet relayed, one per message, in order (tests and operators)."""
    out: list[OutboxRow] = []
    for record in await conn.fetch(SELECT_ALL):
        if record["packed"] is None:
            headers = orjson.loads(record["headers"])
            out.append(OutboxRow(record["topic"], record["key"], record["value"], headers))
        else:
            out.extend(unpack(record["packed"]))
    return out
