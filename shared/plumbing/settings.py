"""Settings every service shares; each service subclasses with its own env prefix."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.contract.envelope import MAX_EVENT_BYTES
from shared.contract.topics import Topics
from shared.plumbing.identifiers import SchemaName
from shared.plumbing.secrets import NonEmptySecret, SecretFileSettings, Token
from shared.plumbing.tls import SslMode, postgres_dsn

Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]


class KafkaSecurity(SecretFileSettings):
    """Kafka TLS and SASL/SCRAM, all optional (PLAINTEXT on a trusted network by default)."""

    model_config = SettingsConfigDict(extra="ignore")

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] | None = None
    sasl_username: str | None = None
    sasl_password: NonEmptySecret | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients (consumer, producer, admin)."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        if self.security_protocol.startswith("SASL"):
            if not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
                raise ValueError("SASL needs sasl_mechanism, sasl_username and sasl_password")
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password.get_secret_value(),
            )
        return kwargs

    def faststream_security(self) -> Any:
        """The same settings as a FastStream security object (None for PLAINTEXT)."""
        from faststream.security import (
            BaseSecurity,
            SASLPlaintext,
            SASLScram256,
            SASLScram512,
        )

        kwargs = self.client_kwargs()
        ssl_context = kwargs.get("ssl_context")
        if not self.security_protocol.startswith("SASL"):
            return BaseSecurity(ssl_context=ssl_context) if ssl_context else None
        kind = {"SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}.get(
            kwargs["sasl_mechanism"], SASLPlaintext
        )
        return kind(
            username=kwargs["sasl_plain_username"],
            password=kwargs["sasl_plain_password"],
            ssl_context=ssl_context,
        )


class ServiceSettings(SecretFileSettings):
    """Required values have no default: a missing, empty or too short one stops start-up
    with its name. Secrets may come from files (`<PREFIX>_API_TOKEN_FILE`: see secrets.py)."""

    model_config = SettingsConfigDict(extra="ignore", env_nested_delimiter="__")

    service_name: str
    kafka_bootstrap_servers: str = Field(description="host:port[,host:port]")
    database_url: NonEmptySecret = Field(
        description="postgresql://user:password@host:port/db, as the service's runtime role"
    )
    migrate_on_start: bool = Field(
        False,
        description="Migrate the schema at start-up (development and tests). Off: the "
        "service only checks that `privacy-plane migrate` has applied every migration.",
    )
    migrate_database_url: NonEmptySecret | None = Field(
        None,
        description="The schema owner's URL (runs the migrations, grants the runtime role); "
        "`privacy-plane migrate` reads it, and migrate_on_start when set (else database_url).",
    )
    database_sslmode: SslMode | None = Field(
        None,
        description="libpq's sslmode for PostgreSQL; verify-full in production. Unset: the "
        "URL's own sslmode, else libpq's prefer (falls back to plaintext, checks nothing).",
    )
    database_sslrootcert: str | None = Field(
        None, description="CA file that signed PostgreSQL's certificate (libpq's sslrootcert)."
    )
    db_schema: SchemaName
    group_id: str | None = None
    topics: Topics = Topics()
    kafka: KafkaSecurity = KafkaSecurity()
    kafka_compression: Compression = Field(
        "zstd",
        description="How published record batches are compressed (consumers decompress "
        "on their own; every current Kafka client reads zstd).",
    )
    api_token: Token = Field(
        description="Bearer token(s) for the HTTP API (16+ characters each; a keyring: every "
        "listed token is accepted, see keyring.py)."
    )
    http_host: str = "127.0.0.1"
    http_tls_certfile: str | None = Field(
        None, description="PEM certificate (chain) the HTTP API serves HTTPS with."
    )
    http_tls_keyfile: str | None = Field(None, description="Its private key (PEM).")
    http_max_body_bytes: int = Field(1024 * 1024, ge=1024, description="Larger bodies: 413.")
    http_max_url_bytes: int = Field(
        4096, ge=256, description="Longer request targets (path and query string): 414."
    )
    http_max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="Larger header blocks (names and values): 431."
    )
    http_max_in_flight: int = Field(
        12,
        ge=1,
        description="Requests (open endpoints aside) run at once per process; more are refused "
        "at once with 503 and Retry-After (in uvicorn's protocol under shared.plumbing.serve). "
        "Near the pool size: more would only wait for a connection (at 12,000 req/s offered, 12 "
        "kept the decisions p99 at 5.8 ms, 24 at 9.3 ms: docs/performance.md).",
    )
    http_retry_after_s: int = Field(1, ge=1, description="The Retry-After of a 503 refusal.")
    log_format: Literal["json", "console"] = "json"
    log_level: str = "INFO"
    batch_max_records: int = Field(500, ge=1, le=10_000)
    batch_timeout_ms: int = Field(50, ge=1)
    max_event_bytes: int = Field(
        MAX_EVENT_BYTES,
        ge=1024,
        le=1_000_000,
        description="Largest consumed record (value and headers) taken as an event; larger "
        "ones are dead-lettered unparsed as too_large. Under Kafka's message size (1 MiB).",
    )
    relay_batch_size: int = Field(1000, ge=1)
    relay_transactional_id: str | None = Field(
        None,
        description="The relay producer's transactional.id (fences a deposed leader); "
        "default privacy-plane-<service>-relay-<db_schema>, one per service and schema.",
    )
    pool_min_size: int = 2
    pool_max_size: int = 10
    otel_enabled: bool = Field(
        False,
        description="Record OpenTelemetry spans and export them over OTLP/HTTP, as the SDK's "
        "OTEL_* variables say (docs/tracing.md). Off, an event's trace context still passes "
        "through to what it causes.",
    )
    deadletter_memory_days: int = Field(
        30,
        ge=1,
        description="How long the origin of a dead letter is remembered, so that a replayed "
        "record is not dead-lettered twice: longer than a batch can wait to be replayed.",
    )

    @model_validator(mode="after")
    def _https_pair(self) -> ServiceSettings:
        if (self.http_tls_certfile is None) != (self.http_tls_keyfile is None):
            prefix = self.env_prefix
            raise ValueError(f"set both {prefix}HTTP_TLS_CERTFILE and {prefix}HTTP_TLS_KEYFILE")
        return self

    @property
    def env_prefix(self) -> str:
        """The prefix of this service's variables (`CONSENT_`), for messages naming one."""
        return str(self.model_config.get("env_prefix", ""))

    def database_dsn(self) -> str:
        """The database URL with the TLS settings in it: what every connection opens."""
        url = self.database_url.get_secret_value()
        return postgres_dsn(url, self.database_sslmode, self.database_sslrootcert)

    def migrate_dsn(self) -> str:
        """The schema owner's URL (else the runtime's) with the same TLS settings in it."""
        url = (self.migrate_database_url or self.database_url).get_secret_value()
        return postgres_dsn(url, self.database_sslmode, self.database_sslrootcert)

    @property
    def transactional_id(self) -> str:
        """The relay's transactional.id: shared by the replicas of one schema (like its lock)."""
        return self.relay_transactional_id or (
            f"privacy-plane-{self.service_name}-relay-{self.db_schema}"
        )

    @property
    def consumer_group(self) -> str:
        """The service's consumer group (one per service; replicas share it)."""
        return self.group_id or f"privacy-plane-{self.service_name}"
