"""An erasure makes the open rectifications of what it deletes moot (their corrected values are
personal data that should not outlive the erasure); retained or held categories keep theirs."""

from __future__ import annotations

from services.retention import domain
from tests.unit.retention.test_domain import RULES, T0, account_hold


def test_only_categories_deleted_now_supersede_their_rectifications():
    decisions = domain.erasure.decide_erasure(
        RULES,
        ["crm_data", "usage_data", "billing_records"],
        [account_hold(("usage_data",))],
        T0,
        subject_id="usr_1",
        account_id="acc_1",
        closed_at=T0,
        crm_retention_days=None,
    )
    assert domain.erasure.superseded_rectifications(decisions) == ["crm_data"]


def test_a_superseded_rectification_is_reported_cancelled_with_the_erasure_named():
    outcome = domain.erasure.superseded_outcome("crm_data", "crm", "era_9")
    assert (outcome.category, outcome.outcome, outcome.owner) == ("crm_data", "cancelled", "crm")
    assert outcome.reason == "superseded by erasure era_9: the data is deleted"
