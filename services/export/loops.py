"""Background work: assemble bundles (all parts in, or the deadline passed) and delete expired ones.

Both claim rows with FOR UPDATE SKIP LOCKED, so replicas never do the same work twice. The zip
is written outside any transaction (under a lease), so a large bundle never holds a lock the
consumer waits on; a cancellation that lands meanwhile wins and the zip is thrown away, and so
does an assembler whose lease lapsed and whose request another one claimed (attempt fencing).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from pathlib import Path

from services.export import disclosures, domain, part_store, store
from services.export import metrics as export_metrics
from services.export.bundle import BundleInput, write_bundle
from services.export.context import Context
from services.export.storage import bundle_key, parts_prefix
from shared.plumbing import outbox
from shared.plumbing.logging import get_logger
from shared.plumbing.loops import Items, Loop
from shared.plumbing.metrics import REQUESTS, REQUESTS_DUE_SOON
from shared.plumbing.outbox import Outbox
from shared.plumbing.seams import Seam, reach

log = get_logger(__name__)

# Test seams (shared.plumbing.seams), each before the commit of its transaction
after_bundle: Seam | None = None
"""The bundle is written and the request marked finished."""
after_bundles_deleted: Seam | None = None
"""Expired bundles' files are deleted and their requests marked."""


async def assemble(ctx: Context, _: Items) -> bool:
    """Write the bundle of one request that is ready or past its deadline; True if one was."""
    return await assemble_one(ctx, ctx.information)


async def clean(ctx: Context, items: Items) -> bool:
    """Delete bundles past their expiry (the export is personal data with its own retention)."""
    return await delete_expired(ctx, items)


async def report(ctx: Context, _: Items) -> bool:
    """Export requests by status, overdue flag and near deadline (the deadline alerts use them)."""
    service = ctx.settings.service_name
    now = ctx.now()
    async with ctx.pool.acquire() as conn:
        counts = await store.request_counts(conn, now)
        soon = await store.due_soon(conn, now, now + timedelta(days=7))
    for status in ("pending", "in_progress", "completed", "partially_completed", "cancelled"):
        for overdue in (False, True):
            value = counts.get((status, overdue), 0)
            REQUESTS.labels(service, "export", status, str(overdue).lower()).set(value)
    REQUESTS_DUE_SOON.labels(service, "export").set(soon)
    return False


def _interval(ctx: Context) -> float:
    return ctx.settings.loop_interval


LOOPS: list[Loop[Context]] = [
    Loop("export-assembler", assemble, _interval),
    Loop("export-bundle-cleaner", clean, _interval),
    Loop("export-request-gauges", report, _interval),
]


async def assemble_one(ctx: Context, info: dict[str, domain.CategoryInfo]) -> bool:
    """Assemble one due request; False when none is due."""
    now = ctx.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        claim = await store.claim_due(conn, now, now + ctx.settings.assembly_lease)
        if claim is None:
            return False
        row, attempt = claim.row, claim.attempt
        request = row.request
        jobs = await store.jobs(conn, request.request_id)
        settled = domain.settle(
            {owner: job.categories for owner, job in jobs.items()},
            await part_store.summary(conn, request.request_id),
            await part_store.failures(conn, request.request_id),
        )
        stored = await part_store.stored_parts(conn, request.request_id)
        disclosed = await disclosures.of_subject(conn, request.subject)
    state, missing, outcomes = domain.finish(settled)
    bundle_id = domain.bundle_id_for(row.storage_key, attempt)  # this attempt's own file
    bundle = BundleInput(
        request_id=request.request_id,
        subject=request.subject,
        storage_key=row.storage_key,
        generated_at=now,
        status=state.value,
        parts=stored,
        settled=settled,
        information=info,
        disclosures=disclosures.told(disclosed, now),
    )
    try:
        with export_metrics.BUNDLE_SECONDS.time():
            storage = ctx.storage_for(row)  # parts read and the bundle written encrypted
            await asyncio.to_thread(write_bundle, storage, bundle_key(bundle_id), bundle)
    except FileNotFoundError:
        # a later attempt (our lease lapsed) or a cancellation cleaned up under us: not ours
        async with ctx.pool.acquire() as conn:
            if await store.holds_attempt(conn, request.request_id, attempt):
                raise
        log.warning("export_bundle_discarded", request_id=request.request_id, attempt=attempt)
        return True
    expires = now + ctx.settings.bundle_ttl
    async with ctx.pool.acquire() as conn, conn.transaction():
        current = await store.get_request(conn, request.request_id, lock=True)
        if current is None or not await store.finish(
            conn,
            request.request_id,
            attempt=attempt,
            state=state,
            missing_owners=missing,
            outcomes=outcomes,
            bundle_id=bundle_id,
            bundle_expires_at=expires,
            now=ctx.now(),
        ):
            # cancelled meanwhile (the cancellation cleaned up the parts), or our lease lapsed
            # and a later attempt took the request over: its bundle stands, ours goes
            await asyncio.to_thread(ctx.storage.delete, bundle_key(bundle_id))
            log.warning("export_bundle_discarded", request_id=request.request_id, attempt=attempt)
            return True
        finished = current.request.model_copy(
            update={
                "state": state,
                "missing_owners": missing,
                "outcomes": outcomes,
                "bundle_id": bundle_id,
                "bundle_expires_at": expires,
            }
        )
        out = Outbox()
        reason = f"no complete answer from: {', '.join(missing)}" if missing else None
        ctx.publish_status(out, finished, reason=reason)
        await outbox.write(conn, out.rows, ctx.settings.db_schema)
        await reach(after_bundle)
    await asyncio.to_thread(ctx.storage.delete_prefix, parts_prefix(row.storage_key))
    for earlier in range(1, attempt):  # what an attempt that crashed after writing left behind
        earlier_key = bundle_key(domain.bundle_id_for(row.storage_key, earlier))
        await asyncio.to_thread(ctx.storage.delete, earlier_key)
    export_metrics.BUNDLES.labels(state.value).inc()
    log.info("export_bundle_written", request_id=request.request_id, status=state.value)
    return True


async def delete_expired(ctx: Context, items: Items | None = None) -> bool:
    """Delete expired bundles and taken exchange files; False when there were none.

    A file that cannot be deleted is held back with back-off while the others go.
    """
    items = items or Items(ctx.settings.service_name, "export-bundle-cleaner")
    files = await delete_exchange_files(ctx, items)
    return await _delete_expired_bundles(ctx, items) or files


async def delete_exchange_files(ctx: Context, items: Items | None = None) -> bool:
    """Delete one batch of exchange files whose intake committed (delete_referenced_parts)."""
    items = items or Items(ctx.settings.service_name, "export-bundle-cleaner")
    held = [k.removeprefix("exchange:") for k in items.held() if k.startswith("exchange:")]
    async with ctx.pool.acquire() as conn, conn.transaction():
        paths = await part_store.claim_exchange_deletions(conn, exclude=held)
        if not paths:
            return False
        deleted = []
        for path in paths:
            async with items.isolate(f"exchange:{path}") as attempt:
                await asyncio.to_thread(_unlink, path)
            if not attempt.failed:
                deleted.append(path)
        await part_store.forget_exchange_deletions(conn, deleted)
    log.info("export_exchange_files_deleted", count=len(deleted))
    return True


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        Path(path).unlink()


async def _delete_expired_bundles(ctx: Context, items: Items) -> bool:
    now = ctx.now()
    held = [k.removeprefix("bundle:") for k in items.held() if k.startswith("bundle:")]
    async with ctx.pool.acquire() as conn, conn.transaction():
        expired = await store.claim_expired_bundles(conn, now, exclude=held)
        if not expired:
            return False
        deleted = []
        for request_id, bundle_id in expired:
            async with items.isolate(f"bundle:{request_id}") as attempt:
                await asyncio.to_thread(ctx.storage.delete, bundle_key(bundle_id))
            if not attempt.failed:
                deleted.append(request_id)
        await store.mark_bundles_deleted(conn, deleted, now)
        await reach(after_bundles_deleted)
    export_metrics.BUNDLES_DELETED.inc(len(deleted))
    log.info("export_bundles_deleted", count=len(deleted))
    return True
