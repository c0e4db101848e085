"""Wiring of the consent service: `python -m shared.plumbing.serve services.consent.app:create`."""

from __future__ import annotations

import gc
from pathlib import Path

from fastapi import FastAPI
from faststream.kafka import KafkaMessage, KafkaRouter

from services.consent import api
from services.consent.checkpoints import CHECKPOINTS
from services.consent.context import Context
from services.consent.handlers import HANDLERS
from services.consent.loops import EXPIRY
from services.consent.notices import NOTICES
from services.consent.settings import ConsentSettings
from shared.contract.events import AuditCheckpoint, ConsentState, ExportPart, NoticeJob
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


def inbound(settings: ConsentSettings) -> KafkaRouter:
    """Where events enter the service: batches of the topics its handlers' types travel on."""
    router = KafkaRouter()

    @batch_subscriber(router, settings, *settings.topics.for_types(HANDLERS.accepts))
    async def consume(_: None, msg: KafkaMessage, pipeline: Pipeline = PIPELINE) -> None:
        await pipeline.process(records_of(msg))

    return router


def spec(ctx: Context) -> ServiceSpec[Context]:
    """What the consent service consumes, publishes, serves and runs."""
    t = ctx.settings.topics
    return ServiceSpec(
        name="consent",
        context=ctx,
        migrations=MIGRATIONS,
        inbound=inbound(ctx.settings),
        handlers=HANDLERS,
        publishes={
            t.consent_state: ConsentState,
            t.privacy_receipts: ExportPart,
            t.privacy_jobs: NoticeJob,
            t.privacy_audit: AuditCheckpoint,
        },
        api=api.make_api,
        loops=[EXPIRY, NOTICES, CHECKPOINTS],
    )


def build_runtime(settings: ConsentSettings, clock: Clock | None = None) -> Runtime[Context]:
    """The consent service on the shared plumbing (tests pass a ManualClock)."""
    return Runtime(spec(Context.from_settings(settings, clock)))


def tune_gc() -> None:
    """Fewer cyclic garbage collections on the ingest path (a batch allocates many objects).

    Objects from start-up (modules, catalogue, app) are frozen out of the collector, and
    generation 0 is collected after 20,000 net allocations instead of 700: the batches make
    few reference cycles, so this costs little memory (docs/performance.md has the figures).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


def create() -> FastAPI:
    """The ASGI app, settings from the environment (CONSENT_...)."""
    settings = ConsentSettings()  # type: ignore[call-arg]  # required values come from env
    app = create_app(spec(Context.from_settings(settings)))
    tune_gc()
    return app
