"""A service schema owned by a service role of its own (as deploy/init/grants.sql makes it),
checkpoints signed with a key from a file, and the checkpoints' export file."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from shared.contract.codec import decode
from shared.contract.events import AuditCheckpoint
from shared.evidence import anchor
from shared.evidence.checkpoint import Checkpoint
from shared.evidence.signing import Signer, generate_seed
from shared.plumbing import outbox
from tests.support.infra import Infra


@dataclass(frozen=True)
class Owned:
    """The schema, its owning role's URL and the superuser's."""

    schema: str
    role_dsn: str
    admin_dsn: str


@pytest.fixture
async def owned(infra: Infra, schema: str) -> AsyncIterator[Owned]:
    """`schema`, created for and owned by a new login role (dropped afterwards)."""
    role, password = f"svc_{schema}", uuid.uuid4().hex
    parts = urlsplit(infra.database_url)
    host = parts.netloc.rpartition("@")[2]
    role_dsn = urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))
    admin = await asyncpg.connect(infra.database_url)
    try:
        database = await admin.fetchval("SELECT current_database()")
        await admin.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}' NOSUPERUSER")
        # as grants.sql does: once it has run (`make run`), PUBLIC may no longer connect
        await admin.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"')
        await admin.execute(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{role}"')
        yield Owned(schema, role_dsn, infra.database_url)
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.execute(f'REVOKE CONNECT ON DATABASE "{database}" FROM "{role}"')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await admin.close()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """A checkpoint signing key file."""
    path = tmp_path / "checkpoint.key"
    path.write_text(generate_seed() + "\n")
    return path


@pytest.fixture
def public_key(key_file: Path) -> str:
    """The signing key's public half (all a verifier gets)."""
    return Signer.from_file(key_file).public


async def published(pool: asyncpg.Pool, topic: str) -> list[Checkpoint]:
    """The checkpoints the relay would publish (the outbox: no Kafka in these tests)."""
    async with pool.acquire() as conn:
        rows = await outbox.pending(conn)
    found = []
    for row in rows:
        if row.topic == topic:
            event = decode(row.value)
            assert isinstance(event, AuditCheckpoint)
            found.append(Checkpoint.from_record(event.data.model_dump(mode="json")))
    return found


async def export(pool: asyncpg.Pool, topic: str, path: Path) -> Path:
    """Write what the relay would publish to an export file (what verifiers may read)."""
    anchor.write_export(path, await published(pool, topic))
    return path
