"""Which failures are the infrastructure's (retry) and which the input's (dead-letter)."""

from __future__ import annotations

import errno
import socket

import asyncpg
import pytest

from shared.plumbing.db import InfrastructureError, is_database_failure, is_transient


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


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENAMETOOLONG, "File name too long"),
        FileNotFoundError(errno.ENOENT, "No such file or directory"),
        PermissionError(errno.EACCES, "Permission denied"),
        IsADirectoryError(errno.EISDIR, "Is a directory"),
        NotADirectoryError(errno.ENOTDIR, "Not a directory"),
        OSError(errno.ELOOP, "Too many levels of symbolic links"),
        OSError(errno.EINVAL, "Invalid argument"),
        OSError("some library's own complaint"),
    ],
)
def test_an_os_error_about_a_file_is_not_an_outage(exc):
    # an owner's bad exchange file raised these and the batch was retried forever
    assert not is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError(errno.ECONNRESET, "reset"),
        BrokenPipeError(errno.EPIPE, "broken pipe"),
        socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
        OSError(errno.EHOSTUNREACH, "No route to host"),
        OSError(errno.ENETUNREACH, "Network is unreachable"),
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EIO, "Input/output error"),
        OSError(errno.EMFILE, "Too many open files"),
        # asyncio's connect when every address of "localhost" refused
        OSError(
            "Multiple exceptions: [Errno 111] Connect call failed ('::1', 5432, 0, 0), "
            "[Errno 111] Connect call failed ('127.0.0.1', 5432)"
        ),
        InfrastructureError("our own thing is down"),
    ],
)
def test_the_network_our_disk_and_our_storage_failing_are_outages(exc):
    assert is_transient(exc)
