"""Background work: assemble bundles (all parts in, or the deadline passed) and delete expired ones.

Both claim rows with FOR UPDATE SKIP LOCKED, so replicas never do the same work twice. The zip
is written outside any transaction (under a lease), so a large bundle never holds a lock the
consumer waits on; a cancellation that lands meanwhile wins and the zip is thrown away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from services.export import domain, part_store, store
from services.export import metrics as export_metrics
from services.export.bundle import BundleInput, write_bundle
from services.export.domain import State
from services.export.handlers import Context
from services.export.storage import bundle_key, parts_prefix
from shared.catalogue import load_purposes, load_retention
from shared.plumbing import outbox
from shared.plumbing.logging import get_logger
from shared.plumbing.metrics import REQUESTS, REQUESTS_DUE_SOON
from shared.plumbing.outbox import Outbox
from shared.plumbing.service import Runtime

log = get_logger(__name__)


async def assembler(runtime: Runtime, stop: asyncio.Event) -> None:
    """Write the bundle of every request that is ready or past its deadline."""
    ctx = Context.of(runtime)
    info = domain.information(ctx.settings.owners, load_retention(), load_purposes())

    async def step() -> bool:
        return await assemble_one(ctx, info)

    await _every(ctx, stop, step, "assembler")


async def bundle_cleaner(runtime: Runtime, stop: asyncio.Event) -> None:
    """Delete bundles past their expiry (the export is personal data with its own retention)."""
    ctx = Context.of(runtime)

    async def step() -> bool:
        return await delete_expired(ctx)

    await _every(ctx, stop, step, "bundle_cleaner")


async def request_gauges(runtime: Runtime, stop: asyncio.Event) -> None:
    """Export requests by status, overdue flag and near deadline (the deadline alerts use them)."""
    ctx = Context.of(runtime)
    service = ctx.settings.service_name

    async def step() -> bool:
        now = runtime.clock.now()
        async with runtime.pool.acquire() as conn:
            counts = await store.request_counts(conn, now)
            soon = await store.due_soon(conn, now, now + timedelta(days=7))
        for status in ("pending", "in_progress", "completed", "partially_completed", "cancelled"):
            for overdue in (False, True):
                value = counts.get((status, overdue), 0)
                REQUESTS.labels(service, "export", status, str(overdue).lower()).set(value)
        REQUESTS_DUE_SOON.labels(service, "export").set(soon)
        return False

    await _every(ctx, stop, step, "request_gauges")


async def _every(
    ctx: Context, stop: asyncio.Event, step: Callable[[], Awaitable[bool]], name: str
) -> None:
    while not stop.is_set():
        busy = False
        try:
            busy = await step()
        except Exception as exc:  # a loop outlives database outages; the lease retries the work
            log.warning("export_loop_failed", loop=name, error=f"{type(exc).__name__}: {exc}"[:300])
        if not busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), ctx.settings.loop_interval)


async def assemble_one(ctx: Context, info: dict[str, domain.CategoryInfo]) -> bool:
    """Assemble one due request; False when none is due."""
    now = ctx.now()
    async with ctx.runtime.pool.acquire() as conn, conn.transaction():
        row = await store.claim_due(conn, now, now + ctx.settings.assembly_lease)
        if row is None:
            return False
        request = row.request
        jobs = await store.jobs(conn, request.request_id)
        settled = domain.settle(
            {owner: job.categories for owner, job in jobs.items()},
            await part_store.summary(conn, request.request_id),
            await part_store.failures(conn, request.request_id),
        )
        stored = await part_store.stored_parts(conn, request.request_id)
    state, missing, outcomes = domain.finish(settled)
    bundle_id = domain.bundle_id_for(row.storage_key)
    bundle = BundleInput(
        request_id=request.request_id,
        subject=request.subject,
        storage_key=row.storage_key,
        generated_at=now,
        status=state.value,
        parts=stored,
        settled=settled,
        information=info,
    )
    with export_metrics.BUNDLE_SECONDS.time():
        await asyncio.to_thread(write_bundle, ctx.storage, bundle_key(bundle_id), bundle)
    expires = now + ctx.settings.bundle_ttl
    async with ctx.runtime.pool.acquire() as conn, conn.transaction():
        current = await store.get_request(conn, request.request_id, lock=True)
        if current is None or current.request.state is not State.ASSEMBLING:
            await asyncio.to_thread(ctx.storage.delete, bundle_key(bundle_id))
            return True  # cancelled meanwhile: the cancellation cleaned up the parts
        await store.finish(
            conn,
            request.request_id,
            state=state,
            missing_owners=missing,
            outcomes=outcomes,
            bundle_id=bundle_id,
            bundle_expires_at=expires,
            now=ctx.now(),
        )
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
    await asyncio.to_thread(ctx.storage.delete_prefix, parts_prefix(row.storage_key))
    export_metrics.BUNDLES.labels(state.value).inc()
    log.info("export_bundle_written", request_id=request.request_id, status=state.value)
    return True


async def delete_expired(ctx: Context) -> bool:
    """Delete expired bundles and taken exchange files; False when there were none."""
    files = await delete_exchange_files(ctx)
    return await _delete_expired_bundles(ctx) or files


async def delete_exchange_files(ctx: Context) -> bool:
    """Delete one batch of exchange files whose intake committed (delete_referenced_parts)."""
    async with ctx.runtime.pool.acquire() as conn, conn.transaction():
        paths = await part_store.claim_exchange_deletions(conn)
        if not paths:
            return False
        await asyncio.to_thread(_unlink_all, paths)
        await part_store.forget_exchange_deletions(conn, paths)
    log.info("export_exchange_files_deleted", count=len(paths))
    return True


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()


async def _delete_expired_bundles(ctx: Context) -> bool:
    now = ctx.now()
    async with ctx.runtime.pool.acquire() as conn, conn.transaction():
        expired = await store.claim_expired_bundles(conn, now)
        if not expired:
            return False
        for _, bundle_id in expired:
            await asyncio.to_thread(ctx.storage.delete, bundle_key(bundle_id))
        await store.mark_bundles_deleted(conn, [request_id for request_id, _ in expired], now)
    export_metrics.BUNDLES_DELETED.inc(len(expired))
    log.info("export_bundles_deleted", count=len(expired))
    return True
