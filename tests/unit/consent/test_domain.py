"""Consent decisions and the ledger chain, without I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.consent import decisions, document, domain, fastpath, ledger
from services.consent.ledger import Head
from services.consent.state import (
    ContractPurposeNotWithdrawable,
    SubjectState,
    TooManyScopes,
    UnknownPurpose,
)
from shared.catalogue import PurposeRule, load_purposes
from shared.contract.events import (
    MAX_ITEMS,
    AccountSignedUp,
    ConsentGranted,
    ConsentWithdrawn,
    Evidence,
    GpcSignal,
)
from tests.support import events as make

CATALOGUE = load_purposes()
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
SUBJECT = "usr_1"


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def grant(purpose: str, minute: int, consent_type: str = "explicit", **extra) -> ConsentGranted:
    return make.granted(SUBJECT, purpose, at=at(minute), consent_type=consent_type, **extra)


def withdraw(purpose: str, minute: int) -> ConsentWithdrawn:
    return make.withdrawn(SUBJECT, purpose, at=at(minute))


def gpc(minute: int) -> GpcSignal:
    return make.gpc(SUBJECT, at=at(minute))


def signed_up(minute: int, **consents: bool) -> AccountSignedUp:
    return make.signed_up(SUBJECT, at=at(minute), consents=consents)


def fold(*events, state: SubjectState | None = None) -> SubjectState:
    state = state or SubjectState(SUBJECT)
    for event in events:
        state = domain.apply_event(state, event, CATALOGUE).state
    return state


def decision(state: SubjectState, purpose: str, minute: int = 1000) -> decisions.Decision:
    rule = CATALOGUE.get(purpose)
    assert rule is not None
    return decisions.decide(state, purpose, rule, at(minute))


def test_unknown_subject_gets_the_catalogue_defaults():
    state = SubjectState(SUBJECT)
    assert decision(state, "marketing_email").allowed is False
    assert decision(state, "marketing_email").state == "default"
    assert decision(state, "transactional_email").allowed is True


def test_withdrawal_after_grant_denies_marketing_and_a_regrant_allows_it_again():
    state = fold(grant("marketing_email", 1))
    assert decision(state, "marketing_email").allowed is True
    state = fold(withdraw("marketing_email", 2), state=state)
    assert decision(state, "marketing_email").reason == "withdrawn"
    state = fold(grant("marketing_email", 3), state=state)
    assert decision(state, "marketing_email").allowed is True
    assert state.version == 3


def test_withdrawing_a_contract_purpose_is_refused():
    with pytest.raises(ContractPurposeNotWithdrawable):
        domain.apply_event(SubjectState(SUBJECT), withdraw("transactional_email", 1), CATALOGUE)


def test_an_unknown_purpose_is_refused():
    with pytest.raises(UnknownPurpose):
        domain.apply_event(SubjectState(SUBJECT), grant("telepathy", 1), CATALOGUE)


def test_an_older_event_arriving_late_is_recorded_but_changes_nothing():
    state = fold(withdraw("marketing_email", 5))
    outcome = domain.apply_event(state, grant("marketing_email", 2), CATALOGUE)
    assert outcome.state == state
    assert [c.note for c in outcome.changes] == [domain.SUPERSEDED]
    assert not outcome.changed


def test_events_in_any_order_end_in_the_same_state():
    events = [grant("marketing_email", 1), withdraw("marketing_email", 2), gpc(3)]
    events += [grant("analytics_cookies", 4), grant("partner_marketing", 5)]
    in_order = document.to_doc(fold(*events))
    assert document.to_doc(fold(*reversed(events))) == in_order
    assert document.to_doc(fold(*events[2:], *events[:2])) == in_order


def test_gpc_withdraws_gpc_purposes_and_only_an_explicit_grant_restores_one():
    state = fold(signed_up(0, marketing_email=True, analytics_cookies=True), gpc(1))
    assert decision(state, "marketing_email").state == "withdrawn"
    assert decision(state, "analytics_cookies").allowed is True  # not gpc_applies
    state = fold(grant("marketing_email", 2, consent_type="implied"), state=state)
    assert decision(state, "marketing_email").allowed is False
    state = fold(signed_up(3, marketing_email=True), state=state)
    assert decision(state, "marketing_email").allowed is False
    state = fold(grant("marketing_email", 4), state=state)
    assert decision(state, "marketing_email").allowed is True
    assert fastpath.state_data(state, CATALOGUE, at(5)).gpc is True


def test_a_repeated_gpc_signal_does_not_undo_an_explicit_grant_given_after_the_first():
    state = fold(gpc(1), grant("marketing_email", 2), gpc(3))
    assert decision(state, "marketing_email").allowed is True
    assert decision(state, "partner_marketing").state == "withdrawn"


def test_a_late_gpc_signal_undoes_an_implied_grant_made_after_it():
    state = fold(grant("partner_marketing", 5, consent_type="implied"), gpc(3))
    assert decision(state, "partner_marketing").state == "withdrawn"


def test_an_unticked_box_at_sign_up_stays_default_and_outranks_an_older_late_grant():
    state = fold(signed_up(5, marketing_email=False), grant("marketing_email", 2))
    d = decision(state, "marketing_email")
    assert (d.allowed, d.state) == (False, "default")
    assert (
        fold(grant("marketing_email", 6), state=state).purposes["marketing_email"].state
        == "granted"
    )


def test_a_restriction_past_what_the_published_state_may_list_is_refused():
    names = [f"category_{i}" for i in range(MAX_ITEMS)]
    full = fold(make.restricted(SUBJECT, categories=names, at=at(1)))
    assert len(fastpath.state_data(full, CATALOGUE, at(1)).restrictions) == MAX_ITEMS
    with pytest.raises(TooManyScopes, match=f"{MAX_ITEMS + 1} active restrictions"):
        fold(make.restricted(SUBJECT, categories=["one_more"], at=at(2)), state=full)
    # one already active again, or a new one after a lift, stays within the bound
    assert fold(make.restricted(SUBJECT, categories=names[:1], at=at(2)), state=full)
    lifted = fold(make.restriction_lifted(SUBJECT, categories=names[:1], at=at(3)), state=full)
    again = fold(make.restricted(SUBJECT, categories=["one_more"], at=at(4)), state=lifted)
    assert len(fastpath.state_data(again, CATALOGUE, at(4)).restrictions) == MAX_ITEMS


def test_a_restriction_overrides_a_grant_until_it_is_lifted():
    restricted = make.restricted(SUBJECT, categories=["usage_data"], at=at(2))
    lifted = make.restriction_lifted(SUBJECT, categories=["usage_data"], at=at(3))
    state = fold(grant("analytics_cookies", 1), restricted)
    assert decision(state, "analytics_cookies").reason == "restricted: usage_data"
    assert decision(state, "marketing_email").reason == "default"
    assert fastpath.state_data(state, CATALOGUE, at(2)).restrictions == ["usage_data"]
    state = fold(lifted, state=state)
    assert decision(state, "analytics_cookies").allowed is True
    # the restriction arriving again late (older than the lift) does not come back
    assert fold(restricted, state=state).restrictions == state.restrictions


def test_an_objection_to_a_purpose_denies_it():
    objected = make.objected(SUBJECT, purposes=["marketing_email"], at=at(2))
    state = fold(grant("marketing_email", 1), objected)
    assert decision(state, "marketing_email").reason == "objected: marketing_email"


def test_a_grant_with_expiry_lapses_by_itself_and_expire_marks_it():
    state = fold(grant("personalisation", 1, expires_at=at(10)))
    assert decision(state, "personalisation", 9).allowed is True
    assert decision(state, "personalisation", 10).state == "expired"
    assert state.next_expiry() == at(10)
    outcome = domain.expire(state, at(11))
    assert outcome.state.purposes["personalisation"].state == "expired"
    assert outcome.state.version == state.version + 1
    assert outcome.state.next_expiry() is None


def test_a_grant_under_an_older_policy_needs_reconsent():
    rule = PurposeRule(basis="consent", reconsent_from="2026-11")
    old = fold(grant("marketing_email", 1, policy_version="2026-10"))
    d = decisions.decide(old, "marketing_email", rule, at(2))
    assert (d.allowed, d.reconsent_required) == (False, True)
    renewed = fold(grant("marketing_email", 3, policy_version="2026-11"), state=old)
    assert decisions.decide(renewed, "marketing_email", rule, at(4)).allowed is True
    assert decisions.version_key("2") < decisions.version_key("10")


def test_the_document_round_trips():
    state = fold(
        signed_up(0, marketing_email=True), gpc(1), grant("personalisation", 2, expires_at=at(9))
    )
    again = document.from_doc(SUBJECT, state.version, document.to_doc(state))
    assert again == state


def entries_for(*events) -> list[ledger.LedgerEntry]:
    state, items = SubjectState(SUBJECT), []
    for event in events:
        outcome = domain.apply_event(state, event, CATALOGUE)
        state = outcome.state
        items += [(ledger.facts(event), c) for c in outcome.changes]
    entries, _ = ledger.chain(Head(), "p1", SUBJECT, b"salt", items, at(100))
    return entries


def evidence_grant(minute: int) -> ConsentGranted:
    return grant("marketing_email", minute, evidence=Evidence(user_agent="Firefox", ip_hash="ab"))


def test_the_chain_verifies_and_catches_a_changed_or_missing_entry():
    entries = entries_for(evidence_grant(1), withdraw("marketing_email", 2), gpc(3))
    head = Head(entries[-1].seq, entries[-1].hash)
    assert ledger.verify_chain(entries, head, b"salt").ok
    changed = [*entries]
    changed[1] = replace(changed[1], new_state="granted")
    assert ledger.verify_chain(changed, head).broken_at == 2
    assert ledger.verify_chain(entries[:1] + entries[2:], head).broken_at == 2
    assert not ledger.verify_chain(entries[:-1], head).ok
    forged = [replace(entries[0], evidence={"user_agent": "Chrome"}), *entries[1:]]
    assert ledger.verify_chain(forged, head, b"salt").broken_at == 1


def test_the_chain_still_verifies_once_personal_fields_and_salt_are_gone():
    entries = entries_for(evidence_grant(1), withdraw("marketing_email", 2))
    erased = [replace(e, subject_id=None, evidence=None) for e in entries]
    assert ledger.verify_chain(erased, Head(2, entries[-1].hash)).ok


def test_point_in_time_state_counts_a_late_older_grant_for_its_own_time():
    entries = entries_for(withdraw("marketing_email", 5), evidence_grant(2))
    rule = CATALOGUE.get("marketing_email")
    assert rule is not None

    def allowed_at(minute: int) -> bool:
        state = ledger.state_at(
            SUBJECT, [e for e in entries if e.occurred_at <= at(minute)], at(minute)
        )
        return decisions.decide(state, "marketing_email", rule, at(minute)).allowed

    assert [allowed_at(m) for m in (1, 3, 6)] == [False, True, False]


def test_the_published_state_says_what_decide_says_for_every_purpose():
    restricted = make.restricted(SUBJECT, categories=["marketing_profile"], at=at(4))
    plain = fold(
        signed_up(0, analytics_cookies=True), grant("personalisation", 1, expires_at=at(3))
    )
    scoped = fold(restricted, state=plain)
    for state in (SubjectState(SUBJECT), plain, scoped):
        published = fastpath.state_json(state, CATALOGUE, at(5))["purposes"]
        for name, rule in CATALOGUE.purposes.items():
            d = decisions.decide(state, name, rule, at(5))
            item = published[name]
            # v1 words a legal-obligation basis as `contract` (decisions.PUBLISHED_BASIS)
            basis = decisions.PUBLISHED_BASIS[d.basis]
            assert (item["state"], item["allowed"], item["basis"]) == (d.state, d.allowed, basis)
            assert item.get("since") == (d.since.isoformat() if d.since else None)
