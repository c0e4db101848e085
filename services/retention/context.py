"""What the retention service's handlers, loops and API share: one `Context`, built at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from services.retention.settings import RetentionSettings
from shared.catalogue import RetentionRules, load_retention
from shared.evidence.signing import Signer
from shared.plumbing.clock import Clock, SystemClock
from shared.plumbing.context import ServiceContext


@dataclass(kw_only=True)
class Context(ServiceContext):
    """Settings, clock, pool and the retention rules in force."""

    settings: RetentionSettings
    rules: RetentionRules
    signer: Signer | None = field(init=False)
    """The checkpoint signing key (None: checkpoints are off)."""

    def __post_init__(self) -> None:
        self.signer = self.settings.checkpoint_signer()

    @classmethod
    def from_settings(cls, settings: RetentionSettings, clock: Clock | None = None) -> Context:
        """The context for `settings`, with the rules they name (raises ConfigError if invalid)."""
        rules = load_retention(settings.retention_file)
        return cls(settings=settings, rules=rules, clock=clock or SystemClock())

    @property
    def receipt_cap(self) -> timedelta:
        """The longest a job waits for its receipt before it is issued again."""
        return max(self.settings.max_backoff, self.settings.receipt_timeout)
