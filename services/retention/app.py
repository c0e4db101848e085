"""Wiring of the retention service.

`python -m shared.plumbing.serve services.retention.app:create`
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from faststream.kafka import KafkaMessage, KafkaRouter

from services.retention import api, loops
from services.retention.checkpoints import CHECKPOINTS
from services.retention.context import Context
from services.retention.handlers import HANDLERS
from services.retention.settings import RetentionSettings
from shared.contract.events import (
    AuditCheckpoint,
    DeletionJob,
    PurgeJob,
    RectificationJob,
    RequestStatusChanged,
    RestrictionJob,
    RestrictionLiftedJob,
)
from shared.plumbing.clock import Clock
from shared.plumbing.pipeline import Pipeline
from shared.plumbing.service import (
    PIPELINE,
    Runtime,
    ServiceSpec,
    batch_subscriber,
    create_app,
    records_of,
)

MIGRATIONS = Path(__file__).parent / "migrations"


def inbound(settings: RetentionSettings) -> KafkaRouter:
    """Where events enter the service: batches of the topics its handlers' types travel on."""
    router = KafkaRouter()

    @batch_subscriber(router, settings, *settings.topics.for_types(HANDLERS.accepts))
    async def consume(_: None, msg: KafkaMessage, pipeline: Pipeline = PIPELINE) -> None:
        await pipeline.process(records_of(msg))

    return router


def spec(ctx: Context) -> ServiceSpec[Context]:
    """What the retention service consumes, publishes, serves and runs."""
    t = ctx.settings.topics
    return ServiceSpec(
        name="retention",
        context=ctx,
        migrations=MIGRATIONS,
        inbound=inbound(ctx.settings),
        handlers=HANDLERS,
        publishes={
            t.privacy_jobs: (
                DeletionJob | RectificationJob | RestrictionJob | RestrictionLiftedJob | PurgeJob
            ),
            t.requests_status: RequestStatusChanged,
            t.privacy_audit: AuditCheckpoint,
        },
        api=api.make_api,
        loops=[*loops.loops(), CHECKPOINTS],
    )


def build_runtime(settings: RetentionSettings, clock: Clock | None = None) -> Runtime[Context]:
    """The retention service over the rules in `settings.retention_file` (tests pass a clock)."""
    return Runtime(spec(Context.from_settings(settings, clock)))


def create() -> FastAPI:
    """The ASGI app, settings from the environment (RETENTION_...)."""
    settings = RetentionSettings()  # type: ignore[call-arg]  # required values come from env
    return create_app(spec(Context.from_settings(settings)))
