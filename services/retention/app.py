"""Wiring: settings, rules, the ServiceSpec and the ASGI app (`uvicorn --factory`)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.retention import handlers
from services.retention.api import make_router
from services.retention.settings import RetentionSettings
from services.retention.timers import timer_loop
from services.retention.workflow import Context
from shared.catalogue import load_retention
from shared.contract.events import DeletionJob, RectificationJob, RequestStatusChanged
from shared.plumbing.clock import Clock, SystemClock
from shared.plumbing.logging import configure_logging
from shared.plumbing.service import Runtime, ServiceSpec

MIGRATIONS = Path(__file__).parent / "migrations"


def spec(ctx: Context) -> ServiceSpec:
    """The retention service on the shared plumbing."""
    return ServiceSpec(
        name="retention",
        migrations=MIGRATIONS,
        topics=lambda s: [
            s.topics.accounts_lifecycle,
            s.topics.privacy_requests,
            s.topics.legal_holds,
            s.topics.privacy_receipts,
            s.topics.consent_state,
        ],
        accepts=handlers.ACCEPTS,
        make_apply=lambda _runtime: handlers.make_apply(ctx),
        make_api=make_router(ctx),
        background=[timer_loop(ctx)],
        publishes=lambda s: {
            s.topics.privacy_jobs: DeletionJob | RectificationJob,
            s.topics.requests_status: RequestStatusChanged,
        },
    )


def build_runtime(settings: RetentionSettings, clock: Clock | None = None) -> Runtime:
    """A runtime over the rules in `settings.retention_file` (raises ConfigError if invalid)."""
    ctx = Context(settings, load_retention(settings.retention_file), clock or SystemClock())
    return Runtime(settings, spec(ctx), ctx.clock)


def create() -> FastAPI:
    """The ASGI app, settings from the environment (RETENTION_…)."""
    settings = RetentionSettings()  # type: ignore[call-arg]  # required values come from env
    configure_logging(settings.log_format, settings.log_level)
    return build_runtime(settings).asgi()
