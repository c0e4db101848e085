"""`privacy-plane backup` / `restore` on a real PostgreSQL: the data and positions come back,
the replaced schema is kept aside, the restore is recorded, a damaged backup is refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from typer.testing import CliRunner

from shared.cli import app
from shared.plumbing import db

pytestmark = pytest.mark.db


@pytest.fixture
async def two(infra, schema) -> AsyncIterator[tuple[str, str]]:
    """Two service-like schemas with positions and an inbox row each."""
    names = (f"{schema}_a", f"{schema}_b")
    conn = await asyncpg.connect(infra.database_url)
    try:
        for n, name in enumerate(names):
            await db.migrate(conn, name)
            await conn.execute(
                f'INSERT INTO "{name}".consumed_positions VALUES ($1, 0, $2)', "t.in", 10 + n
            )
            await conn.execute(
                f"INSERT INTO \"{name}\".inbox VALUES ('src', 'e1', '\\x00', 'x.v1')"
            )
        yield names
        for (name,) in await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", f"{schema}%"
        ):
            await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await conn.close()


def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """One query on a fresh connection (the CLI runs its own event loop, so tests are sync)."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def test_a_backup_restores_data_and_positions_and_keeps_the_replaced_schema(
    infra, two, tmp_path: Path, monkeypatch
):
    dsn = infra.database_url
    monkeypatch.setenv("PP_DATABASE_URL", dsn)
    runner, folder = CliRunner(), tmp_path / "backup"
    options = [arg for name in two for arg in ("--schema", name)]
    taken = runner.invoke(app, ["backup", str(folder), *options])
    assert taken.exit_code == 0, taken.output
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {s: m["positions"] for s, m in manifest["schemas"].items()} == {
        two[0]: {"t.in": {"0": 10}},
        two[1]: {"t.in": {"0": 11}},
    }

    for name in two:
        fetch(dsn, f'UPDATE "{name}".consumed_positions SET next_offset = 99')
        fetch(dsn, f"INSERT INTO \"{name}\".inbox VALUES ('src', 'e2', '\\x00', 'x')")
    assert runner.invoke(app, ["restore", str(folder), *options]).exit_code == 2  # no --yes
    restored = runner.invoke(app, ["restore", str(folder), *options, "--yes"])
    assert restored.exit_code == 0, restored.output
    for n, name in enumerate(two):
        positions = fetch(dsn, f'SELECT next_offset FROM "{name}".consumed_positions')
        assert [r["next_offset"] for r in positions] == [10 + n]
        assert len(fetch(dsn, f'SELECT 1 FROM "{name}".inbox')) == 1
        rows = fetch(dsn, f'SELECT backup_taken_at, backup FROM "{name}".restores')
        assert [(r["backup_taken_at"].isoformat(), r["backup"]) for r in rows] == [
            (manifest["taken_at"], str(folder.resolve()))
        ]
        [aside] = fetch(
            dsn, "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", f"{name}__replaced_%"
        )
        assert len(fetch(dsn, f'SELECT 1 FROM "{aside["nspname"]}".inbox')) == 2

    (folder / f"{two[0]}.dump").write_bytes(b"damaged")
    refused = runner.invoke(app, ["restore", str(folder), *options, "--yes"])
    assert refused.exit_code == 2
    assert "does not match its digest" in refused.output
    assert len(fetch(dsn, f'SELECT 1 FROM "{two[0]}".restores')) == 1
