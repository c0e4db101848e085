"""Security: bearer token on every endpoint, signed links, one PostgreSQL role per schema,
Kafka SASL/SCRAM and TLS settings."""

from __future__ import annotations

import base64
import importlib
import os
import re
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import Route

from shared.plumbing import db
from shared.plumbing.service import Runtime
from shared.plumbing.settings import KafkaSecurity, ServiceSettings
from tests.faults.chaos_app import settings_class
from tests.support.infra import ROOT, Infra

pytestmark = pytest.mark.faults

TOKEN = "the-right-token-0123"
OPEN = {"/healthz", "/readyz", "/metrics"}
SERVICES = ["services.consent.app", "services.retention.app", "services.export.app"]


def service_settings(app_module: str, infra: Infra, schema: str, dsn: str | None = None) -> Any:
    """Settings of one service with everything required filled in."""
    cls = settings_class(importlib.import_module(app_module))
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": infra.kafka,
        "database_url": dsn or infra.database_url,
        "db_schema": schema,
        "api_token": TOKEN,
        "ledger_key": "security-ledger-key",
        "service_key": base64.b64encode(os.urandom(32)).decode(),
        "link_secret": "s" * 32,
        "storage_dir": ROOT / ".local" / "fault-export" / schema / "storage",
        "exchange_dir": ROOT / ".local" / "fault-export" / schema / "exchange",
    }
    fields = cls.model_fields
    return cls(**{k: v for k, v in values.items() if k in fields})


def runtime_of(app_module: str, settings: ServiceSettings) -> Runtime[Any]:
    runtime: Runtime[Any] = importlib.import_module(app_module).build_runtime(settings)
    return runtime


def public_paths(runtime: Runtime[Any]) -> set[str]:
    """Routes that carry their own authorisation (signed links), by the service's own spec."""
    api = runtime.spec.api(runtime.context) if runtime.spec.api else None
    if api is None or api.public is None:
        return set()
    return {r.path for r in api.public.routes if isinstance(r, Route)}


def endpoints(routes: list[Any], prefix: str = "") -> list[tuple[str, set[str]]]:
    """(path, methods) of every HTTP route, through included routers of any FastAPI version."""
    found: list[tuple[str, set[str]]] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:  # FastAPI >= 0.16x keeps included routers as branches
            found += endpoints(inner.routes, prefix + route.include_context.prefix)
        elif isinstance(route, Route):
            found.append((prefix + route.path, set(route.methods or {"GET"})))
    return found


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


@pytest.mark.parametrize("app_module", SERVICES)
async def test_every_endpoint_but_health_readiness_metrics_refuses_a_missing_or_wrong_token(
    app_module, infra
):
    runtime = runtime_of(app_module, service_settings(app_module, infra, "sec_unused"))
    app: FastAPI = runtime.asgi()
    public = public_paths(runtime)
    checked: list[str] = []
    open_answers: list[str] = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        for path, methods in endpoints(app.routes):
            if path in OPEN or path in public:
                continue
            for method in sorted(methods - {"HEAD"}):
                url = concrete(path)
                for headers in (
                    {},
                    {"Authorization": "Bearer wrong"},
                    {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"},
                    {"Authorization": "Bearer"},
                ):
                    answer = await client.request(method, url, headers=headers)
                    if answer.status_code != 401:
                        open_answers.append(f"{method} {path} {headers}: {answer.status_code}")
                checked.append(f"{method} {path}")
    assert open_answers == []
    own = (
        [p for p, _ in endpoints(runtime.spec.api(runtime.context).private.routes)]
        if runtime.spec.api
        else []
    )
    assert len(checked) >= len(own) + 3  # the read API, OpenAPI and the two AsyncAPI routes


@settings(max_examples=200, deadline=None, database=None)
@given(
    request_id=st.text(min_size=1, max_size=40),
    bundle_id=st.text(min_size=1, max_size=40),
    expires=st.integers(0, 2**40),
    other=st.text(min_size=1, max_size=40),
    flip=st.integers(0, 63),
)
def test_download_signatures_bind_request_bundle_and_expiry(
    request_id, bundle_id, expires, other, flip
):
    from services.export import links

    secret = b"k" * 32
    sig = links.signature(secret, request_id, bundle_id, expires)
    assert links.valid(secret, request_id, bundle_id, expires, sig)
    if other != request_id:
        assert not links.valid(secret, other, bundle_id, expires, sig)  # another request
    if other != bundle_id:
        assert not links.valid(secret, request_id, other, expires, sig)  # another bundle
    assert not links.valid(secret, request_id, bundle_id, expires + 1, sig)  # longer life
    assert not links.valid(b"x" * 32, request_id, bundle_id, expires, sig)  # guessed key
    tampered = sig[:flip] + ("A" if sig[flip : flip + 1] != "A" else "B") + sig[flip + 1 :]
    assert not links.valid(secret, request_id, bundle_id, expires, tampered)
    assert not links.valid(secret, request_id, bundle_id, expires, "")


# ------------------------------------------------------------------ database roles ----


@pytest.fixture
async def roles(infra: Infra) -> AsyncIterator[dict[str, tuple[str, str, str]]]:
    """One login role per service, owning only its own schema: {service: (role, dsn, schema)}."""
    tid = uuid.uuid4().hex[:8]
    made: dict[str, tuple[str, str, str]] = {}
    admin = await asyncpg.connect(infra.database_url)
    database = await admin.fetchval("SELECT current_database()")
    base = infra.database_url.rsplit("@", 1)[1]
    try:
        for module in [*SERVICES, "tests.faults.toy_app"]:
            name = module.split(".")[-2] if module.startswith("services") else "toy"
            role, password, schema = f"pp_{name}_{tid}", uuid.uuid4().hex, f"r_{name}_{tid}"
            await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
            await admin.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
            await admin.execute(f'CREATE SCHEMA "{schema}" AUTHORIZATION {role}')
            made[module] = (role, f"postgresql://{role}:{password}@{base}", schema)
        yield made
    finally:
        for role, _, schema in made.values():
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await admin.execute(f"DROP OWNED BY {role}")
            await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


def migrations_of(module: str) -> Path:
    if module == "tests.faults.toy_app":
        from tests.faults.toy_app import MIGRATIONS

        return MIGRATIONS
    return ROOT / "services" / module.split(".")[1] / "migrations"


async def test_each_service_role_migrates_its_own_schema_and_cannot_touch_the_others(infra, roles):
    tables: dict[str, list[str]] = {}
    for module, (_, dsn, schema) in roles.items():
        conn = await asyncpg.connect(dsn)
        try:
            applied = await db.migrate(conn, schema, migrations_of(module))
            assert applied
            tables[module] = [
                r["tablename"]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema
                )
            ]
        finally:
            await conn.close()
    refused = 0
    for module, (role, dsn, _) in roles.items():
        conn = await asyncpg.connect(dsn)
        try:
            for other, (_, _, other_schema) in roles.items():
                if other == module:
                    continue
                for table in tables[other]:
                    for statement in (
                        f'SELECT * FROM "{other_schema}"."{table}" LIMIT 1',
                        f'DELETE FROM "{other_schema}"."{table}"',
                        f'TRUNCATE "{other_schema}"."{table}"',
                    ):
                        with pytest.raises(asyncpg.InsufficientPrivilegeError):
                            await conn.execute(statement)
                        refused += 1
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(f'CREATE TABLE "{other_schema}".intruder (x int)')
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(f'DROP SCHEMA "{other_schema}" CASCADE')
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f'CREATE SCHEMA "x_{role}"')
        finally:
            await conn.close()
    assert refused > 30


async def test_a_service_runs_under_its_own_role(infra, roles, topics, service_logs):
    from tests.faults.harness import ServiceProcess, processes, send, service_env, wait_inbox
    from tests.faults.workloads import consent_stream

    _, dsn, schema = roles["services.consent.app"]
    env = service_env(
        "CONSENT_",
        infra,
        topics,
        schema,
        database_url=dsn,
        extra={"CONSENT_LEDGER_KEY": "role-ledger-key-0123"},
    )
    service = ServiceProcess(
        f"consent-role-{schema}", env, service_logs, app_module="services.consent.app"
    )
    async with processes(service):
        service.start()
        await service.wait_ready()
        events = consent_stream(50, 5, seed=1, tag="role")
        await send(infra.kafka, topics.consent_changes, events)
        await wait_inbox(infra, schema, len(events), timeout=60)
        await service.terminate()
    assert service.stopped_cleanly()


# ------------------------------------------------------------------------- Kafka ----


def test_sasl_scram_over_tls_settings_give_aiokafka_and_faststream_security(monkeypatch):
    from faststream.security import SASLScram256, SASLScram512

    monkeypatch.setenv("CONSENT_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CONSENT_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("CONSENT_KAFKA__SASL_USERNAME", "consent")
    monkeypatch.setenv("CONSENT_KAFKA__SASL_PASSWORD", "scram-secret")
    from services.consent.settings import ConsentSettings

    settings = ConsentSettings(
        kafka_bootstrap_servers="broker:9093",
        database_url="postgresql://u:p@h/d",
        api_token="t" * 16,
        ledger_key="k" * 16,
    )  # type: ignore[call-arg]
    kwargs = settings.kafka.client_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "consent"
    assert kwargs["sasl_plain_password"] == "scram-secret"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    security = settings.kafka.faststream_security()
    assert isinstance(security, SASLScram512)
    assert isinstance(security.ssl_context, ssl.SSLContext)
    assert "scram-secret" not in repr(settings)  # secrets stay out of logs and tracebacks

    sha256 = KafkaSecurity(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="u",
        sasl_password="p",  # type: ignore[arg-type]
    )
    assert isinstance(sha256.faststream_security(), SASLScram256)
    assert "ssl_context" not in sha256.client_kwargs()


def test_tls_alone_and_incomplete_sasl_settings():
    from faststream.security import BaseSecurity

    tls = KafkaSecurity(security_protocol="SSL")
    assert isinstance(tls.faststream_security(), BaseSecurity)
    assert isinstance(tls.client_kwargs()["ssl_context"], ssl.SSLContext)
    assert KafkaSecurity().faststream_security() is None
    with pytest.raises(ValueError, match="SASL needs"):
        KafkaSecurity(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512").client_kwargs()


async def test_a_runtime_passes_its_kafka_security_to_its_clients(infra):
    from aiokafka import AIOKafkaProducer

    from shared.plumbing.kafka import make_producer

    security = KafkaSecurity(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="u",
        sasl_password="p",  # type: ignore[arg-type]
    )
    producer = make_producer("broker:9093", security)
    try:
        assert isinstance(producer, AIOKafkaProducer)
        assert producer.client._security_protocol == "SASL_SSL"
        assert producer.client._sasl_mechanism == "SCRAM-SHA-256"
        assert producer.client._ssl_context is not None
    finally:
        await producer.stop()
