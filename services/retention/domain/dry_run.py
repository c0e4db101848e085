"""The dry run: what happens to each category by a date, decided by the timer loop's code."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

from services.retention.domain.jobs import due_jobs
from services.retention.domain.model import Firing, Frozen, Hold, Timer
from shared.catalogue import RetentionRules


class DryRunAnswer(Frozen):
    """What happens to a category by a date, and why (the dry run)."""

    category: str
    owner: str | None
    action: Literal["delete", "restrict", "anonymise", "blocked", "keep", "issued", "purge"]
    reason: str
    due_at: datetime | None = None
    request_id: str | None = None
    hold_ids: tuple[str, ...] = ()


def dry_run(
    rules: RetentionRules,
    timers: Sequence[Timer],
    holds: Iterable[Hold],
    at: datetime,
    issued: Sequence[Timer] = (),
) -> list[DryRunAnswer]:
    """Per category of one subject: what the timers would do by `at` (same code as the loop).

    `timers` are the open (pending or blocked) ones; `issued` those that already fired.
    """
    firings = due_jobs(timers, holds, at)
    answers = [firing_answer(f) for f in firings]
    touched = {f.timer.category for f in firings}
    for t in issued:
        if t.category not in touched and t.due_at <= at:
            touched.add(t.category)
            answers.append(
                DryRunAnswer(
                    category=t.category,
                    owner=t.owner,
                    action="issued",
                    reason=f"{t.reason}: job already issued",
                    due_at=t.due_at,
                    request_id=t.request_id,
                )
            )
    for category, rule in rules.categories.items():
        if category in touched:
            continue
        later = sorted((t for t in timers if t.category == category), key=lambda t: t.due_at)
        if later:
            answers.append(
                DryRunAnswer(
                    category=category,
                    owner=rule.owner,
                    action="keep",
                    reason=f"kept until {later[0].due_at.isoformat()} ({later[0].reason})",
                    due_at=later[0].due_at,
                )
            )
        else:
            answers.append(
                DryRunAnswer(
                    category=category,
                    owner=rule.owner,
                    action="keep",
                    reason="kept: no deletion scheduled (account open, no request)",
                )
            )
    return sorted(answers, key=lambda a: (a.category, a.due_at or at))


def firing_answer(f: Firing) -> DryRunAnswer:
    """A firing as the dry run reports it: its job's mode and reason, or the blocking holds."""
    t = f.timer
    return DryRunAnswer(
        category=t.category,
        owner=t.owner,
        action="blocked" if f.blocked_by else t.mode,
        reason="legal_hold" if f.blocked_by else t.reason,
        due_at=t.due_at,
        request_id=t.request_id,
        hold_ids=f.blocked_by,
    )
