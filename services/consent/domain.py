"""Consent decisions and the ledger's hash chain, pure: state and event in, state and changes out.

State per subject: for each purpose the current state (`granted`, `withdrawn`, `expired`; absent
means the catalogue default) with the time of the event that set it, restrictions and objections
per purpose or category, and the time of the first GPC signal. An event older than the one that
set the current value is recorded but changes nothing ("superseded"); equal times let the later
arrival win, so in-order events at the same instant apply in partition order.

GPC: a signal withdraws every `gpc_applies` purpose and is remembered (`gpc_since`, the earliest
signal): afterwards implied grants (sign-up ticks included) are refused, an explicit grant
re-grants, and a repeated signal does not undo an explicit grant given after the first one. A
signal arriving late also undoes an implied grant later than itself (refused in time order).
Known limit: the projection keeps only the latest value per purpose, so a late signal cannot
revive an explicit grant that an earlier-arriving, later signal already replaced.

Ledger entries follow ISO/IEC TS 27560 and the Kantara consent receipt where a field fits:

| ledger field        | 27560 / Kantara                                   |
|---------------------|---------------------------------------------------|
| principal           | PII principal id (a keyed hash of the subject id) |
| subject_id          | PII principal id in clear; erased at erasure      |
| event_id            | consent receipt id (`consentReceiptID`)           |
| target              | purpose (or the restricted category)              |
| new_state/old_state | consent status (given, withdrawn, expired, ...)   |
| consent_type        | `consentType` (explicit, implied)                 |
| collection_method   | `collectionMethod` (web_form, api, cmp, ...)      |
| policy_version      | privacy notice / policy version                   |
| notice_id           | notice identifier                                 |
| jurisdiction        | `jurisdiction`                                    |
| occurred_at         | `consentTimestamp` (when it happened at source)   |
| received_at         | record time (when this service recorded it)       |
| expires_at          | validity end (`termination`)                      |
| evidence            | collection evidence (personal: ip hash, UA, TCF)  |

Each entry's hash covers its non-personal fields, the previous entry's hash and a salted digest
of the personal ones (`subject_id`, `evidence`); erasure deletes those and the subject's salt
and the chain still verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from shared.catalogue import Basis, PurposeCatalogue, PurposeRule
from shared.contract.events import (
    AccountSignedUp,
    ConsentGranted,
    ConsentSource,
    ConsentStateData,
    ConsentType,
    ConsentWithdrawn,
    GpcSignal,
    ProcessingObjected,
    ProcessingRestricted,
    RestrictionLifted,
)

GRANTED, WITHDRAWN, EXPIRED, DEFAULT = "granted", "withdrawn", "expired", "default"
ACTIVE, LIFTED = "active", "lifted"
CONSENT, RESTRICTION, OBJECTION, GPC = "consent", "restriction", "objection", "gpc"
SUPERSEDED = "superseded: an event with a later time set the current value"
GPC_BLOCKS_IMPLIED = "gpc: after a GPC signal only an explicit grant re-grants"
EXPLICIT_STANDS = "gpc: an explicit grant given after the first signal stands"
EXPIRED_EVENT = "consent.expired"
GENESIS = "0" * 64
_ZERO = timedelta(0)
_CONTRACT = Basis.CONTRACT
_BASIS = {b: b.value for b in Basis}  # enum `.value` is a slow property on the hot path
_ENUM_VALUES: dict[object, str] = {m: m.value for m in (*ConsentSource, *ConsentType)}
CONTRACT_ALLOWED = "contract basis: always allowed"

ChangeEvent = (
    AccountSignedUp
    | ConsentGranted
    | ConsentWithdrawn
    | GpcSignal
    | ProcessingRestricted
    | ProcessingObjected
    | RestrictionLifted
)

_CONSENT_EVENTS = (ConsentGranted, ConsentWithdrawn)  # a tuple: isinstance is faster than with |

CHANGE_EVENTS = (
    AccountSignedUp,
    ConsentGranted,
    ConsentWithdrawn,
    GpcSignal,
    ProcessingRestricted,
    ProcessingObjected,
    RestrictionLifted,
)


HOT_PATH_RECORDS = ("PurposeRecord", "Decision", "Facts", "LedgerEntry")
"""Records built several times per event: plain slots dataclasses, not frozen (a frozen
dataclass's __init__ makes one object.__setattr__ call per field, the top own-time entry of the
ingest profile). Nothing assigns to them after creation; `dataclasses.replace` makes copies.
SubjectState, Outcome and Change stay frozen: the hot path builds the first two with their slots'
own setters (`_state`, `_outcome`) and shares equal Changes (`_change`)."""


class ConsentRuleViolation(ValueError):
    """An event the contract forbids (dead-lettered with this message, never applied)."""


class UnknownPurpose(ConsentRuleViolation):
    """The catalogue does not know the purpose."""


class ContractPurposeNotWithdrawable(ConsentRuleViolation):
    """A purpose with a contract basis cannot be withdrawn."""


@dataclass(slots=True)  # treated as immutable; see HOT_PATH_RECORDS
class PurposeRecord:
    state: str
    since: datetime
    event_id: str
    consent_type: str | None = None
    source: str | None = None
    policy_version: str | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ScopeRecord:
    active: bool
    since: datetime
    event_id: str


@dataclass(frozen=True, slots=True)
class SubjectState:
    subject: str
    version: int = 0
    purposes: Mapping[str, PurposeRecord] = field(default_factory=dict)
    restrictions: Mapping[str, ScopeRecord] = field(default_factory=dict)
    objections: Mapping[str, ScopeRecord] = field(default_factory=dict)
    gpc_since: datetime | None = None

    def next_expiry(self) -> datetime | None:
        """The earliest `expires_at` of a grant still marked granted (the expiry loop's index)."""
        times = [
            r.expires_at for r in self.purposes.values() if r.state == GRANTED and r.expires_at
        ]
        return min(times) if times else None


@dataclass(frozen=True, slots=True)
class Change:
    """One line of the ledger before it is chained: what an event did (or did not do)."""

    kind: str
    target: str
    old_state: str
    new_state: str
    applied: bool
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    state: SubjectState
    changes: list[Change]

    @property
    def changed(self) -> bool:
        for change in self.changes:  # noqa: SIM110  # a loop: any() over a generator costs more
            if change.applied:
                return True
        return False


# --- applying events ----------------------------------------------------------------------


def apply_event(state: SubjectState, event: ChangeEvent, catalogue: PurposeCatalogue) -> Outcome:
    """The new state after `event` and the ledger changes; raises ConsentRuleViolation."""
    if isinstance(event, _CONSENT_EVENTS):  # the hot path: built once, version included
        return _consent_change(state, event, catalogue, isinstance(event, ConsentGranted))
    if isinstance(event, AccountSignedUp):
        outcome = _signed_up(state, event, catalogue)
    elif isinstance(event, GpcSignal):
        outcome = _gpc(state, event, catalogue)
    elif isinstance(event, RestrictionLifted):
        outcome = _lift(state, event)
    else:
        outcome = _scope(state, event, catalogue)
    if outcome.changed:
        new = outcome.state
        bumped = _state(
            new.subject, state.version + 1, new.purposes, new.restrictions, new.objections,
            new.gpc_since,
        )  # fmt: skip
        return _outcome(bumped, outcome.changes)
    return _outcome(state, outcome.changes)


# Frozen records built on the hot path without the frozen dataclass __init__ (one
# object.__setattr__ call per field): the slots' own setters, half the cost. Same objects.
_new = object.__new__
_SET_SUBJECT, _SET_VERSION, _SET_PURPOSES, _SET_RESTRICTIONS, _SET_OBJECTIONS, _SET_GPC = (
    SubjectState.__dict__[name].__set__
    for name in ("subject", "version", "purposes", "restrictions", "objections", "gpc_since")
)
_SET_STATE, _SET_CHANGES = (Outcome.__dict__[name].__set__ for name in ("state", "changes"))


def _state(
    subject: str,
    version: int,
    purposes: Mapping[str, PurposeRecord],
    restrictions: Mapping[str, ScopeRecord],
    objections: Mapping[str, ScopeRecord],
    gpc_since: datetime | None,
) -> SubjectState:
    """`SubjectState(...)`, positional, built field by field (see above)."""
    state: SubjectState = _new(SubjectState)
    _SET_SUBJECT(state, subject)
    _SET_VERSION(state, version)
    _SET_PURPOSES(state, purposes)
    _SET_RESTRICTIONS(state, restrictions)
    _SET_OBJECTIONS(state, objections)
    _SET_GPC(state, gpc_since)
    return state


def _outcome(state: SubjectState, changes: list[Change]) -> Outcome:
    """`Outcome(state, changes)` built field by field (see above)."""
    outcome: Outcome = _new(Outcome)
    _SET_STATE(outcome, state)
    _SET_CHANGES(outcome, changes)
    return outcome


_CHANGES: dict[tuple[str, str, str, str, bool, str | None], Change] = {}
_CHANGES_SIZE = 4096


def _change(
    kind: str, target: str, old: str, new: str, applied: bool, note: str | None = None
) -> Change:
    """`Change(...)`, shared: a Change is frozen and the consent path makes few distinct ones
    (purposes of the catalogue x states x notes), so equal ones are built once."""
    key = (kind, target, old, new, applied, note)
    found = _CHANGES.get(key)
    if found is None:
        if len(_CHANGES) >= _CHANGES_SIZE:
            _CHANGES.clear()
        found = _CHANGES[key] = Change(kind, target, old, new, applied, note)
    return found


def _rule(catalogue: PurposeCatalogue, purpose: str) -> PurposeRule:
    rule = catalogue.get(purpose)
    if rule is None:
        known = ", ".join(sorted(catalogue.purposes))
        raise UnknownPurpose(f"contract: unknown purpose {purpose!r} (known: {known})")
    return rule


def _consent_change(
    state: SubjectState,
    event: ConsentGranted | ConsentWithdrawn,
    catalogue: PurposeCatalogue,
    granting: bool,
) -> Outcome:
    """A grant or withdrawal (the ingest hot path): `_set_purpose` and the version bump of
    `apply_event` in one step, so the state and the outcome are built once."""
    data = event.data
    purpose = data.purpose
    rule = _rule(catalogue, purpose)
    contract = rule.basis is _CONTRACT
    if not granting and contract:  # `not rule.withdrawable`
        raise ContractPurposeNotWithdrawable(
            f"contract: {purpose} has a contract basis and cannot be withdrawn"
        )
    new = GRANTED if granting else WITHDRAWN
    current = state.purposes.get(purpose)
    old = DEFAULT if current is None else current.state
    when = event.time
    if contract:
        return _outcome(state, [_change(CONSENT, purpose, old, new, False, CONTRACT_ALLOWED)])
    if current is not None and when < current.since:
        return _outcome(state, [_change(CONSENT, purpose, old, new, False, SUPERSEDED)])
    consent_type = _ENUM_VALUES.get(data.consent_type) or data.consent_type.value
    if (
        granting
        and consent_type != "explicit"
        and rule.gpc_applies
        and state.gpc_since is not None
        and when >= state.gpc_since
    ):
        return _outcome(state, [_change(CONSENT, purpose, old, new, False, GPC_BLOCKS_IMPLIED)])
    record = PurposeRecord(
        new,
        when,
        event.id,
        consent_type,
        _ENUM_VALUES.get(data.source) or data.source.value,
        data.policy_version,
        data.expires_at if granting else None,
    )
    purposes = {**state.purposes, purpose: record}
    changed = _state(
        state.subject, state.version + 1, purposes, state.restrictions, state.objections,
        state.gpc_since,
    )  # fmt: skip
    return _outcome(changed, [_change(CONSENT, purpose, old, new, True)])


def _signed_up(state: SubjectState, event: AccountSignedUp, catalogue: PurposeCatalogue) -> Outcome:
    changes: list[Change] = []
    for consent in event.data.consents:
        rule = catalogue.get(consent.purpose)
        if rule is None or rule.basis is _CONTRACT:
            target_state = GRANTED if consent.granted else DEFAULT
            note = "unknown purpose" if rule is None else "contract basis: always allowed"
            changes.append(Change(CONSENT, consent.purpose, DEFAULT, target_state, False, note))
            continue
        # An unticked box at sign-up leaves the purpose at its default, but as of this time, so
        # an older grant arriving late cannot override it.
        record = PurposeRecord(
            GRANTED if consent.granted else DEFAULT,
            event.time,
            event.id,
            "implied",
            "sign_up",
            event.data.policy_version,
        )
        outcome = _set_purpose(state, consent.purpose, rule, record)
        state = outcome.state
        changes.extend(outcome.changes)
    return Outcome(state, changes)


def _set_purpose(
    state: SubjectState, purpose: str, rule: PurposeRule, record: PurposeRecord
) -> Outcome:
    current = state.purposes.get(purpose)
    old = current.state if current else DEFAULT
    if rule.basis is _CONTRACT:
        note = CONTRACT_ALLOWED
        return Outcome(state, [Change(CONSENT, purpose, old, record.state, False, note)])
    if current is not None and record.since < current.since:
        return Outcome(state, [Change(CONSENT, purpose, old, record.state, False, SUPERSEDED)])
    blocked = (
        record.state == GRANTED
        and record.consent_type != "explicit"
        and rule.gpc_applies
        and state.gpc_since is not None
        and record.since >= state.gpc_since
    )
    if blocked:
        return Outcome(
            state, [Change(CONSENT, purpose, old, record.state, False, GPC_BLOCKS_IMPLIED)]
        )
    purposes = {**state.purposes, purpose: record}
    changed = SubjectState(
        state.subject, state.version, purposes, state.restrictions, state.objections,
        state.gpc_since,
    )  # fmt: skip
    return Outcome(changed, [Change(CONSENT, purpose, old, record.state, True)])


def _gpc(state: SubjectState, event: GpcSignal, catalogue: PurposeCatalogue) -> Outcome:
    when = event.time
    first = state.gpc_since is None or when < state.gpc_since
    changes = [Change(GPC, "*", "on" if state.gpc_since else "off", "on", first)]
    purposes = dict(state.purposes)
    withdrawn = PurposeRecord(WITHDRAWN, when, event.id, "gpc", event.data.source.value)
    for name in catalogue.gpc_purposes():
        current = purposes.get(name)
        old = current.state if current else DEFAULT
        if _explicit_after_gpc(current, state.gpc_since):
            # GPC is remembered; a repeated signal does not undo an explicit opt-in given after it.
            changes.append(Change(CONSENT, name, old, WITHDRAWN, False, EXPLICIT_STANDS))
        elif current is None or when >= current.since:
            purposes[name] = withdrawn
            changes.append(Change(CONSENT, name, old, WITHDRAWN, True, "gpc"))
        elif current.state == GRANTED and current.consent_type != "explicit":
            # An implied grant later than the signal would have been refused in time order.
            purposes[name] = withdrawn
            changes.append(Change(CONSENT, name, old, WITHDRAWN, True, GPC_BLOCKS_IMPLIED))
        else:
            changes.append(Change(CONSENT, name, old, WITHDRAWN, False, SUPERSEDED))
    since = when if first else state.gpc_since
    return Outcome(replace(state, purposes=purposes, gpc_since=since), changes)


def _explicit_after_gpc(current: PurposeRecord | None, gpc_since: datetime | None) -> bool:
    return (
        current is not None
        and gpc_since is not None
        and current.state == GRANTED
        and current.consent_type == "explicit"
        and current.since > gpc_since
    )


def _targets(event: ProcessingRestricted | ProcessingObjected | RestrictionLifted) -> list[str]:
    return list(dict.fromkeys([*event.data.purposes, *event.data.categories]))


def _scope(
    state: SubjectState,
    event: ProcessingRestricted | ProcessingObjected,
    catalogue: PurposeCatalogue,
) -> Outcome:
    for purpose in event.data.purposes:
        _rule(catalogue, purpose)
    kind = RESTRICTION if isinstance(event, ProcessingRestricted) else OBJECTION
    scopes = dict(state.restrictions if kind == RESTRICTION else state.objections)
    changes = [
        _set_scope(scopes, kind, t, ScopeRecord(True, event.time, event.id))
        for t in _targets(event)
    ]
    if kind == RESTRICTION:
        return Outcome(replace(state, restrictions=scopes), changes)
    return Outcome(replace(state, objections=scopes), changes)


def _lift(state: SubjectState, event: RestrictionLifted) -> Outcome:
    lifted = ScopeRecord(False, event.time, event.id)
    restrictions, objections = dict(state.restrictions), dict(state.objections)
    changes = []
    for target in _targets(event):
        changes.append(_set_scope(restrictions, RESTRICTION, target, lifted))
        changes.append(_set_scope(objections, OBJECTION, target, lifted))
    return Outcome(replace(state, restrictions=restrictions, objections=objections), changes)


def _set_scope(
    scopes: dict[str, ScopeRecord], kind: str, target: str, record: ScopeRecord
) -> Change:
    current = scopes.get(target)
    old = LIFTED if current is None or not current.active else ACTIVE
    new = ACTIVE if record.active else LIFTED
    if current is not None and record.since < current.since:
        return Change(kind, target, old, new, False, SUPERSEDED)
    scopes[target] = record
    return Change(kind, target, old, new, True)


def expire(state: SubjectState, now: datetime) -> Outcome:
    """Mark grants whose `expires_at` has passed as expired (the expiry loop's decision)."""
    purposes = dict(state.purposes)
    changes = []
    for name, record in state.purposes.items():
        if record.state == GRANTED and record.expires_at is not None and record.expires_at <= now:
            purposes[name] = replace(record, state=EXPIRED)
            changes.append(Change(CONSENT, name, GRANTED, EXPIRED, True, "expired"))
    if not changes:
        return Outcome(state, [])
    return Outcome(replace(state, purposes=purposes, version=state.version + 1), changes)


# --- decisions ----------------------------------------------------------------------------


@dataclass(slots=True)  # treated as immutable; see HOT_PATH_RECORDS
class Decision:
    allowed: bool
    state: str
    basis: str
    reason: str
    since: datetime | None
    reconsent_required: bool = False
    expires_at: datetime | None = None


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key for policy versions: numeric parts compare as numbers (`2026-10` < `2026-11`)."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.split(r"[.\-_/ ]+", version.strip())
        if part
    )


def needs_reconsent(rule: PurposeRule, policy_version: str | None) -> bool:
    """A grant under a policy version before the purpose's `reconsent_from` must be renewed."""
    if rule.reconsent_from is None:
        return False
    if policy_version is None:
        return True
    return version_key(policy_version) < version_key(rule.reconsent_from)


def decide(state: SubjectState, purpose: str, rule: PurposeRule, now: datetime) -> Decision:
    """May we process this subject for `purpose` at `now`? (restrictions and objections applied)"""
    basis = _BASIS[rule.basis]
    record = state.purposes.get(purpose)
    if rule.basis is _CONTRACT:
        return Decision(True, DEFAULT, basis, "contract necessity", None)
    decision = _consent_decision(record, rule, basis, now)
    blocked = _blocked(state, purpose, rule) if decision.allowed else None
    if blocked:
        return replace(decision, allowed=False, reason=blocked)
    return decision


def _consent_decision(
    record: PurposeRecord | None, rule: PurposeRule, basis: str, now: datetime
) -> Decision:
    if record is None or record.state == DEFAULT:
        return Decision(rule.default, DEFAULT, basis, "default", None)
    lapsed = record.expires_at is not None and record.expires_at <= now
    if record.state == EXPIRED or (record.state == GRANTED and lapsed):
        return Decision(
            False, EXPIRED, basis, "expired", record.expires_at, False, record.expires_at
        )
    if record.state == WITHDRAWN:
        return Decision(False, WITHDRAWN, basis, "withdrawn", record.since)
    if needs_reconsent(rule, record.policy_version):
        reason = f"reconsent_required: granted under policy {record.policy_version}"
        return Decision(False, GRANTED, basis, reason, record.since, True, record.expires_at)
    return Decision(True, GRANTED, basis, "granted", record.since, False, record.expires_at)


def _blocked(state: SubjectState, purpose: str, rule: PurposeRule) -> str | None:
    for target in (purpose, *rule.categories):
        objection = state.objections.get(target)
        if objection is not None and objection.active:
            return f"objected: {target}"
    for target in (purpose, *rule.categories):
        restriction = state.restrictions.get(target)
        if restriction is not None and restriction.active:
            return f"restricted: {target}"
    return None


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
        elif scoped or record is None or rule.basis is _CONTRACT:  # scoped or contract
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
        "basis": d.basis,
        "reconsent_required": d.reconsent_required,
    }
    if d.since is not None:
        item["since"] = _ts(d.since)
    if d.expires_at is not None:
        item["expires_at"] = _ts(d.expires_at)
    return item


def _consent_item(record: PurposeRecord, rule: PurposeRule, now: datetime) -> dict[str, Any]:
    """`_decision_item(decide(...))` of a recorded purpose without restrictions or objections
    (so nothing blocks it) and not of a contract basis: `_consent_decision`, branch by branch,
    straight to the item."""
    basis = _BASIS[rule.basis]
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
            item["since"] = item["expires_at"] = _TS_MEMO.get(expires_at) or _ts(expires_at)
        return item
    since = record.since
    if state == WITHDRAWN:
        item = {"state": WITHDRAWN, "allowed": False, "basis": basis, "reconsent_required": False}
        if since is not None:
            item["since"] = _TS_MEMO.get(since) or _ts(since)
        return item
    reconsent = rule.reconsent_from is not None and needs_reconsent(rule, record.policy_version)
    item = {
        "state": GRANTED,
        "allowed": not reconsent,
        "basis": basis,
        "reconsent_required": reconsent,
    }
    if since is not None:
        item["since"] = _TS_MEMO.get(since) or _ts(since)
    if expires_at is not None:
        item["expires_at"] = _TS_MEMO.get(expires_at) or _ts(expires_at)
    return item


_DEFAULT_ITEMS: dict[int, tuple[PurposeRule, dict[str, Any]]] = {}


def _default_item(rule: PurposeRule) -> dict[str, Any]:
    """A fresh copy of the state item of a purpose the subject never touched (built once)."""
    found = _DEFAULT_ITEMS.get(id(rule))
    if found is None or found[0] is not rule:
        item = {
            "state": DEFAULT,
            "allowed": rule.default or rule.basis is _CONTRACT,
            "basis": _BASIS[rule.basis],
            "reconsent_required": False,
        }
        found = _DEFAULT_ITEMS[id(rule)] = (rule, item)
    return found[1].copy()


# --- the projection document --------------------------------------------------------------


_TS_MEMO: dict[datetime, str] = {}
_TS_MEMO_SIZE = 20_000


def _ts(value: datetime | None) -> str | None:
    """UTC ISO 8601. Memoised: a state's times are written again at every change of it (the
    document, the published state, the ledger); equal instants give the same UTC text."""
    if value is None:
        return None
    text = _TS_MEMO.get(value)
    if text is None:
        if value.tzinfo is UTC or value.utcoffset() == _ZERO:  # UTC already: same text, cheaper
            text = value.isoformat()
        else:
            text = value.astimezone(UTC).isoformat()
        if len(_TS_MEMO) >= _TS_MEMO_SIZE:
            _TS_MEMO.clear()
        _TS_MEMO[value] = text
    return text


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def to_doc(state: SubjectState) -> dict[str, Any]:
    """The JSON document stored per subject (the projection row)."""
    memo = _TS_MEMO
    records = state.purposes
    purposes: dict[str, Any] = {}
    for name in sorted(records):
        r = records[name]
        since, expires_at = r.since, r.expires_at
        purposes[name] = {
            "state": r.state,
            "since": memo.get(since) or _ts(since),
            "event_id": r.event_id,
            "consent_type": r.consent_type,
            "source": r.source,
            "policy_version": r.policy_version,
            "expires_at": None if expires_at is None else memo.get(expires_at) or _ts(expires_at),
        }
    return {
        "purposes": purposes,
        "restrictions": _scopes_doc(state.restrictions) if state.restrictions else {},
        "objections": _scopes_doc(state.objections) if state.objections else {},
        "gpc_since": _ts(state.gpc_since),
    }


def _scopes_doc(scopes: Mapping[str, ScopeRecord]) -> dict[str, Any]:
    return {
        t: {"active": r.active, "since": _ts(r.since), "event_id": r.event_id}
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


# --- the ledger ---------------------------------------------------------------------------


@dataclass(slots=True)  # treated as immutable; see HOT_PATH_RECORDS
class Facts:
    """What an event says about itself, copied into each of its ledger entries."""

    event_id: str
    event_source: str
    event_type: str
    occurred_at: datetime
    collection_method: str | None = None
    consent_type: str | None = None
    policy_version: str | None = None
    notice_id: str | None = None
    jurisdiction: str | None = None
    expires_at: datetime | None = None
    evidence: dict[str, Any] | None = None


def facts(event: ChangeEvent) -> Facts:
    """The ledger facts of a contract event."""
    if isinstance(event, _CONSENT_EVENTS):
        d = event.data
        evidence = d.evidence
        return Facts(
            event.id, event.source, event.type, event.time,
            _ENUM_VALUES.get(d.source) or d.source.value,
            _ENUM_VALUES.get(d.consent_type) or d.consent_type.value,
            d.policy_version, d.notice_id, d.jurisdiction, d.expires_at,
            None if evidence is None else _evidence(evidence),
        )  # fmt: skip
    if isinstance(event, AccountSignedUp):
        return Facts(
            event.id, event.source, event.type, event.time, "sign_up", "implied",
            event.data.policy_version, None, event.data.jurisdiction,
        )  # fmt: skip
    if isinstance(event, GpcSignal):
        return Facts(
            event.id, event.source, event.type, event.time, event.data.source.value, "gpc",
            evidence=_evidence(event.data.evidence),
        )  # fmt: skip
    return Facts(event.id, event.source, event.type, event.time)


def _evidence(evidence: Any) -> dict[str, Any] | None:
    if evidence is None:
        return None
    dumped: dict[str, Any] = evidence.model_dump(mode="json", exclude_none=True)
    return dumped or None


@dataclass(slots=True)  # treated as immutable; see HOT_PATH_RECORDS
class LedgerEntry:
    principal: str
    seq: int
    event_id: str
    event_source: str
    event_type: str
    kind: str
    target: str
    old_state: str
    new_state: str
    applied: bool
    note: str | None
    collection_method: str | None
    consent_type: str | None
    policy_version: str | None
    notice_id: str | None
    jurisdiction: str | None
    expires_at: datetime | None
    occurred_at: datetime
    received_at: datetime
    personal_digest: str | None
    prev_hash: str
    hash: str
    subject_id: str | None = None
    evidence: dict[str, Any] | None = None


PERSONAL_FIELDS = ("subject_id", "evidence")
UNHASHED_FIELDS = (*PERSONAL_FIELDS, "hash")
HASHED_FIELDS = tuple(f for f in LedgerEntry.__slots__ if f not in UNHASHED_FIELDS)


def pseudonym(key: bytes, subject: str) -> str:
    """The subject's keyed hash: how the ledger and the suppression list name a person."""
    return hmac.new(key, subject.encode(), hashlib.sha256).hexdigest()


def _canonical(value: Any) -> bytes:
    """Compact JSON, keys sorted, datetimes as UTC ISO 8601: the bytes that are hashed.

    The bytes are those of `json.dumps(..., sort_keys=True, separators=(",", ":"))` (ASCII,
    escapes included). A flat array of strings, integers, booleans, nulls and datetimes (every
    chain entry) is written by orjson instead when the result is plain ASCII: there the two
    agree byte for byte (it would not escape DEL or non-ASCII, which take the slow path).
    """
    if type(value) is list or type(value) is tuple:
        if all(map(_PLAIN.__contains__, map(type, value))):  # no datetimes nor numbers
            fast = _plain_json(value)
            if fast is not None:
                return fast
        else:
            items: list[Any] = []
            for item in value:
                kind = type(item)
                if kind is str or item is None or kind is bool or (kind is int and _fits_i64(item)):
                    items.append(item)
                elif isinstance(item, datetime):
                    items.append(_ts(item))
                else:
                    break
            else:
                fast = _plain_json(items)
                if fast is not None:
                    return fast
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_ts).encode()


_PLAIN = frozenset((str, bool, type(None)))
_dumps = orjson.dumps


def _plain_json(items: Sequence[Any]) -> bytes | None:
    """orjson's compact array of str, bool, None and 64-bit int items when it is plain ASCII
    without DEL (then it is json.dumps' byte for byte), else None."""
    try:
        fast = _dumps(items)
    except orjson.JSONEncodeError:  # e.g. a lone surrogate, which json.dumps escapes
        return None
    if fast.isascii() and b"\x7f" not in fast:
        return fast
    return None


def _fits_i64(value: int) -> bool:
    return -(2**63) <= value < 2**63


def personal_digest(salt: bytes, subject_id: str | None, evidence: Mapping[str, Any] | None) -> str:
    """Salted digest of an entry's personal fields (what the hash covers in their place)."""
    if evidence is None and type(subject_id) is str:  # `_canonical` of the common case
        fast = _plain_json((subject_id, None))
        if fast is not None:
            return _sha256(salt + fast).hexdigest()
    return _sha256(salt + _canonical([subject_id, evidence])).hexdigest()


def entry_hash(entry: LedgerEntry) -> str:
    """SHA-256 over the entry's non-personal fields (previous hash and personal digest included).

    What is hashed is the JSON array of the HASHED_FIELDS values, in that order.
    """
    return _hash([getattr(entry, f) for f in HASHED_FIELDS])


def _hash(values: Sequence[Any]) -> str:
    return hashlib.sha256(_canonical(values)).hexdigest()


@dataclass(frozen=True, slots=True)
class Head:
    seq: int = 0
    hash: str = GENESIS


def chain(
    head: Head,
    principal: str,
    subject: str,
    salt: bytes,
    items: Iterable[tuple[Facts, Change]],
    received_at: datetime,
) -> tuple[list[LedgerEntry], Head]:
    """Ledger entries for `items`, each chained to the one before; returns them and the new head."""
    entries = []
    seq, prev = head.seq, head.hash
    anonymous: str | None = None  # the personal digest without evidence, the same for every item
    for f, change in items:
        evidence = f.evidence
        if evidence is not None:
            digest = personal_digest(salt, subject, evidence)
        elif anonymous is None:
            digest = anonymous = personal_digest(salt, subject, None)
        else:
            digest = anonymous
        seq += 1
        values = (
            principal, seq, f.event_id, f.event_source, f.event_type,
            change.kind, change.target, change.old_state, change.new_state, change.applied,
            change.note, f.collection_method, f.consent_type, f.policy_version, f.notice_id,
            f.jurisdiction, f.expires_at, f.occurred_at, received_at, digest, prev,
        )  # fmt: skip
        prev = _sha256(_entry_canonical(values)).hexdigest()
        entries.append(LedgerEntry(*values, prev, subject, evidence))
    if not entries:
        return entries, head
    return entries, Head(seq, prev)


_sha256 = hashlib.sha256
_EXPIRES_AT, _OCCURRED_AT, _RECEIVED_AT = 16, 17, 18  # the datetimes of a chain entry's values


def _entry_canonical(values: tuple[Any, ...]) -> bytes:
    """`_canonical(values)` of a chain entry, with fewer type tests: its datetimes and its
    number are where `chain` puts them and the rest must be str, bool or None (else, or when
    the datetimes are not plain datetimes, `_canonical` itself)."""
    expires_at, occurred_at, received_at = values[_EXPIRES_AT : _RECEIVED_AT + 1]
    seq = values[1]
    if (
        type(occurred_at) is datetime
        and type(received_at) is datetime
        and (expires_at is None or type(expires_at) is datetime)
        and type(seq) is int
        and 0 <= seq < 2**63
    ):
        items = list(values)
        items[1] = items[_EXPIRES_AT] = items[_OCCURRED_AT] = items[_RECEIVED_AT] = None
        if all(map(_PLAIN.__contains__, map(type, items))):
            items[1] = seq
            items[_EXPIRES_AT] = None if expires_at is None else _ts(expires_at)
            items[_OCCURRED_AT] = _TS_MEMO.get(occurred_at) or _ts(occurred_at)
            items[_RECEIVED_AT] = _TS_MEMO.get(received_at) or _ts(received_at)
            fast = _plain_json(items)
            if fast is not None:
                return fast
    return _canonical(values)


@dataclass(frozen=True, slots=True)
class ChainCheck:
    ok: bool
    checked: int
    broken_at: int | None = None
    reason: str | None = None


def verify_chain(
    entries: Sequence[LedgerEntry], head: Head | None = None, salt: bytes | None = None
) -> ChainCheck:
    """Check a subject's entries (in seq order): numbering, links, hashes; the head if given.

    With the subject's salt, the personal fields still present are checked against their digest.
    """
    previous = Head()
    for entry in entries:
        problem = _entry_problem(entry, previous, salt)
        if problem:
            return ChainCheck(False, previous.seq, previous.seq + 1, problem)
        previous = Head(entry.seq, entry.hash)
    if head is not None and head != previous:
        reason = f"chain ends at entry {previous.seq} but the head records entry {head.seq}"
        return ChainCheck(False, previous.seq, previous.seq + 1, reason)
    return ChainCheck(True, previous.seq)


def _entry_problem(entry: LedgerEntry, previous: Head, salt: bytes | None) -> str | None:
    if entry.seq != previous.seq + 1:
        return f"entry {previous.seq + 1} is missing (found {entry.seq})"
    if entry.prev_hash != previous.hash:
        return f"entry {entry.seq} does not link to entry {previous.seq}"
    if entry_hash(entry) != entry.hash:
        return f"entry {entry.seq} was changed after it was written"
    erased = entry.subject_id is None and entry.evidence is None
    if (
        salt is not None
        and not erased
        and personal_digest(salt, entry.subject_id, entry.evidence) != entry.personal_digest
    ):
        return f"entry {entry.seq}: personal fields were changed after they were written"
    return None


def entry_record(entry: LedgerEntry) -> dict[str, Any]:
    """An entry as a JSON-ready record (history API and export)."""
    record = {}
    for name in LedgerEntry.__slots__:
        value = getattr(entry, name)
        record[name] = _ts(value) if isinstance(value, datetime) else value
    return record


# --- point in time ------------------------------------------------------------------------


def state_at(subject: str, entries: Iterable[LedgerEntry], at: datetime) -> SubjectState:
    """What the ledger says the subject's state was at `at` (by the events' own times).

    Superseded entries count: a late event that lost to a newer one still held before it.
    Refused ones (GPC, contract, unknown purpose) never held.
    """
    effective = [e for e in entries if e.occurred_at <= at and (e.applied or e.note == SUPERSEDED)]
    effective.sort(key=lambda e: (e.occurred_at, e.seq))
    purposes: dict[str, PurposeRecord] = {}
    scopes: dict[str, dict[str, ScopeRecord]] = {RESTRICTION: {}, OBJECTION: {}}
    gpc_since: datetime | None = None
    for e in effective:
        if e.kind == CONSENT and e.new_state == EXPIRED:
            current = purposes.get(e.target)
            if current is not None and current.state == GRANTED:
                purposes[e.target] = replace(current, state=EXPIRED)
        elif e.kind == CONSENT:
            purposes[e.target] = PurposeRecord(
                e.new_state, e.occurred_at, e.event_id, e.consent_type,
                e.collection_method, e.policy_version, e.expires_at,
            )  # fmt: skip
        elif e.kind in scopes:
            scopes[e.kind][e.target] = ScopeRecord(e.new_state == ACTIVE, e.occurred_at, e.event_id)
        elif e.kind == GPC:
            gpc_since = e.occurred_at if gpc_since is None else min(gpc_since, e.occurred_at)
    return SubjectState(subject, 0, purposes, scopes[RESTRICTION], scopes[OBJECTION], gpc_since)
