"""Wiring of the consent service: `uvicorn --factory services.consent.app:create`."""

from __future__ import annotations

import gc
from pathlib import Path

from fastapi import FastAPI

from services.consent import api, handlers
from services.consent.handlers import Consent
from services.consent.settings import ConsentSettings
from shared.catalogue import PurposeCatalogue, load_purposes
from shared.contract.events import ConsentState, ExportPart
from shared.plumbing.clock import Clock, SystemClock
from shared.plumbing.logging import configure_logging
from shared.plumbing.service import Runtime, ServiceSpec

MIGRATIONS = Path(__file__).parent / "migrations"


def consumed_topics(settings: ConsentSettings) -> list[str]:
    """Sign-ups, consent changes, erasure requests and export jobs."""
    t = settings.topics
    return [t.accounts_lifecycle, t.consent_changes, t.privacy_requests, t.privacy_jobs]


def load_catalogue(settings: ConsentSettings) -> PurposeCatalogue:
    """The purpose catalogue: the configured file, or the shared one."""
    return load_purposes(settings.purposes_file) if settings.purposes_file else load_purposes()


def build_runtime(settings: ConsentSettings, clock: Clock | None = None) -> Runtime:
    """The consent service on the shared plumbing (tests pass a ManualClock)."""
    clock = clock or SystemClock()
    consent = Consent(settings, load_catalogue(settings), clock)
    reads = api.ReadPool(lambda: runtime.pool)
    spec = ServiceSpec(
        name="consent",
        migrations=MIGRATIONS,
        topics=lambda _: consumed_topics(settings),
        accepts=handlers.ACCEPTS,
        make_apply=lambda _: handlers.make_apply(consent),
        make_api=lambda runtime: api.make_api(consent, runtime, reads),
        background=[handlers.expiry_loop(consent), reads.loop(settings)],
        publishes=lambda s: {
            s.topics.consent_state: ConsentState,
            s.topics.privacy_receipts: ExportPart,
        },
    )
    runtime = ConsentRuntime(settings, spec, clock)
    runtime.fast_decisions = (consent, reads)
    return runtime


class ConsentRuntime(Runtime):
    """The shared runtime, with the decision hot path in front of its HTTP app."""

    fast_decisions: tuple[Consent, api.ReadPool]

    def asgi(self) -> FastAPI:
        app = super().asgi()
        consent, reads = self.fast_decisions
        app.add_middleware(
            api.FastDecisions, consent=consent, reads=reads, settings=consent.settings
        )
        return app


def tune_gc() -> None:
    """Fewer cyclic garbage collections on the ingest path (a batch allocates many objects).

    Objects from start-up (modules, catalogue, app) are frozen out of the collector, and
    generation 0 is collected after 20,000 net allocations instead of 700: the batches make
    few reference cycles, so this costs little memory and saved 15-25% CPU per event.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


def create() -> FastAPI:
    """The ASGI app, settings from the environment (CONSENT_...)."""
    settings = ConsentSettings()  # type: ignore[call-arg]  # required values come from env
    configure_logging(settings.log_format, settings.log_level)
    app = build_runtime(settings).asgi()
    tune_gc()
    return app
