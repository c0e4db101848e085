"""The in-memory consent cache: subject → the latest `consent.state.v1` decisions.

Pure (no I/O): the client feeds it records of the compacted `consent.state` topic; any
thread-free caller asks `may_process`, which is two dict look-ups.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from ..contract.events import ConsentStateData

CONTRACT_PURPOSES: frozenset[str] = frozenset(
    {"transactional_email", "contract_performance", "customer_support", "legal_obligation_tax"}
)
"""Purposes allowed without consent in the shipped catalogue (basis `contract` or
`legal_obligation`, DESIGN §4): never withdrawn, but a restriction (Art. 18) stops them too unless
they continue under Art. 18(2); the published state's `allowed` says which."""
DEFAULT_ALLOWED: frozenset[str] = CONTRACT_PURPOSES | {"platform_improvement"}
"""Purposes allowed for a subject never heard of: the contract ones and those of legitimate
interest that default to allowed (an objection, once published, turns them off)."""


class Outcome(StrEnum):
    """What applying one record did to the cache."""

    APPLIED = "applied"
    STALE = "stale"
    ERASED = "erased"


@dataclass(frozen=True, slots=True)
class SubjectConsent:
    """One subject's decisions as last published."""

    version: int
    allowed: Mapping[str, bool]
    gpc: bool


def catalogue_defaults() -> frozenset[str]:
    """Purposes allowed by default per the shipped catalogue (needs PyYAML: `services` extra)."""
    try:
        # Relative: as privacy_plane.consent_client (the contract distribution) there is no
        # catalogue, and another codebase's top-level `shared` must never be picked up.
        from ..catalogue import load_purposes
    except ImportError as exc:  # the `client` extras have no PyYAML (nor, there, the catalogue)
        raise ImportError(
            "catalogue_defaults() needs the services' catalogue and PyYAML "
            "(privacy-plane[services]); pass default_allowed explicitly instead"
        ) from exc
    catalogue = load_purposes()
    return frozenset(name for name, rule in catalogue.purposes.items() if rule.default)


class ConsentCache:
    """Latest consent decisions per subject; older versions are dropped, tombstones erase.

    A subject the cache has never seen (or that was erased) gets the catalogue default:
    allowed only for the purposes in `default_allowed` (by default `DEFAULT_ALLOWED`).
    A purpose missing from a subject's state falls back to the same default, unless the state
    restricts it by name: a restriction (Art. 18) stops contract purposes too.
    """

    __slots__ = ("_default_allowed", "_erased_at", "_shapes", "_subjects")

    def __init__(self, default_allowed: Iterable[str] = DEFAULT_ALLOWED) -> None:
        self._default_allowed = frozenset(default_allowed)
        self._subjects: dict[str, SubjectConsent] = {}
        self._erased_at: dict[str, int] = {}
        # Millions of subjects share a handful of decision maps: keep one read-only copy each.
        self._shapes: dict[tuple[tuple[str, bool], ...], Mapping[str, bool]] = {}

    @property
    def default_allowed(self) -> frozenset[str]:
        """Purposes allowed for a subject without a state."""
        return self._default_allowed

    def __len__(self) -> int:
        return len(self._subjects)

    def __contains__(self, subject: object) -> bool:
        return subject in self._subjects

    def get(self, subject: str) -> SubjectConsent | None:
        """The subject's cached decisions, or None."""
        return self._subjects.get(subject)

    def may_process(self, subject: str, purpose: str) -> bool:
        """True when `purpose` may be used for `subject`'s data (no I/O)."""
        known = self._subjects.get(subject)
        if known is not None:
            allowed = known.allowed.get(purpose)
            if allowed is not None:
                return allowed
        return purpose in self._default_allowed

    def apply(self, subject: str, state: ConsentStateData) -> Outcome:
        """Take a published state unless an equal or newer version is already known."""
        current = self._subjects.get(subject)
        floor = current.version if current is not None else self._erased_at.get(subject, 0)
        if state.version <= floor:
            return Outcome.STALE
        decided = {p: d.allowed for p, d in state.purposes.items()}
        for target in state.restrictions:  # restricted by name, not decided here: not allowed
            decided.setdefault(target, False)
        shape = tuple(sorted(decided.items()))
        allowed = self._shapes.get(shape)
        if allowed is None:
            allowed = self._shapes.setdefault(shape, MappingProxyType(dict(shape)))
        self._subjects[subject] = SubjectConsent(
            version=state.version, allowed=allowed, gpc=state.gpc
        )
        self._erased_at.pop(subject, None)
        return Outcome.APPLIED

    def erase(self, subject: str) -> Outcome:
        """A tombstone: forget the subject (a replayed older state will not bring it back)."""
        current = self._subjects.pop(subject, None)
        if current is not None:
            self._erased_at[subject] = current.version
        return Outcome.ERASED
