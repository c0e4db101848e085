"""Export decisions: pure functions over a request's state (no I/O, no clock: `now` is given)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

# The Art. 15 information lives in `information`; its names stay importable from here.
from services.export.information import CONSENT_RECORDS_INFO as CONSENT_RECORDS_INFO
from services.export.information import CategoryInfo as CategoryInfo
from services.export.information import PurposeInfo as PurposeInfo
from services.export.information import RecipientInfo as RecipientInfo
from services.export.information import information as information
from services.export.information import retention_text as retention_text
from shared.catalogue import Period
from shared.contract.events import CategoryOutcome, RequestKind, RequestStatus, RequestStatusData

FORMAT_VERSION = "1"
JOB_NAMESPACE = uuid.UUID("6f1d6c43-0d0e-4d55-9a55-5f0c2d7c1e01")
RESPONSE_PERIOD = Period(months=1)
MAX_EXTENSION = Period(months=2)


class State(StrEnum):
    """A request's state; `ready` and `assembling` are shown as in_progress."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    READY = "ready"
    ASSEMBLING = "assembling"
    COMPLETED = "completed"
    PARTIALLY_COMPLETED = "partially_completed"
    CANCELLED = "cancelled"

    @property
    def open(self) -> bool:
        """Still collecting or assembling (the key exists)."""
        return self in OPEN_STATES

    @property
    def public(self) -> RequestStatus:
        """The OpenDSR word for this state."""
        if self in (State.READY, State.ASSEMBLING):
            return RequestStatus.IN_PROGRESS
        return RequestStatus(self.value)


OPEN_STATES = frozenset({State.PENDING, State.IN_PROGRESS, State.READY, State.ASSEMBLING})
COLLECTING = frozenset({State.PENDING, State.IN_PROGRESS})


class ExportRefused(Exception):
    """An event the contract does not allow for this request (dead-lettered with the reason)."""


class PartRefused(ExportRefused):
    """A part or part failure that cannot belong to this request."""


class ChangeRefused(ExportRefused):
    """A cancellation, extension or repeated request the request's state does not allow."""


class Request(BaseModel):
    """What decisions need of one export request."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    subject: str
    requested_at: datetime
    deadline: datetime
    extended: bool = False
    state: State = State.PENDING
    missing_owners: list[str] = []
    outcomes: list[CategoryOutcome] = []
    bundle_id: str | None = None
    bundle_expires_at: datetime | None = None


class PartSummary(BaseModel):
    """The parts received so far for one owner and category."""

    model_config = ConfigDict(frozen=True)

    owner: str
    category: str
    part_count: int
    stored: int
    records: int = 0
    failed: list[str] = []


class Failure(BaseModel):
    """An owner's export.part_failed.v1 (category None: the whole owner)."""

    model_config = ConfigDict(frozen=True)

    owner: str
    category: str | None
    error: str
    retryable: bool
    erased: bool = False
    """Not an owner's failure: the person's erasure took the category out of the export."""


Outcome = Literal["exported", "failed", "missing", "erased"]


class Settled(BaseModel):
    """Where one owner's category stands."""

    model_config = ConfigDict(frozen=True)

    owner: str
    category: str
    outcome: Outcome
    reason: str | None = None
    records: int = 0


class PartVerdict(StrEnum):
    ACCEPT = "accept"
    DUPLICATE = "duplicate"
    SUPPRESS = "suppress"
    ERASED = "erased"
    """The category was erased while the export was open: the part is dropped, never kept."""


def deadline_for(requested_at: datetime) -> datetime:
    """One calendar month from the request (GDPR Art. 12(3))."""
    return RESPONSE_PERIOD.after(requested_at)


def job_id_for(request_id: str, owner: str) -> str:
    """A stable job id per request and owner, so a replay issues the same job."""
    name = "\x1f".join((request_id, owner))
    return f"exp_{uuid.uuid5(JOB_NAMESPACE, name).hex}"


def job_event_id(job_id: str, storage_key: str) -> str:
    """The id of a job's export.job event: its job under the request's key. A request made
    anew after a restore has another key, so its re-issue is a new event of the same job."""
    return str(uuid.uuid5(JOB_NAMESPACE, f"job-event:{job_id}:{storage_key}"))


def bundle_id_for(storage_key: str, attempt: int = 1) -> str:
    """One bundle id per assembly attempt of a request: two assemblers never write one file,
    and the attempt that finishes knows the ids of earlier ones to delete their leftovers."""
    return uuid.uuid5(JOB_NAMESPACE, f"bundle:{storage_key}:{attempt}").hex


def check_new_request(existing: Request | None, subject: str) -> bool:
    """True when the request is new; False for a repeat; refused if the id names another person."""
    if existing is None:
        return True
    if existing.subject != subject:
        raise ChangeRefused(f"request {existing.request_id} already exists for another subject")
    return False


def check_extension(request: Request, new_deadline: datetime) -> datetime:
    """The new deadline, if the request may be extended to it (once, by two months at most)."""
    if not request.state.open:
        raise ChangeRefused(f"request is {request.state.value}; it cannot be extended")
    if request.extended:
        raise ChangeRefused("request was already extended once")
    if new_deadline <= request.deadline:
        raise ChangeRefused("new_deadline must be later than the current deadline")
    if new_deadline > MAX_EXTENSION.after(request.deadline):
        raise ChangeRefused("new_deadline may extend the deadline by two months at most")
    return new_deadline


def check_cancel(request: Request) -> bool:
    """True when the cancellation stops the request; False if it was already cancelled."""
    if request.state is State.CANCELLED:
        return False
    if not request.state.open:
        raise ChangeRefused(f"request is already {request.state.value}; too late to cancel")
    return True


ERASED_REASON = "subject erased"
REKEYED_REASON = (
    "keyed anew after a database restore: jobs issued again, parts sealed to the old key dropped"
)


class ErasureEffect(StrEnum):
    """What an erasure of the subject does to one of its export requests."""

    CANCEL = "cancel"
    TRIM = "trim"
    DELETE_BUNDLE = "delete_bundle"
    NONE = "none"


Scope = Literal["all"] | Sequence[str]


def erasure_effect(
    request: Request, *, bundle_kept: bool, scope: Scope = "all", asked: Iterable[str] = ()
) -> ErasureEffect:
    """Only what the erasure must (policy 5.1 with 5.3): an open request stops when the erasure
    covers everything it asked for (`asked`), goes on without the erased categories when it
    covers some; a kept bundle goes only when the erasure covers its content."""
    if request.state.open:
        wanted = set(asked)
        if scope == "all" or wanted <= set(scope):
            return ErasureEffect.CANCEL
        return ErasureEffect.TRIM if wanted & set(scope) else ErasureEffect.NONE
    covered = scope == "all" or bundled_categories(request) <= set(scope)
    if request.bundle_id is not None and bundle_kept and covered:
        return ErasureEffect.DELETE_BUNDLE
    return ErasureEffect.NONE


def bundled_categories(request: Request) -> set[str]:
    """The categories whose data a finished request's bundle holds."""
    return {o.category for o in request.outcomes if o.outcome == "exported"}


def erased_jobs(scope: Scope, jobs: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Per owner, the categories asked of it that the erasure covers."""
    found = {
        owner: [c for c in categories if scope == "all" or c in scope]
        for owner, categories in sorted(jobs.items())
    }
    return {owner: categories for owner, categories in found.items() if categories}


def erased_reason(erasure_request_id: str) -> str:
    """Why a category is left out of an export: the person's erasure request."""
    return f"erased: erasure request {erasure_request_id} deleted this data"


def check_part(
    request: Request,
    *,
    subject: str,
    owner: str,
    job_id: str,
    expected_job_id: str | None,
    categories: Sequence[str],
    category: str | None,
    part_count: int | None,
    known_count: int | None,
    already_stored: bool,
    erased: Collection[str] = (),
) -> PartVerdict:
    """Whether a part (or part failure) belongs to the request and is new."""
    if request.state is State.CANCELLED:
        return PartVerdict.SUPPRESS  # owners may still answer a cancelled request: not poison
    if subject != request.subject:
        raise PartRefused("subject differs from the request's subject")
    if expected_job_id is None:
        raise PartRefused(f"no export job was issued to owner {owner!r}")
    if job_id != expected_job_id:
        raise PartRefused(f"job_id {job_id!r} is not the job issued to {owner!r}")
    if category is not None and category not in categories:
        raise PartRefused(f"category {category!r} was not asked of owner {owner!r}")
    if category is not None and category in erased:
        return PartVerdict.ERASED
    if already_stored:
        return PartVerdict.DUPLICATE
    if not request.state.open or request.state is State.ASSEMBLING:
        raise PartRefused(f"request is {request.state.value}; the part came too late")
    if part_count is not None and known_count is not None and part_count != known_count:
        raise PartRefused(f"part_count {part_count} disagrees with earlier parts ({known_count})")
    return PartVerdict.ACCEPT


def settle(
    jobs: Mapping[str, Sequence[str]], parts: Iterable[PartSummary], failures: Iterable[Failure]
) -> list[Settled]:
    """Each owner's category: exported (every part in), failed, or still missing."""
    by_key = {(p.owner, p.category): p for p in parts}
    failures = list(failures)
    erased = {(f.owner, f.category): f for f in failures if f.erased}
    failed = {(f.owner, f.category): f for f in failures if not f.retryable and not f.erased}
    return [
        _erased(owner, category, erased[owner, category])
        if (owner, category) in erased
        else _settle_one(
            owner,
            category,
            by_key.get((owner, category)),
            failed.get((owner, category)) or failed.get((owner, None)),
        )
        for owner, categories in sorted(jobs.items())
        for category in categories
    ]


def _erased(owner: str, category: str, mark: Failure) -> Settled:
    """Settled without waiting for the owner: the erasure deleted the data."""
    return Settled(owner=owner, category=category, outcome="erased", reason=mark.error)


def _settle_one(
    owner: str, category: str, part: PartSummary | None, failure: Failure | None
) -> Settled:
    records = part.records if part else 0
    if failure is not None:
        return Settled(
            owner=owner, category=category, outcome="failed", reason=failure.error, records=records
        )
    if part is None:
        return Settled(owner=owner, category=category, outcome="missing", reason="no answer")
    if part.failed and part.stored + len(part.failed) >= part.part_count:
        reason = "; ".join(part.failed)
        return Settled(
            owner=owner, category=category, outcome="failed", reason=reason, records=records
        )
    if part.stored >= part.part_count:
        return Settled(owner=owner, category=category, outcome="exported", records=records)
    reason = f"{part.stored} of {part.part_count} parts received"
    return Settled(owner=owner, category=category, outcome="missing", reason=reason)


def all_in(settled: Iterable[Settled]) -> bool:
    """True when no category is still missing: the bundle can be written."""
    return all(s.outcome != "missing" for s in settled)


def finish(settled: Sequence[Settled]) -> tuple[State, list[str], list[CategoryOutcome]]:
    """The final state, the owners whose data is not (fully) in the bundle, and the outcomes."""
    # an erased category is not missing: the person had it deleted, there is nothing to give
    missing = sorted({s.owner for s in settled if s.outcome not in ("exported", "erased")})
    state = State.PARTIALLY_COMPLETED if missing else State.COMPLETED
    outcomes = [
        CategoryOutcome(
            category=s.category,
            outcome="deleted" if s.outcome == "erased" else s.outcome,  # v1's word for it
            reason=s.reason,
            owner=s.owner,
        )
        for s in settled
    ]
    return state, missing, outcomes


def status_data(request: Request, now: datetime, reason: str | None = None) -> RequestStatusData:
    """The request.status.v1 data for the request as it stands (never a link)."""
    return RequestStatusData(
        request_id=request.request_id,
        kind=RequestKind.EXPORT,
        status=request.state.public,
        overdue=request.state.open and now > request.deadline,
        deadline=request.deadline,
        outcomes=request.outcomes,
        reason=reason,
        bundle_id=request.bundle_id,
        bundle_expires_at=request.bundle_expires_at,
        missing_owners=request.missing_owners,
    )


def link_expiry(now: datetime, link_ttl_seconds: float, bundle_expires_at: datetime) -> datetime:
    """A link lives `link_ttl` but never beyond the bundle itself."""
    return min(now + timedelta(seconds=link_ttl_seconds), bundle_expires_at)


def zip_name(owner: str, category: str) -> str:
    """The path of one owner's category inside the bundle."""
    return f"data/{owner}/{category}.json"


def default_schema(owner: str, category: str) -> str:
    """The JSON Schema name used when an owner names none."""
    return f"urn:privacy-plane:export:{owner}:{category}:v1"
