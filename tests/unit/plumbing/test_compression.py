"""What the services compress their record batches with: a setting, zstd unless told."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.consent.settings import ConsentSettings
from shared.plumbing.kafka import make_producer

REQUIRED = {
    "CONSENT_KAFKA_BOOTSTRAP_SERVERS": "localhost:9092",
    "CONSENT_DATABASE_URL": "postgresql://u:p@localhost/db",
    "CONSENT_API_TOKEN": "t" * 16,
    "CONSENT_LEDGER_KEY": "k" * 32,
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_services_compress_with_zstd_unless_told(env: pytest.MonkeyPatch) -> None:
    assert ConsentSettings().kafka_compression == "zstd"  # type: ignore[call-arg]
    env.setenv("CONSENT_KAFKA_COMPRESSION", "none")
    assert ConsentSettings().kafka_compression == "none"  # type: ignore[call-arg]


def test_an_unknown_codec_is_refused_by_name(env: pytest.MonkeyPatch) -> None:
    env.setenv("CONSENT_KAFKA_COMPRESSION", "brotli")
    with pytest.raises(ValidationError, match="kafka_compression"):
        ConsentSettings()  # type: ignore[call-arg]


@pytest.mark.parametrize("compression", ["zstd", "lz4", "snappy", "gzip"])
async def test_the_producer_has_each_codec_installed(compression: str) -> None:
    # aiokafka refuses a codec whose library is missing when the producer is made
    producer = make_producer("localhost:9092", compression=compression)  # type: ignore[arg-type]
    try:
        assert producer._compression_type == compression
    finally:
        await producer.stop()  # never started: closes it without a broker
