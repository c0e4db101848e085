"""Migrating a service schema as its owner role, and the running service's check that it was.

Production runs the migrations as a one-shot step (`privacy-plane migrate`, the compose service
`migrate`) with the owner's URL, then grants the runtime role its rights (`privileges`); the
service, connected as the runtime role, only checks that nothing is pending and refuses to
start otherwise. `<PREFIX>MIGRATE_ON_START=true` lets a development or test process do both.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg

from shared.plumbing import db, privileges
from shared.plumbing.logging import get_logger

log = get_logger(__name__)


class NotMigrated(RuntimeError):
    """The schema lacks migrations this code needs: the service must not run on it."""


def role_of(dsn: str) -> str | None:
    """The user named in a postgresql:// URL (None when the URL leaves it to the environment)."""
    user = urlsplit(dsn).username
    return unquote(user) if user else None


async def migrate_service(
    owner_dsn: str,
    service: str,
    schema: str,
    migrations: Path,
    runtime_dsn: str | None = None,
) -> list[str]:
    """Apply what is new to `schema` as the owner, then grant the runtime role (the user of
    `runtime_dsn`) its rights; returns the names applied. A runtime that is the owner itself
    (one role for everything, as in a developer's database) is granted nothing."""
    conn = await asyncpg.connect(owner_dsn)
    try:
        applied = await db.migrate(conn, schema, migrations)
        runtime = role_of(runtime_dsn) if runtime_dsn else None
        owner = await conn.fetchval("SELECT current_user")
        if runtime is not None and runtime != owner:
            await privileges.grant_runtime(conn, service, schema, runtime)
            log.info("runtime_role_granted", schema=schema, role=runtime)
        return applied
    finally:
        await conn.close()


async def require_migrated(conn: db.Conn, service: str, schema: str, migrations: Path) -> None:
    """Raise NotMigrated naming what is pending and how to apply it."""
    pending = await db.pending_migrations(conn, migrations)
    if pending:
        raise NotMigrated(
            f"schema {schema} lacks {len(pending)} migration(s) ({', '.join(pending[:3])}"
            f"{', ...' if len(pending) > 3 else ''}): run `privacy-plane migrate --service "
            f"{service}` as the schema owner first (development: {service.upper()}_"
            "MIGRATE_ON_START=true)"
        )
