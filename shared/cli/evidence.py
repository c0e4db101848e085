"""Checkpoints from the command line: make one now, verify a log against the published ones.

Verification reads the log's rows from the database itself (not through the service) and the
checkpoints from the `privacy.audit` topic (or an export file), and needs only public keys.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import typer

from shared.cli.common import CliError, env, err, out, run, topics
from shared.evidence import anchor, audit, store
from shared.evidence.checkpoint import Checkpoint, Leaf
from shared.evidence.signing import KeyFileError, Signer, Verifier, generate_seed
from shared.plumbing import identifiers
from shared.plumbing.db import Conn

PUBLIC_KEY = typer.Option(
    None,
    "--public-key",
    help="A checkpoint public key, base64 (repeatable; default PP_CHECKPOINT_PUBLIC_KEYS, "
    "comma-separated). Keep rotated keys here: older checkpoints name them.",
)
CHECKPOINTS = typer.Option(
    None, "--checkpoints", help="An export file to read instead of the privacy.audit topic."
)
SCHEMA = typer.Option(None, "--schema", help="The service's schema (default: its name).")
LOGS = {"consent": "consent.ledger", "retention": "retention.certificates"}


def _verifier(keys: list[str] | None) -> Verifier:
    given = keys or [k for k in env("CHECKPOINT_PUBLIC_KEYS", "").split(",") if k.strip()]
    if not given:
        raise CliError("give --public-key (or set PP_CHECKPOINT_PUBLIC_KEYS)")
    try:
        return Verifier.of(given)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None


async def _checkpoints(file: Path | None) -> list[Checkpoint]:
    if file is not None:
        try:
            return anchor.read_export(file)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CliError(f"{file}: {exc}") from None
    return await anchor.published(env("KAFKA_BOOTSTRAP_SERVERS"), topics().privacy_audit)


Leaves = Callable[[Conn], AsyncIterator[Leaf]]


async def audit_log(
    service: str, schema: str, leaves: Leaves, verifier: Verifier, file: Path | None
) -> audit.Report:
    """The report of `service`'s log in `schema` against the published checkpoints."""
    checkpoints = await _checkpoints(file)
    run_ = audit.LogAudit(audit.trusted_branch(checkpoints, verifier, LOGS[service]))
    conn = await asyncpg.connect(env("DATABASE_URL"))
    try:
        await conn.execute(f"SET search_path TO {identifiers.quoted(schema)}")
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            async for leaf in leaves(conn):
                run_.feed(leaf)
    finally:
        await conn.close()
    return run_.finish()


def show(what: str, report: audit.Report) -> None:
    """Print a report; exit 1 when the log does not verify."""
    for fork in report.forks:
        assert fork.fork is not None
        out.print(
            f"fork: checkpoint {fork.number} records a restore at {fork.fork.restored_at} "
            f"(backup of {fork.fork.backup_taken_at}): history after checkpoint "
            f"{fork.number - 1} was re-derived"
        )
    if report.superseded:
        numbers = ", ".join(str(c.number) for c in report.superseded)
        out.print(f"superseded by a restore: checkpoints {numbers}")
    if not report.ok:
        err.print(f"[red]{what} does NOT verify[/red]: {report.bad_entry} {report.reason}")
        raise typer.Exit(1)
    if report.checked and not report.covered:
        err.print(
            "[yellow]warning:[/yellow] no signed checkpoint covers any entry (wrong topic prefix "
            "or keys, or no checkpoint made yet): nothing here is protected"
        )
    out.print(
        f"[green]{what} verifies[/green]: {report.checked} entries, {report.covered} under "
        f"signed checkpoints, {report.uncovered} newer than the last checkpoint (not yet protected)"
    )


def verify_log(service: str, schema: str | None, keys: list[str] | None, file: Path | None) -> None:
    """Verify a whole log against the published checkpoints (exit 1 if it does not)."""
    if service == "consent":
        from services.consent.checkpoints import ledger_leaves as leaves
    else:
        from services.retention.checkpoints import certificate_leaves as leaves
    report = run(audit_log(service, schema or service, leaves, _verifier(keys), file))
    show(f"the {LOGS[service]} log", report)


def verify_certificates(
    keys: list[str] | None = PUBLIC_KEY,
    file: Path | None = CHECKPOINTS,
    schema: str | None = SCHEMA,
) -> None:
    """Verify every deletion certificate against the signed checkpoints (exit 1 if not)."""
    verify_log("retention", schema, keys, file)


def checkpoint(
    service: str = typer.Argument("consent", help="consent or retention."),
    key_file: Path | None = typer.Option(
        None, "--key-file", help="Default: <SERVICE>_CHECKPOINT_KEY_FILE."
    ),
    schema: str | None = SCHEMA,
) -> None:
    """Make a checkpoint now (the service's relay publishes it to privacy.audit)."""
    if service not in LOGS:
        err.print(f"[red]error:[/red] no audit log in {service!r}: consent or retention")
        raise typer.Exit(2)
    made = run(_checkpoint(service, key_file, schema or service))
    if not made:
        out.print("nothing new since the last checkpoint")
    for cp in made:
        out.print(f"checkpoint {cp.number} of {cp.log}: {cp.count} entries, up to {cp.upto_seq}")


MAX_ENTRIES = 20_000
"""Per checkpoint, as the services' default: a backlog becomes several (each event < 200 kB)."""


async def _checkpoint(service: str, key_file: Path | None, schema: str) -> list[Checkpoint]:
    path = key_file or Path(env(f"{service.upper()}_CHECKPOINT_KEY_FILE"))
    try:
        signer = Signer.from_file(path)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    if service == "consent":
        from services.consent.checkpoints import LEDGER as source
    else:
        from services.retention.checkpoints import CERTIFICATES as source
    conn = await asyncpg.connect(env("DATABASE_URL"))
    try:
        await conn.execute(f"SET search_path TO {identifiers.quoted(schema)}")
        done: list[Checkpoint] = []
        while True:
            made = await store.make(
                conn,
                source,
                signer,
                datetime.now(UTC),
                topic=topics().privacy_audit,
                schema=schema,
                service=service,
                max_entries=MAX_ENTRIES,
            )
            if made is None:
                return done
            done.append(made.checkpoint)
            if not made.more:
                return done
    finally:
        await conn.close()


def checkpoint_key(
    key_file: Path = typer.Argument(..., help="The signing key file."),
    generate: bool = typer.Option(False, "--generate", help="Write a new key (never overwrites)."),
) -> None:
    """Print a signing key's id and public key (what verifiers are given); --generate one."""
    try:
        if generate:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(generate_seed() + "\n")
        signer = Signer.from_file(key_file)
    except (KeyFileError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    out.print(f"key id {signer.key_id}  public key {signer.public}")


def export_checkpoints(
    path: Path = typer.Argument(..., help="The JSON-lines file to write."),
) -> None:
    """Copy every published checkpoint from privacy.audit into a file (an offline anchor)."""
    found: list[Any] = run(anchor.published(env("KAFKA_BOOTSTRAP_SERVERS"), topics().privacy_audit))
    out.print(f"{anchor.write_export(path, found)} checkpoints written to {path}")
