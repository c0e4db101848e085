"""The migration runner: applies once, in order, under a lock, and refuses edited history."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from shared.plumbing.db import (
    PLUMBING_MIGRATIONS,
    MigrationError,
    migrate,
    migration_files,
    pending_migrations,
)

pytestmark = pytest.mark.integration


async def connect(infra):
    return await asyncpg.connect(infra.database_url)


async def test_migrations_apply_once_in_name_order(infra, schema, tmp_path):
    folder = tmp_path / "svc" / "migrations"
    folder.mkdir(parents=True)
    (folder / "0002_more.sql").write_text("ALTER TABLE things ADD COLUMN label text;")
    (folder / "0001_first.sql").write_text("CREATE TABLE things (id int PRIMARY KEY);")
    conn = await connect(infra)
    try:
        applied = await migrate(conn, schema, folder)
        assert applied == [
            "plumbing/migrations/0001_inbox_outbox.sql",
            "plumbing/migrations/0002_outbox_packed.sql",
            "plumbing/migrations/0003_deadletters.sql",
            "plumbing/migrations/0004_positions.sql",
            "svc/migrations/0001_first.sql",
            "svc/migrations/0002_more.sql",
        ]
        assert await migrate(conn, schema, folder) == []
        assert await pending_migrations(conn, folder) == []
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = 'things' ORDER BY ordinal_position",
            schema,
        )
        assert [c["column_name"] for c in columns] == ["id", "label"]
    finally:
        await conn.close()


async def test_replicas_migrating_together_apply_each_file_once(infra, schema, tmp_path):
    folder = tmp_path / "svc" / "migrations"
    folder.mkdir(parents=True)
    (folder / "0001_first.sql").write_text("CREATE TABLE things (id int PRIMARY KEY);")
    conns = [await connect(infra) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c, schema, folder) for c in conns))
        plumbing = len(migration_files(PLUMBING_MIGRATIONS))
        assert sorted(len(r) for r in results) == [0, 0, plumbing + 1]
    finally:
        for c in conns:
            await c.close()


async def test_an_edited_applied_migration_is_refused_and_a_failing_one_rolls_back(
    infra, schema, tmp_path
):
    folder = tmp_path / "svc" / "migrations"
    folder.mkdir(parents=True)
    first = folder / "0001_first.sql"
    first.write_text("CREATE TABLE things (id int PRIMARY KEY);")
    conn = await connect(infra)
    try:
        await migrate(conn, schema, folder)
        first.write_text("CREATE TABLE things (id bigint PRIMARY KEY);")
        with pytest.raises(MigrationError, match="has changed since"):
            await migrate(conn, schema, folder)
        first.write_text("CREATE TABLE things (id int PRIMARY KEY);")
        (folder / "0002_bad.sql").write_text("CREATE TABLE half (id int); SELECT nonsense_fn();")
        with pytest.raises(MigrationError, match=r"0002_bad\.sql failed"):
            await migrate(conn, schema, folder)
        assert await conn.fetchval(f"SELECT to_regclass('{schema}.half')") is None
        assert await pending_migrations(conn, folder) == ["svc/migrations/0002_bad.sql"]
    finally:
        await conn.close()
