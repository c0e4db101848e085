"""Request deadlines (GDPR Art. 12(3)), their one extension, and the status a request reports."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from services.retention.domain.model import ExtensionRefused
from shared.catalogue import Period
from shared.contract.events import CategoryOutcome

REQUEST_DEADLINE = Period(months=1)
MAX_EXTENSION = Period(months=2)


def request_deadline(requested_at: datetime) -> datetime:
    """One calendar month from the request (GDPR Art. 12(3))."""
    return REQUEST_DEADLINE.after(requested_at)


def extend_deadline(
    requested_at: datetime, already_extended: bool, new_deadline: datetime, current: datetime
) -> datetime:
    """The extended deadline; raises ExtensionRefused unless once and at most two months more."""
    if already_extended:
        raise ExtensionRefused("a request can be extended only once")
    latest = MAX_EXTENSION.after(request_deadline(requested_at))
    if new_deadline > latest:
        raise ExtensionRefused(f"new deadline is beyond {latest.isoformat()} (two months more)")
    if new_deadline < current:
        raise ExtensionRefused("new deadline is before the current one")
    return new_deadline


def request_status(
    outcomes: Sequence[CategoryOutcome], open_jobs: int, cancelled: bool
) -> Literal["pending", "in_progress", "completed", "cancelled", "partially_completed"]:
    """The OpenDSR status word of a request from its outcomes and its unanswered jobs."""
    if cancelled:
        return "cancelled"
    if not outcomes:  # a rectification drops its outcome once done (no word for it in v1)
        return "in_progress" if open_jobs else "completed"
    if open_jobs or any(o.outcome == "pending" for o in outcomes):
        return "in_progress"
    if all(o.outcome in ("deleted", "retained") for o in outcomes):
        return "completed"
    return "partially_completed"


def is_overdue(deadline: datetime, status: str, now: datetime) -> bool:
    """A request is overdue once past its deadline and not finished."""
    return now > deadline and status in ("pending", "in_progress")
