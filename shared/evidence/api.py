"""`POST /v1/checkpoints`: make a checkpoint now (behind the bearer token), and the models the
verify endpoints answer with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from shared.evidence import anchor, loop
from shared.evidence.audit import LogAudit, Report, trusted_branch
from shared.evidence.checkpoint import Leaf
from shared.evidence.signing import Verifier
from shared.evidence.store import LogSource
from shared.plumbing.db import Conn

Leaves = Callable[[Conn], AsyncIterator[Leaf]]


class CheckpointOut(BaseModel):
    """The checkpoint just made, or `made: false` when nothing was new."""

    made: bool
    log: str
    number: int | None = None
    count: int = 0
    upto_seq: int | None = None
    hash: str | None = None
    fork: bool = False


class AnchorCheck(BaseModel):
    """A log checked against the signed checkpoints published on privacy.audit."""

    ok: bool
    checked: int
    covered: int = Field(description="Entries under a signed checkpoint.")
    uncovered: int = Field(description="Entries newer than the last checkpoint: not yet protected.")
    bad_entry: str | None = Field(None, description="The first entry that does not match.")
    reason: str | None = None
    forks: list[str] = Field(default_factory=list, description="Restores the checkpoints record.")
    superseded: list[int] = Field(
        default_factory=list, description="Checkpoints of history a restore abandoned."
    )

    @classmethod
    def of(cls, report: Report) -> AnchorCheck:
        """The answer for an audit report."""
        return cls(
            ok=report.ok,
            checked=report.checked,
            covered=report.covered,
            uncovered=report.uncovered,
            bad_entry=report.bad_entry,
            reason=report.reason,
            forks=[
                f"checkpoint {c.number}: restore at {c.fork.restored_at} of the backup of "
                f"{c.fork.backup_taken_at}"
                for c in report.forks
                if c.fork is not None
            ],
            superseded=[c.number for c in report.superseded],
        )


async def anchored(ctx: loop.Checkpointed, log: str, leaves: Leaves) -> AnchorCheck | None:
    """`log`'s rows against the checkpoints published on privacy.audit, verified with the
    service's public key and the configured earlier ones (None when there is no key at all)."""
    settings = ctx.settings
    keys = [*settings.checkpoint_public_keys, *([ctx.signer.public] if ctx.signer else [])]
    if not keys:
        return None
    checkpoints = await anchor.published(
        settings.kafka_bootstrap_servers, settings.topics.privacy_audit, settings.kafka
    )
    run = LogAudit(trusted_branch(checkpoints, Verifier.of(keys), log))
    async with ctx.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        async for leaf in leaves(conn):
            run.feed(leaf)
    return AnchorCheck.of(run.finish())


def checkpoint_router(ctx: loop.Checkpointed, source: LogSource, leaves: Leaves) -> APIRouter:
    """The on-demand checkpoint and verify routes of a service that keeps `source`."""
    router = APIRouter(prefix="/v1/checkpoints", tags=["evidence"])

    @router.get("/verify", responses={409: {"description": "No checkpoint key is configured."}})
    async def verify() -> AnchorCheck:
        """Every entry of the log against the signed checkpoints on privacy.audit."""
        check = await anchored(ctx, source.log, leaves)
        if check is None:
            raise HTTPException(409, {"error": "no checkpoint key is configured"})
        return check

    @router.post("", responses={409: {"description": "No checkpoint key is configured."}})
    async def make_now() -> CheckpointOut:
        """Checkpoint what was added since the last checkpoint now (also done every interval)."""
        if ctx.signer is None:
            raise HTTPException(409, {"error": "no checkpoint key file is configured"})
        made = await loop.checkpoint_now(ctx, source)
        if made is None:
            return CheckpointOut(made=False, log=source.log)
        cp = made.checkpoint
        return CheckpointOut(
            made=True,
            log=cp.log,
            number=cp.number,
            count=cp.count,
            upto_seq=cp.upto_seq,
            hash=cp.hash,
            fork=cp.fork is not None,
        )

    return router
