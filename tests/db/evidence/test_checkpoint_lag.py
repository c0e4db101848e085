"""`pp_checkpoint_lag_seconds`: how long the oldest entry has waited for a signed checkpoint —
rising while none covers it, 0 once one does, and rising again when the loop stops reading."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.consent.checkpoints import LEDGER
from services.retention.checkpoints import CERTIFICATES
from services.retention.store.certificates import append_certificate
from shared.evidence.loop import checkpoint_now, checkpoint_round, measure
from shared.plumbing.clock import ManualClock
from tests.db.evidence.test_certificates_tamper import certificate, open_retention
from tests.db.evidence.test_ledger_tamper import T0, open_consent
from tests.support import events as make
from tests.support.infra import Infra

pytestmark = pytest.mark.db


def scraped(service: str) -> float | None:
    """The gauge as Prometheus would scrape it now."""
    return REGISTRY.get_sample_value("pp_checkpoint_lag_seconds", {"service": service})


async def test_the_ledger_lag_rises_until_a_checkpoint_covers_the_entry(
    infra: Infra, schema: str, key_file: Path
) -> None:
    clock = ManualClock(T0)
    async with open_consent(infra.database_url, schema, key_file) as consent:
        consent.ctx.clock = clock
        assert await measure(consent.ctx, LEDGER) == 0  # an empty ledger is not late
        await consent.process(make.granted("usr_1", "marketing_email", source="web", at=T0))
        clock.advance(timedelta(minutes=5))
        assert await measure(consent.ctx, LEDGER) == 300  # recorded at T0, no checkpoint yet
        clock.advance(timedelta(minutes=1))
        assert scraped("consent") == 360  # it keeps ageing between rounds

        assert await checkpoint_round(consent.ctx, LEDGER) is False  # signs the entry
        assert scraped("consent") == 0
        clock.advance(timedelta(minutes=1))
        await checkpoint_round(consent.ctx, LEDGER)  # nothing new: still not late
        assert scraped("consent") == 0

        clock.advance(timedelta(minutes=30))  # no round since: this replica's loop stopped
        assert scraped("consent") == 1800  # its "all covered" no longer vouches for anything


async def test_the_certificate_lag_counts_from_when_the_certificate_was_written(
    infra: Infra, schema: str, key_file: Path
) -> None:
    async with open_retention(infra.database_url, schema, key_file) as (ctx, pool):
        async with pool.acquire() as c, c.transaction():
            await append_certificate(c, certificate(1))  # completed at T0 + 1 h
        ctx.clock = ManualClock(T0 + timedelta(hours=3))
        assert await measure(ctx, CERTIFICATES) == 2 * 3600
        assert await checkpoint_now(ctx, CERTIFICATES) is not None
        assert scraped("retention") == 0
