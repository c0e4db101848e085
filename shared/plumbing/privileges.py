"""What a service's runtime role may do in its schema, granted by the owner role after migrating.

Two roles per service schema: the owner owns every object and runs the migrations
(`privacy-plane migrate`); the runtime role the service connects with may read and write its
working tables, only read and append to the evidence tables below, and never create, alter,
drop or truncate anything. `grant_runtime` applies that in one transaction, after every migrate,
so a table a migration adds gets its grants at once (default privileges cover tables the owner
creates by hand too).
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.plumbing import identifiers
from shared.plumbing.db import Conn

EVERY_SCHEMA = "*"
APPEND_ONLY: Mapping[str, frozenset[str]] = {
    # plumbing (every schema): the record of restores from backup
    EVERY_SCHEMA: frozenset({"restores"}),
    # the ledger (erasure blanks its personal columns through ledger_scrub(), never UPDATE) and
    # the erased persons (a deleted row would let an erased person's later events back in)
    # and the signed checkpoints of the ledger
    "consent": frozenset({"ledger", "suppressed", "checkpoints"}),
    # deletion certificates, the disclosures to authorities (policy 3.2), their checkpoints
    "retention": frozenset({"certificates", "disclosures", "checkpoints"}),
    "export": frozenset(),
}
"""Evidence tables, per service: the runtime role may SELECT and INSERT, nothing else.

The one declared place: a new evidence table is one more name here."""

READ_ONLY: frozenset[str] = frozenset({"schema_migrations"})
"""Tables the runtime role may only read (readiness checks the migrations applied)."""

WORKING = "SELECT, INSERT, UPDATE, DELETE"
EXISTING_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = $1"
IS_PRIVILEGED = """
SELECT r.rolsuper OR pg_has_role(r.oid, s.nspowner, 'MEMBER')
FROM pg_roles r, pg_namespace s WHERE r.rolname = $1 AND s.nspname = $2
"""


class PrivilegeError(RuntimeError):
    """The runtime role could do more than the service needs (a superuser, or the owner)."""


def append_only(service: str) -> frozenset[str]:
    """The evidence tables of `service`'s schema (its own and the plumbing's)."""
    return APPEND_ONLY[EVERY_SCHEMA] | APPEND_ONLY.get(service, frozenset())


def statements(schema: str, role: str, tables: set[str], service: str) -> list[str]:
    """The GRANT/REVOKE statements that give `role` exactly the runtime's rights in `schema`."""
    s, r = identifiers.quoted(schema), identifiers.quoted(role, "role name")
    done = [
        f"REVOKE ALL ON SCHEMA {s} FROM PUBLIC",
        f"REVOKE ALL ON SCHEMA {s} FROM {r}",
        f"GRANT USAGE ON SCHEMA {s} TO {r}",  # no CREATE: it makes no object of its own
        # tables and sequences the owner creates later (by hand or a migration) start right
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT {WORKING} ON TABLES TO {r}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT USAGE, SELECT ON SEQUENCES TO {r}",
        # from nothing: a TRUNCATE, TRIGGER or REFERENCES granted by hand goes too
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {r}",
        f"GRANT {WORKING} ON ALL TABLES IN SCHEMA {s} TO {r}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
        # the functions a migration revoked from PUBLIC (the ledger scrub) are the runtime's
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {r}",
    ]
    evidence = sorted(tables & append_only(service))
    done += [f"REVOKE UPDATE, DELETE ON {s}.{_table(t)} FROM {r}" for t in evidence]
    done += [
        f"REVOKE INSERT, UPDATE, DELETE ON {s}.{_table(t)} FROM {r}" for t in READ_ONLY & tables
    ]
    return done


def _table(name: str) -> str:
    return identifiers.quoted(name, "table name")


async def grant_runtime(conn: Conn, service: str, schema: str, role: str) -> None:
    """Give `role` the runtime's rights in `schema` (run as the schema's owner), atomically."""
    identifiers.checked(role, "role name")
    if await conn.fetchval(IS_PRIVILEGED, role, schema):
        raise PrivilegeError(
            f"the runtime role {role} is a superuser or a member of the owner of schema "
            f"{schema}: give the service a role of its own (deploy/init/grants.sql)"
        )
    tables = {r["tablename"] for r in await conn.fetch(EXISTING_TABLES, schema)}
    async with conn.transaction():
        for statement in statements(schema, role, tables, service):
            await conn.execute(statement)
