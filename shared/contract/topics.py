"""Topic names: the contract's defaults, overridable (tests prefix them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Topics(BaseModel):
    """Every topic of DESIGN §3; `with_prefix` gives a test its own set."""

    model_config = ConfigDict(frozen=True)

    accounts_lifecycle: str = "accounts.lifecycle"
    consent_changes: str = "consent.changes"
    privacy_requests: str = "privacy.requests"
    legal_holds: str = "legal.holds"
    privacy_receipts: str = "privacy.receipts"
    consent_state: str = "consent.state"
    privacy_jobs: str = "privacy.jobs"
    requests_status: str = "privacy.requests.status"
    deadletter: str = "privacy.deadletter"

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
        """Topics projections are rebuilt from: no time limit by default."""
        return {self.accounts_lifecycle, self.consent_changes, self.legal_holds}
