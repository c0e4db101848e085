"""What retention's HTTP routes answer, as models: the OpenAPI document is built from these.

Each model serialises to the JSON the routes returned as plain dicts before (same names,
nulls kept); times are ISO 8601 date-times.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, model_serializer
from pydantic_core.core_schema import SerializerFunctionWrapHandler

from services.retention.domain.certificates import Certificate
from services.retention.domain.dry_run import DryRunAnswer
from shared.contract.events import CategoryOutcome
from shared.evidence.api import AnchorCheck

NEXT_PAGE = "Cursor of the next page (pass it as `after`); null on the last page."


class Job(BaseModel):
    """A deletion, rectification or purge job sent to a data owner, tracked until its receipt."""

    job_id: str
    kind: Literal["deletion", "rectification", "purge"]
    subject_id: str
    owner: str
    category: str
    mode: str | None
    reason: str | None
    request_id: str | None
    due_by: datetime
    status: Literal["issued", "completed", "failed", "cancelled"]
    attempt: int
    issued_at: datetime
    last_issued_at: datetime
    overdue: bool
    last_error: str | None
    completed_at: datetime | None
    records_deleted: int | None


class Request(BaseModel):
    """An erasure or rectification request: its deadline (and extension) and status."""

    request_id: str
    subject_id: str
    kind: str
    requested_at: datetime
    deadline: datetime
    extended: bool
    reason: str | None
    cancelled_at: datetime | None
    overdue: bool
    status: str


class RequestDetail(Request):
    """A request with its outcome per category and its jobs."""

    outcomes: list[CategoryOutcome]
    jobs: list[Job]


class HoldRecord(BaseModel):
    """A legal hold as recorded (placed, perhaps released), with what it covers and why."""

    hold_id: str
    scope: Literal["subject", "account"]
    subject_id: str | None
    account_id: str | None
    categories: list[str] | None = Field(description="null: every category")
    reason: str | None
    placed_at: datetime | None
    released_at: datetime | None
    active: bool
    explanation: str


class SubjectHold(BaseModel):
    """An active hold covering the subject (directly or through its account)."""

    hold_id: str
    scope: Literal["subject", "account"]
    subject_id: str | None
    account_id: str | None
    categories: list[str] | None = Field(description="null: every category")
    reason: str
    explanation: str


class NextTimer(BaseModel):
    """A category's next open timer."""

    due_at: datetime
    mode: str
    reason: str
    status: Literal["pending", "blocked"]
    blocked_by: list[str]


class CategoryJob(BaseModel):
    """A job of the category, in short."""

    job_id: str
    mode: str | None
    status: str
    attempt: int
    overdue: bool


class RollingLimit(BaseModel):
    """A rolling limit while the account is open (policy 1.3) and the subject's next purge."""

    keep: str = Field(examples=["P13M"])
    every: str = Field(examples=["P1M"])
    next_purge: datetime | None = Field(description="null: none pending (closed, or issued).")
    purges_before: datetime | None = Field(description="The next purge's cutoff.")
    status: Literal["pending", "issued", "stopped"] | None
    explanation: str


class CategorySchedule(BaseModel):
    """A category's retention rule, its next open timer (null: none), its jobs and, when kept
    on a rolling limit while open, that limit and the next purge."""

    category: str
    owner: str
    period: str
    period_from: str | None
    legal_obligation: str | None
    next: NextTimer | None
    jobs: list[CategoryJob]
    rolling: RollingLimit | None = None


class ScheduledTimer(BaseModel):
    """One of the subject's timers, whatever its status, and the job it issued."""

    id: int
    category: str
    owner: str
    mode: str
    reason: str
    cause: str
    request_id: str | None
    due_at: datetime
    status: Literal["pending", "blocked", "fired", "cancelled", "superseded"]
    blocked_by: list[str]
    job_id: str | None
    fired_at: datetime | None


class SubjectCertificate(Certificate):
    """A deletion certificate of the subject, with its place and hash in the chain."""

    seq: int
    hash: str


class Disclosure(BaseModel):
    """A disclosure of the subject's data to an authority (policy 3.2), as recorded."""

    disclosure_id: str
    authority: str
    authority_kind: str
    legal_basis: str
    reference: str
    categories: list[str]
    disclosed_at: datetime
    disclosed_by: str = Field(description="A role or staff id.")
    secret_until: datetime | None
    withheld: bool = Field(description="Secrecy ordered: the access file says nothing yet.")


class SubjectRetention(BaseModel):
    """One subject: schedule per category, timers, holds, jobs, certificates, requests.

    `at` and `dry_run` are present only when the request gave `at`.
    """

    subject_id: str
    account_id: str | None
    account_status: Literal["open", "closed"] | None
    categories: list[CategorySchedule]
    schedule: list[ScheduledTimer]
    holds: list[SubjectHold]
    jobs: list[Job]
    certificates: list[SubjectCertificate]
    requests: list[Request]
    disclosures: list[Disclosure] = Field(default_factory=list)
    at: datetime | None = None
    dry_run: list[DryRunAnswer] | None = Field(None, description="What happens by `at`.")

    # No return annotation on purpose: pydantic would document the annotation instead of
    # the fields in the serialisation schema (the OpenAPI response).
    @model_serializer(mode="wrap")
    def _without_dry_run(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        """Leave `at` and `dry_run` out unless the request asked for the dry run."""
        data = handler(self)
        if self.dry_run is None and isinstance(data, dict):
            data.pop("at", None)
            data.pop("dry_run", None)
        return data


class DryRunCount(BaseModel):
    """How many timers of this page would do `action` to `category` for `reason`."""

    category: str
    action: str
    reason: str
    count: int


class DryRunTimer(DryRunAnswer):
    """What one open timer would do by the date."""

    timer_id: int
    subject_id: str


class RollingPurges(BaseModel):
    """A category kept on a rolling limit while open: its rule, next purge, purges due by `at`."""

    category: str
    owner: str
    keep: str
    every: str
    next_purge: datetime | None
    purges_due: int = Field(description="Subjects whose purge of the category is due by `at`.")
    explanation: str


class DryRunPage(BaseModel):
    """One page of the dry run over every subject's open timers due by `at` (by timer id), and
    the rolling limits with their purges due by `at`."""

    at: datetime
    subjects: int = Field(description="Distinct subjects among this page's timers.")
    counts: list[DryRunCount] = Field(description="This page's timers, counted.")
    timers: list[DryRunTimer]
    next: str | None = Field(None, description=NEXT_PAGE)
    rolling: list[RollingPurges] = Field(default_factory=list)


class JobsPage(BaseModel):
    """A page of jobs, by (issued_at, job_id)."""

    jobs: list[Job]
    next: str | None = Field(None, description=NEXT_PAGE)


class RequestsPage(BaseModel):
    """A page of open requests due soon, by (deadline, request_id)."""

    requests: list[Request]
    next: str | None = Field(None, description=NEXT_PAGE)


class HoldsPage(BaseModel):
    """A page of legal holds, by (placed_at, hold_id)."""

    holds: list[HoldRecord]
    next: str | None = Field(None, description=NEXT_PAGE)


class ChainCheck(BaseModel):
    """The deletion-certificate chain: intact, or what is wrong with it."""

    intact: bool
    problems: list[str]
    anchored: AnchorCheck | None = Field(
        None,
        description="Against the signed checkpoints on privacy.audit (absent without a key).",
    )
