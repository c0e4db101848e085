"""Figures of the whole fault run, printed at the end of the session (see conftest.py)."""

from __future__ import annotations

import time
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
    stale: int = 0
    """Keys whose last record is an older version than one published before it."""
    faults_by_kind: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    """The bad-input oracle's verdicts on what the real services got: accepted, ignored,
    refused <reason> (each judged against the service's inbox and dead letters)."""
    notes: list[str] = field(default_factory=list)

    def fault(self, kind: str) -> None:
        """One injected fault of `kind` (also counted in `faults_injected`)."""
        self.faults_injected += 1
        self.faults_by_kind[kind] += 1

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
            f"stale (an older version last for a key): {self.stale}",
            f"re-sent identical copies (same id and bytes, not doubled): {self.resent}",
            *(f"  {kind}: {n}" for kind, n in sorted(self.faults_by_kind.items())),
            *self.notes,
        ]


STATS = Stats()
"""The one instance of the session (scenarios run in one process)."""


@dataclass
class Scenario:
    """One scenario's own figures; each is also added to `STATS`, and `report` prints them."""

    name: str
    faults: Counter[str] = field(default_factory=Counter)
    events_sent: int = 0
    lost: int = 0
    doubled: int = 0
    stale: int = 0
    resent: int = 0
    started: float = field(default_factory=time.monotonic)

    def fault(self, kind: str) -> None:
        """One injected fault of `kind`."""
        self.faults[kind] += 1
        STATS.fault(kind)

    def sent(self, count: int) -> None:
        """Events this scenario sent (`harness.send` already counts them in `STATS`)."""
        self.events_sent += count

    def judged(self, *, lost: int, doubled: int, stale: int, resent: int = 0) -> None:
        """The outcome read back at the end (lost, doubled with other content, stale)."""
        self.lost += lost
        self.doubled += doubled
        self.stale += stale
        self.resent += resent
        STATS.lost += lost
        STATS.doubled += doubled
        STATS.stale += stale
        STATS.resent += resent

    def report(self) -> str:
        """One line of figures, printed and kept for the session summary."""
        faults = ", ".join(f"{kind} x{n}" for kind, n in sorted(self.faults.items())) or "none"
        line = (
            f"{self.name}: {time.monotonic() - self.started:.0f} s; faults: {faults}; "
            f"events sent: {self.events_sent}; lost {self.lost}, doubled {self.doubled}, "
            f"stale {self.stale}; re-sent identical copies {self.resent}"
        )
        print(line)
        STATS.notes.append(line)
        return line


PERSONAL_VALUES: set[str] = set()
"""Personal values the scenarios put into events: no log may contain any of them."""

TOPICS_USED: dict[str, set[str]] = {}
"""Topics the scenarios created or used, per bootstrap address: deleted at the end."""
