"""The deletion certificates as the checkpointer sees them (already in one order: seq)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.retention.context import Context
from services.retention.domain.certificates import GENESIS, Certificate, certificate_hash
from services.retention.store.certificates import CHAIN_LOCK
from shared.evidence import loop
from shared.evidence.checkpoint import Leaf
from shared.evidence.store import LogSource
from shared.plumbing.db import Conn
from shared.plumbing.loops import Items, Loop

CERTIFICATES = LogSource(
    log="retention.certificates",
    lock=CHAIN_LOCK,
    high="SELECT max(seq) FROM certificates",
    leaves="SELECT seq, hash FROM certificates WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
    # completed_at is when the certificate was written (the receipt's handling time)
    oldest_uncovered="SELECT (body->>'completed_at')::timestamptz FROM certificates WHERE seq >"
    " coalesce((SELECT upto_seq FROM checkpoints WHERE log = $1 ORDER BY id DESC LIMIT 1), 0)"
    " ORDER BY seq LIMIT 1",
)


async def _round(ctx: Context, _: Items) -> bool:
    return await loop.checkpoint_round(ctx, CERTIFICATES)


CHECKPOINTS: Loop[Context] = Loop(
    "retention-checkpoints", _round, lambda ctx: ctx.settings.checkpoint_interval_s
)


CERTIFICATES_IN_ORDER = "SELECT seq, job_id, body, prev_hash, hash FROM certificates ORDER BY seq"


async def certificate_leaves(conn: Conn) -> AsyncIterator[Leaf]:
    """Every certificate in order, its hash recomputed and its link checked (in a transaction)."""
    expected_prev = GENESIS
    async for row in conn.cursor(CERTIFICATES_IN_ORDER, prefetch=2000):
        cert = Certificate.model_validate_json(row["body"])
        recomputed = certificate_hash(row["prev_hash"], cert)
        problem = None
        if row["prev_hash"] != expected_prev:
            problem = "does not link to the certificate before it (one was removed)"
        elif recomputed != row["hash"]:
            problem = "was changed after it was written"
        expected_prev = row["hash"]
        label = f"certificate {row['seq']} (job {row['job_id']})"
        yield Leaf(row["seq"], recomputed, label, problem)
