"""Rolling retention while the account is open: when to purge, what cutoff, the next purge."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from services.retention.domain.dry_run import DryRunAnswer
from services.retention.domain.jobs import job_id_for
from services.retention.domain.model import Frozen, Hold
from shared.catalogue import RollingRule


class PurgeTimer(Frozen):
    """A subject's purge timer of one rolling category, as the decisions see it."""

    subject_id: str
    account_id: str | None
    category: str
    owner: str
    due_at: datetime


class PurgeFiring(Frozen):
    """What a due purge timer does: issue a purge of what is older than `before`, or skip this
    round because holds cover the category (re-armed at `next_due`)."""

    timer: PurgeTimer
    before: datetime
    blocked_by: tuple[str, ...] = ()
    next_due: datetime

    @property
    def issues(self) -> bool:
        return not self.blocked_by

    @property
    def job_id(self) -> str:
        """Deterministic per subject, category and round, so a replay mints no second job."""
        t = self.timer
        return job_id_for("purge", t.subject_id, t.category, t.due_at.isoformat())


def first_purge(rule: RollingRule, signed_up_at: datetime) -> datetime:
    """Nothing can be older than the limit before `keep` has passed since sign-up."""
    return rule.keep.after(signed_up_at)


def next_purge(rule: RollingRule, due_at: datetime, now: datetime) -> datetime:
    """The round after `due_at`: `every` later, skipping rounds already past (no catch-up burst)."""
    following = rule.every.after(due_at)
    while following <= now:
        following = rule.every.after(following)
    return following


def purge_cutoff(rule: RollingRule, due_at: datetime) -> datetime:
    """Records made before this are past the rolling limit at the round `due_at`."""
    return rule.keep.before(due_at)


def fire_purge(
    timer: PurgeTimer, rule: RollingRule, holds: Iterable[Hold], now: datetime
) -> PurgeFiring:
    """A due purge timer: its cutoff, and the holds (if any) that make it skip this round."""
    blocking = tuple(
        h.hold_id for h in holds if h.covers(timer.subject_id, timer.account_id, timer.category)
    )
    return PurgeFiring(
        timer=timer,
        before=purge_cutoff(rule, timer.due_at),
        blocked_by=blocking,
        next_due=next_purge(rule, timer.due_at, now),
    )


def rolling_text(category: str, rule: RollingRule, next_due: datetime | None) -> str:
    """The rolling limit in words, with the next purge and its cutoff (views, dry run)."""
    text = f"{category}: kept {rule.keep} while the account is open, purged every {rule.every}"
    if next_due is None:
        return text + " (no purge scheduled)"
    cutoff = purge_cutoff(rule, next_due).isoformat()
    return f"{text}; next purge {next_due.isoformat()} of records before {cutoff}"


def purge_answer(
    category: str, owner: str, rule: RollingRule, next_due: datetime | None, at: datetime
) -> DryRunAnswer | None:
    """The dry run of a subject's pending purge: what it purges by `at` (None: not by then)."""
    if next_due is None or next_due > at:
        return None
    return DryRunAnswer(
        category=category,
        owner=owner,
        action="purge",
        reason=rolling_text(category, rule, next_due),
        due_at=next_due,
    )
