"""The checkpoint loop's round, shared by the services that keep an audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import asyncpg

from shared.evidence import store
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
    return made


async def checkpoint_round(ctx: Checkpointed, source: store.LogSource) -> bool:
    """One loop round: a checkpoint if due; True when a backlog is still waiting."""
    made = await checkpoint_now(ctx, source)
    return made is not None and made.more
