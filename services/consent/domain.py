"""Consent rules, pure: a subject's state and an event in, the new state and its changes out.

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

Decisions are in `decisions`, the ledger in `ledger`, the stored document in `document`, and
the hand-encoded published state in `fastpath`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from services.consent.state import (
    DEFAULT,
    EXPIRED,
    GRANTED,
    WITHDRAWN,
    Change,
    ContractPurposeNotWithdrawable,
    Outcome,
    PurposeRecord,
    ScopeRecord,
    SubjectState,
    TooManyScopes,
    UnknownPurpose,
)
from shared.catalogue import Basis, PurposeCatalogue, PurposeRule
from shared.contract.events import (
    MAX_ITEMS,
    AccountSignedUp,
    ConsentGranted,
    ConsentSource,
    ConsentType,
    ConsentWithdrawn,
    GpcSignal,
    ProcessingObjected,
    ProcessingRestricted,
    RestrictionLifted,
)

ACTIVE, LIFTED = "active", "lifted"
CONSENT, RESTRICTION, OBJECTION, GPC = "consent", "restriction", "objection", "gpc"
SUPERSEDED = "superseded: an event with a later time set the current value"
GPC_BLOCKS_IMPLIED = "gpc: after a GPC signal only an explicit grant re-grants"
EXPLICIT_STANDS = "gpc: an explicit grant given after the first signal stands"
EXPIRED_EVENT = "consent.expired"
_CONTRACT = Basis.CONTRACT
_LEGAL = Basis.LEGAL_OBLIGATION
ENUM_VALUES: dict[object, str] = {m: m.value for m in (*ConsentSource, *ConsentType)}
"""The contract enums' values by member (enum `.value` is a slow property on the hot path)."""
CONTRACT_ALLOWED = "contract basis: always allowed"
LEGAL_ALLOWED = "legal_obligation basis: always allowed"
ALWAYS_ALLOWED = {_CONTRACT: CONTRACT_ALLOWED, _LEGAL: LEGAL_ALLOWED}
"""The note of a consent change a necessary basis (contract, legal obligation) ignores."""

ChangeEvent = (
    AccountSignedUp
    | ConsentGranted
    | ConsentWithdrawn
    | GpcSignal
    | ProcessingRestricted
    | ProcessingObjected
    | RestrictionLifted
)

CONSENT_EVENTS = (ConsentGranted, ConsentWithdrawn)  # a tuple: isinstance is faster than with |

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
"""Records built several times per event (here, in `decisions` and `ledger`): plain slots
dataclasses, not frozen, as a frozen one's __init__ costs one object.__setattr__ call per field.
Nothing assigns to them after creation; `dataclasses.replace` makes copies. SubjectState,
Outcome and Change stay frozen: the hot path builds the first two with their slots' own setters
(`_state`, `_outcome`) and shares equal Changes (`_change`)."""


# --- applying events ----------------------------------------------------------------------


def apply_event(state: SubjectState, event: ChangeEvent, catalogue: PurposeCatalogue) -> Outcome:
    """The new state after `event` and the ledger changes; raises ConsentRuleViolation."""
    if isinstance(event, CONSENT_EVENTS):  # the hot path: built once, version included
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
        raise UnknownPurpose(f"unknown purpose {purpose!r} (known: {known})")
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
    basis = rule.basis
    contract = basis is _CONTRACT or basis is _LEGAL  # `not rule.withdrawable`
    if not granting and contract:
        raise ContractPurposeNotWithdrawable(
            f"{purpose} has a {basis.value} basis and cannot be withdrawn"
        )
    new = GRANTED if granting else WITHDRAWN
    current = state.purposes.get(purpose)
    old = DEFAULT if current is None else current.state
    when = event.time
    if contract:
        return _outcome(state, [_change(CONSENT, purpose, old, new, False, ALWAYS_ALLOWED[basis])])
    if current is not None and when < current.since:
        return _outcome(state, [_change(CONSENT, purpose, old, new, False, SUPERSEDED)])
    consent_type = ENUM_VALUES.get(data.consent_type) or data.consent_type.value
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
        ENUM_VALUES.get(data.source) or data.source.value,
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
        if rule is None or rule.necessary:
            target_state = GRANTED if consent.granted else DEFAULT
            note = "unknown purpose" if rule is None else ALWAYS_ALLOWED[rule.basis]
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
    if rule.necessary:
        note = ALWAYS_ALLOWED[rule.basis]
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
    # Categories are free names: without this, distinct ones could pile up past what the
    # published state may list, and every state after would be refused by its consumers.
    active = sum(1 for record in scopes.values() if record.active)
    if active > MAX_ITEMS:
        raise TooManyScopes(f"{active} active {kind}s, over the {MAX_ITEMS} a state may list")
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
