"""PostgreSQL: a pool bound to the service's schema, and the migration runner.

Migrations are plain SQL files applied in name order, each in its own transaction, recorded
in `schema_migrations`, under an advisory lock so replicas starting together migrate once.
A small runner rather than Alembic or yoyo: both need a synchronous driver (SQLAlchemy or
psycopg) beside asyncpg, and ours are forward-only SQL files per schema.
"""

from __future__ import annotations

import errno
import hashlib
import socket
import ssl
from pathlib import Path

import asyncpg

from shared.plumbing import identifiers
from shared.plumbing.logging import get_logger

PLUMBING_MIGRATIONS = Path(__file__).parent / "migrations"

log = get_logger(__name__)

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
SELECT_APPLIED = "SELECT name, checksum FROM schema_migrations"
INSERT_APPLIED = "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)"
SCHEMA_EXISTS = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)"
LOCK = "SELECT pg_advisory_lock(hashtext($1))"
UNLOCK = "SELECT pg_advisory_unlock(hashtext($1))"


TRANSIENT_PG = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # asyncpg's connection in a state it cannot use, e.g. a query issued between the server's
    # "terminating connection" error and the socket's close during a database restart
    # ("cannot switch to state 12; another operation (2) is in progress"); a stale statement
    # cache (its subclass OutdatedSchemaCacheError) too.
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.QueryCanceledError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InsufficientResourcesError,
    # The service's own schema or grants are wrong (a migration not applied, a role without
    # rights, a read-only replica): an operator fixes it and the events must then apply —
    # dead-lettering them would empty the topic into the dead-letter queue.
    asyncpg.UndefinedTableError,
    asyncpg.UndefinedColumnError,
    asyncpg.UndefinedFunctionError,
    asyncpg.InsufficientPrivilegeError,
    asyncpg.ReadOnlySQLTransactionError,
)


class InfrastructureError(Exception):
    """Our own infrastructure cannot be used (e.g. a storage folder we cannot write): retried
    and alerted on like a database outage, never a reason to dead-letter an event."""


TRANSIENT_OS = (ConnectionError, TimeoutError, socket.gaierror, socket.herror, ssl.SSLError)
"""OSErrors that are always about a connection: refused, reset, timed out, name not resolved,
TLS broken off."""

TRANSIENT_ERRNOS = frozenset(
    {
        # the network between us and the database or broker
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.EADDRNOTAVAIL,
        # our own disk and process: full, failing, remounted read-only, out of descriptors
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EIO,
        errno.EROFS,
        errno.EMFILE,
        errno.ENFILE,
        errno.ENOMEM,
        errno.ENOBUFS,
    }
)
"""The errnos of any other OSError that are an outage. Not ENOENT, EACCES, ENAMETOOLONG,
ELOOP, EISDIR and the like: those are what a bad input causes (code reading an input converts
them at its boundary anyway), and retrying an input's error stalls everything behind it."""


def is_transient(exc: BaseException) -> bool:
    """Failures of the infrastructure (retry), as opposed to failures of the input (dead-letter)."""
    if isinstance(exc, (*TRANSIENT_PG, *TRANSIENT_OS, InfrastructureError)):
        return True
    if isinstance(exc, OSError):
        return exc.errno in TRANSIENT_ERRNOS or _every_address_refused(exc)
    return False


def _every_address_refused(exc: OSError) -> bool:
    """asyncio's connect when every address of a host failed: a bare OSError without errno."""
    return exc.errno is None and str(exc).startswith("Multiple exceptions: ")


def is_database_failure(exc: BaseException) -> bool:
    """An outage or an error PostgreSQL reported: a loop retries it with a warning, while
    anything else is a bug it logs as an error (and retries too)."""
    return is_transient(exc) or isinstance(exc, asyncpg.PostgresError)


Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
"""A connection or a pooled one: what store methods take."""


class MigrationError(RuntimeError):
    """An applied migration changed on disk, or one failed."""


async def create_pool(
    dsn: str, schema: str, *, min_size: int = 2, max_size: int = 10
) -> asyncpg.Pool:
    """A pool whose connections see only `schema` (search_path) and speak UTC."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "timezone": "UTC"},
        command_timeout=60,
    )
    assert pool is not None
    return pool


def migration_files(*directories: Path) -> list[tuple[str, str]]:
    """(name, sql) for every `.sql` file, directory by directory, in name order."""
    return [
        (f"{directory.parent.name}/{directory.name}/{path.name}", path.read_text())
        for directory in directories
        for path in sorted(directory.glob("*.sql"))
    ]


async def migrate(conn: asyncpg.Connection, schema: str, *directories: Path) -> list[str]:
    """Create `schema` if needed and apply what is new; returns the names applied."""
    lock_key = f"migrate:{schema}"
    await conn.execute(LOCK, lock_key)
    try:
        # Least privilege: a role that owns a schema a DBA created for it needs no CREATE on
        # the database (CREATE SCHEMA IF NOT EXISTS checks that privilege even when it exists).
        name = identifiers.quoted(schema)
        if not await conn.fetchval(SCHEMA_EXISTS, schema):
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {name}")
        await conn.execute(f"SET search_path TO {name}")
        await conn.execute(CREATE_MIGRATIONS_TABLE)
        applied = {r["name"]: r["checksum"] for r in await conn.fetch(SELECT_APPLIED)}
        done = []
        for name, sql in migration_files(PLUMBING_MIGRATIONS, *directories):
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if name in applied:
                if applied[name] != checksum:
                    raise MigrationError(
                        f"{name} was applied and has changed since; add a new file"
                    )
                continue
            async with conn.transaction():
                try:
                    await conn.execute(sql)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"{name} failed: {exc}") from exc
                await conn.execute(INSERT_APPLIED, name, checksum)
            log.info("migration_applied", schema=schema, migration=name)
            done.append(name)
        return done
    finally:
        await conn.execute(UNLOCK, lock_key)


async def pending_migrations(conn: Conn, *directories: Path) -> list[str]:
    """Names not yet applied in the connection's schema (readiness uses it)."""
    try:
        applied = {r["name"] for r in await conn.fetch(SELECT_APPLIED)}
    except asyncpg.UndefinedTableError:
        applied = set()
    return [
        name
        for name, _ in migration_files(PLUMBING_MIGRATIONS, *directories)
        if name not in applied
    ]
