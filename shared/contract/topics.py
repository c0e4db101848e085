"""Topic names: the contract's defaults, overridable (tests prefix them), and which event type
travels on which topic (DESIGN §3)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict

from . import events as ev
from .envelope import CloudEvent


class Topics(BaseModel):
    """Every topic of DESIGN §3; `with_prefix` gives a test its own set."""

    model_config = ConfigDict(frozen=True)

    accounts_lifecycle: str = "accounts.lifecycle"
    consent_changes: str = "consent.changes"
    privacy_requests: str = "privacy.requests"
    legal_holds: str = "legal.holds"
    privacy_policies: str = "privacy.policies"
    privacy_receipts: str = "privacy.receipts"
    consent_state: str = "consent.state"
    privacy_jobs: str = "privacy.jobs"
    requests_status: str = "privacy.requests.status"
    deadletter: str = "privacy.deadletter"
    privacy_audit: str = "privacy.audit"

    def with_prefix(self, prefix: str) -> Topics:
        """The same topics, each name prefixed."""
        return Topics(**{name: prefix + value for name, value in self.model_dump().items()})

    def all(self) -> list[str]:
        """Every topic name."""
        return list(self.model_dump().values())

    def compacted(self) -> set[str]:
        """Topics whose cleanup policy is compaction (latest state per key)."""
        return {self.consent_state}

    def kept(self) -> set[str]:
        """Topics projections are rebuilt from: no time limit by default, so no event type on
        them has a personal field (DESIGN §5; tests/unit/contract/test_kept_topics.py)."""
        return {
            self.accounts_lifecycle,
            self.legal_holds,
            self.privacy_policies,
            self.privacy_audit,
        }

    def for_types(self, event_types: Iterable[str]) -> list[str]:
        """The topics events of these types travel on, each once, in the contract's order."""
        wanted = {TOPIC_OF_TYPE[t] for t in event_types}
        return [getattr(self, name) for name in type(self).model_fields if name in wanted]

    def for_type(self, event_type: str) -> str:
        """The topic events of `event_type` travel on (KeyError for a type not in the contract)."""
        return str(getattr(self, TOPIC_OF_TYPE[event_type]))


_CARRIED: dict[str, tuple[type[CloudEvent[Any]], ...]] = {
    # inbound: other services publish
    "accounts_lifecycle": (
        ev.AccountSignedUp,
        ev.AccountClosed,
        ev.AccountReopened,
        ev.SubscriptionChanged,
    ),
    "consent_changes": (
        ev.ConsentGranted,
        ev.ConsentWithdrawn,
        ev.GpcSignal,
        ev.ProcessingRestricted,
        ev.ProcessingObjected,
        ev.RestrictionLifted,
    ),
    "privacy_requests": (
        ev.ErasureRequested,
        ev.ExportRequested,
        ev.RectificationRequested,
        ev.RequestCancelled,
        ev.RequestExtended,
    ),
    "legal_holds": (ev.LegalHoldPlaced, ev.LegalHoldReleased),
    "privacy_receipts": (
        ev.DeletionCompleted,
        ev.DeletionFailed,
        ev.RectificationCompleted,
        ev.RectificationFailed,
        ev.ExportPart,
        ev.ExportPartFailed,
    ),
    # outbound: Privacy Plane publishes
    "consent_state": (ev.ConsentState,),
    "privacy_jobs": (ev.DeletionJob, ev.ExportJob, ev.RectificationJob),
    "requests_status": (ev.RequestStatusChanged,),
}
# restriction jobs and receipts (1.1.0, Art. 18): beside the others on the same topics
_CARRIED["privacy_jobs"] += (ev.RestrictionJob, ev.RestrictionLiftedJob)
_CARRIED["privacy_receipts"] += (ev.RestrictionCompleted, ev.RestrictionFailed)
# rolling retention (1.1.0): purge jobs out, their receipts in
_CARRIED["privacy_jobs"] += (ev.PurgeJob,)
_CARRIED["privacy_receipts"] += (ev.PurgeCompleted, ev.PurgeFailed)
# disclosures to authorities (1.1.0): kept, like the holds (retention and export rebuild them)
_CARRIED["legal_holds"] += (ev.DisclosureRecorded,)
# policy changes (1.1.0): kept, consent's decisions depend on them; notices go out as jobs.
# 1.2.0: on a kept topic of their own, since consent.changes (evidence) has bounded retention.
_CARRIED["privacy_policies"] = (ev.PolicyPublished,)
_CARRIED["privacy_jobs"] += (ev.NoticeJob,)
# evidence checkpoints (1.2.0): kept without time limit, the anchor outside the databases
_CARRIED["privacy_audit"] = (ev.AuditCheckpoint,)

TOPIC_OF_TYPE: Mapping[str, str] = MappingProxyType(
    {
        model.model_fields["type"].default: topic
        for topic, models in _CARRIED.items()
        for model in models
    }
)
"""Event type -> the `Topics` field naming the topic it travels on (`Topics.for_type`)."""
