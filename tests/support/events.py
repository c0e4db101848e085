"""Contract events as the tests send them: one small builder per event, with sensible defaults.

Each builder passes its arguments straight to the contract models; `at=None` means now (as
`new_event` does), so a test that does not care about time need not say it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from shared.contract.codec import new_event
from shared.contract.envelope import CloudEvent
from shared.contract.events import (
    AccountClosed,
    AccountClosedData,
    AccountSignedUp,
    AccountSignedUpData,
    ConsentChangeData,
    ConsentGranted,
    ConsentState,
    ConsentStateData,
    ConsentWithdrawn,
    DisclosureRecorded,
    DisclosureRecordedData,
    ErasureRequested,
    ErasureRequestedData,
    ExportRequested,
    ExportRequestedData,
    GpcSignal,
    GpcSignalData,
    PolicyChange,
    PolicyPublished,
    PolicyPublishedData,
    ProcessingObjected,
    ProcessingObjectedData,
    ProcessingRestricted,
    ProcessingRestrictedData,
    PurposeState,
    RequestCancelled,
    RequestCancelledData,
    RequestExtended,
    RequestExtendedData,
    RestrictionLifted,
    RestrictionLiftedData,
    SignUpConsent,
)

Change = TypeVar("Change", bound=CloudEvent[ConsentChangeData])


def consent_change(
    model: type[Change],
    subject: str,
    purpose: str,
    *,
    via: str,
    source: str,
    at: datetime | None = None,
    **fields: Any,
) -> Change:
    """A consent change (`model` is ConsentGranted or ConsentWithdrawn) made `via` a channel."""
    data = ConsentChangeData(purpose=purpose, source=via, **fields)
    return new_event(model, subject=subject, data=data, source=source, time=at)


def granted(
    subject: str = "usr_1",
    purpose: str = "marketing_email",
    *,
    via: str = "web_form",
    source: str = "web",
    at: datetime | None = None,
    **fields: Any,
) -> ConsentGranted:
    """A consent grant, by default given on the web form."""
    return consent_change(ConsentGranted, subject, purpose, via=via, source=source, at=at, **fields)


def withdrawn(
    subject: str = "usr_1",
    purpose: str = "marketing_email",
    *,
    via: str = "email_link",
    source: str = "web",
    at: datetime | None = None,
    **fields: Any,
) -> ConsentWithdrawn:
    """A consent withdrawal, by default through the e-mail link."""
    return consent_change(
        ConsentWithdrawn, subject, purpose, via=via, source=source, at=at, **fields
    )


def gpc(subject: str = "usr_1", *, source: str = "web", at: datetime | None = None) -> GpcSignal:
    """A Global Privacy Control signal."""
    return new_event(GpcSignal, subject=subject, data=GpcSignalData(), source=source, time=at)


def restricted(
    subject: str = "usr_1", *, source: str = "support", at: datetime | None = None, **scope: Any
) -> ProcessingRestricted:
    """A restriction of processing (`categories` or `purposes`, and a `reason`)."""
    data = ProcessingRestrictedData(**scope)
    return new_event(ProcessingRestricted, subject=subject, data=data, source=source, time=at)


def objected(
    subject: str = "usr_1", *, source: str = "support", at: datetime | None = None, **scope: Any
) -> ProcessingObjected:
    """An objection to processing (`purposes` or `categories`, and a `reason`)."""
    data = ProcessingObjectedData(**scope)
    return new_event(ProcessingObjected, subject=subject, data=data, source=source, time=at)


def restriction_lifted(
    subject: str = "usr_1", *, source: str = "support", at: datetime | None = None, **scope: Any
) -> RestrictionLifted:
    """Restrictions and objections lifted on the named purposes or categories."""
    data = RestrictionLiftedData(**scope)
    return new_event(RestrictionLifted, subject=subject, data=data, source=source, time=at)


def signed_up(
    subject: str = "usr_1",
    account: str = "acc_1",
    *,
    source: str = "accounts",
    at: datetime | None = None,
    jurisdiction: str = "DE",
    policy_version: str = "2026-10",
    consents: Mapping[str, bool] | None = None,
) -> AccountSignedUp:
    """A sign-up, with the consents (purpose: granted) ticked on the form."""
    data = AccountSignedUpData(
        account_id=account,
        jurisdiction=jurisdiction,
        policy_version=policy_version,
        consents=[SignUpConsent(purpose=p, granted=g) for p, g in (consents or {}).items()],
    )
    return new_event(AccountSignedUp, subject=subject, data=data, source=source, time=at)


def account_closed(
    subject: str,
    account: str,
    *,
    closed_at: datetime,
    source: str = "accounts",
    at: datetime | None = None,
    **fields: Any,
) -> AccountClosed:
    """An account closure."""
    data = AccountClosedData(account_id=account, closed_at=closed_at, **fields)
    return new_event(AccountClosed, subject=subject, data=data, source=source, time=at)


def consent_state(subject: str, version: int, *, at: datetime, **allowed: bool) -> ConsentState:
    """The consent service's state of a subject: each purpose granted (True) or withdrawn."""
    purposes = {
        p: PurposeState(
            state="granted" if ok else "withdrawn", allowed=ok, since=at, basis="consent"
        )
        for p, ok in allowed.items()
    }
    return new_event(
        ConsentState,
        subject=subject,
        source="privacy-plane.consent",
        data=ConsentStateData(version=version, purposes=purposes),
        time=at,
    )


def erasure(
    subject: str,
    request_id: str,
    *,
    verified_by: str,
    source: str,
    at: datetime | None = None,
    **fields: Any,
) -> ErasureRequested:
    """An erasure request (every category unless `scope` says otherwise)."""
    data = ErasureRequestedData(request_id=request_id, verified_by=verified_by, **fields)
    return new_event(ErasureRequested, subject=subject, data=data, source=source, time=at)


def export_requested(
    subject: str = "usr_1",
    request_id: str = "req_1",
    *,
    verified_by: str = "portal",
    source: str = "portal",
    at: datetime | None = None,
) -> ExportRequested:
    """An export (access) request from the portal."""
    data = ExportRequestedData(request_id=request_id, verified_by=verified_by)
    return new_event(ExportRequested, subject=subject, data=data, source=source, time=at)


def request_cancelled(
    subject: str = "usr_1",
    request_id: str = "req_1",
    *,
    source: str = "portal",
    at: datetime | None = None,
) -> RequestCancelled:
    """A request cancelled by the person or the portal."""
    data = RequestCancelledData(request_id=request_id)
    return new_event(RequestCancelled, subject=subject, data=data, source=source, time=at)


def request_extended(
    subject: str,
    request_id: str,
    new_deadline: datetime,
    *,
    reason: str,
    source: str = "portal",
    at: datetime | None = None,
) -> RequestExtended:
    """A request's deadline extended, with the reason given to the person."""
    data = RequestExtendedData(request_id=request_id, reason=reason, new_deadline=new_deadline)
    return new_event(RequestExtended, subject=subject, data=data, source=source, time=at)


def disclosure(
    subject: str,
    disclosure_id: str,
    *,
    disclosed_at: datetime,
    secret_until: datetime | None = None,
    categories: tuple[str, ...] = ("crm_data",),
    source: str = "legal",
    at: datetime | None = None,
) -> DisclosureRecorded:
    """A disclosure of the subject's data to a court (secret until `secret_until`, if given)."""
    data = DisclosureRecordedData(
        disclosure_id=disclosure_id,
        authority="Amtsgericht Berlin-Mitte",
        authority_kind="court",  # type: ignore[arg-type]  # pydantic parses the enum's value
        legal_basis="GDPR Art. 6(1)(c) with § 100g StPO",
        reference=f"AZ {disclosure_id}",
        categories=list(categories),
        disclosed_at=disclosed_at,
        disclosed_by="legal:staff_42",
        secret_until=secret_until,
    )
    return new_event(DisclosureRecorded, subject=subject, data=data, source=source, time=at)


def policy_published(
    version: str,
    *,
    effective_at: datetime,
    reconsent: tuple[str, ...] = (),
    summary: str = "What changed, in words.",
    source: str = "legal",
    at: datetime | None = None,
) -> PolicyPublished:
    """A new policy version (subject `policy`) asking to renew the grants of `reconsent`."""
    data = PolicyPublishedData(
        version=version,
        effective_at=effective_at,
        summary=summary,
        changes=[PolicyChange(purpose=p, reconsent_required=True) for p in reconsent],
    )
    return new_event(PolicyPublished, subject="policy", data=data, source=source, time=at)
