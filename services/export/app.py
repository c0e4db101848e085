"""Wiring of the export service: `python -m shared.plumbing.serve services.export.app:create`."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from faststream.kafka import KafkaMessage, KafkaRouter

from services.export import api
from services.export.context import Context
from services.export.handlers import HANDLERS
from services.export.loops import LOOPS
from services.export.settings import ExportSettings
from shared.contract.events import ExportJob, RequestStatusChanged
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


def inbound(settings: ExportSettings) -> KafkaRouter:
    """Where events enter the service: batches of the topics its handlers' types travel on."""
    router = KafkaRouter()

    @batch_subscriber(router, settings, *settings.topics.for_types(HANDLERS.accepts))
    async def consume(_: None, msg: KafkaMessage, pipeline: Pipeline = PIPELINE) -> None:
        await pipeline.process(records_of(msg))

    return router


def spec(ctx: Context) -> ServiceSpec[Context]:
    """What the export service consumes, publishes, serves and runs."""
    t = ctx.settings.topics
    return ServiceSpec(
        name="export",
        context=ctx,
        migrations=MIGRATIONS,
        inbound=inbound(ctx.settings),
        handlers=HANDLERS,
        publishes={t.privacy_jobs: ExportJob, t.requests_status: RequestStatusChanged},
        api=api.make_api,
        loops=LOOPS,
    )


def build_runtime(settings: ExportSettings, clock: Clock | None = None) -> Runtime[Context]:
    """The export service (tests pass a ManualClock)."""
    return Runtime(spec(Context.from_settings(settings, clock)))


def create() -> FastAPI:
    """The ASGI app, settings from the environment (EXPORT_...)."""
    settings = ExportSettings()  # type: ignore[call-arg]  # required values come from env
    return create_app(spec(Context.from_settings(settings)))
