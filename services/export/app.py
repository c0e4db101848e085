"""Wiring of the export service: `uvicorn --factory services.export.app:create`."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.export import api, handlers, loops
from services.export.settings import ExportSettings
from shared.contract.events import ExportJob, RequestStatusChanged
from shared.plumbing.clock import Clock
from shared.plumbing.service import Runtime, ServiceSpec, create_app
from shared.plumbing.settings import ServiceSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def _topics(settings: ServiceSettings) -> list[str]:
    return [settings.topics.privacy_requests, settings.topics.privacy_receipts]


def spec() -> ServiceSpec:
    """The export service on the shared plumbing."""
    return ServiceSpec(
        name="export",
        migrations=MIGRATIONS,
        topics=_topics,
        accepts=set(handlers.ACCEPTS),
        make_apply=handlers.make_apply,
        make_api=api.make_api,
        make_public_api=api.make_public_api,
        background=(loops.assembler, loops.bundle_cleaner, loops.request_gauges),
        publishes=lambda s: {
            s.topics.privacy_jobs: ExportJob,
            s.topics.requests_status: RequestStatusChanged,
        },
    )


def build_runtime(settings: ExportSettings, clock: Clock | None = None) -> Runtime:
    """A runtime for tests and tools."""
    return Runtime(settings, spec(), clock)


def create() -> FastAPI:
    """The ASGI app, settings from the environment (EXPORT_…)."""
    return create_app(ExportSettings(), spec())  # type: ignore[call-arg]  # values from env
