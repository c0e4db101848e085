"""Policy 5.1 with 5.3: an erasure stops or trims an export only as far as it must."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.export import domain
from services.export.bundle import BundleInput, write_bundle
from services.export.domain import ErasureEffect, Failure, PartSummary, PartVerdict, Request, State
from services.export.storage import FolderStorage
from shared.contract.events import CategoryOutcome

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
ASKED = ["marketing_profile", "crm_data", "billing_records"]
JOBS = {"marketing": ["marketing_profile"], "crm": ["crm_data"], "billing": ["billing_records"]}


def request(state: State = State.PENDING, **changes: object) -> Request:
    base = Request(
        request_id="req_x",
        subject="usr_1",
        requested_at=T0,
        deadline=T0 + timedelta(days=30),
        state=state,
    )
    return base.model_copy(update=changes)


def finished(*exported: str) -> Request:
    outcomes = [CategoryOutcome(category=c, outcome="exported") for c in exported]
    outcomes.append(CategoryOutcome(category="usage_data", outcome="failed", reason="down"))
    return request(State.PARTIALLY_COMPLETED, bundle_id="b1", outcomes=outcomes)


@pytest.mark.parametrize("state", [State.PENDING, State.IN_PROGRESS, State.READY, State.ASSEMBLING])
def test_an_erasure_of_some_categories_trims_an_open_export(state):
    effect = domain.erasure_effect(
        request(state), bundle_kept=True, scope=["marketing_profile"], asked=ASKED
    )
    assert effect is ErasureEffect.TRIM


def test_an_open_export_stops_only_when_the_erasure_covers_everything_it_asked():
    open_request = request(State.IN_PROGRESS)
    assert domain.erasure_effect(open_request, bundle_kept=True, asked=ASKED) is (
        ErasureEffect.CANCEL
    )
    everything = domain.erasure_effect(
        open_request, bundle_kept=True, scope=[*ASKED, "usage_data"], asked=ASKED
    )
    assert everything is ErasureEffect.CANCEL
    other = domain.erasure_effect(open_request, bundle_kept=True, scope=["usage_data"], asked=ASKED)
    assert other is ErasureEffect.NONE


def test_a_bundle_is_deleted_only_when_the_erasure_covers_its_content():
    bundle = finished("crm_data", "marketing_profile")
    assert domain.erasure_effect(bundle, bundle_kept=True) is ErasureEffect.DELETE_BUNDLE
    covered = ["crm_data", "marketing_profile"]
    assert domain.erasure_effect(bundle, bundle_kept=True, scope=covered) is (
        ErasureEffect.DELETE_BUNDLE
    )
    some = domain.erasure_effect(bundle, bundle_kept=True, scope=["marketing_profile"])
    assert some is ErasureEffect.NONE
    gone = domain.erasure_effect(bundle, bundle_kept=False)
    assert gone is ErasureEffect.NONE


def test_the_erased_jobs_are_the_asked_categories_the_scope_names():
    assert domain.erased_jobs(["marketing_profile", "usage_data"], JOBS) == {
        "marketing": ["marketing_profile"]
    }
    assert domain.erased_jobs("all", JOBS) == JOBS


def test_an_erased_category_is_settled_without_waiting_and_the_export_completes():
    reason = domain.erased_reason("era_1")
    marks = [Failure(owner="marketing", category="marketing_profile", error=reason,
                     retryable=False, erased=True)]  # fmt: skip
    parts = [
        PartSummary(owner="crm", category="crm_data", part_count=1, stored=1, records=3),
        PartSummary(owner="billing", category="billing_records", part_count=1, stored=1),
    ]
    settled = domain.settle(JOBS, parts, marks)
    assert domain.all_in(settled)
    erased = next(s for s in settled if s.category == "marketing_profile")
    assert (erased.outcome, erased.reason) == ("erased", reason)
    state, missing, outcomes = domain.finish(settled)
    assert (state, missing) == (State.COMPLETED, [])
    marketing = next(o for o in outcomes if o.category == "marketing_profile")
    assert (marketing.outcome, marketing.reason) == ("deleted", reason)


def test_an_erasure_mark_wins_over_an_owner_failure_of_the_same_category():
    marks = [
        Failure(owner="crm", category=None, error="down", retryable=False),
        Failure(owner="crm", category="crm_data", error="erased", retryable=False, erased=True),
    ]
    [settled] = domain.settle({"crm": ["crm_data"]}, [], marks)
    assert settled.outcome == "erased"


def test_a_part_of_an_erased_category_is_dropped_even_after_the_request_finished():
    for state in (State.IN_PROGRESS, State.COMPLETED):
        verdict = domain.check_part(
            request(state),
            subject="usr_1",
            owner="marketing",
            job_id="j",
            expected_job_id="j",
            categories=["marketing_profile"],
            category="marketing_profile",
            part_count=1,
            known_count=None,
            already_stored=False,
            erased={"marketing_profile"},
        )
        assert verdict is PartVerdict.ERASED


def test_the_manifest_names_the_erased_categories_and_why(tmp_path: Path):
    storage = FolderStorage(tmp_path)
    reason = domain.erased_reason("era_1")
    settled = [
        domain.Settled(owner="marketing", category="marketing_profile", outcome="erased",
                       reason=reason),
    ]  # fmt: skip
    bundle = BundleInput("req_x", "usr_1", "k", T0, "completed", [], settled, {})
    manifest = write_bundle(storage, "bundles/b.zip", bundle)
    assert manifest["erased"] == [
        {"owner": "marketing", "category": "marketing_profile", "reason": reason}
    ]
    assert manifest["not_included"][0]["outcome"] == "erased"
    with storage.reader("bundles/b.zip") as stream:
        names = zipfile.ZipFile(io.BytesIO(stream.read())).namelist()
    assert "data/marketing/marketing_profile.json" not in names
