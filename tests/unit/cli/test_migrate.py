"""`privacy-plane migrate` without a database: what it asks for, and what the grants say."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from shared.cli.commands import app
from shared.cli.migrate import migrations_of
from shared.plumbing import privileges
from shared.plumbing.migrator import role_of


def test_migrate_names_the_owner_url_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONSENT_MIGRATE_DATABASE_URL", "PP_MIGRATE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name + "_FILE", raising=False)
    result = CliRunner().invoke(app, ["migrate", "--service", "consent"])
    assert result.exit_code == 2
    assert "CONSENT_MIGRATE_DATABASE_URL or PP_MIGRATE_DATABASE_URL" in result.output


def test_migrate_finds_each_services_migrations() -> None:
    for service in ("consent", "retention", "export"):
        assert sorted(migrations_of(service).glob("0001_*.sql")), service


def test_the_runtime_role_is_the_user_of_its_url() -> None:
    assert role_of("postgresql://consent:pw@postgres:5432/privacy") == "consent"
    assert role_of("postgresql://postgres/privacy") is None


def test_evidence_tables_lose_update_and_delete_and_the_role_never_gets_create() -> None:
    done = privileges.statements(
        "consent", "consent", {"ledger", "subjects", "restores"}, "consent"
    )
    text = "\n".join(done)
    assert 'REVOKE UPDATE, DELETE ON "consent"."ledger" FROM "consent"' in text
    assert 'REVOKE UPDATE, DELETE ON "consent"."restores" FROM "consent"' in text
    assert '"subjects" FROM' not in text  # a working table keeps its DML
    assert "TRUNCATE" not in text
    assert "CREATE" not in text
    # from nothing, then the working rights, then the evidence tables' revokes (one transaction)
    assert done.index(
        next(s for s in done if s.startswith("REVOKE ALL ON ALL TABLES"))
    ) < done.index('REVOKE UPDATE, DELETE ON "consent"."ledger" FROM "consent"')
