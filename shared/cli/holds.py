"""`hold place|release`: legal holds, published to the contract's holds topic."""

from __future__ import annotations

from typing import Any

import typer

from shared.cli.common import SOURCE, err, event_item, out, run, send_all, topics
from shared.contract.codec import new_event
from shared.contract.events import (
    HoldReason,
    LegalHoldPlaced,
    LegalHoldPlacedData,
    LegalHoldReleased,
    LegalHoldReleasedData,
)

app = typer.Typer(help="Legal holds: place and release.")


@app.command("place")
def hold_place(
    hold_id: str,
    reason: HoldReason = typer.Option(..., help="court_order, subpoena, dispute or regulator"),
    subject: str | None = typer.Option(None, help="Hold one subject"),
    account: str | None = typer.Option(None, help="Hold every subject of an account"),
    category: list[str] = typer.Option([], help="Categories held (default: all)"),
) -> None:
    """Place a legal hold: no deletion job is issued for what it covers."""
    key, scope = hold_scope(subject, account)
    data = LegalHoldPlacedData(
        hold_id=hold_id,
        scope=scope,
        account_id=account,
        categories=category or "all",
        reason=reason,
    )
    event = new_event(LegalHoldPlaced, subject=key, source=SOURCE, data=data)
    run(send_all([event_item(topics().legal_holds, event)], "placing hold"))
    out.print(f"placed hold {hold_id} on {scope} {key} ({reason.value}) id={event.id}")


@app.command("release")
def hold_release(
    hold_id: str,
    subject: str | None = typer.Option(None),
    account: str | None = typer.Option(None),
) -> None:
    """Release a legal hold: what fell due meanwhile is issued."""
    key, scope = hold_scope(subject, account)
    data = LegalHoldReleasedData(hold_id=hold_id, scope=scope, account_id=account)
    event = new_event(LegalHoldReleased, subject=key, source=SOURCE, data=data)
    run(send_all([event_item(topics().legal_holds, event)], "releasing hold"))
    out.print(f"released hold {hold_id} on {scope} {key} id={event.id}")


def hold_scope(subject: str | None, account: str | None) -> tuple[str, Any]:
    if bool(subject) == bool(account):
        err.print("[red]error:[/red] give exactly one of --subject or --account")
        raise typer.Exit(2)
    return (subject, "subject") if subject else (str(account), "account")
