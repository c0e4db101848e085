"""Disclosures to courts, law enforcement and regulators (policy 3.2): kept per person."""

from __future__ import annotations

from datetime import datetime

from services.retention import store
from services.retention.context import Context
from shared.contract.events import DisclosureRecorded
from shared.plumbing.handlers import Tx
from shared.plumbing.logging import get_logger

log = get_logger(__name__)


async def on_disclosure(ctx: Context, tx: Tx, e: DisclosureRecorded) -> None:
    """Keep the disclosure beside the subject (the subject view shows it, secret or not)."""
    if await store.disclosures.record(tx.conn, e.subject, e.data, e.time):
        log.info("disclosure_recorded", disclosure_id=e.data.disclosure_id)


def withheld(secret_until: datetime | None, now: datetime) -> bool:
    """Secrecy is ordered until `secret_until`: the person is not told before then."""
    return secret_until is not None and now < secret_until
