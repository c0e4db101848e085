"""TLS on every connection: PostgreSQL's libpq settings, HTTPS trust, and one-line refusals.

PostgreSQL takes libpq's own names: `sslmode` (disable … verify-full) and `sslrootcert`,
given as settings (`<P>DATABASE_SSLMODE`, `<P>DATABASE_SSLROOTCERT`) that are written into the
connection URL, so asyncpg, pg_dump and pg_restore all read the same thing. Without them the
URL's own parameters (or libpq's `PGSSLMODE`) apply, and libpq's default `prefer` falls back to
plaintext without checking the server: production sets `verify-full`.
"""

from __future__ import annotations

import asyncio
import gc
import ssl
import warnings
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
PROBE_TIMEOUT = 10.0


class TransportRefused(RuntimeError):
    """A TLS or authentication failure the operator fixes with a setting; one line, names it."""


def postgres_dsn(url: str, sslmode: str | None, sslrootcert: str | None) -> str:
    """`url` with libpq's `sslmode` / `sslrootcert` parameters set (the settings win)."""
    if sslmode is None and sslrootcert is None:
        return url
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if sslmode is not None:
        query["sslmode"] = sslmode
    if sslrootcert is not None:
        query["sslrootcert"] = sslrootcert
    return urlunsplit(parts._replace(query=urlencode(query)))


def postgres_refusal(exc: ssl.SSLError, prefix: str, dsn: str) -> TransportRefused:
    """A clear error for a TLS handshake with PostgreSQL that failed (an untrusted certificate)."""
    query = dict(parse_qsl(urlsplit(dsn).query))
    reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
    return TransportRefused(
        f"PostgreSQL's TLS certificate was refused ({reason}): check {prefix}DATABASE_SSLROOTCERT"
        f" (now {query.get('sslrootcert', 'unset')}) and {prefix}DATABASE_SSLMODE"
        f" (now {query.get('sslmode', 'unset')})"
    )


def http_verify(cafile: str | None) -> ssl.SSLContext | bool:
    """What httpx verifies an https server with: the CA file's context, else the system CAs."""
    if not cafile:
        return True
    return ssl.create_default_context(cafile=cafile)


def kafka_reason(exc: BaseException, prefix: str) -> str | None:
    """A one-line cause of a refused Kafka connection, naming the settings to check."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"the broker's TLS certificate was refused ({exc.verify_message}): "
            f"check {prefix}KAFKA__SSL_CAFILE"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS with the broker failed ({exc.reason}): check {prefix}KAFKA__SECURITY_PROTOCOL"
    from aiokafka.errors import SaslAuthenticationFailed

    if isinstance(exc, SaslAuthenticationFailed):
        return (
            f"the broker refused the SASL credentials: check {prefix}KAFKA__SASL_USERNAME "
            f"and {prefix}KAFKA__SASL_PASSWORD (or _FILE) and {prefix}KAFKA__SASL_MECHANISM"
        )
    return None


async def kafka_refusal(bootstrap: str, kwargs: dict[str, Any], prefix: str) -> str | None:
    """Why the first bootstrap server refuses us (TLS or SASL), or None when that is not it.

    aiokafka logs the cause and raises only "Unable to bootstrap": one direct connection
    with the same settings brings the cause back, bounded by PROBE_TIMEOUT seconds.
    """
    from aiokafka.conn import create_conn

    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    options = {
        k: kwargs[k]
        for k in (
            "security_protocol",
            "ssl_context",
            "sasl_mechanism",
            "sasl_plain_username",
            "sasl_plain_password",
        )
        if k in kwargs
    }
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            conn = await create_conn(host.strip("[]"), int(port), **options)
    except Exception as exc:
        # a handshake refused halfway can leave its socket to the garbage collector (asyncio
        # does not close it): collect it here, quietly, rather than at some later moment
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        return kafka_reason(exc, prefix)
    conn.close()
    return None
