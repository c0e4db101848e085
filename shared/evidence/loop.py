"""The checkpoint loop's round, shared by the services that keep an audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import asyncpg

from shared.evidence import lag, store
from shared.evidence.settings import CheckpointedSettings
from shared.evidence.signing import Signer
from shared.plumbing.logging import get_logger

log = get_logger(__name__)


class Checkpointed(Protocol):
    """What the round needs of a service's context."""

    @property
    def settings(self) -> CheckpointedSettings: ...

    @property
    def pool(self) -> asyncpg.Pool: ...

    @property
    def signer(self) -> Signer | None: ...

    def now(self) -> datetime: ...


async def checkpoint_now(ctx: Checkpointed, source: store.LogSource) -> store.Made | None:
    """Make one checkpoint of `source` if there is something new (or a restore to record)."""
    signer = ctx.signer
    if signer is None:
        return None
    settings = ctx.settings
    async with ctx.pool.acquire() as conn:
        made = await store.make(
            conn,
            source,
            signer,
            ctx.now(),
            topic=settings.topics.privacy_audit,
            schema=settings.db_schema,
            service=settings.service_name,
            max_entries=settings.checkpoint_max_entries,
        )
    if made is not None:
        cp = made.checkpoint
        log.info(
            "checkpoint_made",
            audit_log=cp.log,
            number=cp.number,
            entries=cp.count,
            upto_seq=cp.upto_seq,
            fork=cp.fork is not None,
            key_id=cp.key_id,
        )
        await measure(ctx, source)
    return made


async def measure(ctx: Checkpointed, source: store.LogSource) -> float:
    """Read how long the oldest uncovered entry has waited into `pp_checkpoint_lag_seconds`
    (one indexed query); returns the seconds."""
    async with ctx.pool.acquire() as conn:
        oldest = await store.oldest_uncovered(conn, source)
    settings = ctx.settings
    return lag.record(
        settings.service_name, lag.Reading(oldest, ctx.now()), ctx.now, _fresh_for(settings)
    )


async def checkpoint_round(ctx: Checkpointed, source: store.LogSource) -> bool:
    """One loop round: the lag read first (so a round that then fails still tells how late the
    checkpoints are), then a checkpoint if due; True when a backlog is still waiting."""
    if ctx.signer is None:
        return False  # checkpoints are off: no lag to report either
    lag.started(ctx.settings.service_name, ctx.now, _fresh_for(ctx.settings))
    await measure(ctx, source)
    made = await checkpoint_now(ctx, source)
    return made is not None and made.more


def _fresh_for(settings: CheckpointedSettings) -> float:
    # A reading of "all covered" holds until the next round should have read again; two
    # intervals leave room for a slow round and a short database blip.
    return 2 * settings.checkpoint_interval_s
