"""Dead letters: the outbox row carrying a poison record, its kind, and its write-once record.

A dead letter is the original record (key, value and headers: a binary-mode event keeps its
`ce_*` attributes) plus our diagnostic headers (`DIAGNOSTIC`, none starting with `ce_`), which
`privacy-plane dlq replay` strips before sending the original back.

A dead letter is written once per consumed record: its origin (topic, partition, offset) is
recorded in `deadlettered` in the transaction that writes its outbox row, so a replayed batch
(a transient failure after isolation, a crash before the offsets commit) skips it. Its kind is
the metrics label: a fixed vocabulary, never text taken from the input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from shared.plumbing.db import Conn
from shared.plumbing.logging import get_logger
from shared.plumbing.outbox import OutboxRow

log = get_logger(__name__)

RECORD = """
INSERT INTO deadlettered (topic, partition, "offset", reason_kind)
SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[])
ON CONFLICT DO NOTHING
RETURNING topic, partition, "offset"
"""

FORGET_OLD = """
DELETE FROM deadlettered WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM deadlettered WHERE at < now() - $1 * interval '1 day' LIMIT 10000
))
"""


async def forget_old(conn: Conn, days: int) -> int:
    """Forget up to 10,000 dead-letter origins older than `days`; how many went."""
    status: str = await conn.execute(FORGET_OLD, days)
    return int(status.split()[-1])


MAX_VALUE = 1_000_000
"""Bytes of a poison record's value kept in its dead letter (the producer's limit is 1 MiB)."""
MAX_KEY = 1_000
MAX_HEADERS = 64_000
"""Bytes of the original's headers (names and values) kept; beyond it they are left out."""

DIAGNOSTIC = frozenset(
    {
        "original_topic",
        "original_partition",
        "original_offset",
        "service",
        "error",
        "original_key_size",
        "value_truncated",
        "original_size",
        "original_sha256",
        "original_headers_altered",
    }
)
"""The headers a dead letter adds to the original's (replay removes exactly these)."""

Origin = tuple[str, int, int]
"""Where a consumed record was read: topic, partition, offset."""


class DeadLetterKind(StrEnum):
    """Why a record was dead-lettered, as a bounded label (the detail is in the `error` header)."""

    UNDECODABLE = "undecodable"  # not a CloudEvents JSON event at all
    INVALID = "invalid"  # a known type failing its schema, or required attributes missing
    UNKNOWN_TYPE = "unknown_type"
    KEY_MISMATCH = "key_mismatch"  # the Kafka key is not the event's subject
    CONFLICT = "conflict"  # same source and id as an applied event, other content
    FORBIDDEN = "forbidden"  # a contract rule refuses it (`Batch.reject`)
    TOO_LARGE = "too_large"
    HANDLER_ERROR = "handler_error"  # the handler raised: a bug, or input it cannot take


class RecordLike(Protocol):
    """A consumed Kafka record as the pipeline reads it (aiokafka's ConsumerRecord is one)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...


@dataclass(frozen=True, kw_only=True)
class DeadLetter(OutboxRow):
    """An outbox row to the dead-letter topic, with the record it came from and its kind."""

    origin: Origin
    kind: DeadLetterKind


def letter(
    record: RecordLike, reason: str, kind: DeadLetterKind, *, topic: str, service: str
) -> DeadLetter:
    """A dead letter carrying `record`'s original bytes and headers to `topic`, `reason` in
    the diagnostic headers."""
    headers = original_headers(record.headers)
    headers |= {
        "original_topic": record.topic,
        "original_partition": str(record.partition),
        "original_offset": str(record.offset),
        "service": service,
        "error": reason[:1000],
    }
    key, value = record.key, record.value
    # A record at the broker's size limit plus these headers would not fit: the relay
    # would retry it forever and hold up every later outbound event. Cut it and say so.
    if key is not None and len(key) > MAX_KEY:
        headers["original_key_size"] = str(len(key))
        key = key[:MAX_KEY]
    if value is not None and len(value) > MAX_VALUE:
        headers["value_truncated"] = "true"
        headers["original_size"] = str(len(value))
        headers["original_sha256"] = hashlib.sha256(value).hexdigest()
        value = value[:MAX_VALUE]
    origin = (record.topic, record.partition, record.offset)
    return DeadLetter(topic, key, value, headers, origin=origin, kind=kind)


def original_headers(raw: Sequence[tuple[str, bytes | None]]) -> dict[str, str]:
    """The original's headers as an outbox row carries them (text, one value per name).

    What does not fit that (a value that is not UTF-8, a name given twice or one of ours, more
    than MAX_HEADERS bytes) is changed or left out, and `original_headers_altered` says so.
    """
    kept: dict[str, str] = {}
    altered = sum(len(name) + len(value or b"") for name, value in raw) > MAX_HEADERS
    for name, value in () if altered else raw:
        text = (value or b"").decode("utf-8", "replace")
        if value is None or name in kept or name in DIAGNOSTIC or "\ufffd" in text:
            altered = True
        if name not in DIAGNOSTIC:
            kept.setdefault(name, text)
    if altered:
        kept["original_headers_altered"] = "true"
    return kept


async def keep_new(
    conn: Conn, rows: list[OutboxRow], letters: Sequence[OutboxRow]
) -> tuple[list[OutboxRow], list[DeadLetter]]:
    """Record the origins of `letters` (dead letters among `rows`) in the caller's transaction;
    returns `rows` without the letters recorded before, and the new letters."""
    own = [r for r in letters if isinstance(r, DeadLetter)]
    if not own:
        return rows, []
    added = {
        (r["topic"], r["partition"], r["offset"])
        for r in await conn.fetch(
            RECORD,
            [r.origin[0] for r in own],
            [r.origin[1] for r in own],
            [r.origin[2] for r in own],
            [r.kind.value for r in own],
        )
    }
    new: list[DeadLetter] = []
    for row in own:
        if row.origin in added:
            added.discard(row.origin)  # one letter per origin, even within one transaction
            new.append(row)
    if len(new) == len(own):
        return rows, new
    dropped = {id(r) for r in own} - {id(r) for r in new}
    log.info("dead_letters_already_written", count=len(dropped))
    return [r for r in rows if id(r) not in dropped], new
