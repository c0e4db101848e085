"""How late the checkpoints are: the age of the oldest entry no signed checkpoint covers.

Every replica runs the checkpoint loop (no leader: the checkpoints lock makes them take turns,
and whoever comes second finds nothing new), and every round reads the oldest uncovered entry
from the database, so each replica's reading is the database's, not its own. The gauge is worked
out at scrape time from the last reading: an uncovered entry keeps ageing between rounds, and a
reading of "all covered" vouches only while it is fresh (two intervals). After that — this
replica's loop stopped, hangs, or every round fails — the reading's own age is reported instead:
an entry could have arrived just after it and be that old by now. So a stopped loop shows up
rising, never as a 0 frozen forever; `min by (service)` over the replicas gives the truth
whenever one replica still reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from shared.plumbing import metrics


@dataclass(frozen=True)
class Reading:
    """The oldest uncovered entry's record time (None: every entry covered), read at `at`."""

    oldest: datetime | None
    at: datetime


def lag_seconds(reading: Reading, now: datetime, fresh_for: float) -> float:
    """Seconds the oldest entry has waited for a checkpoint, as far as `reading` tells at `now`."""
    if reading.oldest is not None:
        return max(0.0, (now - reading.oldest).total_seconds())
    age = (now - reading.at).total_seconds()
    return age if age > fresh_for else 0.0


_readings: dict[str, Reading] = {}


def record(service: str, reading: Reading, now: Callable[[], datetime], fresh_for: float) -> float:
    """Keep `reading` as `service`'s latest and export it; returns the lag it gives now."""
    _readings[service] = reading
    metrics.CHECKPOINT_LAG.labels(service).set_function(
        lambda: lag_seconds(_readings[service], now(), fresh_for)
    )
    return lag_seconds(reading, reading.at, fresh_for)


def started(service: str, now: Callable[[], datetime], fresh_for: float) -> None:
    """Before the first reading: nothing known yet, which turns into lag if no reading comes."""
    if service not in _readings:
        record(service, Reading(None, now()), now, fresh_for)
