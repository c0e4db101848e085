"""The projection document is stored as text: written as `to_doc` renders it, read back whole,
and documents stored as jsonb before migration 0004 load as the same states."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from services.consent import store
from services.consent.app import MIGRATIONS
from services.consent.document import to_doc
from shared.contract.events import ConsentGranted, ConsentWithdrawn
from shared.plumbing import db
from tests.db.consent.conftest import NOW, Setup
from tests.support import events as make
from tests.support.infra import Infra

pytestmark = pytest.mark.db


def changes() -> list[Any]:
    """Three subjects' changes (one with a non-ASCII id)."""
    events = []
    for minute, (model, subject, purpose) in enumerate(
        [
            (ConsentGranted, "usr_a", "personalisation"),
            (ConsentGranted, "usr_a", "analytics"),
            (ConsentWithdrawn, "usr_b", "personalisation"),
            (ConsentGranted, "usr_ü", "personalisation"),
        ]
    ):
        time = NOW + timedelta(minutes=minute)
        events.append(
            make.consent_change(model, subject, purpose, via="api", source="crm", at=time)
        )
    return events


async def test_docs_are_stored_as_rendered_and_jsonb_docs_from_before_load_the_same(
    infra: Infra, schema: str, setup: Setup, tmp_path: Path
):
    conn = await asyncpg.connect(infra.database_url)
    old_schema = f"{schema}_old"
    try:
        await setup.process(*changes())
        await conn.execute(f'SET search_path TO "{schema}"')
        rows = await conn.fetch("SELECT subject_id, version, doc FROM subjects ORDER BY 1")
        assert [r["subject_id"] for r in rows] == ["usr_a", "usr_b", "usr_ü"]
        states = {r["subject_id"]: await store.load_state(conn, r["subject_id"]) for r in rows}
        for r in rows:
            state = states[r["subject_id"]]
            assert state is not None
            assert r["doc"] == orjson.dumps(to_doc(state)).decode()  # byte for byte

        # a schema migrated before 0004, holding the same documents as jsonb
        before = tmp_path / "consent" / "migrations"
        before.mkdir(parents=True)
        for path in sorted(MIGRATIONS.glob("*.sql"))[:3]:
            shutil.copy(path, before / path.name)
        await db.migrate(conn, old_schema, before)
        await conn.execute(
            f'INSERT INTO "{old_schema}".subjects (subject_id, version, doc, updated_at) '
            "SELECT s, v, d::jsonb, now() FROM unnest($1::text[], $2::bigint[], $3::text[]) "
            "AS u(s, v, d)",
            [r["subject_id"] for r in rows],
            [r["version"] for r in rows],
            [r["doc"] for r in rows],
        )
        applied = await db.migrate(conn, old_schema, MIGRATIONS)
        assert applied[0] == "consent/migrations/0004_subject_doc_as_text.sql"
        await conn.execute(f'SET search_path TO "{old_schema}"')
        migrated = await store.load_states(conn, list(states))
        assert migrated == states
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{old_schema}" CASCADE')
        await conn.close()
