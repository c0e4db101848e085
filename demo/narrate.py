"""Printing what happens as a person would want to read it (rich)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def short(value: str | None, keep: int = 8) -> str:
    """An id shortened for reading: a prefix like `usr_` kept, then `keep` characters."""
    if not value:
        return "-"
    prefix, sep, rest = value.partition("_")
    if sep and len(prefix) <= 6 and len(rest) > keep + 1:
        return f"{prefix}_{rest[:keep]}…"
    return value if len(value) <= keep + 2 else f"{value[:keep]}…"


def day(value: Any) -> str:
    """An ISO date-time as a date (or date and time when it is today's business)."""
    text = str(value or "")
    return text[:10] if len(text) >= 10 else text or "-"


class Narrator:
    """Numbered steps, what was done (→) and what came of it (✓)."""

    def __init__(self, console: Console | None = None) -> None:
        # piped output (CI logs) gets a readable width instead of rich's 80 columns
        wide = None if sys.stdout.isatty() else 120
        self.console = console or Console(highlight=False, width=wide)

    def title(self, text: str) -> None:
        self.console.print()
        self.console.rule(f"[bold]{text}")

    def step(self, number: int, total: int, text: str) -> None:
        self.console.print()
        self.console.print(f"[bold cyan]{number}/{total}[/]  [bold]{text}[/]")

    def action(self, text: str) -> None:
        self.console.print(f"  [cyan]→[/] {text}")

    def outcome(self, text: str) -> None:
        self.console.print(f"  [green]✓[/] {text}")

    def note(self, text: str) -> None:
        self.console.print(f"    [dim]{text}[/]")

    def failure(self, text: str) -> None:
        self.console.print(f"  [bold red]✗ {text}[/]")

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        table = Table(*columns, box=None, padding=(0, 2), show_edge=False, header_style="dim")
        for row in rows:
            table.add_row(*(str(cell) for cell in row))
        self.console.print(table, style=None)

    def summary(self, text: str, ok: bool) -> None:
        self.console.print()
        colour = "bold green" if ok else "bold red"
        self.console.print(f"[{colour}]{text}[/]")
