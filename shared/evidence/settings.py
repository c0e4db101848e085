"""Settings of a service that checkpoints an audit log (consent, retention)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.contract.events import MAX_CHECKPOINT_ENTRIES
from shared.evidence.signing import Signer
from shared.plumbing.logging import get_logger
from shared.plumbing.settings import ServiceSettings

log = get_logger(__name__)


class CheckpointedSettings(ServiceSettings):
    """The shared settings plus the checkpoint key file, interval and size."""

    checkpoint_key_file: Path | None = Field(
        None,
        description="File with the base64 of the 32-byte Ed25519 seed that signs checkpoints; "
        "keep it outside the database. Unset: no checkpoints (the log is then only hash-chained).",
    )
    checkpoint_public_keys: list[str] = Field(
        default_factory=list,
        description="Public keys (base64) of earlier signing keys, kept after a rotation so the "
        "verify endpoints still accept the checkpoints they signed (JSON list).",
    )
    checkpoint_interval_s: float = Field(
        60.0,
        gt=0,
        description="Seconds between checkpoints when there is something new: entries newer "
        "than the last checkpoint are not yet protected.",
    )
    checkpoint_max_entries: int = Field(
        20_000,
        ge=1,
        le=MAX_CHECKPOINT_ENTRIES,  # the contract's bound on one checkpoint event
        description="Entries per checkpoint (a longer backlog: several).",
    )

    def checkpoint_signer(self) -> Signer | None:
        """The signing key from the key file (None when unset; KeyFileError if unreadable)."""
        return (
            None if self.checkpoint_key_file is None else Signer.from_file(self.checkpoint_key_file)
        )
