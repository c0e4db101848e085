"""Where events enter the retention service: one handler per event type (`HANDLERS`).

Each runs inside the pipeline's transaction: decide (domain), save (store), publish (outbox).
The pipeline has already deduplicated the batch; a `RetentionError` from the domain is a
contract violation and dead-letters the one event before anything is written for it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.retention import disclosures, domain, restrictions, rolling, store, workflow
from services.retention.context import Context
from services.retention.domain.model import Hold
from shared.contract.events import (
    AccountClosed,
    AccountReopened,
    AccountSignedUp,
    CategoryOutcome,
    ConsentState,
    DeletionCompleted,
    DeletionFailed,
    DisclosureRecorded,
    ErasureRequested,
    LegalHoldPlaced,
    LegalHoldReleased,
    ProcessingRestricted,
    PurgeCompleted,
    PurgeFailed,
    RectificationCompleted,
    RectificationFailed,
    RectificationRequested,
    RequestCancelled,
    RequestExtended,
    RestrictionCompleted,
    RestrictionFailed,
    RestrictionLifted,
    SubscriptionChanged,
)
from shared.plumbing.db import Conn
from shared.plumbing.handlers import Handlers, Tx, plain_tx
from shared.plumbing.logging import get_logger

log = get_logger(__name__)

# --- accounts -----------------------------------------------------------------------------


async def on_signed_up(ctx: Context, tx: Tx, e: AccountSignedUp) -> None:
    """Map the subject to its account; a closure seen first (other partition) still counts."""
    await store.accounts.upsert_subject(tx.conn, e.subject, e.data.account_id, e.time)
    account = await store.accounts.lock_account(tx.conn, e.data.account_id)
    if account is not None and account["status"] == "closed":
        await _join_closed_account(tx.conn, ctx, e.subject, account)
    else:
        await rolling.arm_subject(tx.conn, ctx, e.subject, e.time)


async def _join_closed_account(conn: Conn, ctx: Context, subject_id: str, account: Any) -> None:
    """Give a subject learnt of after its account's closure the closure's timers."""
    subject = await store.accounts.subject(conn, subject_id)
    if subject is not None and subject["erased_at"] is not None:
        return
    if await store.timers.has_closure_timers(conn, subject_id):
        return
    plans = domain.rules.schedule_for_closure(
        ctx.rules, account["crm_retention_days"], account["closed_at"]
    )
    await store.timers.insert_timers(conn, [subject_id] * len(plans), plans, ctx.clock.now())


async def on_closed(ctx: Context, tx: Tx, e: AccountClosed) -> None:
    account_id = e.data.account_id
    await store.accounts.ensure_subject(tx.conn, e.subject, account_id)
    account = await store.accounts.lock_account(tx.conn, account_id)
    if account is not None and account["status"] == "closed":
        await _join_closed_account(tx.conn, ctx, e.subject, account)  # the first closure counts
        return
    if not await store.accounts.set_lifecycle(
        tx.conn, account_id, "closed", e.data.closed_at, e.time
    ):
        return  # a newer reopening was applied already
    days = account["crm_retention_days"] if account else None
    plans = domain.rules.schedule_for_closure(ctx.rules, days, e.data.closed_at)
    live = [
        r["subject_id"]
        for r in await store.accounts.account_subjects(tx.conn, account_id)
        if r["erased_at"] is None
    ]
    await store.purges.stop(tx.conn, live)  # the closure's timers take over
    await store.timers.insert_timers(
        tx.conn,
        [s for s in live for _ in plans],
        [p for _ in live for p in plans],
        ctx.clock.now(),
    )


async def on_reopened(ctx: Context, tx: Tx, e: AccountReopened) -> None:
    account_id = e.data.account_id
    await store.accounts.ensure_subject(tx.conn, e.subject, account_id)
    await store.accounts.lock_account(tx.conn, account_id)
    if not await store.accounts.set_lifecycle(tx.conn, account_id, "open", None, e.time):
        return
    members = [r["subject_id"] for r in await store.accounts.account_subjects(tx.conn, account_id)]
    await store.timers.cancel_closure_timers(tx.conn, members)
    await rolling.resume(tx.conn, ctx, members, e.data.reopened_at)


async def on_subscription(ctx: Context, tx: Tx, e: SubscriptionChanged) -> None:
    """Account-level terms (keyed by account id): recompute the account's pending CRM timers."""
    d = e.data
    if not await store.accounts.set_terms(
        tx.conn, d.account_id, d.plan, d.crm_retention_days, e.time
    ):
        return
    affected = [n for n, r in ctx.rules.categories.items() if r.period_from == "subscription"]
    rows = await store.timers.account_timers(tx.conn, d.account_id, affected)
    dues = [
        domain.rules.recompute_due(ctx.rules, r["category"], d.crm_retention_days, r["base_at"])
        for r in rows
    ]
    keep = [(r, due) for r, due in zip(rows, dues, strict=True) if due is not None]
    await store.rules.set_dues(
        tx.conn,
        [r["id"] for r, _ in keep],
        [due for _, due in keep if due is not None],
        [ctx.rules.categories[r["category"]].owner for r, _ in keep],
    )


# --- requests -----------------------------------------------------------------------------


async def on_erasure(ctx: Context, tx: Tx, e: ErasureRequested) -> None:
    now = ctx.clock.now()
    categories = domain.erasure.erasure_scope(ctx.rules, e.data.scope)
    request_id = e.data.request_id
    subject = await store.accounts.subject(tx.conn, e.subject)
    account_id = subject["account_id"] if subject else None
    closed_at = subject["closed_at"] if subject and subject["status"] == "closed" else None
    if closed_at is None and e.data.scope == "all":
        closed_at = now  # an erasure of everything on an open account counts as its closure
    deadline = domain.requests.request_deadline(e.time)
    if not await store.requests.insert_request(
        tx.conn, request_id, e.subject, "erasure", e.time, deadline
    ):
        raise domain.model.RetentionError(f"request {request_id} is known already")
    decisions = domain.erasure.decide_erasure(
        ctx.rules,
        categories,
        await store.holds.holds_for(tx.conn, [e.subject]),
        now,
        subject_id=e.subject,
        account_id=account_id,
        closed_at=closed_at,
        crm_retention_days=subject["crm_retention_days"] if subject else None,
    )
    if e.data.scope == "all":
        await store.accounts.mark_erased(tx.conn, e.subject, now)
    await store.timers.supersede(tx.conn, e.subject, categories, request_id)
    plans = [p for d in decisions for p in d.plans]
    await store.timers.insert_timers(tx.conn, [e.subject] * len(plans), plans, now, request_id)
    await store.requests.put_outcomes(
        tx.conn, request_id, [domain.erasure.erasure_outcome(d) for d in decisions]
    )
    await workflow.publish_status(tx.conn, ctx, tx.outbox, request_id, now)
    await workflow.supersede_rectifications(
        tx.conn, ctx, tx.outbox, e.subject, decisions, request_id, now
    )


async def on_rectification(ctx: Context, tx: Tx, e: RectificationRequested) -> None:
    rule = ctx.rules.categories.get(e.data.category)
    if rule is None:
        raise domain.model.UnknownCategory(f"unknown category: {e.data.category}")
    now = ctx.clock.now()
    request_id = e.data.request_id
    deadline = domain.requests.request_deadline(e.time)
    if not await store.requests.insert_request(
        tx.conn, request_id, e.subject, "rectification", e.time, deadline
    ):
        raise domain.model.RetentionError(f"request {request_id} is known already")
    row: dict[str, Any] = {
        "job_id": domain.jobs.job_id_for("rectification", request_id, e.data.category),
        "subject_id": e.subject,
        "owner": rule.owner,
        "category": e.data.category,
        "request_id": request_id,
        "due_by": deadline,
        "fields": e.data.fields,
    }
    await store.jobs.insert_jobs(
        tx.conn, "rectification", now, now + ctx.settings.receipt_timeout, [row]
    )
    tx.outbox.publish(
        ctx.settings.topics.privacy_jobs, workflow.rectification_event(row, e.data.fields, 1, now)
    )
    outcome = CategoryOutcome(
        category=e.data.category,
        outcome="pending",
        reason="rectification job issued",
        owner=rule.owner,
    )
    await store.requests.put_outcomes(tx.conn, request_id, [outcome])
    await workflow.publish_status(tx.conn, ctx, tx.outbox, request_id, now)


async def on_cancelled(ctx: Context, tx: Tx, e: RequestCancelled) -> None:
    """Stop what a request has not issued yet (jobs already issued run to their receipt)."""
    request_id = e.data.request_id
    req = await store.requests.request(tx.conn, request_id)
    if req is None or req["cancelled_at"] is not None:
        return  # not ours (an export request) or cancelled already
    now = ctx.clock.now()
    await store.requests.cancel_request(tx.conn, request_id, now)
    stopped = await store.timers.cancel_request_timers(tx.conn, request_id)
    issued = {j["category"] for j in await store.jobs.list_jobs(tx.conn, request_id=request_id)}
    await store.timers.restore_superseded(tx.conn, request_id, sorted(set(stopped) - issued))
    current = {o.category: o for o in await store.requests.outcomes(tx.conn, request_id)}
    cancelled = [
        CategoryOutcome(
            category=c,
            outcome="cancelled",
            reason="request cancelled before the job was issued",
            owner=current[c].owner if c in current else None,
        )
        for c in sorted(set(stopped) - issued)
    ]
    await store.requests.put_outcomes(tx.conn, request_id, cancelled)
    await workflow.publish_status(tx.conn, ctx, tx.outbox, request_id, now)


async def on_extended(ctx: Context, tx: Tx, e: RequestExtended) -> None:
    request_id = e.data.request_id
    req = await store.requests.request(tx.conn, request_id)
    if req is None:
        return  # not ours (an export request)
    deadline = domain.requests.extend_deadline(
        req["requested_at"], req["extended"], e.data.new_deadline, req["deadline"]
    )
    await store.requests.extend_request(tx.conn, request_id, deadline, f"extended: {e.data.reason}")
    await workflow.publish_status(tx.conn, ctx, tx.outbox, request_id, ctx.clock.now())


# --- holds --------------------------------------------------------------------------------


async def on_hold_placed(ctx: Context, tx: Tx, e: LegalHoldPlaced) -> None:
    d = e.data
    hold = Hold(
        hold_id=d.hold_id,
        scope=d.scope,
        subject_id=e.subject if d.scope == "subject" else None,
        account_id=d.account_id,
        categories=None if d.categories == "all" else tuple(d.categories),
        reason=d.reason.value,
    )
    await store.holds.place_hold(tx.conn, hold, e.time)
    log.info("legal_hold_placed", hold_id=d.hold_id, scope=d.scope)


async def on_hold_released(ctx: Context, tx: Tx, e: LegalHoldReleased) -> None:
    """Release: the timers it blocked become due again; the loop issues them (or re-blocks)."""
    d = e.data
    subject_id = e.subject if d.scope == "subject" else None
    await store.holds.release_hold(tx.conn, d.hold_id, d.scope, subject_id, d.account_id, e.time)
    released = await store.timers.unblock(tx.conn, [d.hold_id])
    log.info("legal_hold_released", hold_id=d.hold_id, timers_due_again=released)


# --- receipts -----------------------------------------------------------------------------


async def on_receipt(
    ctx: Context,
    tx: Tx,
    e: DeletionCompleted | DeletionFailed | RectificationCompleted | RectificationFailed,
) -> None:
    kind = "deletion" if isinstance(e, DeletionCompleted | DeletionFailed) else "rectification"
    job = await store.jobs.job(tx.conn, e.data.job_id)
    if job is None or job["kind"] != kind:
        tx.batch.reject(e, f"unknown job {e.data.job_id[:200]}")
        return
    if job["owner"] != e.data.owner:
        tx.batch.reject(e, f"receipt from {e.data.owner[:100]} for a job of {job['owner']}")
        return
    if job["status"] != "issued":
        return  # a late receipt of a job already closed
    now = ctx.clock.now()
    outcome: CategoryOutcome | None = None
    if isinstance(e, DeletionCompleted | RectificationCompleted):
        records = e.data.records_deleted if isinstance(e, DeletionCompleted) else 0
        await store.jobs.complete_job(tx.conn, job["job_id"], now, records)
        if isinstance(e, DeletionCompleted):
            await store.certificates.append_certificate(tx.conn, _certificate(job, e, now))
            if job["mode"] != "restrict":
                outcome = CategoryOutcome(
                    category=job["category"], outcome="deleted", owner=job["owner"]
                )
        elif job["request_id"]:
            await store.requests.drop_outcome(tx.conn, job["request_id"], job["category"])
    elif e.data.retryable:
        wait = domain.jobs.backoff(
            ctx.settings.retry_backoff, job["attempt"], ctx.settings.max_backoff
        )
        await store.jobs.retry_job(tx.conn, job["job_id"], e.data.error[:2000], now + wait)
    else:
        await store.jobs.fail_job(tx.conn, job["job_id"], e.data.error[:2000])
        outcome = CategoryOutcome(
            category=job["category"],
            outcome="failed",
            reason="the owner reported a failure it cannot retry",
            owner=job["owner"],
        )
    if job["request_id"]:
        if outcome is not None:
            await store.requests.put_outcomes(tx.conn, job["request_id"], [outcome])
        await workflow.publish_status(tx.conn, ctx, tx.outbox, job["request_id"], now)


def _certificate(job: Any, e: DeletionCompleted, now: datetime) -> domain.certificates.Certificate:
    return domain.certificates.Certificate(
        job_id=job["job_id"],
        subject_id=job["subject_id"],
        owner=job["owner"],
        category=job["category"],
        mode=job["mode"],
        reason=job["reason"],
        request_id=job["request_id"],
        attempt=job["attempt"],
        issued_at=job["issued_at"],
        completed_at=now,
        records_deleted=e.data.records_deleted,
        receipt_id=e.id,
    )


# --- consent ------------------------------------------------------------------------------


async def on_consent_state(ctx: Context, tx: Tx, e: ConsentState) -> None:
    """Marketing withdrawn or objected to (a transition, not every state message): delete its
    data at once; an objection may name the category or any of its direct-marketing purposes."""
    seen = await store.consent.consent_seen(tx.conn, e.subject)
    if seen is not None and seen[0] >= e.data.version:
        return  # an older state arriving late
    before = seen[1] if seen is not None else {}
    objected = set(e.data.objections)
    gone = {
        p: domain.rules.withdrawn(s.state if s else None, p in objected)
        for p, s in {**dict.fromkeys(objected), **e.data.purposes}.items()
    }
    await store.consent.put_consent(tx.conn, e.subject, e.data.version, gone)
    now = ctx.clock.now()
    plans = [
        domain.model.TimerPlan(
            category=name,
            owner=ctx.rules.categories[name].owner,
            mode="delete",
            reason="consent_withdrawn",
            cause="consent",
            base_at=None,
            due_at=now,
            cause_key=f"consent:{e.data.version}",
        )
        for name in domain.rules.marketing_deletions(ctx.rules, before, gone, objected)
    ]
    await store.timers.insert_timers(tx.conn, [e.subject] * len(plans), plans, now)


HANDLERS: Handlers[Context, Tx] = Handlers(
    {
        AccountSignedUp: on_signed_up,
        AccountClosed: on_closed,
        AccountReopened: on_reopened,
        SubscriptionChanged: on_subscription,
        ErasureRequested: on_erasure,
        RectificationRequested: on_rectification,
        RequestCancelled: on_cancelled,
        RequestExtended: on_extended,
        LegalHoldPlaced: on_hold_placed,
        LegalHoldReleased: on_hold_released,
        DeletionCompleted: on_receipt,
        DeletionFailed: on_receipt,
        RectificationCompleted: on_receipt,
        RectificationFailed: on_receipt,
        ConsentState: on_consent_state,
        ProcessingRestricted: restrictions.on_restricted,
        RestrictionLifted: restrictions.on_lifted,
        RestrictionCompleted: restrictions.on_receipt,
        RestrictionFailed: restrictions.on_receipt,
        PurgeCompleted: rolling.on_purge_receipt,
        PurgeFailed: rolling.on_purge_receipt,
        DisclosureRecorded: disclosures.on_disclosure,
    },
    begin=plain_tx,
    refused=(domain.model.RetentionError,),
)
