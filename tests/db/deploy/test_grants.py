"""deploy/init/grants.sql and `privacy-plane migrate`, run as compose's db-init and migrate run
them, on a fresh database of the real PostgreSQL: each service has an owner role (owns its
schema, migrates) and a runtime role that uses its own schema only, creates nothing, and may
only read and append to the evidence tables."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from shared.plumbing import migrator, privileges
from tests.support.infra import Infra
from tests.support.roles import SERVICES, Fresh, fresh_database, migrations

pytestmark = pytest.mark.db


@pytest.fixture
async def fresh(infra: Infra) -> AsyncIterator[Fresh]:
    async with fresh_database(infra.database_url) as made:
        yield made


async def migrated(fresh: Fresh, *services: str) -> None:
    """db-init, then migrate (as the owner, granting the runtime role), for each service."""
    for svc in services:
        await fresh.grants(svc)
        assert await fresh.migrate(svc)


async def tables_of(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
    return sorted(r["tablename"] for r in rows)


async def test_each_service_role_uses_its_own_schema_and_is_refused_the_others(
    fresh: Fresh,
) -> None:
    await migrated(fresh, *SERVICES)
    tables: dict[str, list[str]] = {}
    for svc, roles in fresh.roles.items():  # its own schema: the service's DML, nothing more
        conn = await fresh.connect_runtime(svc)
        try:
            assert await conn.fetchval("SHOW search_path") == roles.schema
            await conn.execute("INSERT INTO outbox (topic, value) VALUES ('t', 'v')")
            assert await conn.fetchval("SELECT count(*) FROM outbox") == 1
            assert await conn.fetchval("DELETE FROM outbox RETURNING topic") == "t"
            tables[svc] = await tables_of(conn, roles.schema)
            assert "outbox" in tables[svc]
        finally:
            await conn.close()
    refused = 0
    for svc in SERVICES:
        conn = await fresh.connect_runtime(svc)
        try:
            for other, roles in fresh.roles.items():
                if other == svc:
                    continue
                statements = [
                    f'CREATE TABLE "{roles.schema}".intruder (x int)',
                    f'DROP SCHEMA "{roles.schema}" CASCADE',
                    f'ALTER SCHEMA "{roles.schema}" RENAME TO taken',
                ]
                for table in tables[other]:
                    statements += [
                        f'SELECT * FROM "{roles.schema}"."{table}" LIMIT 1',
                        f'DELETE FROM "{roles.schema}"."{table}"',
                        f'TRUNCATE "{roles.schema}"."{table}"',
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
    await migrated(fresh, "consent")
    second = uuid.uuid4().hex
    await fresh.grants("consent", runtime_pw=second)  # db-init runs on every `docker compose up`
    with pytest.raises(asyncpg.InvalidPasswordError):
        await fresh.connect_runtime("consent")
    assert await fresh.migrate("consent") == []  # all still there
    roles = fresh.roles["consent"]
    conn = await asyncpg.connect(fresh.server.dsn(roles.runtime, second, fresh.database))
    try:
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
    finally:
        await conn.close()


async def test_a_role_without_grants_cannot_connect_to_the_database(
    infra: Infra, fresh: Fresh
) -> None:
    await fresh.grants("export")
    outsider, password = f"outsider_{fresh.tid}", uuid.uuid4().hex
    admin = await asyncpg.connect(infra.database_url)
    try:
        await admin.execute(f"CREATE ROLE \"{outsider}\" LOGIN PASSWORD '{password}'")
    finally:
        await admin.close()
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await asyncpg.connect(fresh.server.dsn(outsider, password, fresh.database))


# ------------------------------------------------------------ least privilege ----


def forbidden_on(table: str, triggers: list[str]) -> list[str]:
    """Every way the runtime role could rewrite or remove an evidence table's rows."""
    statements = [
        f"UPDATE {table} SET {'{}'} = {'{}'}",  # filled with a real column below
        f"DELETE FROM {table}",
        f"TRUNCATE {table}",
        f"TRUNCATE {table} CASCADE",
        f"ALTER TABLE {table} ADD COLUMN intruder int",
        f"ALTER TABLE {table} DISABLE TRIGGER ALL",
        f"ALTER TABLE {table} OWNER TO CURRENT_USER",
        f"DROP TABLE {table}",
        f"CREATE TRIGGER intruder BEFORE INSERT ON {table} FOR EACH ROW "
        "EXECUTE FUNCTION suppress_redundant_updates_trigger()",
    ]
    for trigger in triggers:
        statements += [
            f"DROP TRIGGER {trigger} ON {table}",
            f"ALTER TRIGGER {trigger} ON {table} RENAME TO gone",
            f"ALTER TABLE {table} DISABLE TRIGGER {trigger}",
        ]
    return statements


TRIGGERS = """
SELECT tgname FROM pg_trigger WHERE tgrelid = ($1 || '.' || $2)::regclass AND NOT tgisinternal
"""
A_COLUMN = """
SELECT attname FROM pg_attribute WHERE attrelid = ($1 || '.' || $2)::regclass AND attnum > 0
AND NOT attisdropped ORDER BY attnum LIMIT 1
"""


async def test_the_runtime_role_may_only_read_and_append_each_evidence_table(fresh: Fresh) -> None:
    await migrated(fresh, *SERVICES)
    tried = 0
    for svc, roles in fresh.roles.items():
        owner = await fresh.connect_owner(svc)
        conn = await fresh.connect_runtime(svc)
        try:
            evidence = privileges.append_only(svc) & set(await tables_of(owner, roles.schema))
            assert evidence == privileges.append_only(svc)  # every declared table exists
            for table in sorted(evidence):
                triggers = [r["tgname"] for r in await owner.fetch(TRIGGERS, roles.schema, table)]
                column = await owner.fetchval(A_COLUMN, roles.schema, table)
                # no grant option: PostgreSQL warns and grants nothing (the UPDATE below fails)
                await conn.execute(f"GRANT UPDATE, DELETE, TRUNCATE ON {table} TO CURRENT_USER")
                for statement in forbidden_on(table, triggers):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await conn.execute(statement.replace("{}", column))
                    tried += 1
                assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0  # may read
            for statement in (
                "CREATE TABLE intruder (x int)",
                "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                "CREATE TEMP TABLE intruder (x int)",  # could shadow a table in a function
                "CREATE VIEW intruder AS SELECT 1",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        finally:
            await conn.close()
            await owner.close()
    assert tried > 3 * 10
    assert "ledger" in privileges.append_only("consent")
    assert "certificates" in privileges.append_only("retention")


LEDGER_ROW = """
INSERT INTO ledger (principal, seq, subject_id, event_id, event_source, event_type, kind,
                    target, old_state, new_state, applied, occurred_at, received_at, evidence,
                    personal_digest, prev_hash, hash, kid)
VALUES ($1, $2::bigint, $3, 'e' || $2::text, 'src', 'consent.granted.v1', 'consent', 'marketing_email',
        'unset', 'granted', true, now(), now(), '{"user_agent": "Firefox"}', 'digest',
        'prev', 'hash' || $2::text, 'legacy')
"""


async def test_the_runtime_appends_to_the_ledger_and_erases_only_through_the_scrub(
    fresh: Fresh,
) -> None:
    await migrated(fresh, "consent")
    conn = await fresh.connect_runtime("consent")
    try:
        for principal, seq, subject in (("p1", 1, "usr_1"), ("p1", 2, "usr_1"), ("p2", 1, "usr_2")):
            await conn.execute(LEDGER_ROW, principal, seq, subject)  # INSERT is allowed
        key = ("principal", "seq")
        before = {
            tuple(r[k] for k in key): dict(r) for r in await conn.fetch("SELECT * FROM ledger")
        }
        assert await conn.fetchval("SELECT ledger_scrub($1::text[])", ["p1"]) == 2
        after = {
            tuple(r[k] for k in key): dict(r) for r in await conn.fetch("SELECT * FROM ledger")
        }
        blanked = {"subject_id": None, "evidence": None}
        assert after[("p1", 1)] == before[("p1", 1)] | blanked  # only the personal columns
        assert after[("p1", 2)] == before[("p1", 2)] | blanked
        assert after[("p2", 1)] == before[("p2", 1)]  # only the given persons
        # the scrub takes principals and nothing else: no column, no other table
        for statement in (
            "SELECT ledger_scrub($1::text[], 'hash')",
            "SELECT ledger_scrub('p2', 'hash')",
            "SELECT ledger_scrub($1::text[], ARRAY['hash'])",
        ):
            args = [["p2"]] if "$1" in statement else []
            with pytest.raises(asyncpg.UndefinedFunctionError):
                await conn.execute(statement, *args)
        for statement in (
            "CREATE OR REPLACE FUNCTION ledger_scrub(principals text[]) RETURNS bigint "
            "LANGUAGE sql SECURITY DEFINER AS 'DELETE FROM ledger RETURNING 1'",
            "ALTER FUNCTION ledger_scrub(text[]) SET search_path = pg_temp",
            "ALTER FUNCTION ledger_scrub(text[]) SECURITY INVOKER",
            "DROP FUNCTION ledger_scrub(text[])",
            "UPDATE ledger SET subject_id = NULL WHERE principal = 'p2'",  # only via the function
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        assert (
            await conn.fetchval("SELECT subject_id FROM ledger WHERE principal = 'p2'") == "usr_2"
        )
    finally:
        await conn.close()
    owner = await fresh.connect_owner("consent")
    try:  # nobody else may call it
        acl = await owner.fetchval(
            "SELECT proacl::text FROM pg_proc WHERE proname = 'ledger_scrub' "
            "AND pronamespace = $1::regnamespace",
            fresh.roles["consent"].schema,
        )
        grantees = {item.split("=")[0] for item in acl.strip("{}").split(",")}
        roles = fresh.roles["consent"]
        assert grantees == {roles.owner, roles.runtime}  # no "" (PUBLIC)
        config = await owner.fetchval(
            "SELECT proconfig[1] FROM pg_proc WHERE proname = 'ledger_scrub' "
            "AND pronamespace = $1::regnamespace",
            fresh.roles["consent"].schema,
        )
        assert config == f"search_path={roles.schema}, pg_temp"  # pg_temp last, never first
    finally:
        await owner.close()


async def test_tables_added_later_get_working_rights_and_declared_evidence_only_append(
    fresh: Fresh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another migration's new table: the runtime may use it at once (default privileges); one
    line in privileges.APPEND_ONLY and the next migrate makes it read-and-append only."""
    await migrated(fresh, "retention")
    owner = await fresh.connect_owner("retention")
    conn = await fresh.connect_runtime("retention")
    try:
        await owner.execute("CREATE TABLE seals (seq bigserial PRIMARY KEY, root text)")
        await conn.execute("INSERT INTO seals (root) VALUES ('a')")
        await conn.execute("UPDATE seals SET root = 'b'")
        declared = {**privileges.APPEND_ONLY, "retention": privileges.APPEND_ONLY["retention"]}
        declared["retention"] = declared["retention"] | {"seals"}
        monkeypatch.setattr(privileges, "APPEND_ONLY", declared)
        assert await fresh.migrate("retention") == []
        await conn.execute("INSERT INTO seals (root) VALUES ('c')")
        for statement in (
            "UPDATE seals SET root = 'd'",
            "DELETE FROM seals",
            "TRUNCATE seals",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        assert await conn.fetchval("SELECT count(*) FROM seals") == 2
    finally:
        await conn.close()
        await owner.close()


async def test_migrate_refuses_a_runtime_role_that_holds_the_owners_rights(
    infra: Infra, fresh: Fresh
) -> None:
    await fresh.grants("export")
    roles = fresh.roles["export"]
    admin = await asyncpg.connect(infra.database_url)
    try:
        await admin.execute(f'GRANT "{roles.owner}" TO "{roles.runtime}"')
    finally:
        await admin.close()
    with pytest.raises(privileges.PrivilegeError, match="member of the owner"):
        await fresh.migrate("export")
    await fresh.grants("export")  # db-init takes the membership away again
    assert await fresh.migrate("export") == []  # (the migrations ran before the refusal)


async def test_upgrading_from_one_role_per_service_hands_everything_to_the_owner(
    fresh: Fresh, tmp_path: Path
) -> None:
    """Before: the service's role owned its schema and migrated it at start. db-init's new
    grants.sql gives the owner everything (the role's and a superuser's objects alike), and
    the next migrate takes the ledger away from the runtime role."""
    roles = fresh.roles["consent"]
    before = tmp_path / "consent" / "migrations"  # the release before this one: up to 0006
    before.mkdir(parents=True)
    for path in sorted(migrations("consent").glob("*.sql"))[:6]:
        shutil.copy(path, before / path.name)
    server = fresh.server
    admin = await asyncpg.connect(server.dsn(server.user, server.password, fresh.database))
    try:
        await admin.execute(f"CREATE ROLE \"{roles.runtime}\" LOGIN PASSWORD '{roles.runtime_pw}'")
        await admin.execute(f'GRANT CONNECT ON DATABASE "{fresh.database}" TO "{roles.runtime}"')
        await admin.execute(f'CREATE SCHEMA "{roles.schema}" AUTHORIZATION "{roles.runtime}"')
        # the old way: the service's one role migrates its own schema
        await migrator.migrate_service(
            fresh.runtime_dsn("consent"), "consent", roles.schema, before
        )
        await admin.execute(f'CREATE TABLE "{roles.schema}".made_by_hand (x int)')  # superuser's
    finally:
        await admin.close()
    await fresh.grants("consent")
    assert await fresh.migrate("consent") == [
        "consent/migrations/0007_key_ids.sql",
        "consent/migrations/0008_checkpoints.sql",
        "consent/migrations/0009_ledger_scrub.sql",
    ]
    owner = await fresh.connect_owner("consent")
    conn = await fresh.connect_runtime("consent")
    try:
        owners = await owner.fetch(
            "SELECT tableowner FROM pg_tables WHERE schemaname = $1", roles.schema
        )
        assert {r["tableowner"] for r in owners} == {roles.owner}
        for statement in ("TRUNCATE ledger", "DROP TRIGGER ledger_append_only ON ledger"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        await conn.execute("SELECT ledger_scrub(ARRAY['nobody'])")
    finally:
        await conn.close()
        await owner.close()
