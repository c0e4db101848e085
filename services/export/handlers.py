"""Where events enter the export service: one handler per event type (`HANDLERS`).

Requests and owners' answers: load, decide (domain), save (store), publish (outbox), inside
the pipeline's transaction; an `ExportRefused` dead-letters the one event.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from pathlib import Path
from typing import cast

from services.export import at_rest, disclosures, domain, part_store, parts, store
from services.export import metrics as export_metrics
from services.export.context import SOURCE, Context
from services.export.domain import ExportRefused, PartVerdict, Request, State
from services.export.storage import (
    bundle_key,
    category_prefix,
    part_key,
    parts_prefix,
)
from shared.contract.events import (
    DisclosureRecorded,
    ErasureRequested,
    ExportJob,
    ExportJobData,
    ExportPart,
    ExportPartData,
    ExportPartFailed,
    ExportPartFailedData,
    ExportRequested,
    RequestCancelled,
    RequestExtended,
)
from shared.contract.sealing import new_keypair
from shared.plumbing import metrics, positions
from shared.plumbing.db import Conn
from shared.plumbing.handlers import Handlers, Tx, plain_tx


async def on_requested(ctx: Context, tx: Tx, event: ExportRequested) -> None:
    existing = await store.get_request(tx.conn, event.data.request_id, lock=True)
    if not domain.check_new_request(existing.request if existing else None, event.subject):
        return  # the same request again: its jobs are out already
    request = Request(
        request_id=event.data.request_id,
        subject=event.subject,
        requested_at=event.time,
        deadline=domain.deadline_for(event.time),
    )
    private_key, public_key = new_keypair()
    jobs = {
        owner: store.Job(domain.job_id_for(request.request_id, owner), list(categories))
        for owner, categories in ctx.settings.owners.items()
    }
    storage_key = uuid.uuid4().hex  # random: names the files of this key, see job_event_id
    await store.insert_request(
        tx.conn,
        request,
        storage_key=storage_key,
        public_key=public_key,
        sealed_key=ctx.vault.seal(private_key),
        data_key=ctx.vault.seal(at_rest.new_data_key()),  # the files' key, see at_rest
        jobs=jobs,
    )
    del private_key
    for owner, job in sorted(jobs.items()):
        data = ExportJobData(
            job_id=job.job_id,
            request_id=request.request_id,
            owner=owner,
            categories=job.categories,
            due_by=request.deadline,
            public_key=public_key,
        )
        job_event = ExportJob(
            id=domain.job_event_id(job.job_id, storage_key),
            source=SOURCE,
            subject=request.subject,
            time=ctx.now(),
            data=data,
        )
        tx.outbox.publish(ctx.settings.topics.privacy_jobs, job_event)
    # Made before a restore and missing from the restored data: the key it had is lost.
    rekeyed = await positions.restored_after(tx.conn, event.time) is not None
    ctx.publish_status(tx.outbox, request, reason=domain.REKEYED_REASON if rekeyed else None)


async def on_cancelled(ctx: Context, tx: Tx, event: RequestCancelled) -> None:
    row = await store.get_request(tx.conn, event.data.request_id, lock=True)
    if row is None:
        return  # not an export request (retention answers erasures and rectifications)
    if row.request.subject != event.subject:
        raise domain.ChangeRefused("subject differs from the request's subject")
    if not domain.check_cancel(row.request):
        return
    await _cancel(ctx, tx, row, "cancelled by request")


async def _cancel(ctx: Context, tx: Tx, row: store.RequestRow, reason: str) -> None:
    """Stop an open request: key destroyed, partial files deleted, status cancelled."""
    await store.cancel(tx.conn, row.request.request_id, ctx.now())
    await asyncio.to_thread(ctx.storage.delete_prefix, parts_prefix(row.storage_key))
    cancelled = row.request.model_copy(update={"state": State.CANCELLED})
    ctx.publish_status(tx.outbox, cancelled, reason=reason)


async def on_erasure(ctx: Context, tx: Tx, event: ErasureRequested) -> None:
    """An erasure stops or trims only what it must (policy 5.1 with 5.3): an open export goes on
    without the erased categories, a bundle is deleted only when the erasure covers its content."""
    scope = event.data.scope
    reason = domain.erased_reason(event.data.request_id)
    deleted = []
    for row in await store.subject_requests(tx.conn, event.subject):
        request = row.request
        jobs = (
            {o: j.categories for o, j in (await store.jobs(tx.conn, request.request_id)).items()}
            if request.state.open
            else {}
        )
        effect = domain.erasure_effect(
            request,
            bundle_kept=row.bundle_deleted_at is None,
            scope=scope,
            asked=[c for categories in jobs.values() for c in categories],
        )
        if effect is domain.ErasureEffect.CANCEL:
            await _cancel(ctx, tx, row, domain.ERASED_REASON)
        elif effect is domain.ErasureEffect.TRIM:
            await _trim(ctx, tx, row, domain.erased_jobs(scope, jobs), reason)
        elif effect is domain.ErasureEffect.DELETE_BUNDLE:
            bundle_id = cast(str, request.bundle_id)
            await asyncio.to_thread(ctx.storage.delete, bundle_key(bundle_id))
            deleted.append(request.request_id)
    if deleted:
        await store.mark_bundles_deleted(tx.conn, deleted, ctx.now())
        export_metrics.BUNDLES_DELETED.inc(len(deleted))


async def _trim(
    ctx: Context, tx: Tx, row: store.RequestRow, erased: dict[str, list[str]], reason: str
) -> None:
    """Settle the erased categories (the export no longer waits for them), drop their parts."""
    request_id = row.request.request_id
    for owner, categories in erased.items():
        await part_store.mark_erased(tx.conn, request_id, owner, categories, reason, ctx.now())
        for category in categories:
            prefix = category_prefix(row.storage_key, owner, category)
            await asyncio.to_thread(ctx.storage.delete_prefix, prefix)
    if row.request.state is State.ASSEMBLING:
        # the assembler at work read the erased parts: send the request back, so its finish is
        # refused (it deletes its bundle) and the next attempt assembles without them
        await store.set_state(tx.conn, request_id, State.READY)
        return
    await _progress(ctx, tx, row)


async def on_extended(ctx: Context, tx: Tx, event: RequestExtended) -> None:
    row = await store.get_request(tx.conn, event.data.request_id, lock=True)
    if row is None:
        return  # not an export request
    deadline = domain.check_extension(row.request, event.data.new_deadline)
    await store.set_deadline(tx.conn, row.request.request_id, deadline)
    extended = row.request.model_copy(update={"deadline": deadline, "extended": True})
    ctx.publish_status(tx.outbox, extended, reason=f"extended: {event.data.reason}")


async def on_part(ctx: Context, tx: Tx, event: ExportPart) -> None:
    data = event.data
    row = await _own_request(tx.conn, data.request_id, event.time)
    if row is None:
        export_metrics.PARTS.labels("old_key").inc()
        return
    status = await part_store.part_status(
        tx.conn, data.request_id, data.owner, data.category, data.part_index
    )
    verdict = await _verdict(tx.conn, row, event.subject, data, already_stored=status == "stored")
    if verdict is not PartVerdict.ACCEPT:
        export_metrics.PARTS.labels(verdict.value).inc()
    if verdict is PartVerdict.SUPPRESS:  # the request was cancelled or erased: nothing kept
        await _drop_exchange_file(ctx, tx, data)
        tx.batch.suppress(event)
        return
    if verdict is PartVerdict.ERASED:  # the person erased the category meanwhile: never kept
        await _drop_exchange_file(ctx, tx, data)
        return
    if verdict is PartVerdict.DUPLICATE:
        metrics.EVENTS_DUPLICATE.labels(ctx.settings.service_name, event.type).inc()
        return
    received = part_store.ReceivedPart.of(data, ctx.now())
    taken: Path | None = None
    try:
        count, taken = await asyncio.to_thread(_store_part, ctx, row, event)
        received = received.stored(count)
    except parts.SealedForAnotherKey as failed:
        if await positions.restored_after(tx.conn, row.request.requested_at) is not None:
            export_metrics.PARTS.labels("old_key").inc()
            return  # sealed to the key lost by a restore: the re-issued job brings it again
        received = received.failed(str(failed))
    except parts.PartError as failed:  # the owner's input: the part fails, the batch goes on
        received = received.failed(str(failed))
    export_metrics.PARTS.labels(received.status).inc()
    await part_store.save_part(tx.conn, data.request_id, received)
    if taken is not None and ctx.settings.delete_referenced_parts:
        await part_store.queue_exchange_deletion(tx.conn, str(taken), ctx.now())
    await _progress(ctx, tx, row)


async def _drop_exchange_file(ctx: Context, tx: Tx, data: ExportPartData) -> None:
    """An exchange file of a part we will never take (erased category, cancelled or erased
    request) is deleted like a taken one (when we delete those: the default)."""
    if data.location is None or not ctx.settings.delete_referenced_parts:
        return
    try:
        path = parts.resolve_location(ctx.settings.exchange_dir, data.location)
    except parts.PartError:
        return  # not a file of ours to delete
    await part_store.queue_exchange_deletion(tx.conn, str(path), ctx.now())


def _store_part(ctx: Context, row: store.RequestRow, event: ExportPart) -> tuple[int, Path | None]:
    """Records kept, and the exchange file they came from (None for an inline part)."""
    data = event.data
    key = part_key(row.storage_key, data.owner, data.category, data.part_index)
    storage = ctx.storage_for(row)  # encrypted under the request's data key
    if data.sealed is not None:
        private_key = ctx.vault.open(cast(bytes, row.sealed_key))
        count = parts.store_inline(
            storage, key, private_key, data.sealed, data.sha256, data.record_count
        )
        return count, None
    # resolved once: the path checked is the path read and, later, the one deleted
    path = parts.resolve_location(ctx.settings.exchange_dir, cast(str, data.location))
    count = parts.store_file(
        storage, key, path, data.sha256, data.record_count, ctx.settings.max_reference_bytes
    )
    return count, path


async def on_part_failed(ctx: Context, tx: Tx, event: ExportPartFailed) -> None:
    data = event.data
    row = await _own_request(tx.conn, data.request_id, event.time)
    if row is None:
        return
    verdict = await _verdict(tx.conn, row, event.subject, data, already_stored=False)
    if verdict is PartVerdict.SUPPRESS:
        tx.batch.suppress(event)
        return
    if verdict is PartVerdict.ERASED:
        return  # settled as erased already; a failure changes nothing
    failure = domain.Failure(
        owner=data.owner, category=data.category, error=data.error, retryable=data.retryable
    )
    await part_store.save_failure(tx.conn, data.request_id, failure, ctx.now())
    await _progress(ctx, tx, row)


async def _own_request(conn: Conn, request_id: str, sent_at: datetime) -> store.RequestRow | None:
    """The request a part answers; None when a restore after the part lost the request (it is
    keyed anew when re-consumed, so the part, sealed to the old key, is of no use)."""
    row = await store.get_request(conn, request_id, lock=True)
    if row is None:
        if await positions.restored_after(conn, sent_at) is not None:
            return None
        raise domain.PartRefused(f"unknown export request {request_id!r}")
    return row


async def _verdict(
    conn: Conn,
    row: store.RequestRow,
    subject: str,
    data: ExportPartData | ExportPartFailedData,
    *,
    already_stored: bool,
) -> PartVerdict:
    request_id = row.request.request_id
    job = (await store.jobs(conn, request_id)).get(data.owner)
    part_count = data.part_count if isinstance(data, ExportPartData) else None
    known = (
        await part_store.known_part_count(conn, request_id, data.owner, data.category)
        if data.category is not None and part_count is not None
        else None
    )
    erased = (
        await part_store.erased_categories(conn, request_id, data.owner)
        if data.category is not None
        else set()
    )
    return domain.check_part(
        row.request,
        subject=subject,
        owner=data.owner,
        job_id=data.job_id,
        expected_job_id=job.job_id if job else None,
        categories=job.categories if job else [],
        category=data.category,
        part_count=part_count,
        known_count=known,
        already_stored=already_stored,
        erased=erased,
    )


async def _progress(ctx: Context, tx: Tx, row: store.RequestRow) -> None:
    """After an answer: pending → in_progress, and ready once every category is settled."""
    request = row.request
    jobs = await store.jobs(tx.conn, request.request_id)
    settled = domain.settle(
        {owner: job.categories for owner, job in jobs.items()},
        await part_store.summary(tx.conn, request.request_id),
        await part_store.failures(tx.conn, request.request_id),
    )
    state = State.READY if domain.all_in(settled) else State.IN_PROGRESS
    if state is not request.state:
        await store.set_state(tx.conn, request.request_id, state)
    if request.state is State.PENDING:
        ctx.publish_status(tx.outbox, request.model_copy(update={"state": state}))


HANDLERS: Handlers[Context, Tx] = Handlers(
    {
        ExportRequested: on_requested,
        RequestCancelled: on_cancelled,
        ErasureRequested: on_erasure,
        RequestExtended: on_extended,
        ExportPart: on_part,
        ExportPartFailed: on_part_failed,
        DisclosureRecorded: disclosures.on_disclosure,
    },
    begin=plain_tx,
    refused=(ExportRefused,),
)
