"""The consent ledger as the checkpointer sees it: every person's entries in one order."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.consent import ledger, store
from services.consent.context import Context
from services.consent.ledger import Head
from shared.evidence import loop
from shared.evidence.checkpoint import Leaf
from shared.evidence.store import LogSource
from shared.plumbing.db import Conn
from shared.plumbing.loops import Items, Loop

LEDGER = LogSource(
    log="consent.ledger",
    lock="SELECT pg_advisory_xact_lock(hashtextextended('ledger-append:' || current_schema(), 0))",
    high="SELECT max(gseq) FROM ledger",
    leaves="SELECT gseq AS seq, hash FROM ledger WHERE gseq > $1 AND gseq <= $2"
    " ORDER BY gseq LIMIT $3",
    oldest_uncovered="SELECT received_at FROM ledger WHERE gseq > coalesce("
    "(SELECT upto_seq FROM checkpoints WHERE log = $1 ORDER BY id DESC LIMIT 1), 0)"
    " ORDER BY gseq LIMIT 1",
)


async def _round(ctx: Context, _: Items) -> bool:
    return await loop.checkpoint_round(ctx, LEDGER)


CHECKPOINTS: Loop[Context] = Loop(
    "consent-checkpoints", _round, lambda ctx: ctx.settings.checkpoint_interval_s
)


LEDGER_IN_ORDER = f"SELECT gseq, {store.LEDGER_COLUMNS} FROM ledger ORDER BY gseq"  # noqa: S608


async def ledger_leaves(conn: Conn) -> AsyncIterator[Leaf]:
    """Every entry of every person in global order, its hash recomputed from its own fields
    and its link to its person's entry before checked (call inside a transaction)."""
    heads: dict[str, Head] = {}
    async for row in conn.cursor(LEDGER_IN_ORDER, prefetch=2000):
        values = dict(row)
        gseq = values.pop("gseq")
        entry = store.entry_from_row(values)
        problem = ledger.entry_problem(entry, heads.get(entry.principal, Head()), None)
        heads[entry.principal] = Head(entry.seq, entry.hash)
        who = entry.subject_id or f"(erased) {entry.principal[:16]}"
        label = f"subject {who} entry {entry.seq} (event {entry.event_id}, gseq {gseq})"
        yield Leaf(gseq, ledger.entry_hash(entry), label, problem)
