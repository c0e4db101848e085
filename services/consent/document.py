"""The stored projection document: a subject's state as the JSON kept in its row, and back.

Its timestamps (UTC ISO 8601, memoised) are also those the published state and the ledger
write, so equal instants read the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from services.consent.state import PurposeRecord, ScopeRecord, SubjectState

_ZERO = timedelta(0)

UTC_ISO_MEMO: dict[datetime, str] = {}
"""`utc_iso`'s texts by instant (read directly where a miss is rare: one lookup, no call)."""
_UTC_ISO_MEMO_SIZE = 20_000


def utc_iso(value: datetime | None) -> str | None:
    """UTC ISO 8601. Memoised: a state's times are written again at every change of it (the
    document, the published state, the ledger); equal instants give the same UTC text."""
    if value is None:
        return None
    text = UTC_ISO_MEMO.get(value)
    if text is None:
        if value.tzinfo is UTC or value.utcoffset() == _ZERO:  # UTC already: same text, cheaper
            text = value.isoformat()
        else:
            text = value.astimezone(UTC).isoformat()
        if len(UTC_ISO_MEMO) >= _UTC_ISO_MEMO_SIZE:
            UTC_ISO_MEMO.clear()
        UTC_ISO_MEMO[value] = text
    return text


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def to_doc(state: SubjectState) -> dict[str, Any]:
    """The JSON document stored per subject (the projection row)."""
    memo = UTC_ISO_MEMO
    records = state.purposes
    purposes: dict[str, Any] = {}
    for name in sorted(records):
        r = records[name]
        since, expires_at = r.since, r.expires_at
        purposes[name] = {
            "state": r.state,
            "since": memo.get(since) or utc_iso(since),
            "event_id": r.event_id,
            "consent_type": r.consent_type,
            "source": r.source,
            "policy_version": r.policy_version,
            "expires_at": None
            if expires_at is None
            else memo.get(expires_at) or utc_iso(expires_at),
        }
    return {
        "purposes": purposes,
        "restrictions": _scopes_doc(state.restrictions) if state.restrictions else {},
        "objections": _scopes_doc(state.objections) if state.objections else {},
        "gpc_since": utc_iso(state.gpc_since),
    }


def _scopes_doc(scopes: Mapping[str, ScopeRecord]) -> dict[str, Any]:
    return {
        t: {"active": r.active, "since": utc_iso(r.since), "event_id": r.event_id}
        for t, r in sorted(scopes.items())
    }


def from_doc(subject: str, version: int, doc: Mapping[str, Any]) -> SubjectState:
    """Read back what `to_doc` wrote."""
    purposes = {
        name: PurposeRecord(
            p["state"],
            datetime.fromisoformat(p["since"]),
            p["event_id"],
            p.get("consent_type"),
            p.get("source"),
            p.get("policy_version"),
            _dt(p.get("expires_at")),
        )
        for name, p in doc.get("purposes", {}).items()
    }
    return SubjectState(
        subject,
        version,
        purposes,
        _scopes_from(doc.get("restrictions", {})),
        _scopes_from(doc.get("objections", {})),
        _dt(doc.get("gpc_since")),
    )


def _scopes_from(doc: Mapping[str, Any]) -> dict[str, ScopeRecord]:
    return {
        t: ScopeRecord(s["active"], datetime.fromisoformat(s["since"]), s["event_id"])
        for t, s in doc.items()
    }
