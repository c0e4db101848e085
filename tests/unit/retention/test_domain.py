"""Pure retention decisions: schedules, erasure, holds, due timers, requests, certificates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.retention import domain, workflow
from services.retention.domain.certificates import Certificate
from services.retention.domain.model import Hold, Timer
from shared.catalogue import load_retention
from shared.contract.events import CategoryOutcome

RULES = load_retention()
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def timer(category: str, due: datetime, subject: str = "usr_1", **kw: object) -> Timer:
    values: dict[str, object] = {
        "id": 1,
        "subject_id": subject,
        "account_id": "acc_1",
        "category": category,
        "owner": RULES.categories[category].owner,
        "mode": "delete",
        "reason": "retention_expired",
        "request_id": None,
        "due_at": due,
        **kw,
    }
    return Timer.model_validate(values)


def account_hold(categories: tuple[str, ...] | None = None) -> Hold:
    return Hold(
        hold_id="h1", scope="account", account_id="acc_1", categories=categories, reason="subpoena"
    )


def test_closure_schedules_every_category_at_its_own_time():
    plans = {p.category: p for p in domain.rules.schedule_for_closure(RULES, None, T0)}
    assert plans["marketing_profile"].due_at == T0
    assert plans["usage_data"].due_at == T0 + 30 * DAY
    assert plans["crm_data"].due_at == T0 + 30 * DAY
    assert plans["account_profile"].due_at == T0 + 90 * DAY
    assert plans["support_communications"].due_at == datetime(2028, 11, 26, 10, 0, tzinfo=UTC)
    assert plans["billing_records"].due_at == datetime(2033, 11, 26, 10, 0, tzinfo=UTC)
    assert {p.owner for p in plans.values()} == {
        "accounts",
        "crm",
        "marketing",
        "analytics",
        "support",
        "billing",
    }


def test_subscription_terms_set_the_crm_period():
    plans = {p.category: p for p in domain.rules.schedule_for_closure(RULES, 45, T0)}
    assert plans["crm_data"].due_at == T0 + 45 * DAY
    assert plans["usage_data"].due_at == T0 + 30 * DAY


def test_erasure_deletes_at_once_what_no_obligation_or_hold_covers():
    decisions = domain.erasure.decide_erasure(
        RULES,
        list(RULES.categories),
        [],
        T0,
        subject_id="usr_1",
        account_id="acc_1",
        closed_at=T0,
        crm_retention_days=None,
    )
    by = {d.category: d for d in decisions}
    assert {c for c, d in by.items() if d.action == "delete"} == {
        "account_profile",
        "crm_data",
        "marketing_profile",
        "usage_data",
        "support_communications",
    }
    billing = by["billing_records"]
    assert billing.action == "restrict"
    assert billing.until == datetime(2033, 11, 26, 10, 0, tzinfo=UTC)
    assert billing.reason == "legal obligation: tax; restricted meanwhile"
    assert [(p.mode, p.due_at) for p in billing.plans] == [
        ("restrict", T0),
        ("delete", datetime(2033, 11, 26, 10, 0, tzinfo=UTC)),
    ]


def test_erasure_of_one_category_on_an_open_account_leaves_the_obligation_end_open():
    (billing,) = domain.erasure.decide_erasure(
        RULES,
        ["billing_records"],
        [],
        T0,
        subject_id="usr_1",
        account_id="acc_1",
        closed_at=None,
        crm_retention_days=None,
    )
    assert billing.action == "restrict"
    assert billing.until is None
    assert [p.mode for p in billing.plans] == ["restrict"]


def test_erasure_under_an_account_hold_is_blocked_with_the_hold_reason():
    decisions = domain.erasure.decide_erasure(
        RULES,
        ["crm_data", "usage_data"],
        [account_hold(("crm_data",))],
        T0,
        subject_id="usr_1",
        account_id="acc_1",
        closed_at=None,
        crm_retention_days=None,
    )
    by = {d.category: d for d in decisions}
    assert by["crm_data"].action == "blocked"
    assert by["crm_data"].hold_ids == ("h1",)
    assert by["crm_data"].reason == "legal hold: subpoena"
    assert domain.erasure.erasure_outcome(by["crm_data"]).outcome == "blocked"
    assert by["usage_data"].action == "delete"


def test_an_unknown_category_in_an_erasure_scope_is_refused():
    with pytest.raises(domain.model.UnknownCategory):
        domain.erasure.erasure_scope(RULES, ["crm_data", "dna_samples"])


def test_a_due_timer_is_blocked_by_an_account_hold_and_a_later_one_is_not_due():
    firings = domain.jobs.due_jobs(
        [timer("usage_data", T0), timer("crm_data", T0 + DAY)], [account_hold()], T0
    )
    assert [(f.timer.category, f.blocked_by) for f in firings] == [("usage_data", ("h1",))]


def test_a_subject_hold_does_not_cover_another_subject():
    held = Hold(hold_id="h2", scope="subject", subject_id="usr_2", reason="dispute")
    (firing,) = domain.jobs.due_jobs([timer("usage_data", T0)], [held], T0)
    assert firing.issues


def test_the_dry_run_reports_what_the_timers_would_do_and_what_is_kept():
    timers = [timer("usage_data", T0 + 30 * DAY), timer("account_profile", T0 + 90 * DAY)]
    answers = {a.category: a for a in domain.dry_run.dry_run(RULES, timers, [], T0 + 31 * DAY)}
    assert answers["usage_data"].action == "delete"
    assert answers["usage_data"].reason == "retention_expired"
    assert answers["account_profile"].action == "keep"
    assert answers["account_profile"].due_at == T0 + 90 * DAY
    assert answers["billing_records"].action == "keep"


def test_consent_withdrawal_counts_only_on_the_transition():
    assert domain.rules.withdrawal_transition(False, True)
    assert domain.rules.withdrawal_transition(None, True)
    assert not domain.rules.withdrawal_transition(True, True)
    assert not domain.rules.withdrawal_transition(True, False)


def test_withdrawal_objection_and_expiry_count_but_restriction_and_default_do_not():
    assert domain.rules.withdrawn("withdrawn", objected=False)
    assert domain.rules.withdrawn("expired", objected=False)
    assert domain.rules.withdrawn("granted", objected=True)
    assert not domain.rules.withdrawn("granted", objected=False)  # restricted: allowed is false
    assert not domain.rules.withdrawn("default", objected=False)
    assert not domain.rules.withdrawn(None, objected=False)


def test_a_request_deadline_is_one_calendar_month_and_clamps_at_month_end():
    assert domain.requests.request_deadline(T0) == datetime(2026, 12, 26, 10, 0, tzinfo=UTC)
    jan31 = datetime(2027, 1, 31, tzinfo=UTC)
    assert domain.requests.request_deadline(jan31) == datetime(2027, 2, 28, tzinfo=UTC)


def test_a_request_is_extended_once_by_at_most_two_months():
    current = domain.requests.request_deadline(T0)
    new = datetime(2027, 2, 26, 10, 0, tzinfo=UTC)
    assert domain.requests.extend_deadline(T0, False, new, current) == new
    with pytest.raises(domain.model.ExtensionRefused):
        domain.requests.extend_deadline(T0, False, new + DAY, current)
    with pytest.raises(domain.model.ExtensionRefused):
        domain.requests.extend_deadline(T0, True, new, current)


def test_request_status_follows_outcomes_and_open_jobs():
    deleted = CategoryOutcome(category="crm_data", outcome="deleted")
    retained = CategoryOutcome(category="billing_records", outcome="retained")
    blocked = CategoryOutcome(category="usage_data", outcome="blocked")
    assert domain.requests.request_status([deleted, retained], 0, False) == "completed"
    assert domain.requests.request_status([deleted, retained], 1, False) == "in_progress"
    assert domain.requests.request_status([deleted, blocked], 0, False) == "partially_completed"
    assert domain.requests.request_status([deleted], 0, True) == "cancelled"
    assert domain.requests.is_overdue(T0, "in_progress", T0 + DAY)
    assert not domain.requests.is_overdue(T0, "completed", T0 + DAY)


def test_backoff_doubles_and_is_capped():
    first = timedelta(minutes=5)
    assert domain.jobs.backoff(first, 1, DAY) == first
    assert domain.jobs.backoff(first, 3, DAY) == 4 * first
    assert domain.jobs.backoff(first, 30, DAY) == DAY


def test_job_ids_are_deterministic_per_cause():
    assert domain.jobs.job_id_for("timer", "7") == domain.jobs.job_id_for("timer", "7")
    assert domain.jobs.job_id_for("timer", "7") != domain.jobs.job_id_for("timer", "8")


def _chain(count: int) -> list[tuple[Certificate, str, str]]:
    links = []
    prev = domain.certificates.GENESIS
    for i in range(count):
        cert = Certificate(
            job_id=f"job_{i}",
            subject_id="usr_1",
            owner="crm",
            category="crm_data",
            mode="delete",
            reason="erasure_request",
            request_id="req_1",
            attempt=1,
            issued_at=T0,
            completed_at=T0 + DAY,
            records_deleted=i,
            receipt_id=f"r{i}",
        )
        digest = domain.certificates.certificate_hash(prev, cert)
        links.append((cert, prev, digest))
        prev = digest
    return links


def test_an_intact_certificate_chain_verifies():
    assert domain.certificates.verify_chain(_chain(3)) == []


def test_an_altered_certificate_is_detected():
    links = _chain(3)
    cert, prev, digest = links[1]
    links[1] = (cert.model_copy(update={"records_deleted": 99}), prev, digest)
    assert domain.certificates.verify_chain(links) == [
        "job_1: content does not match its hash (altered)"
    ]


def test_a_removed_certificate_is_detected():
    links = _chain(3)
    del links[1]
    assert domain.certificates.verify_chain(links) == [
        "job_2: chain broken before it (a certificate was removed)"
    ]


def test_changing_the_rules_changes_their_digest():
    changed = RULES.model_copy(
        update={
            "categories": {
                **RULES.categories,
                "usage_data": RULES.categories["usage_data"].model_copy(
                    update={"period": RULES.categories["account_profile"].period}
                ),
            }
        }
    )
    assert domain.rules.rules_digest(RULES) == domain.rules.rules_digest(load_retention())
    assert domain.rules.rules_digest(changed) != domain.rules.rules_digest(RULES)


def test_the_fast_deletion_job_encoding_matches_the_contract_encoding():
    from shared.contract.codec import decode, encode

    for request_id in (None, "req_1"):
        row = {
            "job_id": "job_1",
            "subject_id": "usr_1",
            "owner": "crm",
            "category": "crm_data",
            "mode": "restrict",
            "reason": "erasure_request",
            "request_id": request_id,
            "due_by": datetime(2026, 12, 26, 10, 0, 0, 5, tzinfo=UTC),
        }
        now = datetime(2026, 11, 26, 10, 0, 1, 123456, tzinfo=UTC)
        fast = workflow.deletion_row("jobs", row, 2, now)
        key, value = encode(workflow.deletion_event(row, 2, now))
        assert (fast.key, fast.value) == (key, value)
        assert decode(fast.value) == workflow.deletion_event(row, 2, now)
        assert fast.event_id == decode(value).id


def test_timer_job_ids_are_stable_and_differ_for_other_subjects_with_the_same_serial():
    base = {
        "id": 7, "subject_id": "usr_a", "account_id": "acc", "category": "crm_data",
        "owner": "crm", "mode": "delete", "reason": "retention_expired", "request_id": None,
        "due_at": datetime(2027, 1, 1, tzinfo=UTC),
    }  # fmt: skip
    first = Timer.model_validate(base)
    assert domain.jobs.timer_job_id(first) == domain.jobs.timer_job_id(Timer.model_validate(base))
    other = Timer.model_validate({**base, "subject_id": "usr_b"})
    assert domain.jobs.timer_job_id(first) != domain.jobs.timer_job_id(other)


def test_timer_job_ids_come_from_the_cause_not_the_serial_a_restore_reassigns():
    base = {
        "id": 7, "subject_id": "usr_a", "account_id": "acc", "category": "crm_data",
        "owner": "crm", "mode": "delete", "reason": "erasure_request", "request_id": "req_1",
        "due_at": datetime(2027, 1, 1, tzinfo=UTC), "cause": "request",
    }  # fmt: skip
    first = Timer.model_validate(base)
    again = Timer.model_validate(  # re-created after a restore: another serial, a later now
        {**base, "id": 12, "due_at": datetime(2027, 1, 2, tzinfo=UTC)}
    )
    assert domain.jobs.timer_job_id(first) == domain.jobs.timer_job_id(again)
    for field, other in (("owner", "billing"), ("cause", "closure"), ("request_id", "req_2")):
        changed = Timer.model_validate({**base, field: other})
        assert domain.jobs.timer_job_id(first) != domain.jobs.timer_job_id(changed)


def test_a_withdrawal_timer_job_id_comes_from_the_consent_version_not_when_it_ran():
    base = {
        "id": 3, "subject_id": "usr_a", "account_id": None, "category": "marketing_profile",
        "owner": "marketing", "mode": "delete", "reason": "consent_withdrawn",
        "request_id": None, "cause": "consent", "cause_key": "consent:4",
        "due_at": datetime(2026, 12, 1, tzinfo=UTC),
    }  # fmt: skip
    first = Timer.model_validate(base)
    later = Timer.model_validate({**base, "id": 9, "due_at": datetime(2026, 12, 2, tzinfo=UTC)})
    assert domain.jobs.timer_job_id(first) == domain.jobs.timer_job_id(later)
    other = Timer.model_validate({**base, "cause_key": "consent:6"})
    assert domain.jobs.timer_job_id(first) != domain.jobs.timer_job_id(other)
