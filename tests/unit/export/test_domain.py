"""Export decisions: deadlines, extensions, cancellation, parts, completeness, status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.export import domain
from services.export.domain import (
    ChangeRefused,
    Failure,
    PartRefused,
    PartSummary,
    PartVerdict,
    Request,
    State,
)
from shared.catalogue import load_purposes, load_retention
from shared.contract.events import RequestStatus
from shared.recipients import load_recipients

T0 = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)


def request(state: State = State.PENDING, **changes: object) -> Request:
    base = Request(
        request_id="req_1",
        subject="usr_1",
        requested_at=T0,
        deadline=domain.deadline_for(T0),
        state=state,
    )
    return base.model_copy(update=changes)


def part(req: Request, **overrides: object) -> PartVerdict:
    arguments: dict[str, object] = {
        "subject": "usr_1",
        "owner": "crm",
        "job_id": "job_crm",
        "expected_job_id": "job_crm",
        "categories": ["crm_data"],
        "category": "crm_data",
        "part_count": 2,
        "known_count": None,
        "already_stored": False,
    }
    arguments.update(overrides)
    return domain.check_part(req, **arguments)  # type: ignore[arg-type]


def test_the_deadline_is_one_calendar_month_later_clamped_to_the_month_end():
    assert domain.deadline_for(T0) == datetime(2026, 2, 28, 9, 0, tzinfo=UTC)


def test_job_ids_are_stable_per_request_and_owner():
    assert domain.job_id_for("req_1", "crm") == domain.job_id_for("req_1", "crm")
    assert domain.job_id_for("req_1", "crm") != domain.job_id_for("req_1", "billing")


def test_a_repeated_request_is_not_new_and_a_reused_id_for_another_person_is_refused():
    assert domain.check_new_request(None, "usr_1") is True
    assert domain.check_new_request(request(), "usr_1") is False
    with pytest.raises(ChangeRefused):
        domain.check_new_request(request(), "usr_2")


def test_an_extension_is_allowed_once_and_by_two_months_at_most():
    req = request()
    later = req.deadline + timedelta(days=30)
    assert domain.check_extension(req, later) == later
    with pytest.raises(ChangeRefused, match="already extended"):
        domain.check_extension(req.model_copy(update={"extended": True}), later)
    with pytest.raises(ChangeRefused, match="two months"):
        domain.check_extension(req, req.deadline + timedelta(days=62))
    with pytest.raises(ChangeRefused, match="later"):
        domain.check_extension(req, req.deadline - timedelta(days=1))
    with pytest.raises(ChangeRefused, match="completed"):
        domain.check_extension(request(State.COMPLETED), later)


def test_cancelling_an_open_request_stops_it_but_a_finished_one_cannot_be_cancelled():
    assert domain.check_cancel(request(State.IN_PROGRESS)) is True
    assert domain.check_cancel(request(State.ASSEMBLING)) is True
    assert domain.check_cancel(request(State.CANCELLED)) is False
    with pytest.raises(ChangeRefused, match="too late"):
        domain.check_cancel(request(State.PARTIALLY_COMPLETED))


def test_a_new_part_is_accepted_and_a_stored_one_is_a_duplicate():
    assert part(request()) is PartVerdict.ACCEPT
    assert part(request(), already_stored=True) is PartVerdict.DUPLICATE
    assert part(request(State.COMPLETED), already_stored=True) is PartVerdict.DUPLICATE


def test_a_part_for_a_cancelled_request_is_suppressed_not_dead_lettered():
    assert part(request(State.CANCELLED), subject="usr_other") is PartVerdict.SUPPRESS


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"subject": "usr_2"}, "subject"),
        ({"expected_job_id": None}, "no export job"),
        ({"job_id": "job_other"}, "is not the job"),
        ({"category": "billing_records"}, "was not asked"),
        ({"known_count": 3}, "disagrees"),
    ],
)
def test_a_part_that_does_not_belong_to_the_request_is_refused(overrides, reason):
    with pytest.raises(PartRefused, match=reason):
        part(request(), **overrides)


def test_a_late_part_after_the_bundle_is_refused():
    with pytest.raises(PartRefused, match="too late"):
        part(request(State.COMPLETED))
    with pytest.raises(PartRefused, match="too late"):
        part(request(State.ASSEMBLING))


JOBS = {"crm": ["crm_data"], "billing": ["billing_records"], "support": ["support_communications"]}


def test_every_category_settled_means_all_in_and_a_complete_bundle():
    parts = [
        PartSummary(owner="crm", category="crm_data", part_count=2, stored=2, records=7),
        PartSummary(owner="billing", category="billing_records", part_count=1, stored=1),
        PartSummary(owner="support", category="support_communications", part_count=1, stored=1),
    ]
    settled = domain.settle(JOBS, parts, [])
    assert domain.all_in(settled)
    state, missing, outcomes = domain.finish(settled)
    assert state is State.COMPLETED
    assert missing == []
    assert {o.outcome for o in outcomes} == {"exported"}


def test_a_missing_part_keeps_the_request_open_and_at_the_end_names_the_owner():
    parts = [
        PartSummary(owner="crm", category="crm_data", part_count=2, stored=1),
        PartSummary(owner="billing", category="billing_records", part_count=1, stored=1),
    ]
    settled = domain.settle(JOBS, parts, [])
    assert not domain.all_in(settled)
    state, missing, _ = domain.finish(settled)
    assert state is State.PARTIALLY_COMPLETED
    assert missing == ["crm", "support"]
    reasons = {s.owner: s.reason for s in settled}
    assert reasons["crm"] == "1 of 2 parts received"
    assert reasons["support"] == "no answer"


def test_failed_parts_and_owner_failures_settle_as_failed_but_retryable_ones_wait():
    parts = [
        PartSummary(
            owner="crm", category="crm_data", part_count=2, stored=1, failed=["part 1: sha256"]
        ),
    ]
    failures = [
        Failure(owner="billing", category=None, error="archive offline", retryable=False),
        Failure(owner="support", category=None, error="busy", retryable=True),
    ]
    settled = {s.owner: s for s in domain.settle(JOBS, parts, failures)}
    assert settled["crm"].outcome == "failed"
    assert settled["crm"].reason == "part 1: sha256"
    assert settled["billing"].outcome == "failed"
    assert settled["billing"].reason == "archive offline"
    assert settled["support"].outcome == "missing"


def test_the_status_shows_internal_states_as_in_progress_and_flags_overdue():
    req = request(State.ASSEMBLING)
    late = req.deadline + timedelta(seconds=1)
    data = domain.status_data(req, late)
    assert data.status is RequestStatus.IN_PROGRESS
    assert data.overdue is True
    assert domain.status_data(request(State.COMPLETED), late).overdue is False


def test_a_link_never_outlives_its_bundle():
    bundle_expires = T0 + timedelta(minutes=10)
    assert domain.link_expiry(T0, 3600, bundle_expires) == bundle_expires
    assert domain.link_expiry(T0, 60, bundle_expires) == T0 + timedelta(seconds=60)


def test_article_15_information_gives_purposes_recipients_retention_and_source():
    owners = {"billing": ["billing_records"], "crm": ["crm_data"], "consent": ["consent_records"]}
    info = domain.information(owners, load_retention(), load_purposes(), load_recipients())
    billing = info["billing_records"]
    # recipients come from the register now, not the owning service (policy 3.1)
    assert [r.name for r in billing.recipients] == [
        "Card payment processor",
        "Tax authority (on lawful request or audit)",
    ]
    assert billing.retention == "P7Y after account closure; kept for a legal obligation (tax)"
    assert billing.source == "created by our billing system"
    assert "per subscription terms" in info["crm_data"].retention
    personalisation = next(p for p in info["crm_data"].purposes if p.purpose == "personalisation")
    assert personalisation.description
    assert info["consent_records"].owner == "consent"
    assert "Art. 7(1)" in info["consent_records"].retention


def test_a_request_has_one_bundle_id_derived_from_its_private_storage_key():
    assert domain.bundle_id_for("a" * 32) == domain.bundle_id_for("a" * 32)
    assert domain.bundle_id_for("a" * 32) != domain.bundle_id_for("b" * 32)


def test_a_job_event_id_comes_from_the_job_and_the_key_it_carries():
    job = domain.job_id_for("req_1", "crm")
    assert domain.job_event_id(job, "k1") == domain.job_event_id(job, "k1")  # a replay
    assert domain.job_event_id(job, "k2") != domain.job_event_id(job, "k1")  # re-keyed
    assert domain.job_event_id(domain.job_id_for("req_1", "billing"), "k1") != (
        domain.job_event_id(job, "k1")
    )
