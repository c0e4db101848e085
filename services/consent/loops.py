"""The consent service's background loop: grants that lapse (`expires_at`) are expired.

Replicas share the work: subjects are claimed `FOR UPDATE SKIP LOCKED` under the same
per-subject advisory lock the pipeline takes. A subject whose expiry fails is held back with
back-off and reported, and the others go on.
"""

from __future__ import annotations

import uuid

from services.consent import domain, store
from services.consent.context import SOURCE, Context
from services.consent.handlers import IDS, Unit
from services.consent.ledger import Facts
from services.consent.state import SubjectState
from shared.plumbing import outbox
from shared.plumbing.db import Conn
from shared.plumbing.loops import Items, Loop
from shared.plumbing.outbox import Outbox
from shared.plumbing.seams import Seam, reach

after_expire: Seam | None = None
"""Test seam (shared.plumbing.seams): inside an expiry round's transaction, before its commit."""


async def expire_due(
    ctx: Context, conn: Conn, items: Items | None = None
) -> tuple[int, list[outbox.OutboxRow]]:
    """Expire lapsed grants of up to one batch of subjects (caller's transaction)."""
    now = ctx.now()
    unit = Unit(ctx, now, Outbox())
    held = items.held() if items else []
    for state in await store.claim_expired(conn, now, ctx.settings.expiry_batch, held):
        if items is None:
            _expire(unit, state)
            continue
        async with items.isolate(state.subject):
            _expire(unit, state)
    await unit.flush(conn)
    return len(unit.touched), unit.outbox.rows


def _expire(unit: Unit, state: SubjectState) -> None:
    outcome = domain.expire(state, unit.now)
    for change in outcome.changes:
        lapsed = state.purposes[change.target].expires_at or unit.now
        event_id = str(uuid.uuid5(IDS, f"{state.subject}/{change.target}/{lapsed.isoformat()}"))
        facts = Facts(event_id, SOURCE, domain.EXPIRED_EVENT, lapsed)
        unit.record(state.subject, facts, [change])
    if outcome.changed:
        unit.changed(outcome.state)


async def expire_round(ctx: Context, items: Items) -> bool:
    """One round: expire a batch and publish the new states; True when a full batch was due."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        count, rows = await expire_due(ctx, conn, items)
        await outbox.write(conn, rows, ctx.settings.db_schema)
        await reach(after_expire if count else None)
    return count >= ctx.settings.expiry_batch


EXPIRY: Loop[Context] = Loop(
    "consent-expiry", expire_round, lambda ctx: ctx.settings.expiry_interval_s
)
