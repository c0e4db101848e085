"""Figures of the whole fault run, printed at the end of the session (see conftest.py)."""

from __future__ import annotations

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
    leaked: int = 0
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The summary, one figure per line."""
        return [
            f"events sent:            {self.events_sent}",
            f"processes killed (-9):  {self.processes_killed}",
            f"processes stopped (TERM): {self.processes_terminated}",
            f"faults injected:        {self.faults_injected}",
            f"malformed inputs tried: {self.malformed_inputs}",
            f"lost: {self.lost}   doubled: {self.doubled}   leaked: {self.leaked}",
            *self.notes,
        ]


STATS = Stats()
"""The one instance of the session (scenarios run in one process)."""

PERSONAL_VALUES: set[str] = set()
"""Personal values the scenarios put into events: no log may contain any of them."""

TOPICS_USED: dict[str, set[str]] = {}
"""Topics the scenarios created or used, per bootstrap address: deleted at the end."""
