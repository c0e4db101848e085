"""`privacy-plane`: the operator's command line.

Kafka commands (publish, holds, dead letters, topics) talk to the broker; the others ask the
services' HTTP APIs with the bearer token. Settings come from the environment (`PP_…`), and
every failure prints one clear line and exits non-zero.

This module imports nothing beyond the base distribution, so that the console script can say
which extra is missing instead of dying on an import (the commands live in `commands.py`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from shared.cli.commands import app

__all__ = ["app", "main"]

MISSING_EXTRA = "pip install 'privacy-plane[services]'"


def main() -> None:
    """Console-script entry point."""
    try:
        from shared.cli.commands import app
        from shared.cli.common import err
    except ImportError as exc:  # the base distribution lacks Typer, httpx, aiokafka, ...
        missing = exc.name or str(exc)
        if missing.partition(".")[0] in ("shared", "services"):
            raise  # our own module: a bug to see in full, not an install hint
        sys.stderr.write(
            f"privacy-plane: the command line needs the services extra ({missing} is not "
            f"installed): {MISSING_EXTRA}\n"
        )
        sys.exit(2)
    try:
        app()
    except ValidationError as exc:
        err.print(f"[red]error:[/red] {exc.errors()[0]['msg']}")
        sys.exit(2)


def __getattr__(name: str) -> Any:
    """`shared.cli.app` stays importable without importing the commands at package import."""
    if name == "app":
        from shared.cli.commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
