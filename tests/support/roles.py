"""A database of one test's own with each service's two roles, made as deploy/init makes them.

deploy/init/grants.sql runs with the psql command line of deploy/init/db-init.sh; roles are
cluster-wide, so each carries the test's id and is dropped with the database afterwards.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from shared.plumbing import migrator
from tests.support.infra import ROOT

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
class Roles:
    """One service's schema, its owner role and its runtime role (with their passwords)."""

    service: str
    schema: str
    owner: str
    owner_pw: str
    runtime: str
    runtime_pw: str


@dataclass(frozen=True)
class Fresh:
    """A database of this test alone, and the roles its services get (schema = runtime role)."""

    server: Server
    database: str
    tid: str
    roles: dict[str, Roles]

    def owner_dsn(self, service: str) -> str:
        r = self.roles[service]
        return self.server.dsn(r.owner, r.owner_pw, self.database)

    def runtime_dsn(self, service: str) -> str:
        r = self.roles[service]
        return self.server.dsn(r.runtime, r.runtime_pw, self.database)

    async def connect_owner(self, service: str) -> asyncpg.Connection:
        return await asyncpg.connect(self.owner_dsn(service))

    async def connect_runtime(self, service: str) -> asyncpg.Connection:
        return await asyncpg.connect(self.runtime_dsn(service))

    async def grants(self, service: str, *, runtime_pw: str | None = None) -> None:
        """grants.sql for one service, as db-init runs it (a new runtime password if given)."""
        r = self.roles[service]
        await run_grants(self, r, runtime_pw or r.runtime_pw)

    async def migrate(self, service: str) -> list[str]:
        """`privacy-plane migrate` for one service: as its owner, granting its runtime role."""
        r = self.roles[service]
        return await migrator.migrate_service(
            self.owner_dsn(service),
            service,
            r.schema,
            migrations(service),
            self.runtime_dsn(service),
        )


def migrations(service: str) -> Path:
    return ROOT / "services" / service / "migrations"


async def run_grants(fresh: Fresh, roles: Roles, runtime_pw: str) -> None:
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
    args = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"svc={roles.schema}"]
    args += ["-v", f"owner={roles.owner}", "-v", f"owner_pw={roles.owner_pw}"]
    args += ["-v", f"runtime={roles.runtime}", "-v", f"runtime_pw={runtime_pw}"]
    args += ["-v", f"db={fresh.database}", "-f", str(GRANTS)]
    result = await asyncio.to_thread(
        subprocess.run, args, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


@asynccontextmanager
async def fresh_database(superuser_url: str) -> AsyncIterator[Fresh]:
    """A new database and role names for every service; all dropped afterwards."""
    tid = uuid.uuid4().hex[:8]
    roles = {
        svc: Roles(
            svc,
            f"{svc}_{tid}",
            f"{svc}_{tid}_owner",
            uuid.uuid4().hex,
            f"{svc}_{tid}",
            uuid.uuid4().hex,
        )
        for svc in SERVICES
    }
    made = Fresh(Server.of(superuser_url), f"pp_grants_{tid}", tid, roles)
    admin = await asyncpg.connect(superuser_url)
    await admin.execute(f'CREATE DATABASE "{made.database}"')
    try:
        yield made
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{made.database}" WITH (FORCE)')
        for r in roles.values():
            for role in (r.runtime, r.owner):
                await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.execute(f'DROP ROLE IF EXISTS "outsider_{tid}"')
        await admin.close()
