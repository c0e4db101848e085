"""Retention settings (env prefix RETENTION_)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.catalogue import RETENTION_FILE
from shared.evidence import settings as evidence
from shared.plumbing.identifiers import SchemaName


class RetentionSettings(evidence.CheckpointedSettings):
    """What the retention service needs beyond the shared settings."""

    model_config = SettingsConfigDict(
        env_prefix="RETENTION_", env_nested_delimiter="__", extra="ignore"
    )

    service_name: str = "retention"
    db_schema: SchemaName = "retention"
    retention_file: Path = Field(RETENTION_FILE, description="The retention rules (YAML).")
    receipt_timeout: timedelta = Field(
        timedelta(days=1), description="No receipt within this time: the job is re-issued."
    )
    retry_backoff: timedelta = Field(
        timedelta(minutes=5), description="First wait before re-issuing a failed job; doubles."
    )
    max_backoff: timedelta = Field(timedelta(days=1), description="Cap of the doubling waits.")
    job_due: timedelta = Field(
        timedelta(days=7), description="A retention or consent job's due-by after it is issued."
    )
    poll_interval: float = Field(0.1, gt=0, le=5, description="Seconds between timer polls.")
    claim_batch: int = Field(1000, ge=1, le=10_000, description="Timers claimed per transaction.")
    fire_concurrency: int = Field(
        3, ge=1, le=16, description="Transactions claiming due timers at once per replica."
    )
