"""The `privacy-plane` Typer app: every command, wired (needs the `services` extra)."""

from __future__ import annotations

import typer

from shared.cli import (
    backup,
    dlq,
    evidence,
    holds,
    keys,
    migrate,
    publish,
    subjects,
    topics,
    verify,
)

app = typer.Typer(help="Operate Privacy Plane: events, subjects, jobs, dead letters, holds, keys.")
app.add_typer(dlq.app, name="dlq")
app.add_typer(holds.app, name="hold")
app.add_typer(keys.app, name="keys")
app.command()(publish.publish)
app.command("topics")(topics.create_topics)
app.command()(subjects.subject)
app.command()(subjects.overdue)
app.command("dry-run")(subjects.dry_run)
app.command("verify-ledger")(verify.verify_ledger)
app.command("verify-certificates")(evidence.verify_certificates)
app.command()(evidence.checkpoint)
app.command("checkpoint-key")(evidence.checkpoint_key)
app.command("export-checkpoints")(evidence.export_checkpoints)
app.command()(backup.backup)
app.command()(backup.restore)
app.command("migrate")(migrate.migrate)
