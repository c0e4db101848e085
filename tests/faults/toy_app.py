"""A toy service on the shared plumbing that the fault suite runs as a real OS process.

It proves the harness (kill -9, SIGTERM, rebalance, broker and database restarts) on the
plumbing alone. Every accepted event adds a row to `seen` (no unique key: a doubled effect
shows) and publishes one `consent.state.v1` whose id is derived from the cause, so a replay
that re-emitted it would show as a second copy. `account.closed.v1` also arms a durable timer
that a background loop fires once, claimed with `FOR UPDATE SKIP LOCKED` across replicas.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from fastapi import APIRouter, FastAPI
from faststream.kafka import KafkaMessage, KafkaRouter
from pydantic_settings import SettingsConfigDict

from shared.contract.events import (
    EVENT_TYPES,
    AccountClosed,
    AnyEvent,
    ConsentState,
    ConsentStateData,
    ConsentWithdrawn,
    DeletionJob,
    DeletionJobData,
    DeletionMode,
    DeletionReason,
)
from shared.plumbing import outbox
from shared.plumbing.clock import Clock, SystemClock
from shared.plumbing.context import ServiceContext
from shared.plumbing.handlers import Handlers, Tx, plain_tx
from shared.plumbing.loops import Items, Loop
from shared.plumbing.outbox import Outbox
from shared.plumbing.pipeline import Pipeline
from shared.plumbing.service import (
    PIPELINE,
    Api,
    Runtime,
    ServiceSpec,
    batch_subscriber,
    create_app,
    records_of,
)
from shared.plumbing.settings import ServiceSettings

MIGRATIONS = Path(__file__).parent / "toy_migrations"
NAMESPACE = uuid.UUID("6f1c0b7e-7a51-4c55-9a0e-3d7f3c1f0a11")

INSERT_SEEN = "INSERT INTO seen (event_id, source, subject, type) VALUES ($1, $2, $3, $4)"
ARM_TIMER = """
INSERT INTO timers (timer_id, subject, due_at) VALUES ($1, $2, now() + $3 * interval '1 ms')
ON CONFLICT DO NOTHING
"""
CLAIM_DUE = """
SELECT timer_id, subject FROM timers WHERE fired_at IS NULL AND due_at <= now()
ORDER BY due_at LIMIT 200 FOR UPDATE SKIP LOCKED
"""
MARK_FIRED = "UPDATE timers SET fired_at = now() WHERE timer_id = ANY($1::text[])"
RECORD_FIRING = "INSERT INTO fired (timer_id, replica) SELECT unnest($1::text[]), $2"


class ToySettings(ServiceSettings):
    """Settings of the toy service (env prefix TOY_)."""

    model_config = SettingsConfigDict(env_prefix="TOY_", env_nested_delimiter="__", extra="ignore")

    service_name: str = "toy"
    db_schema: str = "toy"
    timer_delay_ms: int = 200


def derived_id(*parts: str) -> str:
    """A deterministic event id: a replay that re-emitted would reuse it."""
    return str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))


@dataclass(kw_only=True)
class ToyContext(ServiceContext):
    """The toy's shared object: the plumbing's, plus the timer delay."""

    timer_delay_ms: int = 200


async def on_event(ctx: ToyContext, tx: Tx, event: AnyEvent) -> None:
    """Any contract event: a `seen` row and a state; two rules dead-letter; closures arm a timer."""
    if isinstance(event, AccountClosed) and event.data.reason == "forbidden":
        tx.batch.reject(event, "contract: toy rule forbids this reason")
        return
    if isinstance(event, ConsentWithdrawn) and event.data.purpose == "transactional_email":
        tx.batch.reject(event, "contract: transactional_email cannot be withdrawn")
        return
    await tx.conn.execute(INSERT_SEEN, event.id, event.source, event.subject, event.type)
    if isinstance(event, AccountClosed):
        await tx.conn.execute(ARM_TIMER, event.id, event.subject, ctx.timer_delay_ms)
    state = ConsentState(
        id=derived_id(event.source, event.id),
        source="privacy-plane.toy",
        subject=event.subject,
        time=event.time,
        data=ConsentStateData(version=1, purposes={}),
    )
    tx.outbox.publish(ctx.settings.topics.consent_state, state)


HANDLERS: Handlers[ToyContext, Tx] = Handlers(
    dict.fromkeys(EVENT_TYPES.values(), on_event), begin=plain_tx
)


async def fire_timers(ctx: ToyContext, _: Items) -> bool:
    """Fire due timers once each, whichever replica claims them."""
    replica = f"{os.getpid()}"
    async with ctx.pool.acquire() as conn, conn.transaction():
        due = await conn.fetch(CLAIM_DUE)
        if due:
            ids = [r["timer_id"] for r in due]
            await conn.execute(MARK_FIRED, ids)
            await conn.execute(RECORD_FIRING, ids, replica)
            out = Outbox()
            for row in due:
                out.publish(ctx.settings.topics.privacy_jobs, _job(ctx, row))
            await outbox.write(conn, out.rows, ctx.settings.db_schema)
    return False


def _job(ctx: ToyContext, row: asyncpg.Record) -> DeletionJob:
    timer_id = str(row["timer_id"])
    now = ctx.now()
    return DeletionJob(
        id=derived_id("timer", timer_id),
        subject=str(row["subject"]),
        source="privacy-plane.toy",
        time=now,
        data=DeletionJobData(
            job_id=derived_id("job", timer_id),
            owner="crm",
            category="crm_data",
            mode=DeletionMode.DELETE,
            reason=DeletionReason.RETENTION_EXPIRED,
            due_by=now,
        ),
    )


def make_api(ctx: ToyContext) -> Api:
    router = APIRouter()

    @router.get("/v1/seen/{subject}")
    async def seen(subject: str) -> dict[str, int]:
        async with ctx.pool.acquire() as conn:
            count = await conn.fetchval("SELECT count(*) FROM seen WHERE subject = $1", subject)
        return {"count": int(count)}

    return Api(router)


def inbound(settings: ServiceSettings) -> KafkaRouter:
    """Every inbound contract topic."""
    t, router = settings.topics, KafkaRouter()
    topics = [
        t.accounts_lifecycle,
        t.consent_changes,
        t.privacy_requests,
        t.legal_holds,
        t.privacy_receipts,
    ]

    @batch_subscriber(router, settings, *topics)
    async def consume(_: None, msg: KafkaMessage, pipeline: Pipeline = PIPELINE) -> None:
        await pipeline.process(records_of(msg))

    return router


def spec(ctx: ToyContext) -> ServiceSpec[ToyContext]:
    """The toy's spec: every inbound contract topic, every contract type."""
    return ServiceSpec(
        name="toy",
        context=ctx,
        migrations=MIGRATIONS,
        inbound=inbound(ctx.settings),
        handlers=HANDLERS,
        publishes={},
        api=make_api,
        loops=[Loop("toy-timers", fire_timers, lambda _: 0.1)],
    )


def _context(settings: ServiceSettings, clock: Clock | None = None) -> ToyContext:
    delay = settings.timer_delay_ms if isinstance(settings, ToySettings) else 200
    return ToyContext(settings=settings, clock=clock or SystemClock(), timer_delay_ms=delay)


def build_runtime(settings: ServiceSettings, clock: Clock | None = None) -> Runtime[ToyContext]:
    """The toy runtime for in-process tests."""
    return Runtime(spec(_context(settings, clock)))


def create() -> FastAPI:
    """For `python -m shared.plumbing.serve tests.faults.toy_app:create`."""
    return create_app(spec(_context(ToySettings())))  # type: ignore[call-arg]
