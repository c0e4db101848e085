"""How fenced publishing is set up: the relay's transactional id and producer, read_committed."""

from __future__ import annotations

import pytest
from faststream.kafka import KafkaRouter

from shared.plumbing.kafka import make_producer
from shared.plumbing.relay import Relay, transactional_id
from shared.plumbing.service import batch_subscriber
from shared.plumbing.settings import ServiceSettings


def settings(schema: str, **extra: str) -> ServiceSettings:
    return ServiceSettings(
        service_name="consent",
        kafka_bootstrap_servers="localhost:9092",
        database_url="postgresql://u:p@localhost/db",
        db_schema=schema,
        api_token="x" * 16,
        **extra,  # type: ignore[arg-type]
    )


def test_replicas_of_one_schema_share_a_transactional_id_and_other_schemas_do_not():
    assert settings("consent").transactional_id == "privacy-plane-consent-relay-consent"
    assert settings("consent").transactional_id == settings("consent").transactional_id
    assert settings("t_1").transactional_id != settings("t_2").transactional_id
    assert settings("t_1", relay_transactional_id="mine").transactional_id == "mine"


async def test_a_transactional_relay_needs_a_producer_per_tenure():
    fenced = make_producer("localhost:9092", transactional_id="privacy-plane-x-relay-x")
    plain = make_producer("localhost:9092")
    try:
        assert transactional_id(fenced) == "privacy-plane-x-relay-x"
        assert transactional_id(plain) is None
        with pytest.raises(ValueError, match="new_producer"):
            Relay("postgresql://u:p@localhost/db", "x", fenced, service="x")
        Relay("postgresql://u:p@localhost/db", "x", plain, service="x")  # the caller's producer
    finally:
        await fenced.stop()  # never started: nothing to flush
        await plain.stop()


def test_every_service_consumes_read_committed():
    """A read_uncommitted subscriber would apply a deposed relay's aborted records."""
    router = KafkaRouter()

    @batch_subscriber(router, settings("unit"), "t")
    async def consume(_: None) -> None: ...

    consumer_options = router.subscribers[0]._connection_args  # type: ignore[attr-defined]
    assert consumer_options["isolation_level"] == "read_committed"
