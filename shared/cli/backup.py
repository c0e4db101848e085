"""`backup` / `restore`: each service schema to a `pg_dump` custom-format file, and back.

PostgreSQL is the services' only state, and each schema carries the Kafka positions its data
was built from (`consumed_positions`), so a restored service re-consumes what came after the
backup. All schemas are dumped from one exported snapshot, so the files and the positions in
the manifest describe one instant. A restore never drops data: the current schema is renamed
aside (`<schema>__replaced_<time>`) before the backup's is loaded, and a row in the schema's
`restores` table says when and from which backup. See docs/runbooks/backup-restore.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import typer

from shared.cli.common import CliError, call, database_url, err, out, run
from shared.plumbing import db, identifiers

MANIFEST = "manifest.json"
FORMAT = 1
SCHEMAS = ("consent", "retention", "export")
SCHEMA_OPTION = typer.Option(list(SCHEMAS), "--schema", help="A service schema (repeatable).")
POSITIONS = "SELECT topic, partition, next_offset FROM {}.consumed_positions ORDER BY 1, 2"
RECORD_RESTORE = """
INSERT INTO {}.restores (backup_taken_at, backup, positions) VALUES ($1, $2, $3::jsonb)
"""


@dataclass(frozen=True)
class Backup:
    """A backup folder's manifest: when it was taken and what each schema holds."""

    folder: Path
    taken_at: datetime
    schemas: dict[str, dict[str, Any]]

    def positions(self, schema: str) -> dict[str, dict[str, int]]:
        """topic -> partition -> next offset, as the schema stood at the backup."""
        return dict(self.schemas[schema]["positions"])


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise CliError(f"{name} is not on PATH (install the PostgreSQL client tools)")
    return path


async def _call(*argv: str) -> None:
    """Run a PostgreSQL client tool; its error output becomes the CliError."""
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise CliError(f"{Path(argv[0]).name} failed: {done.stderr.strip()[-500:]}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


async def take_backup(dsn: str, folder: Path, schemas: list[str]) -> Backup:
    """Dump every schema from one snapshot into `folder`, with a manifest of time and positions."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    pg_dump = _tool("pg_dump")
    conn = await asyncpg.connect(dsn)
    try:
        # The exported snapshot lives as long as this transaction: every pg_dump and the
        # positions below see the same committed state.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            taken_at: datetime = await conn.fetchval("SELECT now()")
            found = {
                r["nspname"]
                for r in await conn.fetch("SELECT nspname FROM pg_namespace")
                if r["nspname"] in schemas
            }
            if missing := sorted(set(schemas) - found):
                raise CliError(f"no such schema: {', '.join(missing)}")
            manifest: dict[str, dict[str, Any]] = {}
            for schema in schemas:
                positions: dict[str, dict[str, int]] = {}
                for r in await conn.fetch(POSITIONS.format(identifiers.quoted(schema))):
                    positions.setdefault(r["topic"], {})[str(r["partition"])] = r["next_offset"]
                manifest[schema] = {"file": f"{schema}.dump", "positions": positions}
            dumps = [
                _call(
                    pg_dump,
                    "--format=custom",
                    f"--snapshot={snapshot}",
                    f"--schema={schema}",
                    f"--file={folder / manifest[schema]['file']}",
                    f"--dbname={dsn}",
                )
                for schema in schemas
            ]
            await asyncio.gather(*dumps)
    finally:
        await conn.close()
    backup = Backup(folder, taken_at, manifest)
    await asyncio.to_thread(_write_manifest, backup)
    return backup


def _write_manifest(backup: Backup) -> None:
    """manifest.json: the time, and per schema its file, digest and positions."""
    for entry in backup.schemas.values():
        entry["sha256"] = _sha256(backup.folder / entry["file"])
    body = {"format": FORMAT, "taken_at": backup.taken_at.isoformat(), "schemas": backup.schemas}
    (backup.folder / MANIFEST).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


def read_backup(folder: Path) -> Backup:
    """A backup folder's manifest, its files checked against their digests."""
    try:
        body = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"{folder / MANIFEST}: {exc}") from None
    if body.get("format") != FORMAT:
        raise CliError(f"{folder / MANIFEST}: unknown format {body.get('format')!r}")
    for schema, entry in body["schemas"].items():
        if _sha256(folder / entry["file"]) != entry["sha256"]:
            raise CliError(f"{entry['file']} does not match its digest: the backup is damaged")
        body["schemas"][schema] = entry
    return Backup(folder, datetime.fromisoformat(body["taken_at"]), body["schemas"])


async def restore_backup(dsn: str, backup: Backup, schemas: list[str]) -> dict[str, str]:
    """Load each schema of `backup`, the current one renamed aside; returns schema -> aside."""
    pg_restore = _tool("pg_restore")
    if missing := sorted(set(schemas) - set(backup.schemas)):
        raise CliError(f"the backup has no schema {', '.join(missing)}")
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    aside: dict[str, str] = {}
    conn = await asyncpg.connect(dsn)
    try:
        for schema in schemas:
            name = identifiers.quoted(schema)
            if await conn.fetchval(db.SCHEMA_EXISTS, schema):
                aside[schema] = f"{schema}__replaced_{stamp}"[:63]
                await conn.execute(
                    f"ALTER SCHEMA {name} RENAME TO {identifiers.quoted(aside[schema])}"
                )
            try:
                await _call(
                    pg_restore,
                    "--exit-on-error",
                    "--single-transaction",  # all or nothing: a failure leaves no half schema
                    "--no-owner",
                    f"--dbname={dsn}",
                    str(backup.folder / backup.schemas[schema]["file"]),
                )
            except CliError:
                if schema in aside:  # put the replaced schema back as it was
                    moved = identifiers.quoted(aside.pop(schema))
                    await conn.execute(f"ALTER SCHEMA {moved} RENAME TO {name}")
                raise
            await db.migrate(conn, schema)  # a backup older than `restores` gets the table
            await conn.execute(
                RECORD_RESTORE.format(name),
                backup.taken_at,
                str(backup.folder.resolve()),
                json.dumps(backup.positions(schema)),
            )
            await conn.execute("RESET search_path")
    finally:
        await conn.close()
    return aside


def backup(
    folder: Path = typer.Argument(..., help="Where to write the dumps and manifest.json."),
    schemas: list[str] = SCHEMA_OPTION,
) -> None:
    """Back up the services' schemas (pg_dump custom format, one snapshot) with their positions."""
    taken = run(take_backup(database_url(), folder, schemas))
    out.print(f"backup of {', '.join(schemas)} taken at {taken.taken_at.isoformat()} in {folder}")


def restore(
    folder: Path = typer.Argument(..., help="A folder written by `privacy-plane backup`."),
    schemas: list[str] = SCHEMA_OPTION,
    yes: bool = typer.Option(False, "--yes", help="The services are stopped; go ahead."),
) -> None:
    """Restore schemas from a backup (stop the services first); each replays Kafka from there."""
    if not yes:
        err.print("stop the services first, then run again with --yes")
        raise typer.Exit(2)
    taken = call(read_backup, folder)
    aside = run(restore_backup(database_url(), taken, schemas))
    for schema in schemas:
        kept = f" (the replaced one is kept as {aside[schema]})" if schema in aside else ""
        out.print(f"{schema} restored to {taken.taken_at.isoformat()}{kept}")
