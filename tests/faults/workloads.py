"""Event streams for the real services: deterministic, per subject in causal (time) order.

Some evidence values are marked personal values (e-mail- and IP-like strings): they are added
to `PERSONAL_VALUES`, and the log scan fails if any log line of the suite contains one.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.contract.codec import new_event
from shared.contract.envelope import CloudEvent
from shared.contract.events import (
    AccountClosed,
    AccountClosedData,
    AccountSignedUp,
    AccountSignedUpData,
    ConsentChangeData,
    ConsentGranted,
    ConsentSource,
    ConsentType,
    ConsentWithdrawn,
    ErasureRequested,
    ErasureRequestedData,
    Evidence,
    GpcSignal,
    GpcSignalData,
    ProcessingObjected,
    ProcessingObjectedData,
    ProcessingRestricted,
    ProcessingRestrictedData,
    RestrictionLifted,
    RestrictionLiftedData,
    SignUpConsent,
)
from tests.faults.stats import PERSONAL_VALUES

CONSENT_PURPOSES = [
    "marketing_email",
    "analytics_cookies",
    "personalisation",
    "preference_cookies",
    "partner_marketing",
    "analytics_providers",
]
BASE = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def marker(kind: str, tag: str) -> str:
    """A personal-looking value unique to this run; registered for the log scan."""
    token = uuid.uuid4().hex[:12]
    value = {
        "email": f"pp.{token}.{tag}@marker.example",
        "ip": f"ip-{token}-203.0.113.{random.randint(1, 254)}",
        "ua": f"Mozilla/5.0 marker-{token} ({tag}@agent.example)",
    }[kind]
    PERSONAL_VALUES.add(value)
    return value


def evidence(rng: random.Random, tag: str) -> Evidence | None:
    """Personal evidence on about one event in five (markers), none on the rest."""
    if rng.random() > 0.2:
        return None
    return Evidence(ip_hash=marker("ip", tag), user_agent=marker("ua", tag))


def consent_change(
    rng: random.Random, subject: str, at: datetime, tag: str = "load"
) -> CloudEvent[Any]:
    """One random change on consent.changes for `subject` at `at`."""
    roll = rng.random()
    purpose = rng.choice(CONSENT_PURPOSES)
    if roll < 0.40:
        data = ConsentChangeData(
            purpose=purpose,
            source=rng.choice(list(ConsentSource)),
            consent_type=rng.choice([ConsentType.EXPLICIT, ConsentType.IMPLIED]),
            policy_version="2026-10",
            evidence=evidence(rng, tag),
        )
        return new_event(ConsentGranted, subject=subject, data=data, source="web", time=at)
    if roll < 0.75:
        data = ConsentChangeData(
            purpose=purpose, source=ConsentSource.API, evidence=evidence(rng, tag)
        )
        return new_event(ConsentWithdrawn, subject=subject, data=data, source="web", time=at)
    if roll < 0.82:
        return new_event(
            GpcSignal,
            subject=subject,
            data=GpcSignalData(evidence=evidence(rng, tag)),
            source="web",
            time=at,
        )
    if roll < 0.89:
        return new_event(
            ProcessingRestricted,
            subject=subject,
            data=ProcessingRestrictedData(purposes=[purpose]),
            source="support",
            time=at,
        )
    if roll < 0.94:
        return new_event(
            ProcessingObjected,
            subject=subject,
            data=ProcessingObjectedData(purposes=[purpose]),
            source="support",
            time=at,
        )
    return new_event(
        RestrictionLifted,
        subject=subject,
        data=RestrictionLiftedData(purposes=[purpose]),
        source="support",
        time=at,
    )


def consent_stream(count: int, subjects: int, seed: int, tag: str) -> list[CloudEvent[Any]]:
    """`count` consent changes over `subjects` subjects, each subject's in time order."""
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:6]
    clock = {f"usr_{run}_{n}": BASE for n in range(subjects)}
    names = list(clock)
    events = []
    for _ in range(count):
        subject = rng.choice(names)
        clock[subject] += timedelta(seconds=rng.randint(1, 600))
        events.append(consent_change(rng, subject, clock[subject], tag))
    return events


def signed_up(subject: str, account: str, at: datetime) -> AccountSignedUp:
    return new_event(
        AccountSignedUp,
        subject=subject,
        source="accounts-service",
        time=at,
        data=AccountSignedUpData(
            account_id=account,
            jurisdiction="DE",
            policy_version="2026-10",
            consents=[
                SignUpConsent(purpose="marketing_email", granted=True),
                SignUpConsent(purpose="analytics_cookies", granted=False),
            ],
        ),
    )


def closed(subject: str, account: str, at: datetime, closed_at: datetime) -> AccountClosed:
    return new_event(
        AccountClosed,
        subject=subject,
        source="accounts-service",
        time=at,
        data=AccountClosedData(account_id=account, closed_at=closed_at),
    )


def erasure(subject: str, at: datetime, request_id: str) -> ErasureRequested:
    return new_event(
        ErasureRequested,
        subject=subject,
        source="dsr-portal",
        time=at,
        data=ErasureRequestedData(request_id=request_id, scope="all", verified_by="support:1"),
    )
