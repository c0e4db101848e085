"""What a restriction of processing (GDPR Art. 18) reaches in retention, and whether it keeps
the data: grounds (b) and (c) ask to keep what would be deleted, so deletions wait for the lift."""

from __future__ import annotations

from collections.abc import Iterable

from shared.catalogue import RetentionRules

KEEPS_DATA = frozenset({"unlawful_erasure_opposed", "needed_for_legal_claims"})
"""Art. 18(1)(b) and (c): the person wants the data kept, not used."""
HOLD_PREFIX = "restriction:"


def keeps_data(grounds: str | None) -> bool:
    """True when the grounds ask to keep the data (deletions of its categories are held)."""
    return grounds in KEEPS_DATA


def reach(
    rules: RetentionRules, purposes: Iterable[str], categories: Iterable[str]
) -> list[tuple[str, str]]:
    """(target, category) pairs: a named category, and every category a named purpose uses."""
    pairs = [(c, c) for c in dict.fromkeys(categories) if c in rules.categories]
    for purpose in dict.fromkeys(purposes):
        pairs += [(purpose, name) for name, r in rules.categories.items() if purpose in r.purposes]
    return pairs


def hold_id(event_id: str, category: str) -> str:
    """The hold a restriction event places on one category (deterministic: replays agree)."""
    return f"{HOLD_PREFIX}{event_id}:{category}"


def hold_reason(grounds: str) -> str:
    """The hold's reason, as the holds API explains it."""
    return f"restriction_{grounds}"
