"""`verify-ledger`: check the consent ledger, one subject's chain or all of it against the
signed checkpoints."""

from __future__ import annotations

from pathlib import Path

import typer

from shared.cli import evidence
from shared.cli.common import api, call, err, out


def verify_ledger(
    subject_id: str | None = typer.Argument(
        None, help="One subject's chain (through the service); none: the whole ledger."
    ),
    keys: list[str] | None = evidence.PUBLIC_KEY,
    file: Path | None = evidence.CHECKPOINTS,
    schema: str | None = evidence.SCHEMA,
) -> None:
    """Verify the consent ledger (exit 1 if it was tampered with).

    Without a subject: every entry, read from the database, against the signed checkpoints
    published on privacy.audit (public keys only); names the first entry that does not match.
    """
    if subject_id is None:
        evidence.verify_log("consent", schema, keys, file)
        return
    result = call(api, "consent", f"/v1/subjects/{subject_id}/consent/history/verify")
    if result.get("ok"):
        out.print(
            f"[green]ledger of {subject_id} verifies[/green]: {result.get('checked')} entries"
        )
        return
    err.print(
        f"[red]ledger of {subject_id} does NOT verify[/red] at entry {result.get('broken_at')}: "
        f"{result.get('reason')}"
    )
    raise typer.Exit(1)
