"""PostgreSQL access for the consent service: SQL in one place, methods take a connection."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson

from services.consent.document import from_doc, to_doc
from services.consent.ledger import Head, LedgerEntry
from services.consent.state import SubjectState
from shared.contract.events import PolicyPublished
from shared.plumbing.db import Conn

LOCK_SUBJECTS = """
SELECT count(pg_advisory_xact_lock(hashtextextended(s, 7)))
FROM (SELECT DISTINCT s FROM unnest($1::text[]) AS s ORDER BY s) AS sorted
"""
SELECT_STATES = "SELECT subject_id, version, doc FROM subjects WHERE subject_id = ANY($1)"
SELECT_STATE = "SELECT version, doc FROM subjects WHERE subject_id = $1"
UPSERT_STATES = """
INSERT INTO subjects (subject_id, version, doc, next_expiry, updated_at)
SELECT s, v, d, e, $5 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[])
  AS u(s, v, d, e)
ON CONFLICT (subject_id) DO UPDATE
SET version = EXCLUDED.version, doc = EXCLUDED.doc, next_expiry = EXCLUDED.next_expiry,
    updated_at = EXCLUDED.updated_at
"""
DELETE_STATES = "DELETE FROM subjects WHERE subject_id = ANY($1)"
CLAIM_EXPIRED = """
SELECT subject_id, version, doc FROM subjects
WHERE next_expiry <= $1 AND subject_id <> ALL($3::text[])
  AND pg_try_advisory_xact_lock(hashtextextended(subject_id, 7))
ORDER BY next_expiry
LIMIT $2
FOR UPDATE SKIP LOCKED
"""
SELECT_LEDGER_CONTEXT = """
SELECT u.p AS principal, h.seq, h.hash, h.salt, s.principal IS NOT NULL AS erased
FROM unnest($1::text[]) AS u(p)
LEFT JOIN ledger_heads h ON h.principal = u.p
LEFT JOIN suppressed s ON s.principal = u.p
"""
SELECT_BATCH_CONTEXT = """
SELECT u.s AS subject_id, u.p AS principal, st.version, st.doc,
       h.seq, h.hash, h.salt, sp.principal IS NOT NULL AS erased
FROM unnest($1::text[], $2::text[]) AS u(s, p)
LEFT JOIN subjects st ON st.subject_id = u.s
LEFT JOIN ledger_heads h ON h.principal = u.p
LEFT JOIN suppressed sp ON sp.principal = u.p
"""
INSERT_SUPPRESSED = """
INSERT INTO suppressed (principal, kid, erased_at, request_id, event_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[])
ON CONFLICT DO NOTHING
"""
SELECT_SUPPRESSED = "SELECT principal FROM suppressed"
COPY_SUPPRESSED = """
INSERT INTO suppressed (principal, kid, erased_at, request_id, event_id)
SELECT principal, kid, erased_at, request_id, event_id FROM {source}.suppressed
ON CONFLICT DO NOTHING
"""
"""The suppression list of schema `{source}` (`identifiers.quoted`), for a rebuild."""
SELECT_PSEUDONYM_MARKS = """
SELECT u.p AS principal,
       EXISTS (SELECT FROM ledger_heads h WHERE h.principal = u.p) AS chained,
       EXISTS (SELECT FROM suppressed s WHERE s.principal = u.p) AS erased
FROM unnest($1::text[]) AS u(p)
"""
SELECT_NOT_EMPTY = "SELECT EXISTS (SELECT FROM subjects) OR EXISTS (SELECT FROM inbox)"
COUNT_SUBJECTS = "SELECT count(*) FROM subjects"
SELECT_HEAD = "SELECT seq, hash, salt FROM ledger_heads WHERE principal = $1"
UPSERT_HEADS = """
INSERT INTO ledger_heads (principal, seq, hash, salt)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bytea[])
ON CONFLICT (principal) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash
"""
LEDGER_APPEND_LOCK = (
    "SELECT pg_advisory_xact_lock_shared(hashtextextended('ledger-append:' || current_schema(), 0))"
)
"""Held by every writer until it commits; the checkpointer takes it exclusively (evidence.store)."""
SCRUB_LEDGER = "SELECT ledger_scrub($1::text[])"
"""Erasure blanks the personal columns through the one function allowed to (migration 0007)."""
FORGET_SALTS = "UPDATE ledger_heads SET salt = NULL WHERE principal = ANY($1)"
LEDGER_COLUMNS = (
    "principal, seq, event_id, event_source, event_type, kind, target, old_state, new_state, "
    "applied, note, collection_method, consent_type, policy_version, notice_id, jurisdiction, "
    "expires_at, occurred_at, received_at, personal_digest, prev_hash, hash, subject_id, "
    "evidence, kid"
)
# S608: these format the constant LEDGER_COLUMNS, never input.
SELECT_LEDGER_PAGE = (
    f"SELECT {LEDGER_COLUMNS} FROM ledger"  # noqa: S608
    " WHERE principal = $1 AND seq > $2 ORDER BY seq LIMIT $3"
)
SELECT_LEDGER = f"SELECT {LEDGER_COLUMNS} FROM ledger WHERE principal = $1 ORDER BY seq"  # noqa: S608
SELECT_LEDGER_UNTIL = (
    f"SELECT {LEDGER_COLUMNS} FROM ledger"  # noqa: S608
    " WHERE principal = $1 AND occurred_at <= $2 ORDER BY seq"
)
LEDGER_COPY_ORDER = [*(f for f in LedgerEntry.__slots__ if f != "evidence"), "evidence"]
_ENTRY_BEFORE_EVIDENCE = operator.attrgetter(*LEDGER_COPY_ORDER[:-1])
"""An entry's values in `LEDGER_COPY_ORDER` but evidence (written as JSON text), in one C call."""


def _state(subject: str, version: int, doc: str) -> SubjectState:
    return from_doc(subject, version, orjson.loads(doc))


async def lock_subjects(conn: Conn, subjects: Sequence[str]) -> None:
    """Serialise work on these subjects across replicas and the expiry loop (transaction-long)."""
    await conn.fetchval(LOCK_SUBJECTS, list(subjects))


async def load_states(conn: Conn, subjects: Sequence[str]) -> dict[str, SubjectState]:
    """The stored state of each subject that has one."""
    rows = await conn.fetch(SELECT_STATES, list(subjects))
    return {r["subject_id"]: _state(r["subject_id"], r["version"], r["doc"]) for r in rows}


async def load_state(conn: Conn | asyncpg.Pool, subject: str) -> SubjectState | None:
    """One subject's stored state (the decision endpoint's one query)."""
    row = await conn.fetchrow(SELECT_STATE, subject)
    return None if row is None else _state(subject, row["version"], row["doc"])


async def save_states(conn: Conn, states: Sequence[SubjectState], now: datetime) -> None:
    """Insert or replace the projection rows of `states`."""
    if not states:
        return
    await conn.execute(
        UPSERT_STATES,
        [s.subject for s in states],
        [s.version for s in states],
        [orjson.dumps(to_doc(s)).decode() for s in states],
        [s.next_expiry() for s in states],
        now,
    )


async def delete_states(conn: Conn, subjects: Sequence[str]) -> None:
    """Remove the projection rows of erased subjects."""
    if subjects:
        await conn.execute(DELETE_STATES, list(subjects))


async def claim_expired(
    conn: Conn, now: datetime, limit: int, exclude: Sequence[str] = ()
) -> list[SubjectState]:
    """Subjects with a grant past its `expires_at` (but those in `exclude`), locked for this
    transaction."""
    rows = await conn.fetch(CLAIM_EXPIRED, now, limit, list(exclude))
    return [_state(r["subject_id"], r["version"], r["doc"]) for r in rows]


@dataclass(frozen=True, slots=True)
class LedgerContext:
    """A person's ledger head, digest salt, and whether they were erased."""

    head: Head
    salt: bytes | None
    erased: bool


async def ledger_context(conn: Conn, principals: Sequence[str]) -> dict[str, LedgerContext]:
    """Heads, salts and erasure marks of these persons, in one query."""
    rows = await conn.fetch(SELECT_LEDGER_CONTEXT, list(principals))
    return {
        r["principal"]: LedgerContext(
            Head(r["seq"], r["hash"]) if r["seq"] is not None else Head(),
            None if r["salt"] is None else bytes(r["salt"]),
            r["erased"],
        )
        for r in rows
    }


async def load_batch(
    conn: Conn, subjects: Sequence[str], principals: Sequence[str]
) -> tuple[dict[str, SubjectState], dict[str, LedgerContext]]:
    """States and ledger contexts of a batch's subjects (`principals` in the same order), in
    one query: what `load_states` and `ledger_context` return."""
    states: dict[str, SubjectState] = {}
    contexts: dict[str, LedgerContext] = {}
    for r in await conn.fetch(SELECT_BATCH_CONTEXT, list(subjects), list(principals)):
        if r["doc"] is not None:
            states[r["subject_id"]] = _state(r["subject_id"], r["version"], r["doc"])
        contexts[r["principal"]] = LedgerContext(
            Head(r["seq"], r["hash"]) if r["seq"] is not None else Head(),
            None if r["salt"] is None else bytes(r["salt"]),
            r["erased"],
        )
    return states, contexts


async def pseudonym_marks(conn: Conn, principals: Sequence[str]) -> tuple[set[str], set[str]]:
    """Of these pseudonyms: those with a ledger, and those on the suppression list."""
    rows = await conn.fetch(SELECT_PSEUDONYM_MARKS, list(principals))
    return {r["principal"] for r in rows if r["chained"]}, {
        r["principal"] for r in rows if r["erased"]
    }


Suppression = tuple[str, str, datetime, str | None, str]
"""An erased person's suppression row: (principal, kid, erased_at, request_id, event_id)."""


async def suppress(conn: Conn, rows: Sequence[Suppression]) -> None:
    """Record erased persons: (principal, kid, erased_at, request_id, event_id)."""
    if rows:
        await conn.execute(INSERT_SUPPRESSED, *map(list, zip(*rows, strict=True)))


async def head(conn: Conn, principal: str) -> tuple[Head | None, bytes | None]:
    """One person's ledger head and salt (the salt is None once erased)."""
    row = await conn.fetchrow(SELECT_HEAD, principal)
    if row is None:
        return None, None
    return Head(row["seq"], row["hash"]), None if row["salt"] is None else bytes(row["salt"])


async def save_heads(conn: Conn, new_heads: dict[str, tuple[Head, bytes]]) -> None:
    """Move the ledger heads forward (a new person's salt is stored with its first head)."""
    if new_heads:
        items = list(new_heads.items())
        await conn.execute(
            UPSERT_HEADS,
            [p for p, _ in items],
            [h.seq for _, (h, _) in items],
            [h.hash for _, (h, _) in items],
            [salt for _, (_, salt) in items],
        )


async def append_ledger(conn: Conn, entries: Sequence[LedgerEntry]) -> None:
    """Append entries with COPY (the fastest bulk path)."""
    if not entries:
        return
    await conn.execute(LEDGER_APPEND_LOCK)
    plain = _ENTRY_BEFORE_EVIDENCE
    records = [
        (*plain(e), None if e.evidence is None else orjson.dumps(e.evidence).decode())
        for e in entries
    ]
    await conn.copy_records_to_table("ledger", records=records, columns=LEDGER_COPY_ORDER)


async def scrub_ledger(conn: Conn, principals: Sequence[str]) -> None:
    """Erasure: remove the personal fields and the salts; the hashed fields stay."""
    if principals:
        await conn.execute(SCRUB_LEDGER, list(principals))
        await conn.execute(FORGET_SALTS, list(principals))


def entry_from_row(row: object) -> LedgerEntry:
    """A ledger entry from its row (or a mapping of its columns)."""
    values = dict(row)  # type: ignore[call-overload]
    evidence = values.pop("evidence")
    return LedgerEntry(**values, evidence=None if evidence is None else orjson.loads(evidence))


async def ledger_page(conn: Conn, principal: str, after: int, limit: int) -> list[LedgerEntry]:
    """Entries after `after` (a seq), at most `limit`."""
    return [
        entry_from_row(r) for r in await conn.fetch(SELECT_LEDGER_PAGE, principal, after, limit)
    ]


async def ledger(conn: Conn, principal: str) -> list[LedgerEntry]:
    """Every entry of a person, in order."""
    return [entry_from_row(r) for r in await conn.fetch(SELECT_LEDGER, principal)]


async def ledger_until(
    conn: Conn | asyncpg.Pool, principal: str, at: datetime
) -> list[LedgerEntry]:
    """Entries of events that happened at or before `at`."""
    return [entry_from_row(r) for r in await conn.fetch(SELECT_LEDGER_UNTIL, principal, at)]


RECORD_POLICY = """
INSERT INTO policies (version, effective_at, summary, url, reconsent_purposes, published_at)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (version) DO NOTHING
"""


async def record_policy(conn: Conn, event: PolicyPublished) -> None:
    """Keep a policy version (once: a replay or a re-publication changes nothing)."""
    d = event.data
    renew = [c.purpose for c in d.changes if c.reconsent_required]
    await conn.execute(
        RECORD_POLICY, d.version, d.effective_at, d.summary, d.url, renew, event.time
    )
