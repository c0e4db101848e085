"""A subject's consent state and what applying an event did: the records the rules work on.

Treated as immutable (see `domain.HOT_PATH_RECORDS` for why some are not frozen); the rules
are in `domain`, decisions in `decisions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

GRANTED, WITHDRAWN, EXPIRED, DEFAULT = "granted", "withdrawn", "expired", "default"


class ConsentRuleViolation(ValueError):
    """An event the contract forbids (dead-lettered with this message, never applied)."""


class UnknownPurpose(ConsentRuleViolation):
    """The catalogue does not know the purpose."""


class ContractPurposeNotWithdrawable(ConsentRuleViolation):
    """A purpose with a contract or legal-obligation basis cannot be withdrawn."""


class TooManyScopes(ConsentRuleViolation):
    """More active restrictions (or objections) than `consent.state.v1` may list (MAX_ITEMS)."""


@dataclass(slots=True)  # treated as immutable; see HOT_PATH_RECORDS
class PurposeRecord:
    state: str
    since: datetime
    event_id: str
    consent_type: str | None = None
    source: str | None = None
    policy_version: str | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ScopeRecord:
    active: bool
    since: datetime
    event_id: str


@dataclass(frozen=True, slots=True)
class SubjectState:
    subject: str
    version: int = 0
    purposes: Mapping[str, PurposeRecord] = field(default_factory=dict)
    restrictions: Mapping[str, ScopeRecord] = field(default_factory=dict)
    objections: Mapping[str, ScopeRecord] = field(default_factory=dict)
    gpc_since: datetime | None = None

    def next_expiry(self) -> datetime | None:
        """The earliest `expires_at` of a grant still marked granted (the expiry loop's index)."""
        times = [
            r.expires_at for r in self.purposes.values() if r.state == GRANTED and r.expires_at
        ]
        return min(times) if times else None


@dataclass(frozen=True, slots=True)
class Change:
    """One line of the ledger before it is chained: what an event did (or did not do)."""

    kind: str
    target: str
    old_state: str
    new_state: str
    applied: bool
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    state: SubjectState
    changes: list[Change]

    @property
    def changed(self) -> bool:
        for change in self.changes:  # noqa: SIM110  # a loop: any() over a generator costs more
            if change.applied:
                return True
        return False
