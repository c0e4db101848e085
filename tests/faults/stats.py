"""Figures of the whole fault run, printed at the end of the session (see conftest.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Stats:
    """Counters every scenario adds to; `lost`, `doubled` and `leaked` must stay 0."""

    events_sent: int = 0
    processes_killed: int = 0
    processes_terminated: int = 0
    faults_injected: int = 0
    malformed_inputs: int = 0
    lost: int = 0
    doubled: int = 0
    """Same id with other content, or more distinct outbound events than a clean run."""
    resent: int = 0
    """Identical copies (same id, same bytes) re-sent after a restart: harmless, shown apart."""
    leaked: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    """The bad-input oracle's verdicts on what the real services got: accepted, ignored,
    refused <reason> (each judged against the service's inbox and dead letters)."""
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The summary, one figure per line."""
        verdicts = ", ".join(f"{name} {n}" for name, n in sorted(self.verdicts.items()))
        return [
            f"events sent:            {self.events_sent}",
            f"processes killed (-9):  {self.processes_killed}",
            f"processes stopped (TERM): {self.processes_terminated}",
            f"faults injected:        {self.faults_injected}",
            f"malformed inputs tried: {self.malformed_inputs} (records the contract refuses)",
            f"oracle verdicts:        {verdicts or 'none'}",
            f"lost: {self.lost}   doubled (same id, other content): {self.doubled}   "
            f"leaked: {self.leaked}",
            f"re-sent identical copies (same id and bytes, not doubled): {self.resent}",
            *self.notes,
        ]


STATS = Stats()
"""The one instance of the session (scenarios run in one process)."""

PERSONAL_VALUES: set[str] = set()
"""Personal values the scenarios put into events: no log may contain any of them."""

TOPICS_USED: dict[str, set[str]] = {}
"""Topics the scenarios created or used, per bootstrap address: deleted at the end."""
