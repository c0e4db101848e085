"""Deterministic workloads, built as Kafka (key, value) bytes directly (fast to seed).

The values are CloudEvents structured JSON exactly as `shared.contract.codec.encode` writes them
(a unit test decodes a sample with the contract's own decoder).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

CONSENT_PURPOSES = (
    "marketing_email",
    "analytics_cookies",
    "personalisation",
    "preference_cookies",
    "partner_marketing",
    "analytics_providers",
)
BASE_TIME = datetime(2026, 11, 1, tzinfo=UTC)


def subject_id(index: int) -> str:
    return f"bsub_{index:07d}"


@dataclass(frozen=True)
class ConsentWorkload:
    """`events` consent changes over `subjects` subjects, in time order, interleaved."""

    events: int
    subjects: int
    first_subject: int = 0
    seed: int = 7
    id_prefix: str = "c"
    start: datetime = BASE_TIME

    def changes(self) -> Iterator[tuple[int, str, bool]]:
        """(subject index, purpose, granted) for each event, in order."""
        rng = random.Random(self.seed)
        for i in range(self.events):
            subject = self.first_subject + i % self.subjects
            yield subject, rng.choice(CONSENT_PURPOSES), rng.random() < 0.6

    def messages(self) -> Iterator[tuple[bytes, bytes]]:
        """Kafka (key, value) pairs: consent.granted.v1 / consent.withdrawn.v1 events."""
        for i, (subject, purpose, granted) in enumerate(self.changes()):
            key = subject_id(subject)
            at = self.start + timedelta(milliseconds=i)
            event = {
                "specversion": "1.0",
                "id": f"{self.id_prefix}{self.seed}-{i}",
                "source": "bench-web",
                "type": "consent.granted.v1" if granted else "consent.withdrawn.v1",
                "subject": key,
                "time": at.isoformat().replace("+00:00", "Z"),
                "datacontenttype": "application/json",
                "data": {
                    "purpose": purpose,
                    "source": "web_form",
                    "consent_type": "explicit",
                    "policy_version": "2026-10",
                    "jurisdiction": "DE",
                },
            }
            yield key.encode(), orjson.dumps(event)

    def final_state(self) -> dict[str, dict[str, str]]:
        """Per subject, the last state of each purpose it touched (granted or withdrawn)."""
        state: dict[str, dict[str, str]] = {}
        for subject, purpose, granted in self.changes():
            state.setdefault(subject_id(subject), {})[purpose] = (
                "granted" if granted else "withdrawn"
            )
        return state


def matches(expected: Mapping[str, str], published: Mapping[str, object]) -> bool:
    """Whether a published consent.state `purposes` map shows every expected state."""
    for purpose, state in expected.items():
        entry = published.get(purpose)
        if not isinstance(entry, dict) or entry.get("state") != state:
            return False
    return True


def export_records(total: int, owners: int = 6) -> dict[tuple[str, str], list[dict[str, object]]]:
    """`total` records spread over `owners` owners (one category each), ~200 bytes apiece."""
    names = [
        ("accounts", "account_profile"),
        ("crm", "crm_data"),
        ("marketing", "marketing_profile"),
        ("analytics", "usage_data"),
        ("support", "support_communications"),
        ("billing", "billing_records"),
    ][:owners]
    parts: dict[tuple[str, str], list[dict[str, object]]] = {name: [] for name in names}
    for i in range(total):
        owner, category = names[i % len(names)]
        parts[(owner, category)].append(
            {
                "id": f"{category}-{i}",
                "subject": "bsub_export",
                "created_at": (BASE_TIME + timedelta(seconds=i)).isoformat(),
                "kind": category,
                "text": f"record {i} of {category}: " + "x" * 96,
                "amount": i % 977,
            }
        )
    return parts
