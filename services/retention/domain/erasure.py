"""An erasure decided per category: delete now, restrict until an obligation ends, or blocked."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

from services.retention.domain.model import Cause, Frozen, Hold, Mode, TimerPlan, UnknownCategory
from services.retention.domain.rules import retention_due
from shared.catalogue import CategoryRule, RetentionRules
from shared.contract.events import CategoryOutcome


class ErasureDecision(Frozen):
    """One category of an erasure request: delete now, restrict now and delete later, or blocked."""

    category: str
    owner: str
    action: Literal["delete", "restrict", "blocked"]
    reason: str
    until: datetime | None = None
    hold_ids: tuple[str, ...] = ()
    plans: tuple[TimerPlan, ...] = ()


def erasure_scope(rules: RetentionRules, scope: str | Sequence[str]) -> list[str]:
    """The categories an erasure names; raises UnknownCategory for one the rules lack."""
    if scope == "all":
        return list(rules.categories)
    unknown = [c for c in scope if c not in rules.categories]
    if unknown:
        raise UnknownCategory(f"unknown categories: {', '.join(sorted(unknown))}")
    return list(dict.fromkeys(scope))


def decide_erasure(
    rules: RetentionRules,
    categories: Sequence[str],
    holds: Iterable[Hold],
    now: datetime,
    *,
    subject_id: str,
    account_id: str | None,
    closed_at: datetime | None,
    crm_retention_days: int | None,
) -> list[ErasureDecision]:
    """Per category: delete now, restrict now and delete at the obligation's end, or blocked.

    `closed_at` is the account's closure (an erasure of scope `all` on an open account passes
    `now`: it counts as the closure); None leaves an obligation's end open until closure.
    """
    held = list(holds)
    decisions = []
    for category in categories:
        rule = rules.categories[category]
        covering = tuple(h.hold_id for h in held if h.covers(subject_id, account_id, category))
        plans: list[TimerPlan] = []
        until: datetime | None = None
        if rule.legal_obligation:
            plans.append(_plan(category, rule, "restrict", "erasure", None, now))
            if closed_at is not None:
                until = retention_due(rule, crm_retention_days, closed_at)
                plans.append(_plan(category, rule, "delete", "obligation", closed_at, until))
            action: Literal["delete", "restrict", "blocked"] = "restrict"
            reason = f"legal obligation: {rule.legal_obligation}; restricted meanwhile"
        else:
            plans.append(_plan(category, rule, "delete", "erasure", None, now))
            action, reason = "delete", "erasure request: deletion job issued"
        if covering:
            reasons = sorted({h.reason for h in held if h.hold_id in covering})
            action, reason = "blocked", f"legal hold: {', '.join(reasons)}"
        decisions.append(
            ErasureDecision(
                category=category,
                owner=rule.owner,
                action=action,
                reason=reason,
                until=until,
                hold_ids=covering,
                plans=tuple(plans),
            )
        )
    return decisions


def _plan(
    category: str,
    rule: CategoryRule,
    mode: Mode,
    cause: Cause,
    base_at: datetime | None,
    due_at: datetime,
) -> TimerPlan:
    return TimerPlan(
        category=category,
        owner=rule.owner,
        mode=mode,
        reason="erasure_request",
        cause=cause,
        base_at=base_at,
        due_at=due_at,
    )


def erasure_outcome(decision: ErasureDecision) -> CategoryOutcome:
    """How a fresh erasure decision is reported."""
    kind: dict[str, Literal["pending", "retained", "blocked"]] = {
        "delete": "pending",
        "restrict": "retained",
        "blocked": "blocked",
    }
    return CategoryOutcome(
        category=decision.category,
        outcome=kind[decision.action],
        reason=decision.reason,
        until=decision.until,
        owner=decision.owner,
    )


def superseded_rectifications(decisions: Sequence[ErasureDecision]) -> list[str]:
    """The categories whose open rectification jobs an erasure makes moot: those it deletes
    now (a retained or held category stays in use, so correcting it still matters)."""
    return [d.category for d in decisions if d.action == "delete"]


def superseded_outcome(category: str, owner: str, erasure_id: str) -> CategoryOutcome:
    """How a rectification cancelled by an erasure is reported (its values are forgotten)."""
    return CategoryOutcome(
        category=category,
        outcome="cancelled",
        reason=f"superseded by erasure {erasure_id}: the data is deleted",
        owner=owner,
    )
