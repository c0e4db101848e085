"""Which failures are the infrastructure's (retry) and which the input's (dead-letter)."""

from __future__ import annotations

import asyncpg
import pytest

from shared.plumbing.db import is_database_failure, is_transient


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(),
        TimeoutError(),
        asyncpg.CannotConnectNowError("starting up"),
        asyncpg.SerializationError("could not serialize"),
        asyncpg.UndefinedTableError('relation "subjects" does not exist'),
        asyncpg.InsufficientPrivilegeError("permission denied for schema consent"),
        asyncpg.ReadOnlySQLTransactionError("read-only transaction"),
        # what a query raises when issued between a restarting server's "terminating
        # connection" error and the socket's close (seen in the fault suite)
        asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in"),
        asyncpg.OutdatedSchemaCacheError("cached statement plan is invalid"),
    ],
)
def test_outages_and_a_broken_deployment_are_retried_not_dead_lettered(exc):
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad input"),
        asyncpg.DataError("value too long"),
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.CharacterNotInRepertoireError("invalid byte sequence"),
    ],
)
def test_errors_an_event_causes_are_not_retried(exc):
    assert not is_transient(exc)


def test_a_database_failure_is_an_outage_or_what_postgresql_reported_not_a_bug():
    assert is_database_failure(asyncpg.InternalClientError("cannot switch to state 12"))
    assert is_database_failure(asyncpg.DataError("value too long"))  # reported, not transient
    assert not is_database_failure(ValueError("a bug"))
