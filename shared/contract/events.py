"""One small model per v1 event type of DESIGN §3, and the discriminated union over them.

Change rules: add optional fields or new types only; anything else is a `.v2` beside this.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, TypeAdapter, model_validator

from .envelope import PERSONAL, CloudEvent, Data, Open, json_size, too_large

Category = Annotated[str, Field(min_length=1, max_length=100, examples=["crm_data"])]
Purpose = Annotated[str, Field(min_length=1, max_length=100, examples=["marketing_email"])]
RequestId = Annotated[str, Field(min_length=1, max_length=200, examples=["req_81"])]
JobId = Annotated[str, Field(min_length=1, max_length=200, examples=["job_3f2a"])]
Owner = Annotated[str, Field(min_length=1, max_length=100, examples=["crm"])]
Jurisdiction = Annotated[str, Field(pattern=r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$", examples=["DE"])]
ShortText = Annotated[str, Field(max_length=500)]

MAX_FIELDS_BYTES = 64 * 1024
"""Bound of a rectification's `fields` as compact JSON (schema keyword `x-max-bytes`)."""


def _bounded_fields(value: dict[str, Any]) -> dict[str, Any]:
    size = json_size(value)
    if size > MAX_FIELDS_BYTES:
        raise too_large("fields", size, MAX_FIELDS_BYTES)
    return value


MAX_CHECKPOINT_ENTRIES = 50_000
"""Entries one `audit.checkpoint.v1` covers at most: 8 hex digits each in `leaves`, so the
event stays under `MAX_EVENT_BYTES` (the evidence setting `checkpoint_max_entries` is capped
by it; a longer backlog makes several checkpoints)."""

MAX_ITEMS = 200
"""Bound of every list in an event, and of `consent.state`'s purposes (`maxItems`).

Lists hold purposes, categories, owners or one outcome per category: the purpose catalogue
and the retention categories have about ten entries each, so 200 is far above real use (and
the same as a rectification's 200 field names); 200 names of 100 characters are about 21 KiB,
so a list is refused by its count, named, well before the event's byte bound.
"""

Categories = Annotated[list[Category], Field(max_length=MAX_ITEMS)]
"""A list of categories, bounded (inside `"all" | [...]` the bound must sit on the list)."""

FreeFields = Annotated[dict[str, Any], AfterValidator(_bounded_fields)]
"""A free-form object of corrected values: at most 200 names and MAX_FIELDS_BYTES of JSON."""
FREE_FIELDS: dict[str, Any] = {**PERSONAL, "x-max-bytes": MAX_FIELDS_BYTES}


class ConsentSource(StrEnum):
    WEB_FORM = "web_form"
    API = "api"
    EMAIL_LINK = "email_link"
    SUPPORT = "support"
    IMPORT = "import"
    CMP = "cmp"


class ConsentType(StrEnum):
    EXPLICIT = "explicit"
    IMPLIED = "implied"


class Evidence(Open):
    """Proof of how a consent was given; every field is personal data.

    Fields beyond the named ones are kept, up to 4 KiB of them (`x-max-extra-bytes`).
    """

    max_extra_bytes = 4 * 1024

    ip_hash: str | None = Field(None, max_length=200, json_schema_extra=PERSONAL)
    user_agent: str | None = Field(None, max_length=1000, json_schema_extra=PERSONAL)
    tcf_string: str | None = Field(None, max_length=10000, json_schema_extra=PERSONAL)


# --- accounts.lifecycle -------------------------------------------------------------------


class SignUpConsent(Open):
    purpose: Purpose
    granted: bool


class AccountSignedUpData(Data):
    account_id: str = Field(min_length=1, max_length=200, examples=["acc_7"])
    jurisdiction: Jurisdiction
    policy_version: str = Field(min_length=1, max_length=50, examples=["2026-10"])
    consents: list[SignUpConsent] = Field(default_factory=list, max_length=MAX_ITEMS)


class AccountClosedData(Data):
    account_id: str = Field(min_length=1, max_length=200)
    closed_at: AwareDatetime
    reason: str = Field("user_request", max_length=100, examples=["user_request"])


class AccountReopenedData(Data):
    account_id: str = Field(min_length=1, max_length=200)
    reopened_at: AwareDatetime


class SubscriptionChangedData(Data):
    account_id: str = Field(min_length=1, max_length=200)
    plan: str = Field(min_length=1, max_length=100, examples=["pro"])
    crm_retention_days: int = Field(30, ge=0, le=36500)


# --- consent.changes ----------------------------------------------------------------------


class ConsentChangeData(Data):
    purpose: Purpose
    source: ConsentSource
    consent_type: ConsentType = ConsentType.EXPLICIT
    policy_version: str | None = Field(None, max_length=50, examples=["2026-10"])
    notice_id: str | None = Field(None, max_length=200)
    jurisdiction: Jurisdiction | None = None
    expires_at: AwareDatetime | None = Field(None, description="A grant lapses by itself then.")
    evidence: Evidence | None = None


class GpcSignalData(Data):
    source: ConsentSource = ConsentSource.WEB_FORM
    evidence: Evidence | None = None


class ProcessingScope(Data):
    purposes: list[Purpose] = Field(default_factory=list, max_length=MAX_ITEMS)
    categories: list[Category] = Field(default_factory=list, max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _not_empty(self) -> ProcessingScope:
        if not self.purposes and not self.categories:
            raise ValueError("name at least one purpose or category")
        return self


class RestrictionGrounds(StrEnum):
    """Why processing is restricted: GDPR Art. 18(1)(a)-(d)."""

    ACCURACY_CONTESTED = "accuracy_contested"
    UNLAWFUL_ERASURE_OPPOSED = "unlawful_erasure_opposed"
    NEEDED_FOR_LEGAL_CLAIMS = "needed_for_legal_claims"
    OBJECTION_PENDING = "objection_pending"


class ProcessingRestrictedData(ProcessingScope):
    reason: str | None = Field(None, max_length=500)
    grounds: RestrictionGrounds | None = Field(
        None,
        description="Art. 18(1)(a)-(d); (b) and (c) keep the data: deletions wait for the lift.",
    )


class ProcessingObjectedData(ProcessingScope):
    reason: str | None = Field(None, max_length=500)


class RestrictionLiftedData(ProcessingScope):
    """Lifts restrictions and objections on the named purposes or categories."""


# --- privacy.requests ---------------------------------------------------------------------


class ErasureRequestedData(Data):
    request_id: RequestId
    scope: Literal["all"] | Categories = "all"
    verified_by: str = Field(min_length=1, max_length=200, examples=["support:agent_12"])


class ExportRequestedData(Data):
    request_id: RequestId
    format: Literal["json"] = "json"
    verified_by: str = Field(min_length=1, max_length=200)


class RectificationRequestedData(Data):
    request_id: RequestId
    category: Category
    fields: FreeFields = Field(min_length=1, max_length=200, json_schema_extra=FREE_FIELDS)


class RequestCancelledData(Data):
    request_id: RequestId


class RequestExtendedData(Data):
    request_id: RequestId
    reason: str = Field(min_length=1, max_length=500)
    new_deadline: AwareDatetime


# --- legal.holds --------------------------------------------------------------------------


class HoldReason(StrEnum):
    COURT_ORDER = "court_order"
    SUBPOENA = "subpoena"
    DISPUTE = "dispute"
    REGULATOR = "regulator"


class LegalHoldPlacedData(Data):
    hold_id: str = Field(min_length=1, max_length=200)
    scope: Literal["subject", "account"] = "subject"
    account_id: str | None = Field(None, max_length=200)
    categories: Literal["all"] | Categories = "all"
    reason: HoldReason

    @model_validator(mode="after")
    def _account_scope_names_account(self) -> LegalHoldPlacedData:
        if self.scope == "account" and not self.account_id:
            raise ValueError("an account-scoped hold needs account_id")
        return self


class LegalHoldReleasedData(Data):
    hold_id: str = Field(min_length=1, max_length=200)
    scope: Literal["subject", "account"] = "subject"
    account_id: str | None = Field(None, max_length=200)


# --- privacy.receipts ---------------------------------------------------------------------


class DeletionCompletedData(Data):
    job_id: JobId
    owner: Owner
    records_deleted: int = Field(0, ge=0)


class JobFailedData(Data):
    job_id: JobId
    owner: Owner
    error: str = Field(min_length=1, max_length=2000)
    retryable: bool = True


class DeletionFailedData(JobFailedData):
    pass


class RectificationCompletedData(Data):
    job_id: JobId
    owner: Owner


class RectificationFailedData(JobFailedData):
    pass


class ExportPartData(Data):
    job_id: JobId
    request_id: RequestId
    owner: Owner
    category: Category
    part_index: int = Field(ge=0)
    part_count: int = Field(ge=1, le=100_000)
    sealed: str | None = Field(
        None,
        max_length=400_000,
        description="Base64 of the JSON records sealed to the job's public key (inline part; "
        "256 KiB of records make about 350,000 characters).",
        json_schema_extra=PERSONAL,
    )
    location: str | None = Field(
        None, max_length=2000, description="file:// URL under the exchange folder."
    )
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Of the plaintext records.")
    record_count: int | None = Field(None, ge=0)
    record_schema: str | None = Field(
        None,
        max_length=500,
        description="Name or URL of the JSON Schema the records follow (named in the manifest).",
        examples=["https://crm.example/schemas/contact.v1.json"],
    )

    @model_validator(mode="after")
    def _inline_or_reference(self) -> ExportPartData:
        if (self.sealed is None) == (self.location is None):
            raise ValueError("give exactly one of sealed (inline) or location (reference)")
        if self.part_index >= self.part_count:
            raise ValueError("part_index must be below part_count")
        return self


class ExportPartFailedData(Data):
    job_id: JobId
    request_id: RequestId
    owner: Owner
    category: Category | None = None
    error: str = Field(min_length=1, max_length=2000)
    retryable: bool = False


# --- outbound -----------------------------------------------------------------------------


class PurposeState(Open):
    state: Literal["granted", "withdrawn", "expired", "default"]
    allowed: bool = Field(description="The decision, restrictions and objections applied.")
    since: AwareDatetime | None = None
    basis: Literal["consent", "contract", "legitimate_interest"]
    reconsent_required: bool = False
    expires_at: AwareDatetime | None = None
    restricted: bool = Field(False, description="Art. 18: a restriction covers the purpose.")
    continues_under: list[
        Literal["storage", "legal_claims", "others_rights", "public_interest"]
    ] = Field(
        default_factory=list,
        max_length=4,  # Art. 18(2) has four grounds; the catalogue refuses one named twice
        description="Art. 18(2) grounds on which a restricted purpose continues (allowed).",
    )


class ConsentStateData(Data):
    version: int = Field(ge=1, description="Per subject, strictly increasing.")
    purposes: dict[Purpose, PurposeState] = Field(max_length=MAX_ITEMS)
    restrictions: list[ShortText] = Field(default_factory=list, max_length=MAX_ITEMS)
    objections: list[ShortText] = Field(default_factory=list, max_length=MAX_ITEMS)
    gpc: bool = False


class DeletionMode(StrEnum):
    DELETE = "delete"
    ANONYMISE = "anonymise"
    RESTRICT = "restrict"


class DeletionReason(StrEnum):
    RETENTION_EXPIRED = "retention_expired"
    ERASURE_REQUEST = "erasure_request"
    CONSENT_WITHDRAWN = "consent_withdrawn"


class DeletionJobData(Data):
    job_id: JobId
    owner: Owner
    category: Category
    mode: DeletionMode
    reason: DeletionReason
    request_id: RequestId | None = None
    not_before: AwareDatetime | None = None
    due_by: AwareDatetime
    attempt: int = Field(1, ge=1)


class ExportJobData(Data):
    job_id: JobId
    request_id: RequestId
    owner: Owner
    categories: Categories
    due_by: AwareDatetime
    public_key: str = Field(
        max_length=100, description="Base64 X25519 key; seal inline parts to it."
    )


class RectificationJobData(Data):
    job_id: JobId
    request_id: RequestId
    owner: Owner
    category: Category
    fields: FreeFields = Field(max_length=200, json_schema_extra=FREE_FIELDS)
    due_by: AwareDatetime
    attempt: int = Field(1, ge=1)


class RequestKind(StrEnum):
    ERASURE = "erasure"
    EXPORT = "export"
    RECTIFICATION = "rectification"


class RequestStatus(StrEnum):
    """OpenDSR's words, plus partially_completed and rejected."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    PARTIALLY_COMPLETED = "partially_completed"
    REJECTED = "rejected"


class CategoryOutcome(Open):
    category: Category
    outcome: Literal[
        "deleted", "pending", "retained", "blocked", "exported", "missing", "failed", "cancelled"
    ]
    reason: str | None = Field(None, max_length=500, examples=["legal obligation: tax"])
    until: AwareDatetime | None = None
    owner: Owner | None = None


class RequestStatusData(Data):
    request_id: RequestId
    kind: RequestKind
    status: RequestStatus
    overdue: bool = False
    deadline: AwareDatetime
    outcomes: list[CategoryOutcome] = Field(default_factory=list, max_length=MAX_ITEMS)
    reason: str | None = Field(None, max_length=500)
    bundle_id: str | None = Field(None, max_length=200)
    bundle_expires_at: AwareDatetime | None = None
    missing_owners: list[Owner] = Field(default_factory=list, max_length=MAX_ITEMS)


# --- restriction jobs and receipts (1.1.0, Art. 18) ---------------------------------------


class RestrictionJobData(Data):
    """Restrict (keep, do not use) one category of a subject at its owner, or lift that."""

    job_id: JobId
    owner: Owner
    category: Category
    grounds: RestrictionGrounds | None = None
    due_by: AwareDatetime
    attempt: int = Field(1, ge=1)


class RestrictionCompletedData(Data):
    job_id: JobId
    owner: Owner


class RestrictionFailedData(JobFailedData):
    pass


# --- rolling retention (purge jobs, 1.1.0) ------------------------------------------------


class PurgeJobData(Data):
    """Purge the subject's records of `category` older than `before` (kept while open)."""

    job_id: JobId
    owner: Owner
    category: Category
    before: AwareDatetime = Field(description="Delete the records made before this instant.")
    keep: str = Field(
        min_length=2, max_length=50, examples=["P13M"], description="The rolling limit."
    )
    due_by: AwareDatetime
    attempt: int = Field(1, ge=1)


class PurgeCompletedData(Data):
    job_id: JobId
    owner: Owner
    records_deleted: int = Field(0, ge=0)


class PurgeFailedData(JobFailedData):
    pass


# --- disclosures to authorities (legal.holds, 1.1.0) --------------------------------------


class AuthorityKind(StrEnum):
    COURT = "court"
    LAW_ENFORCEMENT = "law_enforcement"
    REGULATOR = "regulator"


class DisclosureRecordedData(Data):
    """A disclosure of the subject's data to an authority; no field is the subject's data."""

    disclosure_id: str = Field(min_length=1, max_length=200, examples=["disc_12"])
    authority: str = Field(min_length=1, max_length=300, examples=["Amtsgericht Berlin-Mitte"])
    authority_kind: AuthorityKind
    legal_basis: str = Field(
        min_length=1, max_length=500, examples=["§ 100g StPO; GDPR Art. 6(1)(c)"]
    )
    reference: str = Field(min_length=1, max_length=200, examples=["AZ 123 Js 456/26"])
    categories: list[Category] = Field(min_length=1, max_length=MAX_ITEMS)
    disclosed_at: AwareDatetime
    disclosed_by: str = Field(
        min_length=1, max_length=200, examples=["legal:staff_42"], description="A role or staff id."
    )
    secret_until: AwareDatetime | None = Field(
        None,
        description="Secrecy ordered until then: the access file says nothing of it meanwhile.",
    )


# --- policy changes and notices (1.1.0) ---------------------------------------------------


class PolicyChange(Open):
    """What a new policy version changes for one purpose, and whether it needs fresh consent."""

    purpose: Purpose
    reconsent_required: bool = False
    what: str | None = Field(None, max_length=2000)


class PolicyPublishedData(Data):
    """A new privacy policy version (subject: `policy`); no field is anyone's personal data."""

    version: str = Field(min_length=1, max_length=50, examples=["2027-01"])
    effective_at: AwareDatetime = Field(description="Grants it asks to renew lapse from then.")
    summary: str = Field(min_length=1, max_length=5000, description="What changed, in words.")
    url: str | None = Field(None, max_length=2000)
    changes: list[PolicyChange] = Field(default_factory=list, max_length=MAX_ITEMS)


class NoticeJobData(Data):
    """Tell the subject about a new policy before it takes effect (owner: who messages people)."""

    job_id: JobId
    owner: Owner
    policy_version: str = Field(min_length=1, max_length=50)
    effective_at: AwareDatetime
    summary: str = Field(min_length=1, max_length=5000)
    url: str | None = Field(None, max_length=2000)
    reconsent_purposes: list[Purpose] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="The subject's grants the new policy asks to renew.",
    )
    due_by: AwareDatetime


# --- evidence checkpoints (1.2.0) ---------------------------------------------------------


Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class CheckpointFork(BaseModel):
    """A restore from backup that this checkpoint records: history after it was re-derived."""

    model_config = {"frozen": True}

    restored_at: str = Field(max_length=64, description="When the restore ran (ISO 8601).")
    backup_taken_at: str = Field(max_length=64, description="When the backup was taken.")


class AuditCheckpointData(Data):
    """A signed Merkle root over an audit log's entries since the previous checkpoint (subject:
    the log). Hashes, counts and times only: no field is anyone's personal data."""

    log: str = Field(
        min_length=1,
        max_length=100,
        examples=["consent.ledger"],
        description="The log: consent.ledger or retention.certificates.",
    )
    number: int = Field(ge=1, description="1 + the previous checkpoint's (repeats after a fork).")
    after_seq: int = Field(ge=0, description="The log's global sequence it starts after.")
    upto_seq: int = Field(ge=0, description="The last global sequence it covers.")
    count: int = Field(ge=0, description="Entries covered (after_seq < seq <= upto_seq).")
    root: Hex64 = Field(description="RFC 9162 Merkle tree hash over the entries' hashes.")
    leaves: str = Field(
        max_length=8 * MAX_CHECKPOINT_ENTRIES,
        pattern=r"^[0-9a-f]*$",
        description="The first 8 hex digits of each entry's hash, in order (names a bad entry).",
    )
    prev_hash: Hex64 = Field(description="The previous checkpoint's hash (zeros: the first).")
    created_at: str = Field(max_length=64, description="When it was made (ISO 8601).")
    key_id: str = Field(
        pattern=r"^[0-9a-f]{16}$", description="First 16 hex of SHA-256 of the public key."
    )
    fork: CheckpointFork | None = Field(None, description="Set when it records a restore.")
    hash: Hex64 = Field(description="SHA-256 of the canonical body (all but hash, signature).")
    signature: str = Field(max_length=200, description="Ed25519 over the body, base64.")


# --- the envelopes ------------------------------------------------------------------------


class AccountSignedUp(CloudEvent[AccountSignedUpData]):
    type: Literal["account.signed_up.v1"] = "account.signed_up.v1"


class AccountClosed(CloudEvent[AccountClosedData]):
    type: Literal["account.closed.v1"] = "account.closed.v1"


class AccountReopened(CloudEvent[AccountReopenedData]):
    type: Literal["account.reopened.v1"] = "account.reopened.v1"


class SubscriptionChanged(CloudEvent[SubscriptionChangedData]):
    type: Literal["subscription.changed.v1"] = "subscription.changed.v1"


class ConsentGranted(CloudEvent[ConsentChangeData]):
    type: Literal["consent.granted.v1"] = "consent.granted.v1"


class ConsentWithdrawn(CloudEvent[ConsentChangeData]):
    type: Literal["consent.withdrawn.v1"] = "consent.withdrawn.v1"


class GpcSignal(CloudEvent[GpcSignalData]):
    type: Literal["consent.gpc_signal.v1"] = "consent.gpc_signal.v1"


class ProcessingRestricted(CloudEvent[ProcessingRestrictedData]):
    type: Literal["processing.restricted.v1"] = "processing.restricted.v1"


class ProcessingObjected(CloudEvent[ProcessingObjectedData]):
    type: Literal["processing.objected.v1"] = "processing.objected.v1"


class RestrictionLifted(CloudEvent[RestrictionLiftedData]):
    type: Literal["restriction.lifted.v1"] = "restriction.lifted.v1"


class ErasureRequested(CloudEvent[ErasureRequestedData]):
    type: Literal["erasure.requested.v1"] = "erasure.requested.v1"


class ExportRequested(CloudEvent[ExportRequestedData]):
    type: Literal["export.requested.v1"] = "export.requested.v1"


class RectificationRequested(CloudEvent[RectificationRequestedData]):
    type: Literal["rectification.requested.v1"] = "rectification.requested.v1"


class RequestCancelled(CloudEvent[RequestCancelledData]):
    type: Literal["request.cancelled.v1"] = "request.cancelled.v1"


class RequestExtended(CloudEvent[RequestExtendedData]):
    type: Literal["request.extended.v1"] = "request.extended.v1"


class LegalHoldPlaced(CloudEvent[LegalHoldPlacedData]):
    type: Literal["legal_hold.placed.v1"] = "legal_hold.placed.v1"


class LegalHoldReleased(CloudEvent[LegalHoldReleasedData]):
    type: Literal["legal_hold.released.v1"] = "legal_hold.released.v1"


class DeletionCompleted(CloudEvent[DeletionCompletedData]):
    type: Literal["deletion.completed.v1"] = "deletion.completed.v1"


class DeletionFailed(CloudEvent[DeletionFailedData]):
    type: Literal["deletion.failed.v1"] = "deletion.failed.v1"


class RectificationCompleted(CloudEvent[RectificationCompletedData]):
    type: Literal["rectification.completed.v1"] = "rectification.completed.v1"


class RectificationFailed(CloudEvent[RectificationFailedData]):
    type: Literal["rectification.failed.v1"] = "rectification.failed.v1"


class ExportPart(CloudEvent[ExportPartData]):
    type: Literal["export.part.v1"] = "export.part.v1"


class ExportPartFailed(CloudEvent[ExportPartFailedData]):
    type: Literal["export.part_failed.v1"] = "export.part_failed.v1"


class ConsentState(CloudEvent[ConsentStateData]):
    type: Literal["consent.state.v1"] = "consent.state.v1"


class DeletionJob(CloudEvent[DeletionJobData]):
    type: Literal["deletion.job.v1"] = "deletion.job.v1"


class ExportJob(CloudEvent[ExportJobData]):
    type: Literal["export.job.v1"] = "export.job.v1"


class RectificationJob(CloudEvent[RectificationJobData]):
    type: Literal["rectification.job.v1"] = "rectification.job.v1"


class RequestStatusChanged(CloudEvent[RequestStatusData]):
    type: Literal["request.status.v1"] = "request.status.v1"


# restriction jobs and receipts (1.1.0)


class RestrictionJob(CloudEvent[RestrictionJobData]):
    type: Literal["restriction.job.v1"] = "restriction.job.v1"


class RestrictionLiftedJob(CloudEvent[RestrictionJobData]):
    type: Literal["restriction.lifted_job.v1"] = "restriction.lifted_job.v1"


class RestrictionCompleted(CloudEvent[RestrictionCompletedData]):
    type: Literal["restriction.completed.v1"] = "restriction.completed.v1"


class RestrictionFailed(CloudEvent[RestrictionFailedData]):
    type: Literal["restriction.failed.v1"] = "restriction.failed.v1"


class PurgeJob(CloudEvent[PurgeJobData]):
    type: Literal["purge.job.v1"] = "purge.job.v1"


class PurgeCompleted(CloudEvent[PurgeCompletedData]):
    type: Literal["purge.completed.v1"] = "purge.completed.v1"


class PurgeFailed(CloudEvent[PurgeFailedData]):
    type: Literal["purge.failed.v1"] = "purge.failed.v1"


class DisclosureRecorded(CloudEvent[DisclosureRecordedData]):
    type: Literal["disclosure.recorded.v1"] = "disclosure.recorded.v1"


class PolicyPublished(CloudEvent[PolicyPublishedData]):
    type: Literal["policy.published.v1"] = "policy.published.v1"


class NoticeJob(CloudEvent[NoticeJobData]):
    type: Literal["notice.job.v1"] = "notice.job.v1"


class AuditCheckpoint(CloudEvent[AuditCheckpointData]):
    type: Literal["audit.checkpoint.v1"] = "audit.checkpoint.v1"


ALL_EVENTS: tuple[type[CloudEvent[Any]], ...] = (
    AccountSignedUp,
    AccountClosed,
    AccountReopened,
    SubscriptionChanged,
    ConsentGranted,
    ConsentWithdrawn,
    GpcSignal,
    ProcessingRestricted,
    ProcessingObjected,
    RestrictionLifted,
    ErasureRequested,
    ExportRequested,
    RectificationRequested,
    RequestCancelled,
    RequestExtended,
    LegalHoldPlaced,
    LegalHoldReleased,
    DeletionCompleted,
    DeletionFailed,
    RectificationCompleted,
    RectificationFailed,
    ExportPart,
    ExportPartFailed,
    ConsentState,
    DeletionJob,
    ExportJob,
    RectificationJob,
    RequestStatusChanged,
    # restriction jobs and receipts (1.1.0)
    RestrictionJob,
    RestrictionLiftedJob,
    RestrictionCompleted,
    RestrictionFailed,
    # rolling retention (1.1.0)
    PurgeJob,
    PurgeCompleted,
    PurgeFailed,
    # disclosures to authorities (1.1.0)
    DisclosureRecorded,
    # policy changes and notices (1.1.0)
    PolicyPublished,
    NoticeJob,
    # evidence checkpoints (1.2.0)
    AuditCheckpoint,
)

EVENT_TYPES: dict[str, type[CloudEvent[Any]]] = {
    model.model_fields["type"].default: model for model in ALL_EVENTS
}

AnyEvent = Annotated[
    AccountSignedUp
    | AccountClosed
    | AccountReopened
    | SubscriptionChanged
    | ConsentGranted
    | ConsentWithdrawn
    | GpcSignal
    | ProcessingRestricted
    | ProcessingObjected
    | RestrictionLifted
    | ErasureRequested
    | ExportRequested
    | RectificationRequested
    | RequestCancelled
    | RequestExtended
    | LegalHoldPlaced
    | LegalHoldReleased
    | DeletionCompleted
    | DeletionFailed
    | RectificationCompleted
    | RectificationFailed
    | ExportPart
    | ExportPartFailed
    | ConsentState
    | DeletionJob
    | ExportJob
    | RectificationJob
    | RequestStatusChanged
    # restriction jobs and receipts (1.1.0)
    | RestrictionJob
    | RestrictionLiftedJob
    | RestrictionCompleted
    | RestrictionFailed
    # rolling retention (1.1.0)
    | PurgeJob
    | PurgeCompleted
    | PurgeFailed
    # disclosures to authorities (1.1.0)
    | DisclosureRecorded
    # policy changes and notices (1.1.0)
    | PolicyPublished
    | NoticeJob
    # evidence checkpoints (1.2.0)
    | AuditCheckpoint,
    Field(discriminator="type"),
]

ANY_EVENT: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


def personal_fields(model: type[BaseModel]) -> set[str]:
    """Names of the fields of `model` marked as personal data (dotted for nested models)."""
    found: set[str] = set()
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("x-personal"):
            found.add(name)
        annotation = field.annotation
        for inner in getattr(annotation, "__args__", ()) or (annotation,):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                found |= {f"{name}.{sub}" for sub in personal_fields(inner)}
    return found
