"""Consent settings (env prefix CONSENT_)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.evidence import settings as evidence
from shared.plumbing.identifiers import SchemaName
from shared.plumbing.secrets import HashKey


class ConsentSettings(evidence.CheckpointedSettings):
    """Everything the consent service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="CONSENT_", env_nested_delimiter="__", extra="ignore"
    )

    service_name: str = "consent"
    db_schema: SchemaName = "consent"
    ledger_key: HashKey = Field(
        description="Key of the keyed hash that names a person in the ledger and suppression "
        "list (16+ characters)."
    )
    purposes_file: Path | None = Field(
        None, description="Purpose catalogue; the shared one if unset."
    )
    publish: bool = Field(
        True, description="Publish consent.state and export parts; a rebuild turns it off."
    )
    batch_max_records: int = Field(
        2000, ge=1, le=10_000, description="Events per consumed batch (one transaction)."
    )
    relay_batch_size: int = Field(2000, ge=1, description="Outbox rows per relay round.")
    read_pool_size: int = Field(8, ge=1, le=100, description="Connections for decisions.")
    expiry_interval_s: float = Field(1.0, gt=0)
    expiry_batch: int = Field(500, ge=1, le=10_000)
    export_part_bytes: int = Field(256 * 1024, ge=1024)
    notice_owner: str = Field(
        "messaging", min_length=1, description="Who messages people: gets the notice jobs."
    )
    notice_batch: int = Field(
        500, ge=1, le=10_000, description="People per notice fan-out transaction."
    )
    notice_interval_s: float = Field(1.0, gt=0, description="Seconds between notice rounds.")
    notice_due: timedelta = Field(
        timedelta(days=3), description="How long the owner has to send a notice."
    )
