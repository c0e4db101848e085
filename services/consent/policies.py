"""Policy versions, pure (policy 3.3): the catalogue in force at a time, and whom a notice tells
to renew which grants."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.consent.decisions import needs_reconsent, version_key
from services.consent.state import GRANTED, SubjectState
from shared.catalogue import PurposeCatalogue


@dataclass(frozen=True, slots=True)
class Policy:
    """A published policy version: from `effective_at`, grants of `reconsent` need renewing."""

    version: str
    effective_at: datetime
    summary: str
    url: str | None
    reconsent: tuple[str, ...]


def in_force(base: PurposeCatalogue, policies: Iterable[Policy], now: datetime) -> PurposeCatalogue:
    """The catalogue at `now`: each purpose a policy in effect asks to renew gets that policy's
    version as `reconsent_from` (the newest wins, over the file's)."""
    updates: dict[str, str] = {}
    effective = sorted(
        (p for p in policies if p.effective_at <= now), key=lambda p: version_key(p.version)
    )
    for policy in effective:
        for purpose in policy.reconsent:
            if purpose in base.purposes:
                updates[purpose] = policy.version
    if not updates:
        return base
    purposes = {
        name: rule.model_copy(update={"reconsent_from": updates[name]}) if name in updates else rule
        for name, rule in base.purposes.items()
    }
    return base.model_copy(update={"purposes": purposes})


def to_renew(state: SubjectState, policy: Policy, base: PurposeCatalogue) -> list[str]:
    """The subject's grants the policy asks to renew (a grant under it or later is fine)."""
    forced = in_force(base, [policy], policy.effective_at)
    found = []
    for purpose in policy.reconsent:
        record = state.purposes.get(purpose)
        rule = forced.get(purpose)
        if record is None or rule is None or record.state != GRANTED:
            continue
        if needs_reconsent(rule, record.policy_version):
            found.append(purpose)
    return found


def affected(states: Sequence[SubjectState], policy: Policy, base: PurposeCatalogue) -> list[str]:
    """Subjects whose published state changes when the policy takes effect."""
    return [s.subject for s in states if to_renew(s, policy, base)]
