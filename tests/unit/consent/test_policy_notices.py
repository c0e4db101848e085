"""Policy 3.3: a new policy version asks, from its effective date, to renew the grants it names;
the notice tells each person which of their grants that is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.consent.decisions import decide
from services.consent.fastpath import state_json
from services.consent.notices import notice_job_id
from services.consent.policies import Policy, affected, in_force, to_renew
from services.consent.state import GRANTED, WITHDRAWN, PurposeRecord, SubjectState
from shared.catalogue import load_purposes
from shared.contract.events import ConsentStateData
from shared.contract.topics import Topics

BASE = load_purposes()
EFFECTIVE = datetime(2027, 1, 15, tzinfo=UTC)
POLICY = Policy(
    version="2027-01",
    effective_at=EFFECTIVE,
    summary="A new analytics provider.",
    url=None,
    reconsent=("analytics_providers",),
)
DAY = timedelta(days=1)


def granted(version: str | None, state: str = GRANTED) -> PurposeRecord:
    return PurposeRecord(state, EFFECTIVE - 100 * DAY, "ev_1", "explicit", "web_form", version)


def subject(**purposes: PurposeRecord) -> SubjectState:
    return SubjectState("usr_1", 3, purposes)


def test_no_shipped_purpose_asks_for_reconsent_until_a_policy_takes_effect():
    assert all(rule.reconsent_from is None for rule in BASE.purposes.values())
    assert in_force(BASE, [POLICY], EFFECTIVE - timedelta(seconds=1)) is BASE
    forced = in_force(BASE, [POLICY], EFFECTIVE)
    assert forced.purposes["analytics_providers"].reconsent_from == "2027-01"
    assert forced.purposes["marketing_email"] == BASE.purposes["marketing_email"]


def test_from_the_effective_date_an_older_grant_answers_reconsent_required():
    state = subject(analytics_providers=granted("2026-10"))
    rule_before = in_force(BASE, [POLICY], EFFECTIVE - DAY).purposes["analytics_providers"]
    rule_after = in_force(BASE, [POLICY], EFFECTIVE).purposes["analytics_providers"]
    before = decide(state, "analytics_providers", rule_before, EFFECTIVE - DAY)
    after = decide(state, "analytics_providers", rule_after, EFFECTIVE)
    assert (before.allowed, before.reconsent_required) == (True, False)
    assert (after.allowed, after.reconsent_required) == (False, True)
    renewed = subject(analytics_providers=granted("2027-01"))
    assert decide(renewed, "analytics_providers", rule_after, EFFECTIVE).allowed
    published = ConsentStateData.model_validate(
        state_json(state, in_force(BASE, [POLICY], EFFECTIVE), EFFECTIVE)
    )
    assert published.purposes["analytics_providers"].reconsent_required


def test_the_newest_policy_in_effect_overrides_the_catalogues_reconsent_from():
    changed = BASE.model_copy(
        update={
            "purposes": {
                **BASE.purposes,
                "analytics_providers": BASE.purposes["analytics_providers"].model_copy(
                    update={"reconsent_from": "2026-01"}
                ),
            }
        }
    )
    later = Policy("2027-06", EFFECTIVE + 30 * DAY, "again", None, ("analytics_providers",))
    forced = in_force(changed, [later, POLICY], EFFECTIVE + 30 * DAY)
    assert forced.purposes["analytics_providers"].reconsent_from == "2027-06"
    assert (
        in_force(changed, [later, POLICY], EFFECTIVE).purposes["analytics_providers"].reconsent_from
        == "2027-01"
    )


def test_the_notice_names_only_the_persons_grants_to_renew():
    older = subject(analytics_providers=granted("2026-10"), marketing_email=granted("2026-10"))
    assert to_renew(older, POLICY, BASE) == ["analytics_providers"]
    assert to_renew(subject(analytics_providers=granted("2027-01")), POLICY, BASE) == []
    assert to_renew(subject(analytics_providers=granted("2026-10", WITHDRAWN)), POLICY, BASE) == []
    assert to_renew(subject(), POLICY, BASE) == []
    assert affected([older, subject()], POLICY, BASE) == ["usr_1"]


def test_one_notice_per_person_and_version_on_kept_and_job_topics():
    assert notice_job_id("2027-01", "usr_1") == notice_job_id("2027-01", "usr_1")
    assert notice_job_id("2027-01", "usr_1") != notice_job_id("2027-02", "usr_1")
    topics = Topics()
    assert topics.for_type("policy.published.v1") in topics.kept()
    assert topics.for_type("notice.job.v1") == topics.privacy_jobs
