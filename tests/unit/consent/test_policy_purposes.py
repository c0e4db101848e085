"""Policy 2.2 in the consent decisions: platform improvement (legitimate interest, objectable)
and the necessary purposes the retention rules name (contract, legal obligation)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.consent import decisions, domain, fastpath
from services.consent.state import ContractPurposeNotWithdrawable, SubjectState
from shared.catalogue import load_purposes
from tests.support import events as make

CATALOGUE = load_purposes()
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
SUBJECT = "usr_pi"


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def fold(*events) -> SubjectState:  # type: ignore[no-untyped-def]
    state = SubjectState(SUBJECT)
    for event in events:
        state = domain.apply_event(state, event, CATALOGUE).state
    return state


def decide(state: SubjectState, purpose: str) -> decisions.Decision:
    rule = CATALOGUE.purposes[purpose]
    return decisions.decide(state, purpose, rule, at(100))


def test_platform_improvement_is_allowed_by_default_and_an_objection_blocks_it():
    assert decide(SubjectState(SUBJECT), "platform_improvement").allowed is True
    objected = fold(make.objected(SUBJECT, purposes=["platform_improvement"], at=at(1)))
    blocked = decide(objected, "platform_improvement")
    assert (blocked.allowed, blocked.reason) == (False, "objected: platform_improvement")
    assert blocked.basis == "legitimate_interest"
    published = fastpath.state_json(objected, CATALOGUE, at(100))["purposes"]
    assert published["platform_improvement"]["allowed"] is False


def test_gpc_does_not_touch_platform_improvement():
    state = fold(make.gpc(SUBJECT, at=at(1)))
    assert decide(state, "platform_improvement").allowed is True
    assert decide(state, "marketing_email").allowed is False


@pytest.mark.parametrize(
    ("purpose", "basis"),
    [
        ("contract_performance", "contract"),
        ("customer_support", "contract"),
        ("legal_obligation_tax", "legal_obligation"),
    ],
)
def test_necessary_purposes_are_always_allowed_and_cannot_be_withdrawn(purpose, basis):
    state = fold(make.objected(SUBJECT, purposes=[purpose], at=at(1)))
    decision = decide(state, purpose)
    assert (decision.allowed, decision.basis) == (True, basis)
    with pytest.raises(ContractPurposeNotWithdrawable, match=f"{basis} basis"):
        domain.apply_event(state, make.withdrawn(SUBJECT, purpose, at=at(2)), CATALOGUE)
    published = fastpath.state_json(state, CATALOGUE, at(100))["purposes"][purpose]
    assert (published["allowed"], published["basis"]) == (True, "contract")  # v1 vocabulary


def test_the_published_state_is_a_valid_v1_state_with_every_new_purpose():
    data = fastpath.state_data(SubjectState(SUBJECT), CATALOGUE, at(100))
    assert {"platform_improvement", "legal_obligation_tax"} <= set(data.purposes)
    assert data.purposes["legal_obligation_tax"].basis == "contract"
