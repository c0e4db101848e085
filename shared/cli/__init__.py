"""`privacy-plane`: the operator's command line.

Kafka commands (publish, holds, dead letters, topics) talk to the broker; the others ask the
services' HTTP APIs with the bearer token. Settings come from the environment (`PP_…`), and
every failure prints one clear line and exits non-zero.
"""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError

from shared.cli import dlq, holds, publish, subjects, topics, verify
from shared.cli.common import err

app = typer.Typer(help="Operate Privacy Plane: events, subjects, jobs, dead letters, holds.")
app.add_typer(dlq.app, name="dlq")
app.add_typer(holds.app, name="hold")
app.command()(publish.publish)
app.command("topics")(topics.create_topics)
app.command()(subjects.subject)
app.command()(subjects.overdue)
app.command("dry-run")(subjects.dry_run)
app.command("verify-ledger")(verify.verify_ledger)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except ValidationError as exc:
        err.print(f"[red]error:[/red] {exc.errors()[0]['msg']}")
        sys.exit(2)
