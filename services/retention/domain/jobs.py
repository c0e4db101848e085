"""Which due timers issue their jobs (or wait for holds), the jobs' ids, and re-issue backoff."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from services.retention.domain.model import Firing, Hold, Timer

JOB_NAMESPACE = uuid.UUID("6f1c2a7e-3b7d-4a51-9e0c-8d2f5b6a4c11")


def due_jobs(timers: Iterable[Timer], holds: Iterable[Hold], at: datetime) -> list[Firing]:
    """The timers due at `at`, each issued or blocked by the holds covering it then."""
    held = list(holds)
    firings = []
    for timer in timers:
        if timer.due_at > at:
            continue
        blocking = tuple(
            h.hold_id for h in held if h.covers(timer.subject_id, timer.account_id, timer.category)
        )
        firings.append(Firing(timer=timer, blocked_by=blocking))
    return firings


def job_id_for(*parts: str) -> str:
    """A deterministic job id from its cause, so a replay cannot mint a second job."""
    return "job_" + uuid.uuid5(JOB_NAMESPACE, "\x1f".join(parts)).hex


def timer_job_id(timer: Timer) -> str:
    """The job of a timer, from its cause and never its serial or a processing time: a
    restored database re-creates the timer under another serial and at another now, and must
    issue the job it issued before. A request's timer is its request, owner, category and
    kind; a withdrawal's is its consent version (`cause_key`); any other is its kind and the
    time it counts from (a closure), or its due time where it has none."""
    kind = (timer.subject_id, timer.category, timer.owner, timer.mode, timer.reason, timer.cause)
    if timer.request_id:
        return job_id_for("request-timer", timer.request_id, *kind)
    if timer.cause_key:
        return job_id_for("timer", *kind, timer.cause_key)
    return job_id_for("timer", *kind, (timer.base_at or timer.due_at).isoformat())


def event_id_for(job_id: str, attempt: int) -> str:
    """The event id of one issue of a job (a replayed issue keeps its id)."""
    return str(uuid.uuid5(JOB_NAMESPACE, f"{job_id}\x1f{attempt}"))


def backoff(first: timedelta, attempt: int, cap: timedelta) -> timedelta:
    """The wait before re-issuing after `attempt`: `first` doubled per attempt, capped."""
    wait: timedelta = first * (2 ** max(attempt - 1, 0))
    return min(wait, cap)
