"""deploy/init/grants.sql, run as compose's db-init runs it, on a fresh database of the real
PostgreSQL: each service role may use its own schema and nothing of the others'."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from shared.plumbing import db
from tests.support.infra import ROOT, Infra

pytestmark = pytest.mark.db

GRANTS = ROOT / "deploy" / "init" / "grants.sql"
SERVICES = ("consent", "retention", "export")


@dataclass(frozen=True)
class Server:
    """Where the shared test server listens, and its (superuser) login."""

    host: str
    port: int
    user: str
    password: str

    @classmethod
    def of(cls, url: str) -> Server:
        parts = urlsplit(url)
        return cls(
            parts.hostname or "", parts.port or 5432, parts.username or "", parts.password or ""
        )

    def dsn(self, user: str, password: str, database: str) -> str:
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{database}"


@dataclass(frozen=True)
class Fresh:
    """A database of this test alone, and the names its service roles (= schemas) get."""

    server: Server
    database: str
    roles: dict[str, str]


@pytest.fixture
async def fresh(infra: Infra) -> AsyncIterator[Fresh]:
    """A new database; it and the roles the test makes are dropped afterwards (roles are
    cluster-wide: each carries the test's id so that parallel runs never share one)."""
    tid = uuid.uuid4().hex[:8]
    made = Fresh(
        Server.of(infra.database_url),
        f"pp_grants_{tid}",
        {svc: f"{svc}_{tid}" for svc in SERVICES},
    )
    admin = await asyncpg.connect(infra.database_url)
    await admin.execute(f'CREATE DATABASE "{made.database}"')
    try:
        yield made
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{made.database}" WITH (FORCE)')
        for role in [*made.roles.values(), f"outsider_{tid}"]:
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def apply_grants(fresh: Fresh, role: str, password: str) -> None:
    """grants.sql for one service, with the psql command line of deploy/init/db-init.sh."""
    psql = shutil.which("psql")
    assert psql, "psql missing: apt-get install -y postgresql-client"
    server = fresh.server
    env = {
        "PATH": "/usr/bin:/bin",
        "PGHOST": server.host,
        "PGPORT": str(server.port),
        "PGUSER": server.user,
        "PGPASSWORD": server.password,
        "PGDATABASE": fresh.database,
    }
    args = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"svc={role}", "-v", f"pw={password}"]
    args += ["-v", f"db={fresh.database}", "-f", str(GRANTS)]
    result = await asyncio.to_thread(
        subprocess.run, args, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


async def connect(fresh: Fresh, role: str, password: str) -> asyncpg.Connection:
    return await asyncpg.connect(fresh.server.dsn(role, password, fresh.database))


def migrations(service: str) -> Path:
    return ROOT / "services" / service / "migrations"


async def test_each_service_role_uses_its_own_schema_and_is_refused_the_others(
    fresh: Fresh,
) -> None:
    passwords = {svc: uuid.uuid4().hex for svc in SERVICES}
    for svc, role in fresh.roles.items():
        await apply_grants(fresh, role, passwords[svc])
    tables: dict[str, list[str]] = {}
    for svc, role in fresh.roles.items():  # its own schema: the service's migrations and DML
        conn = await connect(fresh, role, passwords[svc])
        try:
            assert await conn.fetchval("SHOW search_path") == role
            assert await db.migrate(conn, role, migrations(svc))
            await conn.execute("CREATE TABLE own_scratch (x int)")
            await conn.execute("INSERT INTO own_scratch VALUES (1)")
            assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
            assert await conn.fetchval("DELETE FROM own_scratch RETURNING x") == 1
            await conn.execute("DROP TABLE own_scratch")
            tables[svc] = [
                r["tablename"]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = $1", role
                )
            ]
            assert "outbox" in tables[svc]
        finally:
            await conn.close()
    refused = 0
    for svc, role in fresh.roles.items():
        conn = await connect(fresh, role, passwords[svc])
        try:
            for other, other_schema in fresh.roles.items():
                if other == svc:
                    continue
                statements = [
                    f'CREATE TABLE "{other_schema}".intruder (x int)',
                    f'DROP SCHEMA "{other_schema}" CASCADE',
                    f'ALTER SCHEMA "{other_schema}" RENAME TO taken',
                ]
                for table in tables[other]:
                    statements += [
                        f'SELECT * FROM "{other_schema}"."{table}" LIMIT 1',
                        f'DELETE FROM "{other_schema}"."{table}"',
                        f'TRUNCATE "{other_schema}"."{table}"',
                    ]
                for statement in statements:
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await conn.execute(statement)
                    refused += 1
            for statement in ("CREATE SCHEMA stray", "CREATE TABLE public.stray (x int)"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        finally:
            await conn.close()
    assert refused > 3 * 2 * 5


async def test_grants_run_again_rotate_the_password_and_keep_the_schema(fresh: Fresh) -> None:
    role = fresh.roles["consent"]
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    await apply_grants(fresh, role, first)
    conn = await connect(fresh, role, first)
    try:
        await db.migrate(conn, role, migrations("consent"))
    finally:
        await conn.close()
    await apply_grants(fresh, role, second)  # db-init runs on every `docker compose up`
    with pytest.raises(asyncpg.InvalidPasswordError):
        await connect(fresh, role, first)
    conn = await connect(fresh, role, second)
    try:
        assert await db.migrate(conn, role, migrations("consent")) == []  # all still there
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
    finally:
        await conn.close()


async def test_a_role_without_grants_cannot_connect_to_the_database(
    infra: Infra, fresh: Fresh
) -> None:
    await apply_grants(fresh, fresh.roles["export"], uuid.uuid4().hex)
    outsider, password = f"outsider_{fresh.database.rsplit('_', 1)[1]}", uuid.uuid4().hex
    admin = await asyncpg.connect(infra.database_url)
    try:
        await admin.execute(f"CREATE ROLE \"{outsider}\" LOGIN PASSWORD '{password}'")
    finally:
        await admin.close()
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await connect(fresh, outsider, password)
