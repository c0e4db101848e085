"""Pure retention decisions: schedules, erasure outcomes, what falls due, request status.

No I/O and no clock: `now` is always a parameter. The timer loop, the event handlers and the
dry run all decide through these functions, so the dry run answers exactly what happens.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from shared.catalogue import CategoryRule, Period, RetentionRules
from shared.contract.events import CategoryOutcome

Mode = Literal["delete", "anonymise", "restrict"]
Reason = Literal["retention_expired", "erasure_request", "consent_withdrawn"]
Cause = Literal["closure", "erasure", "obligation", "consent"]

REQUEST_DEADLINE = Period(months=1)
MAX_EXTENSION = Period(months=2)
JOB_NAMESPACE = uuid.UUID("6f1c2a7e-3b7d-4a51-9e0c-8d2f5b6a4c11")


class RetentionError(ValueError):
    """Base of the rule violations an inbound event can commit (dead-lettered)."""


class UnknownCategory(RetentionError):
    """A request names a category the retention rules do not know."""


class ExtensionRefused(RetentionError):
    """A request may be extended once, by at most two months."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Hold(_Frozen):
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


class TimerPlan(_Frozen):
    """A timer to create: at `due_at`, issue a job of `mode` for `category`."""

    category: str
    owner: str
    mode: Mode
    reason: Reason
    cause: Cause
    base_at: datetime | None
    due_at: datetime


class Timer(_Frozen):
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


class Firing(_Frozen):
    """What a due timer does now: issue its job, or wait for the holds that block it."""

    timer: Timer
    blocked_by: tuple[str, ...] = ()

    @property
    def issues(self) -> bool:
        return not self.blocked_by


class ErasureDecision(_Frozen):
    """One category of an erasure request: delete now, restrict now and delete later, or blocked."""

    category: str
    owner: str
    action: Literal["delete", "restrict", "blocked"]
    reason: str
    until: datetime | None = None
    hold_ids: tuple[str, ...] = ()
    plans: tuple[TimerPlan, ...] = ()


# --- rules --------------------------------------------------------------------------------


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


def withdrawal_transition(before: bool | None, now: bool) -> bool:
    """True when a purpose becomes withdrawn (once, not on every state message after)."""
    return now and not before


# --- erasure ------------------------------------------------------------------------------


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


# --- timers -------------------------------------------------------------------------------


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


class DryRunAnswer(_Frozen):
    """What happens to a category by a date, and why (the dry run)."""

    category: str
    owner: str | None
    action: Literal["delete", "restrict", "anonymise", "blocked", "keep", "issued"]
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


def job_id_for(*parts: str) -> str:
    """A deterministic job id from its cause, so a replay cannot mint a second job."""
    return "job_" + uuid.uuid5(JOB_NAMESPACE, "\x1f".join(parts)).hex


def timer_job_id(timer: Timer) -> str:
    """The job of a timer: its cause in full, so a reset database's serials cannot collide."""
    return job_id_for(
        "timer",
        str(timer.id),
        timer.subject_id,
        timer.category,
        timer.mode,
        timer.reason,
        timer.request_id or "",
        timer.due_at.isoformat(),
    )


def event_id_for(job_id: str, attempt: int) -> str:
    """The event id of one issue of a job (a replayed issue keeps its id)."""
    return str(uuid.uuid5(JOB_NAMESPACE, f"{job_id}\x1f{attempt}"))


def backoff(first: timedelta, attempt: int, cap: timedelta) -> timedelta:
    """The wait before re-issuing after `attempt`: `first` doubled per attempt, capped."""
    wait: timedelta = first * (2 ** max(attempt - 1, 0))
    return min(wait, cap)


# --- requests -----------------------------------------------------------------------------


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


# --- certificates -------------------------------------------------------------------------


class Certificate(_Frozen):
    """A deletion certificate: ids and times only, never personal data."""

    job_id: str
    subject_id: str
    owner: str
    category: str
    mode: str
    reason: str
    request_id: str | None
    attempt: int
    issued_at: datetime
    completed_at: datetime
    records_deleted: int
    receipt_id: str


GENESIS = "0" * 64


def certificate_hash(prev_hash: str, cert: Certificate) -> str:
    """The chain link: sha256 over the previous hash and the certificate's canonical JSON."""
    body = json.dumps(cert.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{prev_hash}\x1f{body}".encode()).hexdigest()


def verify_chain(links: Iterable[tuple[Certificate, str, str]]) -> list[str]:
    """Problems in a certificate chain of (certificate, prev_hash, hash) in order; [] if intact."""
    problems = []
    expected_prev = GENESIS
    for cert, prev_hash, stored in links:
        if prev_hash != expected_prev:
            problems.append(f"{cert.job_id}: chain broken before it (a certificate was removed)")
        if certificate_hash(prev_hash, cert) != stored:
            problems.append(f"{cert.job_id}: content does not match its hash (altered)")
        expected_prev = stored
    return problems
