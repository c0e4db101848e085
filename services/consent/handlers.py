"""The consent service's event side: apply a batch, expire lapsed grants, answer export jobs.

A batch is applied in memory: one query loads the states, ledger heads, salts and suppression
marks of all its subjects (under per-subject advisory locks, so replicas and the
expiry loop never interleave on a subject); events are decided in order; the projection rows,
ledger entries (COPY) and heads are then written with one bulk statement each. Every applied
change publishes the subject's full state with the next version.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from services.consent import domain, fastpath, ledger, store
from services.consent.domain import Change, SubjectState
from services.consent.ledger import Facts, Head
from services.consent.settings import ConsentSettings
from shared.catalogue import PurposeCatalogue
from shared.contract.codec import new_event
from shared.contract.events import (
    AnyEvent,
    ErasureRequested,
    ExportJob,
    ExportPart,
    ExportPartData,
)
from shared.contract.sealing import chunk_records, seal_records
from shared.plumbing import outbox
from shared.plumbing.clock import Clock
from shared.plumbing.db import Conn
from shared.plumbing.logging import get_logger
from shared.plumbing.outbox import Outbox, OutboxRow
from shared.plumbing.pipeline import ApplyFn, Batch
from shared.plumbing.service import Background, Runtime

SOURCE = "privacy-plane.consent"
OWNER = "consent"
EXPORT_CATEGORY = "consent_records"
STATE_TYPE = "consent.state.v1"
RECORD_SCHEMA = "privacy-plane/consent-ledger-entry.v1"
STATE_HEADERS = {"ce_type": STATE_TYPE}
"""Shared by every state row (never changed): the outbox packs one dict's JSON once per batch."""
log = get_logger(__name__)

IDS = uuid.UUID("5d9f0c1e-7a51-4c1b-9a43-2f6f1c0b8e11")

ACCEPTS = {
    "account.signed_up.v1",
    "consent.granted.v1",
    "consent.withdrawn.v1",
    "consent.gpc_signal.v1",
    "processing.restricted.v1",
    "processing.objected.v1",
    "restriction.lifted.v1",
    "erasure.requested.v1",
    "export.job.v1",
}


@dataclass
class Consent:
    """What the consent handlers, loops and API share."""

    settings: ConsentSettings
    catalogue: PurposeCatalogue
    clock: Clock
    key: bytes = field(init=False)
    _last_time: tuple[datetime | None, str] = field(init=False, default=(None, ""))

    def __post_init__(self) -> None:
        self.key = self.settings.ledger_key.get_secret_value().encode()

    def principal(self, subject: str) -> str:
        """How the ledger and the suppression list name `subject`."""
        return ledger.pseudonym(self.key, subject)

    def _event_time(self, now: datetime) -> str:
        """`now` as a CloudEvents time; a batch formats its one `now` once."""
        if self._last_time[0] != now:
            self._last_time = (now, now.astimezone(UTC).isoformat().replace("+00:00", "Z"))
        return self._last_time[1]

    def state_row(self, state: SubjectState, now: datetime) -> OutboxRow:
        """`consent.state.v1` for a state, encoded straight to JSON (the ingest hot path).

        Its id is fixed by subject and version, so a replay re-emits the same event.
        """
        event_id = f"consent-state:{state.subject}:{state.version}"
        event = {
            "specversion": "1.0",
            "id": event_id,
            "source": SOURCE,
            "type": STATE_TYPE,
            "subject": state.subject,
            "time": self._event_time(now),
            "datacontenttype": "application/json",
            "data": fastpath.state_json(state, self.catalogue, now),
        }
        return OutboxRow(
            self.settings.topics.consent_state,
            state.subject.encode(),
            orjson.dumps(event),
            STATE_HEADERS,
            event_id,
        )


@dataclass
class Unit:
    """What one transaction changes: projection rows, ledger lines, erasures, outbound events."""

    consent: Consent
    now: datetime
    outbox: Outbox
    states: dict[str, SubjectState] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)
    erased: dict[str, str] = field(default_factory=dict)
    lines: dict[str, list[tuple[Facts, Change]]] = field(default_factory=lambda: defaultdict(list))
    principals: dict[str, str] = field(default_factory=dict)
    context: dict[str, store.LedgerContext] = field(default_factory=dict)
    suppressed: list[tuple[str, datetime, str | None, str]] = field(default_factory=list)
    """Erased persons to add to the suppression list: (principal, erased_at, request, event)."""

    def principal(self, subject: str) -> str:
        found = self.principals.get(subject)
        if found is None:
            found = self.principals[subject] = self.consent.principal(subject)
        return found

    def record(self, subject: str, facts: Facts, changes: list[Change]) -> None:
        """Queue ledger lines for `subject`."""
        lines = self.lines[subject]
        for change in changes:
            lines.append((facts, change))

    def changed(self, state: SubjectState) -> None:
        """Keep the new state and publish it."""
        self.states[state.subject] = state
        self.touched.add(state.subject)
        if self.consent.settings.publish:
            self.outbox.raw(self.consent.state_row(state, self.now))

    def erase(self, subject: str) -> None:
        """Erasure: the projection goes, a tombstone follows, the ledger is scrubbed at flush."""
        self.states.pop(subject, None)
        self.touched.discard(subject)
        self.erased[subject] = self.principal(subject)
        if self.consent.settings.publish:
            self.outbox.tombstone(self.consent.settings.topics.consent_state, subject)

    async def flush(self, conn: Conn) -> None:
        """Write everything with one bulk statement per table."""
        await self._append_ledger(conn)
        await store.save_states(conn, [self.states[s] for s in sorted(self.touched)], self.now)
        await store.delete_states(conn, list(self.erased))
        await store.scrub_ledger(conn, list(self.erased.values()))
        await store.suppress(conn, self.suppressed)

    def chain(
        self, head_of: Callable[[str], tuple[Head, bytes | None]]
    ) -> tuple[list[ledger.LedgerEntry], dict[str, tuple[Head, bytes]]]:
        """The queued lines chained onto each person's (head, salt) from `head_of` (a new
        person gets a fresh salt): the entries, and the new head and salt per person."""
        entries: list[ledger.LedgerEntry] = []
        new_heads: dict[str, tuple[Head, bytes]] = {}
        for subject, items in self.lines.items():
            p = self.principal(subject)
            head, salt = head_of(p)
            salt = salt or os.urandom(16)
            chained, new_head = ledger.chain(head, p, subject, salt, items, self.now)
            new_heads[p] = (new_head, salt)
            entries.extend(chained)
        return entries, new_heads

    async def _append_ledger(self, conn: Conn) -> None:
        if not self.lines:
            return
        missing = [self.principal(s) for s in self.lines if self.principal(s) not in self.context]
        if missing:
            self.context.update(await store.ledger_context(conn, missing))

        def head_of(p: str) -> tuple[Head, bytes | None]:
            context = self.context.get(p)
            return (context.head, context.salt) if context else (Head(), None)

        entries, new_heads = self.chain(head_of)
        await store.append_ledger(conn, entries)
        await store.save_heads(conn, new_heads)


def make_apply(consent: Consent) -> ApplyFn:
    """The pipeline's apply function for the consent service."""

    async def apply(conn: Conn, batch: Batch) -> None:
        subjects = sorted({e.subject for e in batch.events})
        await store.lock_subjects(conn, subjects)
        unit = Unit(consent, consent.clock.now(), batch.outbox)
        principals = [unit.principal(s) for s in subjects]
        unit.states, unit.context = await store.load_batch(conn, subjects, principals)
        erased = {p for p, c in unit.context.items() if c.erased}
        exports = apply_events(consent, unit, batch, erased)
        await unit.flush(conn)
        for job, with_records in exports:
            await _answer_export(conn, consent, unit, job, with_records)

    return apply


def apply_events(
    consent: Consent, unit: Unit, batch: Batch, erased: set[str]
) -> list[tuple[ExportJob, bool]]:
    """Decide a batch in memory (the live pipeline and the rebuild share it): changes go into
    `unit`, erasures too (their persons join `erased` and `unit.suppressed`), events of erased
    persons are dropped; returns the export jobs to answer, each with whether records go too.
    """
    exports: list[tuple[ExportJob, bool]] = []
    for event in batch.events:
        p = unit.principal(event.subject)
        if p in erased:
            if isinstance(event, ExportJob) and _is_our_export(event):
                exports.append((event, False))  # answered, with no records
            else:
                batch.suppress(event)
        elif isinstance(event, ErasureRequested):
            if _erases_consent(event):
                unit.erase(event.subject)
                erased.add(p)
                unit.suppressed.append((p, event.time, event.data.request_id, event.id))
        elif isinstance(event, ExportJob):
            if _is_our_export(event):
                exports.append((event, True))
        else:
            _apply_change(consent, unit, batch, event)
    return exports


def _apply_change(consent: Consent, unit: Unit, batch: Batch, event: AnyEvent) -> None:
    if not isinstance(event, domain.CHANGE_EVENTS):
        return
    state = unit.states.get(event.subject) or SubjectState(event.subject)
    try:
        outcome = domain.apply_event(state, event, consent.catalogue)
    except domain.ConsentRuleViolation as exc:
        batch.reject(event, str(exc))
        return
    unit.record(event.subject, ledger.facts(event), outcome.changes)
    if outcome.changed:
        unit.changed(outcome.state)


def _erases_consent(event: ErasureRequested) -> bool:
    scope = event.data.scope
    return scope == "all" or EXPORT_CATEGORY in scope


def _is_our_export(event: ExportJob) -> bool:
    return event.data.owner == OWNER


async def _answer_export(
    conn: Conn, consent: Consent, unit: Unit, job: ExportJob, with_records: bool
) -> None:
    """Seal the subject's ledger to the job's key, in parts small enough for Kafka.

    An erased subject's job is answered with an empty part: nothing is brought back, and the
    export does not wait for an owner that will never answer.
    """
    if not consent.settings.publish:
        return
    entries = await store.ledger(conn, unit.principal(job.subject)) if with_records else []
    records = [ledger.entry_record(e) for e in entries]
    chunks = chunk_records(records, consent.settings.export_part_bytes)
    for index, chunk in enumerate(chunks):
        sealed, sha256 = seal_records(job.data.public_key, chunk)
        data = ExportPartData(
            job_id=job.data.job_id,
            request_id=job.data.request_id,
            owner=OWNER,
            category=EXPORT_CATEGORY,
            part_index=index,
            part_count=len(chunks),
            sealed=sealed,
            sha256=sha256,
            record_count=len(chunk),
            record_schema=RECORD_SCHEMA,
        )
        part = new_event(ExportPart, subject=job.subject, data=data, source=SOURCE, time=unit.now)
        part_id = str(uuid.uuid5(IDS, f"{job.data.job_id}/{index}"))
        unit.outbox.publish(
            consent.settings.topics.privacy_receipts, part.model_copy(update={"id": part_id})
        )


# --- expiry -------------------------------------------------------------------------------


async def expire_due(consent: Consent, conn: Conn) -> tuple[int, list[outbox.OutboxRow]]:
    """Expire lapsed grants of up to one batch of subjects (caller's transaction)."""
    now = consent.clock.now()
    unit = Unit(consent, now, Outbox())
    for state in await store.claim_expired(conn, now, consent.settings.expiry_batch):
        outcome = domain.expire(state, now)
        for change in outcome.changes:
            lapsed = state.purposes[change.target].expires_at or now
            event_id = str(uuid.uuid5(IDS, f"{state.subject}/{change.target}/{lapsed.isoformat()}"))
            unit.record(
                state.subject, Facts(event_id, SOURCE, domain.EXPIRED_EVENT, lapsed), [change]
            )
        if outcome.changed:
            unit.changed(outcome.state)
    await unit.flush(conn)
    return len(unit.touched), unit.outbox.rows


def expiry_loop(consent: Consent) -> Background:
    """A background loop: expire lapsed grants and republish the state (replicas share work)."""

    async def expire_grants(runtime: Runtime, stop: asyncio.Event) -> None:
        schema = consent.settings.db_schema
        while not stop.is_set():
            count = 0
            try:
                async with runtime.pool.acquire() as conn, conn.transaction():
                    count, rows = await expire_due(consent, conn)
                    await outbox.write(conn, rows, schema)
            except Exception as exc:  # keep the loop alive; the next round retries the same rows
                log.error("expiry_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            if count < consent.settings.expiry_batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), consent.settings.expiry_interval_s)

    return expire_grants
