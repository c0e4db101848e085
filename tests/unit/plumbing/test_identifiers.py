"""Names formatted into SQL pass one check: settings, migrations and the rebuild refuse others."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from services.consent.settings import ConsentSettings
from shared.plumbing.identifiers import InvalidIdentifier, checked, quoted

HOSTILE = [
    'consent"; DROP SCHEMA consent CASCADE; --',
    "Consent",
    "1consent",
    "con sent",
    "",
    "x" * 64,
    "consent.public",
]


@pytest.mark.parametrize("name", ["consent", "t_0f3a9c", "_rebuild_2026", "x" * 63])
def test_our_names_pass_and_are_quoted(name: str):
    assert checked(name) == name
    assert quoted(name) == f'"{name}"'


@pytest.mark.parametrize("name", HOSTILE)
def test_anything_else_is_refused_with_what_a_valid_name_looks_like(name: str):
    with pytest.raises(InvalidIdentifier, match="lower-case letters, digits and underscores"):
        quoted(name)


@pytest.mark.parametrize("name", HOSTILE)
def test_a_service_refuses_to_start_with_such_a_schema_setting(name: str):
    with pytest.raises(ValidationError, match="db_schema"):
        ConsentSettings(
            kafka_bootstrap_servers="kafka:9092",
            database_url="postgresql://u:p@db/x",
            api_token="t" * 16,
            ledger_key="k" * 16,
            db_schema=name,
        )


def test_the_rebuild_refuses_such_a_target_schema_before_connecting_anywhere():
    env = {
        "CONSENT_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "CONSENT_DATABASE_URL": "postgresql://u:p@127.0.0.1:9/x",
        "CONSENT_API_TOKEN": "t" * 16,
        "CONSENT_LEDGER_KEY": "k" * 16,
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.consent.rebuild", 'x"; DROP TABLE subjects; --'],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "invalid schema name" in done.stderr
