"""`migrate`: apply each service's migrations as its schema's owner, then grant its runtime role.

Per service (prefix `CONSENT_`, `RETENTION_`, `EXPORT_`): the owner's URL is
`<PREFIX>MIGRATE_DATABASE_URL` (or `PP_MIGRATE_DATABASE_URL` for every service), the schema
`<PREFIX>DB_SCHEMA` (default the service's name), and the runtime role is the user of the
service's own `<PREFIX>DATABASE_URL`. Each may come from a file (`…_FILE`). See
docs/runbooks/migrations.md.
"""

from __future__ import annotations

import asyncio
import os
from enum import StrEnum
from importlib import import_module
from pathlib import Path

import asyncpg
import typer
from pydantic_settings import SettingsError

from shared.cli.common import CliError, err, out
from shared.plumbing import db, identifiers, migrator, privileges
from shared.plumbing.secrets import FILE_SUFFIX, read_secret_file

SERVICES = ("consent", "retention", "export")


class Which(StrEnum):
    """A service, or all of them."""

    consent = "consent"
    retention = "retention"
    export = "export"
    all = "all"


def setting(*names: str) -> str | None:
    """The first of `names` set in the environment, directly or through `<NAME>_FILE`."""
    for name in names:
        if value := os.environ.get(name):
            return value
        if path := os.environ.get(name + FILE_SUFFIX):
            return read_secret_file(name + FILE_SUFFIX, path)
    return None


def migrations_of(service: str) -> Path:
    """The service's migration folder (beside its package, as the service itself finds it)."""
    return Path(import_module(f"services.{service}").__path__[0]) / "migrations"


async def migrate_one(service: str) -> list[str]:
    """Migrate one service's schema with the settings of its environment."""
    prefix = f"{service.upper()}_"
    owner = setting(f"{prefix}MIGRATE_DATABASE_URL", "PP_MIGRATE_DATABASE_URL")
    if owner is None:
        raise CliError(
            f"set {prefix}MIGRATE_DATABASE_URL or PP_MIGRATE_DATABASE_URL (the schema owner's URL)"
        )
    schema = identifiers.checked(setting(f"{prefix}DB_SCHEMA") or service)
    runtime = setting(f"{prefix}DATABASE_URL")
    if runtime is None:
        err.print(f"{service}: {prefix}DATABASE_URL is not set, so no runtime role is granted")
    return await migrator.migrate_service(owner, service, schema, migrations_of(service), runtime)


def migrate(
    service: Which = typer.Option(Which.all, "--service", help="Which service's schema."),
) -> None:
    """Apply pending migrations as each schema's owner and grant the runtime roles (one-shot)."""
    for name in SERVICES if service is Which.all else (service.value,):
        applied = _run(name)
        out.print(f"{name}: {len(applied)} migration(s) applied")
        for migration in applied:
            out.print(f"  {migration}")


def _run(service: str) -> list[str]:
    """migrate_one, its failures one line each: 2 for settings, 1 for the database's refusal,
    3 for a database that does not answer."""
    try:
        return asyncio.run(migrate_one(service))
    except (CliError, identifiers.InvalidIdentifier, SettingsError) as exc:
        err.print(f"[red]error:[/red] {service}: {exc}")
        raise typer.Exit(2) from None
    except (db.MigrationError, privileges.PrivilegeError, asyncpg.PostgresError) as exc:
        err.print(f"[red]error:[/red] {service}: {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None
    except OSError as exc:
        err.print(f"[red]error:[/red] {service}: the database does not answer: {exc}")
        raise typer.Exit(3) from None
