"""What the retention rules decide: periods, closure schedules, rule changes, withdrawals."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from services.retention.domain.model import TimerPlan
from shared.catalogue import CategoryRule, Period, RetentionRules


def rules_digest(rules: RetentionRules) -> str:
    """A stable digest of the rules: a change of configuration changes it."""
    return hashlib.sha256(rules_json(rules).encode()).hexdigest()


def rules_json(rules: RetentionRules) -> str:
    """The rules as canonical JSON (stored beside the digest, for the change log)."""
    return json.dumps(rules.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def period_for(rule: CategoryRule, crm_retention_days: int | None) -> Period:
    """The category's retention period; subscription terms override where the rule says so."""
    if rule.period_from == "subscription" and crm_retention_days is not None:
        return Period(days=crm_retention_days)
    return rule.period


def retention_due(
    rule: CategoryRule, crm_retention_days: int | None, base_at: datetime
) -> datetime:
    """When data of the category falls due for deletion, counting from `base_at` (closure)."""
    return period_for(rule, crm_retention_days).after(base_at)


def schedule_for_closure(
    rules: RetentionRules, crm_retention_days: int | None, closed_at: datetime
) -> list[TimerPlan]:
    """One delete timer per category, each at its own time after the closure."""
    return [
        TimerPlan(
            category=name,
            owner=rule.owner,
            mode="delete",
            reason="retention_expired",
            cause="closure",
            base_at=closed_at,
            due_at=retention_due(rule, crm_retention_days, closed_at),
        )
        for name, rule in rules.categories.items()
    ]


def recompute_due(
    rules: RetentionRules, category: str, crm_retention_days: int | None, base_at: datetime
) -> datetime | None:
    """A pending closure or obligation timer's due time under (possibly new) rules."""
    rule = rules.categories.get(category)
    return None if rule is None else retention_due(rule, crm_retention_days, base_at)


def marketing_categories(rules: RetentionRules, purpose_allowed: dict[str, bool]) -> list[str]:
    """Categories to delete at once because the consent their rule names is not allowed."""
    return [
        name
        for name, rule in rules.categories.items()
        if rule.also_on_withdrawal is not None
        and not purpose_allowed.get(rule.also_on_withdrawal, True)
    ]


def withdrawn(state: str | None, objected: bool) -> bool:
    """Consent withdrawn or lapsed, or an objection (absolute for direct marketing).

    A restriction (Art. 18) also makes a purpose not allowed, but it asks to keep the data: it
    is not a withdrawal, and neither is a purpose that was never granted (its default).
    """
    return objected or state in ("withdrawn", "expired")


def marketing_deletions(
    rules: RetentionRules, before: dict[str, bool], gone: dict[str, bool], objected: set[str]
) -> list[str]:
    """Categories to delete now: the consent their rule names withdrawn, or an objection to
    direct marketing (absolute, Art. 21(3)) naming the category or one of its purposes."""
    found = []
    for name, rule in rules.categories.items():
        purpose = rule.also_on_withdrawal
        if purpose is None:
            continue
        triggers = [purpose, *(t for t in (name, *rule.purposes) if t in objected)]
        if any(withdrawal_transition(before.get(t), gone.get(t, False)) for t in triggers):
            found.append(name)
    return found


def withdrawal_transition(before: bool | None, now: bool) -> bool:
    """True when a purpose becomes withdrawn (once, not on every state message after)."""
    return now and not before
