"""After a pseudonym key rotation, the loops' ledger lines (expiry) go to the person's existing
chain, under the key it began with."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import SecretStr

from services.consent import ledger, store
from services.consent.context import Context
from services.consent.loops import expire_due
from shared.contract.events import ConsentGranted
from tests.db.consent.conftest import NOW, Setup
from tests.support import events as make

pytestmark = pytest.mark.db


async def test_an_expiry_after_rotation_continues_the_old_chain_under_its_kid(setup: Setup):
    grant = make.consent_change(
        ConsentGranted, "usr_r", "personalisation", via="api", source="crm",
        at=NOW + timedelta(minutes=1), expires_at=NOW + timedelta(hours=1),
    )  # fmt: skip
    await setup.process(grant)
    old = setup.consent.settings.ledger_key.get_secret_value()
    rotated = Context.from_settings(
        setup.consent.settings.model_copy(
            update={"ledger_key": SecretStr(f"k2:rotated-ledger-key-0123\nlegacy:{old}")}
        ),
        setup.clock,
    )
    setup.clock.advance(timedelta(hours=2))
    async with setup.pool.acquire() as conn, conn.transaction():
        assert (await expire_due(rotated, conn))[0] == 1
    rows = await setup.pool.fetch("SELECT principal, seq, kid FROM ledger ORDER BY seq")
    principal = ledger.pseudonym(old.encode(), "usr_r")
    assert [tuple(r) for r in rows] == [(principal, 1, "legacy"), (principal, 2, "legacy")]
    assert await setup.pool.fetchval("SELECT count(*) FROM ledger_heads") == 1
    async with setup.pool.acquire() as conn:
        entries = await store.ledger(conn, principal)
        head, salt = await store.head(conn, principal)
    assert ledger.verify_chain(entries, head, salt).ok
