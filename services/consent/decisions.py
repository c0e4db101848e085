"""Consent decisions, pure: may this subject be processed for a purpose now, and why.

A contract or legal-obligation basis allows; otherwise the recorded consent (or the catalogue
default) decides, an expired grant or one under a policy older than the purpose's
`reconsent_from` does not allow, and an active objection on the purpose or one of its
categories blocks it. An active restriction (Art. 18) blocks any purpose, contract ones
included, unless the catalogue says it continues under Art. 18(2) (`continues_when_restricted`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime

from services.consent.state import DEFAULT, EXPIRED, GRANTED, WITHDRAWN, PurposeRecord, SubjectState
from shared.catalogue import Basis, PurposeRule

_CONTRACT = Basis.CONTRACT
_LEGAL = Basis.LEGAL_OBLIGATION
BASIS_VALUES = {b: b.value for b in Basis}
"""The basis text by member (enum `.value` is a slow property on the hot path)."""
NECESSITY = {_CONTRACT: "contract necessity", _LEGAL: "legal obligation"}
"""The reason a necessary basis gives for allowing without consent."""
PUBLISHED_BASIS: dict[str, str] = {b.value: "contract" if b is _LEGAL else b.value for b in Basis}
"""The basis as `consent.state.v1` words it: its v1 vocabulary has no `legal_obligation`, so a
legal-obligation purpose is published as its kind (always allowed, never withdrawn): contract."""


@dataclass(slots=True)  # treated as immutable; see domain.HOT_PATH_RECORDS
class Decision:
    allowed: bool
    state: str
    basis: str
    reason: str
    since: datetime | None
    reconsent_required: bool = False
    expires_at: datetime | None = None
    restricted: bool = False
    continues_under: tuple[str, ...] = ()


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key for policy versions: numeric parts compare as numbers (`2026-10` < `2026-11`)."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.split(r"[.\-_/ ]+", version.strip())
        if part
    )


def needs_reconsent(rule: PurposeRule, policy_version: str | None) -> bool:
    """A grant under a policy version before the purpose's `reconsent_from` must be renewed."""
    if rule.reconsent_from is None:
        return False
    if policy_version is None:
        return True
    return version_key(policy_version) < version_key(rule.reconsent_from)


def decide(state: SubjectState, purpose: str, rule: PurposeRule, now: datetime) -> Decision:
    """May we process this subject for `purpose` at `now`? (restrictions and objections applied)"""
    basis = BASIS_VALUES[rule.basis]
    restricted = _restricted(state, purpose, rule) if state.restrictions else None
    if rule.basis is _CONTRACT or rule.basis is _LEGAL:
        decision = Decision(True, DEFAULT, basis, NECESSITY[rule.basis], None)
        return decision if restricted is None else _restrict(decision, rule, restricted)
    decision = _consent_decision(state.purposes.get(purpose), rule, basis, now)
    objected = _objected(state, purpose, rule) if decision.allowed else None
    if objected:
        return replace(decision, allowed=False, reason=objected)
    return decision if restricted is None else _restrict(decision, rule, restricted)


def _restrict(decision: Decision, rule: PurposeRule, target: str) -> Decision:
    """A restriction on `target` applied: blocks, unless the purpose continues (Art. 18(2))."""
    continues = tuple(c.value for c in rule.continues_when_restricted)
    if not continues:
        if not decision.allowed:
            return replace(decision, restricted=True)
        return replace(decision, allowed=False, reason=f"restricted: {target}", restricted=True)
    reason = (
        f"{decision.reason}; restricted: {target}, continues under Art. 18(2): "
        f"{', '.join(continues)}"
    )
    return replace(decision, reason=reason, restricted=True, continues_under=continues)


def _consent_decision(
    record: PurposeRecord | None, rule: PurposeRule, basis: str, now: datetime
) -> Decision:
    if record is None or record.state == DEFAULT:
        return Decision(rule.default, DEFAULT, basis, "default", None)
    lapsed = record.expires_at is not None and record.expires_at <= now
    if record.state == EXPIRED or (record.state == GRANTED and lapsed):
        return Decision(
            False, EXPIRED, basis, "expired", record.expires_at, False, record.expires_at
        )
    if record.state == WITHDRAWN:
        return Decision(False, WITHDRAWN, basis, "withdrawn", record.since)
    if needs_reconsent(rule, record.policy_version):
        reason = f"reconsent_required: granted under policy {record.policy_version}"
        return Decision(False, GRANTED, basis, reason, record.since, True, record.expires_at)
    return Decision(True, GRANTED, basis, "granted", record.since, False, record.expires_at)


def _objected(state: SubjectState, purpose: str, rule: PurposeRule) -> str | None:
    for target in (purpose, *rule.categories):
        objection = state.objections.get(target)
        if objection is not None and objection.active:
            return f"objected: {target}"
    return None


def _restricted(state: SubjectState, purpose: str, rule: PurposeRule) -> str | None:
    """The first target (the purpose, then its categories) an active restriction names."""
    for target in (purpose, *rule.categories):
        restriction = state.restrictions.get(target)
        if restriction is not None and restriction.active:
            return target
    return None
