"""Golden test: the consent hot paths against the straightforward code they replace.

Generated event sequences (every change event kind, equal and out-of-order times, UTC and other
offsets, expiries, GPC, restrictions, a reconsent rule, contract and unknown purposes, personal
text with non-ASCII, DEL and control characters) go through the fast functions and through
the reference below (the plain dataclass / `json.dumps` code); outcomes, facts, the
`consent.state` data, the projection document and the ledger entries and hashes must be equal,
byte for byte where they are written out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import FrozenInstanceError, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bench.workload import ConsentWorkload
from services.consent import decisions, document, domain, fastpath, ledger
from services.consent.domain import ChangeEvent
from services.consent.ledger import Facts, Head, LedgerEntry
from services.consent.state import (
    DEFAULT,
    GRANTED,
    WITHDRAWN,
    Change,
    ConsentRuleViolation,
    ContractPurposeNotWithdrawable,
    Outcome,
    PurposeRecord,
    SubjectState,
    UnknownPurpose,
)
from shared.catalogue import Basis, PurposeCatalogue, PurposeRule, load_purposes
from shared.contract import codec
from shared.contract.events import (
    ANY_EVENT,
    EVENT_TYPES,
    AccountSignedUp,
    AccountSignedUpData,
    ConsentChangeData,
    ConsentGranted,
    ConsentSource,
    ConsentWithdrawn,
    Evidence,
    GpcSignal,
    GpcSignalData,
    ProcessingObjected,
    ProcessingObjectedData,
    ProcessingRestricted,
    ProcessingRestrictedData,
    RestrictionLifted,
    RestrictionLiftedData,
    SignUpConsent,
)

CATALOGUE = PurposeCatalogue(
    purposes={
        **load_purposes().purposes,
        "newsletter_v2": PurposeRule(
            basis=Basis.CONSENT, reconsent_from="2026-11", categories=["marketing_profile"]
        ),
        "fraud_checks": PurposeRule(
            basis=Basis.LEGITIMATE_INTEREST, default=True, categories=["usage_data"]
        ),
    }
)
PURPOSES = [*CATALOGUE.purposes, "no_such_purpose"]
CATEGORIES = ["usage_data", "marketing_profile", "crm_data", "billing_records"]
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
ZONES = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]

# --- the reference: the straightforward code -------------------------------------------------


def ref_ts(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def ref_canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=ref_ts).encode()


def ref_consent_change(
    state: SubjectState, event: ConsentGranted | ConsentWithdrawn, catalogue: PurposeCatalogue
) -> Outcome:
    data = event.data
    rule = catalogue.get(data.purpose)
    if rule is None:
        known = ", ".join(sorted(catalogue.purposes))
        raise UnknownPurpose(f"unknown purpose {data.purpose!r} (known: {known})")
    granting = isinstance(event, ConsentGranted)
    if not granting and not rule.withdrawable:
        raise ContractPurposeNotWithdrawable(
            f"{data.purpose} has a {rule.basis.value} basis and cannot be withdrawn"
        )
    record = PurposeRecord(
        GRANTED if granting else WITHDRAWN,
        event.time,
        event.id,
        data.consent_type.value,
        data.source.value,
        data.policy_version,
        data.expires_at if granting else None,
    )
    purpose = data.purpose
    current = state.purposes.get(purpose)
    old = current.state if current else DEFAULT

    def refused(note: str) -> Outcome:
        return Outcome(state, [Change(domain.CONSENT, purpose, old, record.state, False, note)])

    if rule.basis in (Basis.CONTRACT, Basis.LEGAL_OBLIGATION):  # the catalogue's new purposes
        return refused(f"{rule.basis.value} basis: always allowed")
    if current is not None and record.since < current.since:
        return refused(domain.SUPERSEDED)
    if (
        record.state == GRANTED
        and record.consent_type != "explicit"
        and rule.gpc_applies
        and state.gpc_since is not None
        and record.since >= state.gpc_since
    ):
        return refused(domain.GPC_BLOCKS_IMPLIED)
    changed = replace(state, purposes={**state.purposes, purpose: record})
    return Outcome(changed, [Change(domain.CONSENT, purpose, old, record.state, True)])


def ref_apply(state: SubjectState, event: ChangeEvent, catalogue: PurposeCatalogue) -> Outcome:
    if isinstance(event, ConsentGranted | ConsentWithdrawn):
        outcome = ref_consent_change(state, event, catalogue)
    elif isinstance(event, AccountSignedUp):
        outcome = domain._signed_up(state, event, catalogue)
    elif isinstance(event, GpcSignal):
        outcome = domain._gpc(state, event, catalogue)
    elif isinstance(event, RestrictionLifted):
        outcome = domain._lift(state, event)
    else:
        outcome = domain._scope(state, event, catalogue)
    if any(c.applied for c in outcome.changes):
        return Outcome(replace(outcome.state, version=state.version + 1), outcome.changes)
    return Outcome(state, outcome.changes)


def ref_facts(event: ChangeEvent) -> Facts:
    def evidence(value: Evidence | None) -> dict[str, Any] | None:
        return None if value is None else value.model_dump(mode="json", exclude_none=True) or None

    if isinstance(event, ConsentGranted | ConsentWithdrawn):
        d = event.data
        return Facts(
            event.id, event.source, event.type, event.time, d.source.value,
            d.consent_type.value, d.policy_version, d.notice_id, d.jurisdiction, d.expires_at,
            evidence(d.evidence),
        )  # fmt: skip
    if isinstance(event, AccountSignedUp):
        return Facts(
            event.id, event.source, event.type, event.time, "sign_up", "implied",
            event.data.policy_version, None, event.data.jurisdiction,
        )  # fmt: skip
    if isinstance(event, GpcSignal):
        return Facts(
            event.id, event.source, event.type, event.time, event.data.source.value, "gpc",
            evidence=evidence(event.data.evidence),
        )  # fmt: skip
    return Facts(event.id, event.source, event.type, event.time)


def ref_state_json(
    state: SubjectState, catalogue: PurposeCatalogue, now: datetime
) -> dict[str, Any]:
    purposes: dict[str, Any] = {}
    for name, rule in catalogue.purposes.items():
        d = decisions.decide(state, name, rule, now)
        item: dict[str, Any] = {
            "state": d.state,
            "allowed": d.allowed,
            "basis": "contract" if d.basis == "legal_obligation" else d.basis,  # v1 words
            "reconsent_required": d.reconsent_required,
        }
        if d.since is not None:
            item["since"] = ref_ts(d.since)
        if d.expires_at is not None:
            item["expires_at"] = ref_ts(d.expires_at)
        if d.restricted:  # 1.1.0: a restriction covering the purpose, and what continues
            item["restricted"] = True
            if d.continues_under:
                item["continues_under"] = list(d.continues_under)
        purposes[name] = item
    return {
        "version": max(state.version, 1),
        "purposes": purposes,
        "restrictions": sorted(t for t, r in state.restrictions.items() if r.active),
        "objections": sorted(t for t, r in state.objections.items() if r.active),
        "gpc": state.gpc_since is not None,
    }


def ref_to_doc(state: SubjectState) -> dict[str, Any]:
    def scopes(records: Any) -> dict[str, Any]:
        return {
            t: {"active": r.active, "since": ref_ts(r.since), "event_id": r.event_id}
            for t, r in sorted(records.items())
        }

    return {
        "purposes": {
            name: {
                "state": r.state,
                "since": ref_ts(r.since),
                "event_id": r.event_id,
                "consent_type": r.consent_type,
                "source": r.source,
                "policy_version": r.policy_version,
                "expires_at": ref_ts(r.expires_at),
            }
            for name, r in sorted(state.purposes.items())
        },
        "restrictions": scopes(state.restrictions),
        "objections": scopes(state.objections),
        "gpc_since": ref_ts(state.gpc_since),
    }


def ref_chain(
    head: Head,
    principal: str,
    subject: str,
    salt: bytes,
    items: list[tuple[Facts, Change]],
    received_at: datetime,
) -> tuple[list[LedgerEntry], Head]:
    entries = []
    for f, change in items:
        personal = hashlib.sha256(salt + ref_canonical([subject, f.evidence])).hexdigest()
        values = (
            principal, head.seq + 1, f.event_id, f.event_source, f.event_type,
            change.kind, change.target, change.old_state, change.new_state, change.applied,
            change.note, f.collection_method, f.consent_type, f.policy_version, f.notice_id,
            f.jurisdiction, f.expires_at, f.occurred_at, received_at, personal, head.hash,
        )  # fmt: skip
        digest = hashlib.sha256(ref_canonical(list(values))).hexdigest()
        entries.append(LedgerEntry(*values, digest, subject, f.evidence))
        head = Head(head.seq + 1, digest)
    return entries, head


# --- generated events ------------------------------------------------------------------------

# Personal and free text: mostly plain, sometimes what takes the slow (json.dumps) path.
texts = st.one_of(
    st.from_regex(r"[a-z0-9_]{1,12}", fullmatch=True),
    st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=8),
    st.sampled_from(["café", "del\x7f", 'q"u\\o\tte\n', "\x01ctl", "日本"]),
)
subjects = st.one_of(texts, st.just("lone \ud800 surrogate"))  # a Kafka key: any text
ids = st.one_of(st.from_regex(r"e-[0-9]{1,6}", fullmatch=True), texts)


@st.composite
def times(draw: st.DrawFn) -> datetime:
    moment = T0 + timedelta(
        minutes=draw(st.integers(-3, 40)),
        microseconds=draw(st.sampled_from([0, 0, 1, 123456])),
    )
    return moment.astimezone(draw(st.sampled_from(ZONES)))


evidences = st.one_of(
    st.none(),
    st.builds(
        Evidence,
        ip_hash=st.one_of(st.none(), texts),
        user_agent=st.one_of(st.none(), texts),
    ),
)


def _consent(kind: type[ConsentGranted] | type[ConsentWithdrawn]) -> st.SearchStrategy[Any]:
    data = st.builds(
        ConsentChangeData,
        purpose=st.sampled_from(PURPOSES),
        source=st.sampled_from(list(ConsentSource)),
        consent_type=st.sampled_from(["explicit", "implied"]),
        policy_version=st.sampled_from([None, "2026-10", "2026-11", "v1.2"]),
        notice_id=st.one_of(st.none(), texts),
        jurisdiction=st.sampled_from([None, "DE", "US-CA"]),
        expires_at=st.one_of(st.none(), times()),
        evidence=evidences,
    )
    return st.builds(kind, id=ids, source=texts, subject=st.just("s"), time=times(), data=data)


def _scoped(kind: Any, data_kind: Any) -> st.SearchStrategy[Any]:
    data = st.builds(
        data_kind,
        purposes=st.lists(st.sampled_from(list(CATALOGUE.purposes)), max_size=2),
        categories=st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=2),
    )
    return st.builds(kind, id=ids, source=texts, subject=st.just("s"), time=times(), data=data)


events = st.one_of(
    _consent(ConsentGranted),
    _consent(ConsentWithdrawn),
    _consent(ConsentGranted),
    _consent(ConsentWithdrawn),
    st.builds(
        GpcSignal,
        id=ids,
        source=texts,
        subject=st.just("s"),
        time=times(),
        data=st.builds(GpcSignalData, evidence=evidences),
    ),
    st.builds(
        AccountSignedUp,
        id=ids,
        source=texts,
        subject=st.just("s"),
        time=times(),
        data=st.builds(
            AccountSignedUpData,
            account_id=st.just("acc_1"),
            jurisdiction=st.just("DE"),
            policy_version=st.sampled_from(["2026-10", "2026-11"]),
            consents=st.lists(
                st.builds(SignUpConsent, purpose=st.sampled_from(PURPOSES), granted=st.booleans()),
                max_size=3,
            ),
        ),
    ),
    _scoped(ProcessingRestricted, ProcessingRestrictedData),
    _scoped(ProcessingObjected, ProcessingObjectedData),
    _scoped(RestrictionLifted, RestrictionLiftedData),
)


def _bytes(value: Any) -> bytes:
    return orjson.dumps(value)  # keeps key order: the published and stored bytes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=subjects,
    history=st.lists(events, min_size=1, max_size=25),
    now=times(),
    salt=st.binary(min_size=16, max_size=16),
)
def test_hot_paths_match_the_reference(
    subject: str, history: list[ChangeEvent], now: datetime, salt: bytes
) -> None:
    state = ref_state = SubjectState(subject)
    lines: list[tuple[Facts, Change]] = []
    for event in history:
        refusal: ConsentRuleViolation | None = None
        try:
            expected = ref_apply(ref_state, event, CATALOGUE)
        except ConsentRuleViolation as exc:
            refusal = exc
        if refusal is not None:
            with pytest.raises(type(refusal)) as raised:
                domain.apply_event(state, event, CATALOGUE)
            assert str(raised.value) == str(refusal)
            continue
        outcome = domain.apply_event(state, event, CATALOGUE)
        assert type(outcome) is Outcome
        assert type(outcome.state) is SubjectState
        assert outcome.state == expected.state
        assert outcome.state.version == expected.state.version
        assert outcome.changes == expected.changes
        assert all(type(c) is Change for c in outcome.changes)
        assert outcome.changed == expected.changed
        if not outcome.changed:
            assert outcome.state is state  # an unchanged state is passed through
        facts = ledger.facts(event)
        assert facts == ref_facts(event)
        lines.extend((facts, change) for change in outcome.changes)
        state, ref_state = outcome.state, expected.state

        for moment in (now, event.time, T0 + timedelta(days=365)):
            got = fastpath.state_json(state, CATALOGUE, moment)
            assert _bytes(got) == _bytes(ref_state_json(state, CATALOGUE, moment))
        doc = document.to_doc(state)
        assert _bytes(doc) == _bytes(ref_to_doc(state))
        assert document.from_doc(subject, state.version, orjson.loads(_bytes(doc))) == state

    principal = hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()
    for head in (Head(), Head(41, "a" * 64)):
        entries, new_head = ledger.chain(head, principal, subject, salt, lines, now)
        ref_entries, ref_head = ref_chain(head, principal, subject, salt, lines, now)
        assert entries == ref_entries
        assert [e.hash for e in entries] == [e.hash for e in ref_entries]
        assert new_head == ref_head
        assert all(type(e) is LedgerEntry for e in entries)
    entries, new_head = ledger.chain(Head(), principal, subject, salt, lines, now)
    assert ledger.verify_chain(entries, new_head, salt).ok
    # one chain call per event line gives the same chain as one call for all of them
    head, one_by_one = Head(), []
    for line in lines:
        chained, head = ledger.chain(head, principal, subject, salt, [line], now)
        one_by_one.extend(chained)
    assert one_by_one == entries
    assert head == new_head


def test_an_empty_chain_returns_the_head_itself() -> None:
    head = Head(3, "b" * 64)
    assert ledger.chain(head, "p", "s", b"salt", [], T0) == ([], head)


def test_fast_built_records_stay_frozen_and_hashable() -> None:
    data = ConsentChangeData(purpose="marketing_email", source=ConsentSource.WEB_FORM)
    event = ConsentGranted(id="e-1", source="web", subject="s", time=T0, data=data)  # type: ignore[call-arg]
    outcome = domain.apply_event(SubjectState("s"), event, CATALOGUE)
    assert outcome == Outcome(outcome.state, outcome.changes)
    assert repr(outcome.state).startswith("SubjectState(subject='s', version=1")
    with pytest.raises(FrozenInstanceError):
        outcome.state.version = 2  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        outcome.changes[0].applied = False  # type: ignore[misc]
    assert hash(outcome.changes[0]) == hash(
        Change(domain.CONSENT, "marketing_email", DEFAULT, GRANTED, True)
    )


# --- decode: the event type's model directly, as the union would pick it -----------------------


def ref_decode(value: bytes) -> Any:
    """`codec.decode` validating through the discriminated union ANY_EVENT (the reference)."""
    attributes = codec._plain_envelope(value)
    if attributes is None:
        attributes = codec._sdk_attributes(value)
    event_type = attributes.get("type")
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        named = isinstance(event_type, str) and codec.TYPE_NAME.fullmatch(event_type)
        raise codec.DecodeError(
            f"unknown event type {event_type!r}"
            if named
            else "unknown event type (not a type name)"
        )
    try:
        return ANY_EVENT.validate_python(attributes)
    except ValidationError as exc:
        summary = codec._validation_summary(exc)
        raise codec.DecodeError(f"invalid {event_type}: {summary}") from exc


junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False),
    lambda inner: (
        st.text(max_size=4)
        | st.lists(inner, max_size=2)
        | st.dictionaries(st.text(max_size=4), inner)
    ),
    max_leaves=4,
)
GOOD = {
    "purpose": "marketing_email",
    "source": "web_form",
    "consent_type": "implied",
    "policy_version": "2026-10",
    "expires_at": "2026-12-01T00:00:00Z",
    "evidence": {"ip_hash": "h"},
    "account_id": "acc_1",
    "jurisdiction": "DE",
    "consents": [{"purpose": "marketing_email", "granted": True}],
    "purposes": ["analytics_cookies"],
    "categories": ["usage_data"],
    "request_id": "req_1",
    "scope": "all",
    "verified_by": "support:1",
    "job_id": "job_1",
    "owner": "consent",
    "public_key": "k",
    "closed_at": "2026-11-01T00:00:00+01:00",
}
ENVELOPE = {
    "specversion": "1.0",
    "id": "e-1",
    "source": "web",
    "subject": "s",
    "time": "2026-11-01T00:00:00Z",
    "datacontenttype": "application/json",
}


@st.composite
def raw_events(draw: st.DrawFn) -> bytes:
    envelope: dict[str, Any] = {**ENVELOPE, "type": draw(st.sampled_from([*EVENT_TYPES, "x.v1"]))}
    for name in draw(st.lists(st.sampled_from([*ENVELOPE, "type"]), max_size=2)):
        if draw(st.booleans()):
            envelope.pop(name, None)
        else:
            envelope[name] = draw(junk | st.sampled_from(["2026-11-01T00:00:00", "1.0", ""]))
    fields = draw(st.lists(st.sampled_from(list(GOOD)), max_size=6, unique=True))
    data = {f: draw(st.just(GOOD[f]) | junk) if draw(st.booleans()) else GOOD[f] for f in fields}
    envelope["data"] = draw(st.just(data) | junk) if draw(st.integers(0, 9)) == 0 else data
    return orjson.dumps(envelope)


@settings(max_examples=500, deadline=None)
@given(raw=raw_events())
def test_decode_accepts_and_refuses_as_the_union_does(raw: bytes) -> None:
    refusal: str | None = None
    try:
        expected = ref_decode(raw)
    except codec.DecodeError as exc:
        refusal = exc.reason
    if refusal is not None:
        with pytest.raises(codec.DecodeError) as raised:
            codec.decode(raw)
        assert raised.value.reason == refusal
    else:
        event = codec.decode(raw)
        assert type(event) is type(expected)
        assert event == expected


def test_decode_reads_the_bench_workload_as_the_union_does() -> None:
    for _, raw in ConsentWorkload(events=200, subjects=50).messages():
        event, expected = codec.decode(raw), ref_decode(raw)
        assert type(event) is type(expected)
        assert event == expected
