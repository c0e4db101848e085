"""The vocabulary of retention decisions: holds, timers, firings, and the rule violations."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

Mode = Literal["delete", "anonymise", "restrict"]
Reason = Literal["retention_expired", "erasure_request", "consent_withdrawn"]
Cause = Literal["closure", "erasure", "obligation", "consent"]


class RetentionError(ValueError):
    """Base of the rule violations an inbound event can commit (dead-lettered)."""


class UnknownCategory(RetentionError):
    """A request names a category the retention rules do not know."""


class ExtensionRefused(RetentionError):
    """A request may be extended once, by at most two months."""


class Frozen(BaseModel):
    """Base of the decision values: immutable, so a decision can only return new ones."""

    model_config = ConfigDict(frozen=True)


class Hold(Frozen):
    """A legal hold: covers one subject, or every subject of an account."""

    hold_id: str
    scope: Literal["subject", "account"]
    subject_id: str | None = None
    account_id: str | None = None
    categories: tuple[str, ...] | None = None  # None: every category
    reason: str

    def covers(self, subject_id: str, account_id: str | None, category: str) -> bool:
        """True when this hold covers `category` of the subject (directly or via its account)."""
        if self.categories is not None and category not in self.categories:
            return False
        if self.scope == "subject":
            return self.subject_id == subject_id
        return account_id is not None and self.account_id == account_id


class TimerPlan(Frozen):
    """A timer to create: at `due_at`, issue a job of `mode` for `category`."""

    category: str
    owner: str
    mode: Mode
    reason: Reason
    cause: Cause
    base_at: datetime | None
    due_at: datetime
    cause_key: str | None = None
    """What made it where kind and times do not say (a withdrawal: the consent version)."""


class Timer(Frozen):
    """A stored timer as the decisions see it."""

    id: int
    subject_id: str
    account_id: str | None
    category: str
    owner: str
    mode: Mode
    reason: Reason
    request_id: str | None
    due_at: datetime
    cause: str = ""
    base_at: datetime | None = None
    cause_key: str | None = None
    trace: dict[str, str] = {}
    """The trace context of the event that set it (`traceparent`, `tracestate`), if any."""


class Firing(Frozen):
    """What a due timer does now: issue its job, or wait for the holds that block it."""

    timer: Timer
    blocked_by: tuple[str, ...] = ()

    @property
    def issues(self) -> bool:
        return not self.blocked_by
