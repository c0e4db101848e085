"""Secret settings: given as files (`<NAME>_FILE`), refused at start-up when missing or short."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsError

from services.consent.settings import ConsentSettings
from services.export.settings import ExportSettings
from services.retention.settings import RetentionSettings
from shared.plumbing.topics_cli import TopicsInitSettings

KEY = base64.b64encode(bytes(range(32))).decode()
VALID = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
    "DATABASE_URL": "postgresql://svc:pw@postgres:5432/privacy",
    "API_TOKEN": "api-token-0123456789",
}
OWN = {
    "CONSENT_": {"LEDGER_KEY": "ledger-key-0123456789"},
    "RETENTION_": {},
    "EXPORT_": {"SERVICE_KEY": KEY, "LINK_SECRET": "link-secret-0123456789-0123456789"},
}
CLASSES: dict[str, type[BaseSettings]] = {
    "CONSENT_": ConsentSettings,
    "RETENTION_": RetentionSettings,
    "EXPORT_": ExportSettings,
}
# Every secret of each service: (env name without prefix, shortest refused, shortest accepted)
SECRETS = [
    ("CONSENT_", "API_TOKEN", "t" * 15, "t" * 16),
    ("RETENTION_", "API_TOKEN", "t" * 15, "t" * 16),
    ("EXPORT_", "API_TOKEN", "t" * 15, "t" * 16),
    ("CONSENT_", "LEDGER_KEY", "k" * 15, "k" * 16),
    ("EXPORT_", "LINK_SECRET", "s" * 31, "s" * 32),
    ("EXPORT_", "SERVICE_KEY", base64.b64encode(bytes(31)).decode(), KEY),
]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A valid environment for every service, with nothing else of theirs set."""
    import os

    for name in list(os.environ):
        if name.upper().startswith(("CONSENT_", "RETENTION_", "EXPORT_", "KAFKA_")):
            monkeypatch.delenv(name)
    for prefix, own in OWN.items():
        for key, value in {**VALID, **own}.items():
            monkeypatch.setenv(prefix + key, value)
    return monkeypatch


def load(prefix: str) -> BaseSettings:
    return CLASSES[prefix]()


@pytest.mark.parametrize(("prefix", "name", "short", "enough"), SECRETS)
def test_a_short_secret_is_refused_naming_the_setting(
    env: pytest.MonkeyPatch, prefix: str, name: str, short: str, enough: str
) -> None:
    env.setenv(prefix + name, short)
    with pytest.raises(ValidationError) as refused:
        load(prefix)
    assert refused.value.errors()[0]["loc"] == (name.lower(),)
    assert name.lower() in refused.value.errors()[0]["msg"]
    assert short not in str(refused.value)  # the refused value stays out of the log
    env.setenv(prefix + name, enough)
    assert load(prefix)


@pytest.mark.parametrize(
    ("prefix", "name"),
    [(p, n) for p, n, _, _ in SECRETS] + [(p, "DATABASE_URL") for p in CLASSES],
)
@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_secret_is_refused_naming_the_setting(
    env: pytest.MonkeyPatch, prefix: str, name: str, value: str
) -> None:
    env.setenv(prefix + name, value)
    with pytest.raises(ValidationError) as refused:
        load(prefix)
    assert refused.value.errors()[0]["loc"] == (name.lower(),)
    assert f"{name.lower()} is empty" in refused.value.errors()[0]["msg"]


@pytest.mark.parametrize(("prefix", "name"), [(p, n) for p, n, _, _ in SECRETS])
def test_a_missing_secret_is_refused_naming_the_setting(
    env: pytest.MonkeyPatch, prefix: str, name: str
) -> None:
    env.delenv(prefix + name)
    with pytest.raises(ValidationError) as refused:
        load(prefix)
    assert [e["loc"] for e in refused.value.errors()] == [(name.lower(),)]
    assert "Field required" in str(refused.value)


def test_an_empty_sasl_password_is_refused(env: pytest.MonkeyPatch) -> None:
    env.setenv("CONSENT_KAFKA__SASL_PASSWORD", "")
    with pytest.raises(ValidationError, match="sasl_password is empty"):
        load("CONSENT_")


@pytest.mark.parametrize(
    ("prefix", "name"),
    [(p, n) for p, n, _, _ in SECRETS] + [(p, "DATABASE_URL") for p in CLASSES],
)
def test_every_secret_is_read_from_its_file_without_the_trailing_newline(
    env: pytest.MonkeyPatch, tmp_path: Path, prefix: str, name: str
) -> None:
    value = {**VALID, **OWN[prefix]}[name] if name != "API_TOKEN" else "from-a-file-0123456789"
    path = tmp_path / "secret"
    path.write_text(value + "\n")
    env.delenv(prefix + name)
    env.setenv(f"{prefix}{name}_FILE", str(path))
    settings = load(prefix)
    assert getattr(settings, name.lower()).get_secret_value() == value


def test_only_the_last_newline_is_stripped_and_a_short_file_is_refused(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "token"
    path.write_text("  token with spaces, 2 lines\n\n")
    env.delenv("CONSENT_API_TOKEN")
    env.setenv("CONSENT_API_TOKEN_FILE", str(path))
    token = ConsentSettings().api_token.get_secret_value()  # type: ignore[call-arg]
    assert token == "  token with spaces, 2 lines\n"
    path.write_text("short\n")
    with pytest.raises(ValidationError, match="api_token must be at least 16 characters"):
        ConsentSettings()  # type: ignore[call-arg]


def test_the_kafka_sasl_password_is_read_from_a_file_nested_and_unprefixed(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "sasl"
    path.write_text("scram-secret\n")
    env.setenv("EXPORT_KAFKA__SASL_PASSWORD_FILE", str(path))
    settings = ExportSettings()  # type: ignore[call-arg]
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "scram-secret"
    env.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    env.setenv("KAFKA__SASL_PASSWORD_FILE", str(path))
    topics = TopicsInitSettings()  # type: ignore[call-arg]
    assert topics.kafka.sasl_password is not None
    assert topics.kafka.sasl_password.get_secret_value() == "scram-secret"


def test_a_secret_given_twice_or_from_a_missing_file_is_refused_naming_the_variable(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "token"
    path.write_text("from-a-file-0123456789")
    env.setenv("RETENTION_API_TOKEN_FILE", str(path))
    with pytest.raises(SettingsError, match="RETENTION_API_TOKEN or RETENTION_API_TOKEN_FILE"):
        RetentionSettings()  # type: ignore[call-arg]
    env.delenv("RETENTION_API_TOKEN")
    env.setenv("RETENTION_API_TOKEN_FILE", str(tmp_path / "absent"))
    with pytest.raises(SettingsError, match="RETENTION_API_TOKEN_FILE: cannot read"):
        RetentionSettings()  # type: ignore[call-arg]
