"""The published consent state (`consent.state.v1` data) encoded for the ingest hot path.

Every applied change publishes the subject's full state: it is written as plain JSON values,
without the contract model, and for the common purposes (never touched, or recorded and not
blocked) without `decisions.decide`. Pinned byte for byte to the readable rules
(`decisions.decide`) by tests/unit/consent/test_hot_path_golden.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from services.consent.decisions import (
    BASIS_VALUES,
    PUBLISHED_BASIS,
    Decision,
    decide,
    needs_reconsent,
)
from services.consent.document import UTC_ISO_MEMO, utc_iso
from services.consent.state import (
    DEFAULT,
    EXPIRED,
    GRANTED,
    WITHDRAWN,
    PurposeRecord,
    ScopeRecord,
    SubjectState,
)
from shared.catalogue import Basis, PurposeCatalogue, PurposeRule
from shared.contract.events import ConsentStateData

_CONTRACT = Basis.CONTRACT
_LEGAL = Basis.LEGAL_OBLIGATION


def state_data(state: SubjectState, catalogue: PurposeCatalogue, now: datetime) -> ConsentStateData:
    """The full state of a subject as `consent.state.v1` data (every catalogue purpose)."""
    return ConsentStateData.model_validate(state_json(state, catalogue, now))


def state_json(state: SubjectState, catalogue: PurposeCatalogue, now: datetime) -> dict[str, Any]:
    """`consent.state.v1` data as plain JSON values (the hot path: no model building)."""
    restrictions = _active(state.restrictions)
    objections = _active(state.objections)
    scoped = bool(restrictions or objections)
    records = state.purposes
    defaults = _DEFAULT_ITEMS
    purposes: dict[str, Any] = {}
    for name, rule in catalogue.purposes.items():
        record = records.get(name)
        if record is None and not scoped:  # the common case: a purpose never touched
            found = defaults.get(id(rule))
            if found is not None and found[0] is rule:  # `_default_item(rule)`, inline
                purposes[name] = found[1].copy()
            else:
                purposes[name] = _default_item(rule)
        elif scoped or record is None or rule.basis is _CONTRACT or rule.basis is _LEGAL:
            purposes[name] = _decision_item(decide(state, name, rule, now))
        else:
            purposes[name] = _consent_item(record, rule, now)
    return {
        "version": max(state.version, 1),
        "purposes": purposes,
        "restrictions": restrictions,
        "objections": objections,
        "gpc": state.gpc_since is not None,
    }


def _active(scopes: Mapping[str, ScopeRecord]) -> list[str]:
    return sorted(t for t, r in scopes.items() if r.active) if scopes else []


def _decision_item(d: Decision) -> dict[str, Any]:
    item: dict[str, Any] = {
        "state": d.state,
        "allowed": d.allowed,
        "basis": PUBLISHED_BASIS[d.basis],
        "reconsent_required": d.reconsent_required,
    }
    if d.since is not None:
        item["since"] = utc_iso(d.since)
    if d.expires_at is not None:
        item["expires_at"] = utc_iso(d.expires_at)
    if d.restricted:  # optional fields of 1.1.0: absent unless a restriction covers the purpose
        item["restricted"] = True
        if d.continues_under:
            item["continues_under"] = list(d.continues_under)
    return item


def _consent_item(record: PurposeRecord, rule: PurposeRule, now: datetime) -> dict[str, Any]:
    """`_decision_item(decide(...))` of a recorded purpose without restrictions or objections
    (so nothing blocks it) and not of a contract basis: `decisions._consent_decision`, branch by
    branch, straight to the item."""
    basis = BASIS_VALUES[rule.basis]
    state = record.state
    if state == DEFAULT:
        return {
            "state": DEFAULT,
            "allowed": rule.default,
            "basis": basis,
            "reconsent_required": False,
        }
    expires_at = record.expires_at
    if state == EXPIRED or (state == GRANTED and expires_at is not None and expires_at <= now):
        item = {"state": EXPIRED, "allowed": False, "basis": basis, "reconsent_required": False}
        if expires_at is not None:
            item["since"] = item["expires_at"] = UTC_ISO_MEMO.get(expires_at) or utc_iso(expires_at)
        return item
    since = record.since
    if state == WITHDRAWN:
        item = {"state": WITHDRAWN, "allowed": False, "basis": basis, "reconsent_required": False}
        if since is not None:
            item["since"] = UTC_ISO_MEMO.get(since) or utc_iso(since)
        return item
    reconsent = rule.reconsent_from is not None and needs_reconsent(rule, record.policy_version)
    item = {
        "state": GRANTED,
        "allowed": not reconsent,
        "basis": basis,
        "reconsent_required": reconsent,
    }
    if since is not None:
        item["since"] = UTC_ISO_MEMO.get(since) or utc_iso(since)
    if expires_at is not None:
        item["expires_at"] = UTC_ISO_MEMO.get(expires_at) or utc_iso(expires_at)
    return item


_DEFAULT_ITEMS: dict[int, tuple[PurposeRule, dict[str, Any]]] = {}


def _default_item(rule: PurposeRule) -> dict[str, Any]:
    """A fresh copy of the state item of a purpose the subject never touched (built once)."""
    found = _DEFAULT_ITEMS.get(id(rule))
    if found is None or found[0] is not rule:
        item = {
            "state": DEFAULT,
            "allowed": rule.default or rule.necessary,
            "basis": PUBLISHED_BASIS[rule.basis],
            "reconsent_required": False,
        }
        found = _DEFAULT_ITEMS[id(rule)] = (rule, item)
    return found[1].copy()
