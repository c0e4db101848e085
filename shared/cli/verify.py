"""`verify-ledger`: check a subject's consent ledger hash chain."""

from __future__ import annotations

import typer

from shared.cli.common import api, call, err, out


def verify_ledger(subject_id: str) -> None:
    """Verify a subject's consent ledger hash chain (exit 1 if it was tampered with)."""
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
