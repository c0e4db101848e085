"""Steps shared by the event handlers and the timer loop: issue jobs, report request status.

Each function runs inside the caller's transaction and adds what it publishes to an Outbox.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from services.retention import domain, store
from services.retention.context import Context
from services.retention.domain.model import Firing, Hold, Timer
from services.retention.rolling import purge_event
from shared.contract.codec import encode_envelope, event_time, kafka_headers
from shared.contract.events import (
    CategoryOutcome,
    DeletionJob,
    DeletionJobData,
    DeletionMode,
    DeletionReason,
    RectificationJob,
    RectificationJobData,
    RequestKind,
    RequestStatus,
    RequestStatusChanged,
    RequestStatusData,
    RestrictionJob,
    RestrictionJobData,
    RestrictionLiftedJob,
)
from shared.plumbing import tracing
from shared.plumbing.db import Conn
from shared.plumbing.outbox import Outbox, OutboxRow

SOURCE = "privacy-plane.retention"
DELETION_TYPE = "deletion.job.v1"
DELETION_HEADERS = kafka_headers()


# --- events -------------------------------------------------------------------------------


def deletion_event(
    row: dict[str, Any] | asyncpg.Record, attempt: int, now: datetime
) -> DeletionJob:
    """One issue of a deletion job (its event id is fixed per job and attempt)."""
    return DeletionJob(
        id=domain.jobs.event_id_for(row["job_id"], attempt),
        source=SOURCE,
        subject=row["subject_id"],
        time=now,
        data=DeletionJobData(
            job_id=row["job_id"],
            owner=row["owner"],
            category=row["category"],
            mode=DeletionMode(row["mode"]),
            reason=DeletionReason(row["reason"]),
            request_id=row["request_id"],
            due_by=row["due_by"],
            attempt=attempt,
        ),
    )


def deletion_row(
    topic: str,
    row: dict[str, Any] | asyncpg.Record,
    attempt: int,
    now: datetime,
    trace: Mapping[str, str] | None = None,
) -> OutboxRow:
    """`deletion_event` encoded straight to JSON (the hot path of a burst of due timers).

    It carries `trace` (the timer's cause's trace context), else the current one. A unit test
    keeps it identical to the contract model's encoding.
    """
    data: dict[str, Any] = {
        "job_id": row["job_id"],
        "owner": row["owner"],
        "category": row["category"],
        "mode": row["mode"],
        "reason": row["reason"],
    }
    if row["request_id"] is not None:
        data["request_id"] = row["request_id"]
    data["due_by"] = event_time(row["due_by"])
    data["attempt"] = attempt
    event_id = domain.jobs.event_id_for(row["job_id"], attempt)
    value = encode_envelope(
        event_id=event_id,
        source=SOURCE,
        event_type=DELETION_TYPE,
        subject=row["subject_id"],
        time=event_time(now),
        data=data,
        extensions=trace or tracing.outgoing(),
    )
    return OutboxRow(topic, row["subject_id"].encode(), value, DELETION_HEADERS, event_id)


def rectification_event(
    row: dict[str, Any] | asyncpg.Record, fields: dict[str, Any], attempt: int, now: datetime
) -> RectificationJob:
    """One issue of a rectification job."""
    return RectificationJob(
        id=domain.jobs.event_id_for(row["job_id"], attempt),
        source=SOURCE,
        subject=row["subject_id"],
        time=now,
        data=RectificationJobData(
            job_id=row["job_id"],
            request_id=row["request_id"],
            owner=row["owner"],
            category=row["category"],
            fields=fields,
            due_by=row["due_by"],
            attempt=attempt,
        ),
    )


def restriction_event(
    kind: str, row: dict[str, Any] | asyncpg.Record, attempt: int, now: datetime
) -> RestrictionJob | RestrictionLiftedJob:
    """One issue of a restriction job (`restriction`) or of its lifting (`restriction_lift`)."""
    data = RestrictionJobData(
        job_id=row["job_id"],
        owner=row["owner"],
        category=row["category"],
        grounds=row["reason"],
        due_by=row["due_by"],
        attempt=attempt,
    )
    model = RestrictionJob if kind == "restriction" else RestrictionLiftedJob
    return model(
        id=domain.jobs.event_id_for(row["job_id"], attempt),
        source=SOURCE,
        subject=row["subject_id"],
        time=now,
        data=data,
    )


# --- timers -------------------------------------------------------------------------------


async def fire(
    conn: Conn,
    ctx: Context,
    out: Outbox,
    claimed: Sequence[tuple[Timer, datetime | None]],
    now: datetime,
) -> tuple[int, int]:
    """Issue the claimed timers' jobs, or block those a hold covers now; (issued, blocked)."""
    holds = await store.holds.holds_for(conn, [t.subject_id for t, _ in claimed])
    firings = domain.jobs.due_jobs([t for t, _ in claimed], holds, now)
    deadlines = {t.id: d for t, d in claimed}
    default_due = now + ctx.settings.job_due
    rows: list[dict[str, Any]] = []
    traces = {f.timer.id: f.timer.trace for f in firings}
    for f in firings:
        if not f.issues:
            continue
        deadline = deadlines.get(f.timer.id)
        rows.append(
            {
                "job_id": domain.jobs.timer_job_id(f.timer),
                "timer_id": f.timer.id,
                "subject_id": f.timer.subject_id,
                "owner": f.timer.owner,
                "category": f.timer.category,
                "mode": f.timer.mode,
                "reason": f.timer.reason,
                "request_id": f.timer.request_id,
                "due_by": deadline if deadline is not None and deadline > now else default_due,
            }
        )
    fresh = await store.jobs.insert_jobs(
        conn, "deletion", now, now + ctx.settings.receipt_timeout, rows
    )
    for row in rows:
        if row["job_id"] in fresh:
            trace = traces[row["timer_id"]]
            out.raw(deletion_row(ctx.settings.topics.privacy_jobs, row, 1, now, trace))
    blocked = [f for f in firings if not f.issues]
    await store.timers.mark_blocked(
        conn, [f.timer.id for f in blocked], [f.blocked_by for f in blocked]
    )
    await _report_firings(conn, ctx, out, [f for f in firings if f.timer.request_id], holds, now)
    return len(rows), len(blocked)


async def _report_firings(
    conn: Conn,
    ctx: Context,
    out: Outbox,
    firings: Sequence[Firing],
    holds: Sequence[Hold],
    now: datetime,
) -> None:
    """Update the outcomes of requests whose timers fired or were blocked; publish changes."""
    changed: set[str] = set()
    for f in firings:
        request_id = f.timer.request_id
        assert request_id is not None
        current = {o.category: o for o in await store.requests.outcomes(conn, request_id)}
        new = await _firing_outcome(conn, ctx, f, holds)
        if current.get(f.timer.category) != new:
            await store.requests.put_outcomes(conn, request_id, [new])
            changed.add(request_id)
    for request_id in sorted(changed):
        await publish_status(conn, ctx, out, request_id, now)


async def _firing_outcome(
    conn: Conn, ctx: Context, f: Firing, holds: Sequence[Hold]
) -> CategoryOutcome:
    t = f.timer
    if not f.issues:
        reasons = sorted({h.reason for h in holds if h.hold_id in f.blocked_by})
        return CategoryOutcome(
            category=t.category,
            outcome="blocked",
            reason=f"legal hold: {', '.join(reasons)}",
            owner=t.owner,
        )
    rule = ctx.rules.categories.get(t.category)
    if t.mode == "restrict" and rule is not None and rule.legal_obligation:
        assert t.request_id is not None
        return CategoryOutcome(
            category=t.category,
            outcome="retained",
            reason=f"legal obligation: {rule.legal_obligation}; restricted meanwhile",
            until=await store.timers.obligation_until(conn, t.request_id, t.category),
            owner=t.owner,
        )
    return CategoryOutcome(
        category=t.category,
        outcome="pending",
        reason="erasure request: deletion job issued",
        owner=t.owner,
    )


# --- requests -----------------------------------------------------------------------------


async def publish_status(
    conn: Conn, ctx: Context, out: Outbox, request_id: str, now: datetime
) -> None:
    """Recompute a request's status from its outcomes and jobs, store it and publish it."""
    req = await store.requests.request(conn, request_id, lock=False)
    if req is None:
        return
    outcomes = await store.requests.outcomes(conn, request_id)
    open_jobs = await store.jobs.open_request_jobs(conn, request_id)
    status = domain.requests.request_status(outcomes, open_jobs, req["cancelled_at"] is not None)
    overdue = req["overdue"] or domain.requests.is_overdue(req["deadline"], status, now)
    await store.requests.set_request_status(conn, request_id, status, overdue)
    event = RequestStatusChanged(
        id=str(uuid.uuid4()),
        source=SOURCE,
        subject=req["subject_id"],
        time=now,
        data=RequestStatusData(
            request_id=request_id,
            kind=RequestKind(req["kind"]),
            status=RequestStatus(status),
            overdue=overdue,
            deadline=req["deadline"],
            outcomes=outcomes,
            reason=req["reason"],
        ),
    )
    out.publish(ctx.settings.topics.requests_status, event)


# --- jobs ---------------------------------------------------------------------------------


async def reissue(
    conn: Conn, ctx: Context, out: Outbox, rows: Sequence[asyncpg.Record], now: datetime
) -> None:
    """Issue again the jobs that got no receipt in time or failed retryably (attempt + 1)."""
    attempts, next_at = [], []
    for row in rows:
        attempt = row["attempt"] + 1
        attempts.append(attempt)
        wait = domain.jobs.backoff(ctx.settings.receipt_timeout, attempt, ctx.receipt_cap)
        next_at.append(now + wait)
        if row["kind"] == "deletion":
            out.raw(deletion_row(ctx.settings.topics.privacy_jobs, row, attempt, now))
        elif row["kind"] in ("restriction", "restriction_lift"):
            event = restriction_event(row["kind"], row, attempt, now)
            out.publish(ctx.settings.topics.privacy_jobs, event)
        elif row["kind"] == "purge":
            out.publish(ctx.settings.topics.privacy_jobs, purge_event(row, attempt, now))
        else:
            fields = orjson.loads(row["fields"]) if row["fields"] else {}
            out.publish(
                ctx.settings.topics.privacy_jobs, rectification_event(row, fields, attempt, now)
            )
    await store.jobs.mark_reissued(conn, [r["job_id"] for r in rows], attempts, now, next_at)


async def supersede_rectifications(
    conn: Conn,
    ctx: Context,
    out: Outbox,
    subject: str,
    decisions: Sequence[domain.erasure.ErasureDecision],
    erasure_id: str,
    now: datetime,
) -> None:
    """An erasure cancels the subject's open rectifications of what it deletes: their corrected
    values (personal data) are forgotten here, and each request reports why (DESIGN §5)."""
    categories = domain.erasure.superseded_rectifications(decisions)
    cancelled = await store.jobs.cancel_rectifications(conn, subject, categories)
    for row in cancelled:
        outcome = domain.erasure.superseded_outcome(row["category"], row["owner"], erasure_id)
        await store.requests.put_outcomes(conn, row["request_id"], [outcome])
    for request_id in sorted({row["request_id"] for row in cancelled}):
        await publish_status(conn, ctx, out, request_id, now)
