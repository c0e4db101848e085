"""Policy 5.4 (GDPR Art. 18) and Art. 21(3) in the retention decisions: what a restriction
reaches, which grounds keep the data, and the marketing deletion an objection issues."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.retention import domain, workflow
from services.retention.domain.model import Hold, Timer
from shared.catalogue import load_retention
from shared.contract.codec import decode, encode
from shared.contract.events import RestrictionJob, RestrictionLiftedJob
from shared.contract.topics import Topics

RULES = load_retention()
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def test_a_restriction_reaches_named_categories_and_those_of_named_purposes():
    pairs = domain.restriction.reach(RULES, ["transactional_email"], ["crm_data", "no_such"])
    assert pairs == [
        ("crm_data", "crm_data"),
        ("transactional_email", "account_profile"),
        ("transactional_email", "billing_records"),
    ]


@pytest.mark.parametrize(
    ("grounds", "keeps"),
    [
        ("accuracy_contested", False),
        ("unlawful_erasure_opposed", True),
        ("needed_for_legal_claims", True),
        ("objection_pending", False),
        (None, False),
    ],
)
def test_grounds_b_and_c_keep_the_data_and_hold_its_deletions(grounds, keeps):
    assert domain.restriction.keeps_data(grounds) is keeps
    hold = Hold(
        hold_id=domain.restriction.hold_id("evt_1", "crm_data"),
        scope="subject",
        subject_id="usr_1",
        categories=("crm_data",),
        reason=domain.restriction.hold_reason(grounds or ""),
    )
    due = Timer(
        id=1,
        subject_id="usr_1",
        account_id="acc_1",
        category="crm_data",
        owner="crm",
        mode="delete",
        reason="retention_expired",
        request_id=None,
        due_at=T0,
    )
    (firing,) = domain.jobs.due_jobs([due], [hold], T0)
    assert firing.blocked_by == (hold.hold_id,)  # a placed restriction hold blocks like a hold
    assert domain.jobs.due_jobs([due.model_copy(update={"category": "usage_data"})], [hold], T0)[
        0
    ].issues


def test_restriction_jobs_travel_on_privacy_jobs_with_their_grounds():
    row = {
        "job_id": "job_r1",
        "subject_id": "usr_1",
        "owner": "crm",
        "category": "crm_data",
        "reason": "needed_for_legal_claims",
        "due_by": T0 + timedelta(days=1),
    }
    job = workflow.restriction_event("restriction", row, 2, T0)
    assert isinstance(decode(encode(job)[1]), RestrictionJob)
    assert (job.data.grounds, job.data.attempt) == ("needed_for_legal_claims", 2)
    lift = workflow.restriction_event("restriction_lift", {**row, "reason": None}, 1, T0)
    assert isinstance(lift, RestrictionLiftedJob)
    topics = Topics()
    assert {topics.for_type(t) for t in ("restriction.job.v1", "restriction.lifted_job.v1")} == {
        "privacy.jobs"
    }
    assert {topics.for_type(t) for t in ("restriction.completed.v1", "restriction.failed.v1")} == {
        "privacy.receipts"
    }


@pytest.mark.parametrize("target", ["marketing_profile", "marketing_email", "partner_marketing"])
def test_an_objection_to_direct_marketing_deletes_the_marketing_data_once(target):
    before = {"marketing_email": False}
    gone = {"marketing_email": False, target: True}
    assert domain.rules.marketing_deletions(RULES, before, gone, {target}) == ["marketing_profile"]
    assert domain.rules.marketing_deletions(RULES, gone, gone, {target}) == []  # once


def test_a_withdrawn_partner_marketing_consent_alone_deletes_nothing():
    gone = {"marketing_email": False, "partner_marketing": True}
    assert domain.rules.marketing_deletions(RULES, {}, gone, set()) == []
