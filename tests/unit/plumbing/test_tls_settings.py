"""PostgreSQL TLS and HTTPS settings: libpq's names reach the URL every connection opens."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError

from services.consent.settings import ConsentSettings
from shared.cli import common
from shared.plumbing.serve import tls_options
from shared.plumbing.tls import postgres_dsn

URL = "postgresql://privacy:secret@db.internal:5432/privacy"


def _settings(**values: Any) -> ConsentSettings:
    base: dict[str, Any] = {
        "kafka_bootstrap_servers": "k:9092",
        "database_url": URL,
        "api_token": "t" * 16,
        "ledger_key": "k" * 16,
    }
    return ConsentSettings(**{**base, **values})


def _query(dsn: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(dsn).query)


def test_the_sslmode_and_root_certificate_settings_are_written_into_the_url() -> None:
    dsn = _settings(database_sslmode="verify-full", database_sslrootcert="/ca.pem").database_dsn()
    assert dsn.startswith("postgresql://privacy:secret@db.internal:5432/privacy?")
    assert _query(dsn) == {"sslmode": ["verify-full"], "sslrootcert": ["/ca.pem"]}


def test_the_settings_win_over_the_urls_own_parameters_and_keep_the_others() -> None:
    dsn = postgres_dsn(URL + "?sslmode=prefer&application_name=pp", "verify-full", None)
    assert _query(dsn) == {"sslmode": ["verify-full"], "application_name": ["pp"]}


def test_without_the_settings_the_url_is_used_as_it_is() -> None:
    assert _settings().database_dsn() == URL
    assert postgres_dsn(URL + "?sslmode=require", None, None) == URL + "?sslmode=require"


def test_an_unknown_sslmode_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValidationError, match="database_sslmode"):
        _settings(database_sslmode="verify_full")


def test_https_needs_both_certificate_and_key_naming_the_settings() -> None:
    with pytest.raises(ValidationError, match="CONSENT_HTTP_TLS_KEYFILE"):
        _settings(http_tls_certfile="/cert.pem")
    assert tls_options(_settings()) == {}
    https = _settings(http_tls_certfile="/cert.pem", http_tls_keyfile="/key.pem")
    assert tls_options(https) == {"ssl_certfile": "/cert.pem", "ssl_keyfile": "/key.pem"}


def test_the_cli_reads_the_same_database_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PP_DATABASE_URL", URL)
    monkeypatch.setenv("PP_DATABASE_SSLMODE", "verify-full")
    monkeypatch.setenv("PP_DATABASE_SSLROOTCERT", "/ca.pem")
    assert _query(common.database_url()) == {"sslmode": ["verify-full"], "sslrootcert": ["/ca.pem"]}


def test_the_cli_reads_kafka_security_under_kafka__(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA__SASL_USERNAME", "privacy")
    monkeypatch.setenv("KAFKA__SASL_PASSWORD", "pw")
    security = common.kafka_security()
    assert (security.security_protocol, security.sasl_username) == ("SASL_SSL", "privacy")
