"""Policy 5.4 (GDPR Art. 18) in the consent decisions and the client cache: a restriction stops
contract purposes too, except what continues under Art. 18(2); grounds travel with the event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.consent import decisions, domain, fastpath
from services.consent.state import SubjectState
from shared.catalogue import PurposeRule, load_purposes
from shared.consent_client import ConsentCache
from shared.contract.events import ProcessingRestrictedData, RestrictionGrounds
from tests.support import events as make

CATALOGUE = load_purposes()
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
SUBJECT = "usr_r"


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def fold(*events) -> SubjectState:  # type: ignore[no-untyped-def]
    state = SubjectState(SUBJECT)
    for event in events:
        state = domain.apply_event(state, event, CATALOGUE).state
    return state


def decide(state: SubjectState, purpose: str) -> decisions.Decision:
    return decisions.decide(state, purpose, CATALOGUE.purposes[purpose], at(100))


@pytest.mark.parametrize(
    ("scope", "target"),
    [
        ({"purposes": ["transactional_email"]}, "transactional_email"),
        ({"categories": ["account_profile"]}, "account_profile"),
        ({"categories": ["billing_records"]}, "billing_records"),
    ],
)
def test_a_restriction_stops_a_contract_purpose(scope, target):
    state = fold(make.restricted(SUBJECT, at=at(1), grounds="accuracy_contested", **scope))
    d = decide(state, "transactional_email")
    assert (d.allowed, d.reason, d.basis) == (False, f"restricted: {target}", "contract")
    published = fastpath.state_data(state, CATALOGUE, at(100)).purposes["transactional_email"]
    assert (published.allowed, published.restricted, published.continues_under) == (
        False,
        True,
        [],
    )
    lifted = fold(
        make.restricted(SUBJECT, at=at(1), **scope),
        make.restriction_lifted(SUBJECT, at=at(2), **scope),
    )
    assert decide(lifted, "transactional_email").allowed is True


def test_what_continues_under_art_18_2_stays_allowed_and_says_why():
    state = fold(make.restricted(SUBJECT, categories=["billing_records"], at=at(1)))
    d = decide(state, "legal_obligation_tax")
    assert d.allowed is True
    assert d.reason == (
        "legal obligation; restricted: billing_records, "
        "continues under Art. 18(2): storage, legal_claims"
    )
    item = fastpath.state_data(state, CATALOGUE, at(100)).purposes["legal_obligation_tax"]
    assert (item.allowed, item.restricted, item.continues_under) == (
        True,
        True,
        ["storage", "legal_claims"],
    )
    untouched = fastpath.state_data(state, CATALOGUE, at(100)).purposes["customer_support"]
    assert (untouched.allowed, untouched.restricted) == (True, False)


def test_a_consent_purpose_restricted_is_blocked_and_one_that_continues_is_not():
    rule = PurposeRule(
        basis="consent", categories=["usage_data"], continues_when_restricted=["storage"]
    )  # type: ignore[arg-type]
    state = fold(
        make.granted(SUBJECT, "analytics_cookies", at=at(1)),
        make.restricted(SUBJECT, categories=["usage_data"], at=at(2)),
    )
    assert decide(state, "analytics_cookies").reason == "restricted: usage_data"
    d = decisions.decide(state, "analytics_cookies", rule, at(100))
    assert d.allowed is True
    assert d.reason == "granted; restricted: usage_data, continues under Art. 18(2): storage"


def test_the_catalogue_refuses_an_unknown_or_repeated_art_18_2_ground():
    with pytest.raises(ValidationError):
        PurposeRule(basis="contract", default=True, continues_when_restricted=["marketing"])  # type: ignore[list-item]
    with pytest.raises(ValidationError, match="twice"):
        PurposeRule(
            basis="contract", default=True, continues_when_restricted=["storage", "storage"]
        )  # type: ignore[list-item]


def test_a_restriction_names_its_grounds_art_18_1_a_to_d():
    assert {g.value for g in RestrictionGrounds} == {
        "accuracy_contested",
        "unlawful_erasure_opposed",
        "needed_for_legal_claims",
        "objection_pending",
    }
    data = ProcessingRestrictedData(categories=["crm_data"], grounds="needed_for_legal_claims")  # type: ignore[arg-type]
    assert data.grounds is RestrictionGrounds.NEEDED_FOR_LEGAL_CLAIMS
    assert ProcessingRestrictedData(categories=["crm_data"]).grounds is None  # optional in v1
    with pytest.raises(ValidationError):
        ProcessingRestrictedData(categories=["crm_data"], grounds="because")  # type: ignore[arg-type]


def test_the_client_cache_follows_a_restriction_of_a_contract_purpose():
    state = fold(make.restricted(SUBJECT, purposes=["transactional_email"], at=at(1)))
    published = fastpath.state_data(state, CATALOGUE, at(100))
    cache = ConsentCache()
    assert cache.may_process(SUBJECT, "transactional_email") is True  # never heard of: default
    cache.apply(SUBJECT, published)
    assert cache.may_process(SUBJECT, "transactional_email") is False
    assert cache.may_process(SUBJECT, "legal_obligation_tax") is True
    # a purpose the state restricts by name but does not decide is refused, not defaulted
    partial = published.model_copy(
        update={"version": 2, "purposes": {}, "restrictions": ["contract_performance"]}
    )
    cache.apply(SUBJECT, partial)
    assert cache.may_process(SUBJECT, "contract_performance") is False
    assert cache.may_process(SUBJECT, "customer_support") is True
