"""Where events enter the consent service: one handler per event type, on one unit of work.

A batch is applied in memory: `begin` loads the states, ledger heads, salts and suppression
marks of all its subjects with one query (under per-subject advisory locks, so replicas and the
expiry loop never interleave on a subject); each handler decides its event in order; `end`
writes the projection rows, ledger entries (COPY) and heads with one bulk statement each, and
answers export jobs. Every applied change publishes the subject's full state, next version.
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from services.consent import domain, ledger, pseudonyms, store
from services.consent.context import SOURCE, Context
from services.consent.ledger import Facts, Head
from services.consent.state import Change, ConsentRuleViolation, SubjectState
from shared.contract.codec import new_event
from shared.contract.events import (
    AccountSignedUp,
    ConsentGranted,
    ConsentWithdrawn,
    ErasureRequested,
    ExportJob,
    ExportPart,
    GpcSignal,
    PolicyPublished,
    ProcessingObjected,
    ProcessingRestricted,
    RestrictionLifted,
)
from shared.contract.sealing import sealed_parts
from shared.plumbing.db import Conn
from shared.plumbing.handlers import Handlers
from shared.plumbing.outbox import Outbox
from shared.plumbing.pipeline import Batch

OWNER = "consent"
EXPORT_CATEGORY = "consent_records"
RECORD_SCHEMA = "privacy-plane/consent-ledger-entry.v1"
IDS = uuid.UUID("5d9f0c1e-7a51-4c1b-9a43-2f6f1c0b8e11")


@dataclass
class Unit:
    """What one transaction changes: projection rows, ledger lines, erasures, outbound events."""

    ctx: Context
    now: datetime
    outbox: Outbox
    batch: Batch | None = None
    conn: Conn | None = None
    states: dict[str, SubjectState] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)
    erased: dict[str, str] = field(default_factory=dict)
    lines: dict[str, list[tuple[Facts, Change]]] = field(default_factory=lambda: defaultdict(list))
    principals: dict[str, str] = field(default_factory=dict)
    kids: dict[str, str] = field(default_factory=dict)
    """The key id of each principal not named with the current key (an older ledger's)."""
    context: dict[str, store.LedgerContext] = field(default_factory=dict)
    suppressed: list[store.Suppression] = field(default_factory=list)
    """Erased persons to add to the suppression list: (principal, kid, erased_at, request,
    event), one row per listed key."""
    gone: set[str] = field(default_factory=set)
    """Principals erased before or during this batch: their later events are dropped."""
    exports: list[tuple[ExportJob, bool]] = field(default_factory=list)
    """Export jobs to answer at the end, each with whether the ledger's records go too."""
    policies: list[PolicyPublished] = field(default_factory=list)
    """Policy versions to keep (written at flush, and by the rebuild's writer)."""

    def principal(self, subject: str) -> str:
        found = self.principals.get(subject)
        if found is None:
            found = self.principals[subject] = name(self.ctx, subject, self.gone)
        return found

    def record(self, subject: str, facts: Facts, changes: list[Change]) -> None:
        """Queue ledger lines for `subject`."""
        lines = self.lines[subject]
        for change in changes:
            lines.append((facts, change))

    def changed(self, state: SubjectState, at: datetime | None = None) -> None:
        """Keep the new state and publish it, stamped with `at`, the time of the event that
        made it (else now): a state re-derived after a restore is then the same bytes."""
        self.states[state.subject] = state
        self.touched.add(state.subject)
        if self.ctx.settings.publish:
            self.outbox.raw(self.ctx.state_row(state, self.now, at))

    def erase(self, subject: str) -> None:
        """Erasure: the projection goes, a tombstone follows, the ledger is scrubbed at flush."""
        self.states.pop(subject, None)
        self.touched.discard(subject)
        self.erased[subject] = self.principal(subject)
        if self.ctx.settings.publish:
            self.outbox.tombstone(self.ctx.settings.topics.consent_state, subject)

    async def flush(self, conn: Conn) -> None:
        """Write everything with one bulk statement per table."""
        await self._append_ledger(conn)
        await store.save_states(conn, [self.states[s] for s in sorted(self.touched)], self.now)
        await store.delete_states(conn, list(self.erased))
        await store.scrub_ledger(conn, list(self.erased.values()))
        await store.suppress(conn, self.suppressed)
        for policy in self.policies:
            await store.record_policy(conn, policy)

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
            kid = self.kids.get(p) or self.ctx.kid
            chained, new_head = ledger.chain(head, p, subject, salt, items, self.now, kid)
            new_heads[p] = (new_head, salt)
            entries.extend(chained)
        return entries, new_heads

    async def resolve(self, conn: Conn, subjects: list[str]) -> set[str]:
        """With several pseudonym keys, look these subjects up under every one (their ledger's
        key, else the current one); returns the principals of those erased under any key."""
        erased: set[str] = set()
        if not self.ctx.rotating or not subjects:
            return erased
        for subject, found in (await pseudonyms.resolve(conn, self.ctx.keys, subjects)).items():
            p = self.principals[subject] = found.pseudonym.principal
            self.kids[p] = found.pseudonym.kid
            if found.erased:
                erased.add(p)
        return erased

    async def _append_ledger(self, conn: Conn) -> None:
        if not self.lines:
            return
        # the loops (expiry, notices) write lines for subjects no batch resolved
        await self.resolve(conn, [s for s in self.lines if s not in self.principals])
        missing = [self.principal(s) for s in self.lines if self.principal(s) not in self.context]
        if missing:
            self.context.update(await store.ledger_context(conn, missing))

        def head_of(p: str) -> tuple[Head, bytes | None]:
            context = self.context.get(p)
            return (context.head, context.salt) if context else (Head(), None)

        entries, new_heads = self.chain(head_of)
        await store.append_ledger(conn, entries)
        await store.save_heads(conn, new_heads)


async def begin(ctx: Context, conn: Conn, batch: Batch) -> Unit:
    """Lock the batch's subjects and load their states, ledger context and erasure marks."""
    subjects = sorted({e.subject for e in batch.events})
    await store.lock_subjects(conn, subjects)
    unit = Unit(ctx, ctx.now(), batch.outbox, batch=batch, conn=conn)
    erased = await unit.resolve(conn, subjects)
    principals = [unit.principal(s) for s in subjects]
    unit.states, unit.context = await store.load_batch(conn, subjects, principals)
    unit.gone = erased | {p for p, c in unit.context.items() if c.erased}
    return unit


def name(ctx: Context, subject: str, gone: set[str]) -> str:
    """A subject's principal when it was not resolved against the database (one key, or a
    replay): the current key's, marked gone when the person is erased under any listed key."""
    principal = ctx.principal(subject)
    if (
        ctx.rotating
        and principal not in gone
        and any(n.principal in gone for n in ctx.pseudonyms(subject))
    ):
        gone.add(principal)
    return principal


async def end(ctx: Context, unit: Unit) -> None:
    """Write the unit, then answer the batch's export jobs."""
    assert unit.conn is not None
    await unit.flush(unit.conn)
    for job, with_records in unit.exports:
        await _answer_export(unit.conn, ctx, unit, job, with_records)


async def on_change(ctx: Context, unit: Unit, event: domain.ChangeEvent) -> None:
    """A consent, GPC, restriction or sign-up event: decide it and queue its ledger lines."""
    if _suppressed(unit, event):
        return
    state = unit.states.get(event.subject) or SubjectState(event.subject)
    outcome = domain.apply_event(state, event, ctx.catalogue)
    unit.record(event.subject, ledger.facts(event), outcome.changes)
    if outcome.changed:
        unit.changed(outcome.state, event.time)


async def on_erasure(ctx: Context, unit: Unit, event: ErasureRequested) -> None:
    """An erasure covering consent records: the state goes, the ledger is scrubbed."""
    if _suppressed(unit, event):
        return
    scope = event.data.scope
    if scope == "all" or EXPORT_CATEGORY in scope:
        unit.erase(event.subject)
        unit.gone.add(unit.principal(event.subject))
        for n in ctx.pseudonyms(event.subject):  # under every key: it outlives a retired one
            unit.suppressed.append(
                (n.principal, n.kid, event.time, event.data.request_id, event.id)
            )


async def on_export_job(ctx: Context, unit: Unit, event: ExportJob) -> None:
    """An export job for us: answered at the end (an erased person's with no records)."""
    if event.data.owner == OWNER:
        unit.exports.append((event, unit.principal(event.subject) not in unit.gone))
    else:
        _suppressed(unit, event)  # another owner's job: nothing to do, counted if erased


async def on_policy(ctx: Context, unit: Unit, event: PolicyPublished) -> None:
    """A new policy version: kept; the notices and its effect follow in `notices`."""
    unit.policies.append(event)


def _suppressed(unit: Unit, event: domain.ChangeEvent | ErasureRequested | ExportJob) -> bool:
    """Drop (and count) an event of an erased person: nothing of theirs comes back."""
    if unit.principal(event.subject) not in unit.gone:
        return False
    if unit.batch is not None:
        unit.batch.suppress(event)
    return True


HANDLERS: Handlers[Context, Unit] = Handlers(
    {
        AccountSignedUp: on_change,
        ConsentGranted: on_change,
        ConsentWithdrawn: on_change,
        GpcSignal: on_change,
        ProcessingRestricted: on_change,
        ProcessingObjected: on_change,
        RestrictionLifted: on_change,
        ErasureRequested: on_erasure,
        ExportJob: on_export_job,
        PolicyPublished: on_policy,
    },
    begin=begin,
    end=end,
    refused=(ConsentRuleViolation,),
)


async def _answer_export(
    conn: Conn, ctx: Context, unit: Unit, job: ExportJob, with_records: bool
) -> None:
    """Seal the subject's ledger to the job's key, in parts small enough for Kafka.

    An erased subject's job is answered with an empty part: nothing is brought back, and the
    export does not wait for an owner that will never answer.
    """
    if not ctx.settings.publish:
        return
    entries = await store.ledger(conn, unit.principal(job.subject)) if with_records else []
    records = [ledger.entry_record(e) for e in entries]
    parts = sealed_parts(
        job.data,
        EXPORT_CATEGORY,
        records,
        max_bytes=ctx.settings.export_part_bytes,
        record_schema=RECORD_SCHEMA,
    )
    for data in parts:
        part = new_event(ExportPart, subject=job.subject, data=data, source=SOURCE, time=unit.now)
        # per issue of the job: a job re-keyed after a restore is answered by new parts
        part_id = str(uuid.uuid5(IDS, f"{job.data.job_id}/{job.id}/{data.part_index}"))
        unit.outbox.publish(
            ctx.settings.topics.privacy_receipts, part.model_copy(update={"id": part_id})
        )
