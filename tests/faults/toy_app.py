"""A toy service on the shared plumbing that the fault suite runs as a real OS process.

It proves the harness (kill -9, SIGTERM, rebalance, broker and database restarts) on the
plumbing alone. Every accepted event adds a row to `seen` (no unique key: a doubled effect
shows) and publishes one `consent.state.v1` whose id is derived from the cause, so a replay
that re-emitted it would show as a second copy. `account.closed.v1` also arms a durable timer
that a background loop fires once, claimed with `FOR UPDATE SKIP LOCKED` across replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path

import asyncpg
from fastapi import APIRouter, FastAPI
from pydantic_settings import SettingsConfigDict

from shared.contract.events import (
    EVENT_TYPES,
    AccountClosed,
    ConsentState,
    ConsentStateData,
    ConsentWithdrawn,
    DeletionJob,
    DeletionJobData,
    DeletionMode,
    DeletionReason,
)
from shared.plumbing import outbox
from shared.plumbing.clock import Clock
from shared.plumbing.db import Conn, is_transient
from shared.plumbing.outbox import Outbox
from shared.plumbing.pipeline import ApplyFn, Batch
from shared.plumbing.service import Runtime, ServiceSpec, create_app
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


def make_apply(runtime: Runtime) -> ApplyFn:
    settings = runtime.settings
    delay = settings.timer_delay_ms if isinstance(settings, ToySettings) else 200

    async def apply(conn: Conn, batch: Batch) -> None:
        for event in batch.events:
            if isinstance(event, AccountClosed) and event.data.reason == "forbidden":
                batch.reject(event, "contract: toy rule forbids this reason")
                continue
            if isinstance(event, ConsentWithdrawn) and event.data.purpose == "transactional_email":
                batch.reject(event, "contract: transactional_email cannot be withdrawn")
                continue
            await conn.execute(INSERT_SEEN, event.id, event.source, event.subject, event.type)
            if isinstance(event, AccountClosed):
                await conn.execute(ARM_TIMER, event.id, event.subject, delay)
            state = ConsentState(
                id=derived_id(event.source, event.id),
                source="privacy-plane.toy",
                subject=event.subject,
                time=event.time,
                data=ConsentStateData(version=1, purposes={}),
            )
            batch.outbox.publish(settings.topics.consent_state, state)

    return apply


async def fire_timers(runtime: Runtime, stop: asyncio.Event) -> None:
    """Fire due timers once each, whichever replica claims them."""
    replica = f"{os.getpid()}"
    while not stop.is_set():
        try:
            async with runtime.pool.acquire() as conn, conn.transaction():
                due = await conn.fetch(CLAIM_DUE)
                if due:
                    ids = [r["timer_id"] for r in due]
                    await conn.execute(MARK_FIRED, ids)
                    await conn.execute(RECORD_FIRING, ids, replica)
                    out = Outbox()
                    for row in due:
                        out.publish(runtime.settings.topics.privacy_jobs, _job(runtime, row))
                    await outbox.write(conn, out.rows, runtime.settings.db_schema)
        except Exception as exc:  # the database away: try again shortly; anything else stops
            if not is_transient(exc):
                raise
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


def _job(runtime: Runtime, row: asyncpg.Record) -> DeletionJob:
    timer_id = str(row["timer_id"])
    now = runtime.clock.now()
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


def make_api(runtime: Runtime) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/seen/{subject}")
    async def seen(subject: str) -> dict[str, int]:
        async with runtime.pool.acquire() as conn:
            count = await conn.fetchval("SELECT count(*) FROM seen WHERE subject = $1", subject)
        return {"count": int(count)}

    return router


def spec() -> ServiceSpec:
    """The toy's spec: every inbound contract topic, every contract type."""
    return ServiceSpec(
        name="toy",
        migrations=MIGRATIONS,
        topics=lambda s: [
            s.topics.accounts_lifecycle,
            s.topics.consent_changes,
            s.topics.privacy_requests,
            s.topics.legal_holds,
            s.topics.privacy_receipts,
        ],
        accepts=set(EVENT_TYPES),
        make_apply=make_apply,
        make_api=make_api,
        background=(fire_timers,),
    )


def build_runtime(settings: ServiceSettings, clock: Clock | None = None) -> Runtime:
    """The toy runtime for in-process tests."""
    return Runtime(settings, spec(), clock)


def create() -> FastAPI:
    """For `uvicorn --factory tests.faults.toy_app:create`."""
    return create_app(ToySettings(), spec())  # type: ignore[call-arg]
