"""Disclosures to courts, law enforcement and regulators (policy 3.2): kept per person, told in
the access file (GDPR Art. 15(1)(c)) unless secrecy is ordered, then withheld without a trace."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from services.export.context import Context
from shared.contract.events import DisclosureRecorded
from shared.plumbing.db import Conn
from shared.plumbing.handlers import Tx

RECORD = """
INSERT INTO disclosures (disclosure_id, subject, authority, authority_kind, legal_basis,
                         reference, categories, disclosed_at, secret_until)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (disclosure_id) DO NOTHING
"""
OF_SUBJECT = """
SELECT authority, authority_kind, legal_basis, reference, categories, disclosed_at, secret_until
FROM disclosures WHERE subject = $1 ORDER BY disclosed_at, disclosure_id
"""


class Disclosure(BaseModel):
    """A disclosure as the access file tells it (who disclosed it internally is not told)."""

    model_config = ConfigDict(frozen=True)

    authority: str
    authority_kind: str
    legal_basis: str
    reference: str
    categories: list[str]
    disclosed_at: datetime
    secret_until: datetime | None = None


def told(disclosures: Sequence[Disclosure], now: datetime) -> list[dict[str, Any]]:
    """The disclosures the person is told of at `now`: secret ones are left out entirely."""
    return [
        d.model_dump(mode="json", exclude={"secret_until"})
        for d in disclosures
        if d.secret_until is None or d.secret_until <= now
    ]


async def on_disclosure(ctx: Context, tx: Tx, e: DisclosureRecorded) -> None:
    """Keep the disclosure for the person's next access file (once: a replay changes nothing)."""
    d = e.data
    await tx.conn.execute(
        RECORD,
        d.disclosure_id,
        e.subject,
        d.authority,
        d.authority_kind.value,
        d.legal_basis,
        d.reference,
        list(d.categories),
        d.disclosed_at,
        d.secret_until,
    )


async def of_subject(conn: Conn, subject: str) -> list[Disclosure]:
    """Every disclosure of the subject, secret or not (`told` decides)."""
    return [Disclosure.model_validate(dict(r)) for r in await conn.fetch(OF_SUBJECT, subject)]
