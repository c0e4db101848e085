"""Erasure, extension and cancellation of requests, reported in request.status.v1."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.contract.events import (
    RequestExtended,
    RequestStatusChanged,
)
from tests.integration.retention.harness import (
    T0,
    Harness,
    closed,
    completed,
    erasure,
    eventually,
    hold,
    release,
    signed_up,
)
from tests.support import events as make

pytestmark = pytest.mark.integration

DELETED_AT_ONCE = {"account_profile", "crm_data", "marketing_profile", "usage_data"}


def extended(subject: str, request_id: str, deadline: datetime) -> RequestExtended:
    return make.request_extended(
        subject, request_id, deadline, reason="many systems", source="test", at=T0
    )


async def gauge(h: Harness, name: str, labels: dict[str, str]) -> float | None:
    text = (await h.http.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


async def statuses(h: Harness, request_id: str, count: int) -> list[RequestStatusChanged]:
    def mine(records: list) -> list:  # type: ignore[type-arg]
        return [r for r in records if r.key and request_id.encode() in (r.value or b"")]

    found = await h.published(h.topics.requests_status, until=lambda r: len(mine(r)) >= count)
    return [e for _, e in found if e.data.request_id == request_id]


async def test_erasure_deletes_what_it_may_restricts_the_rest_and_reports_why(
    infra, topics, schema
):
    h = await Harness.start(infra, topics, schema)
    try:
        await h.send(topics.accounts_lifecycle, signed_up("usr_e", "acc_e"))
        await h.send(
            topics.legal_holds,
            hold("hold_d", "usr_e", categories=["support_communications"], reason="dispute"),
        )
        await eventually(lambda: h.get("/v1/holds"), lambda r: len(r["holds"]) == 1)
        await eventually(lambda: h.fetch("SELECT 1 FROM subjects WHERE subject_id = 'usr_e'"), bool)
        await h.send(topics.privacy_requests, erasure("usr_e", "req_1"))

        jobs = await h.jobs("request_id = 'req_1'", count=5)
        assert {(j["category"], j["mode"]) for j in jobs} == {
            *((c, "delete") for c in DELETED_AT_ONCE),
            ("billing_records", "restrict"),
        }
        assert {j["due_by"] for j in jobs} == {datetime(2026, 12, 26, 10, 0, tzinfo=UTC)}
        later = await h.fetch(
            "SELECT category, mode, due_at, status FROM timers WHERE request_id = 'req_1'"
            " AND status IN ('pending', 'blocked') ORDER BY category"
        )
        assert [tuple(r) for r in later] == [
            ("billing_records", "delete", datetime(2033, 11, 26, 10, 0, tzinfo=UTC), "pending"),
            ("support_communications", "delete", T0, "blocked"),
        ]

        first = (await statuses(h, "req_1", 1))[0]
        assert first.data.status == "in_progress"
        assert first.data.deadline == datetime(2026, 12, 26, 10, 0, tzinfo=UTC)
        outcomes = {o.category: o for o in first.data.outcomes}
        assert outcomes["billing_records"].outcome == "retained"
        assert outcomes["billing_records"].reason == "legal obligation: tax; restricted meanwhile"
        assert outcomes["billing_records"].until == datetime(2033, 11, 26, 10, 0, tzinfo=UTC)
        assert outcomes["support_communications"].outcome == "blocked"
        assert outcomes["support_communications"].reason == "legal hold: dispute"
        assert {c for c, o in outcomes.items() if o.outcome == "pending"} == DELETED_AT_ONCE

        new_deadline = datetime(2027, 2, 20, tzinfo=UTC)
        await h.send(
            topics.privacy_requests,
            extended("usr_e", "req_1", new_deadline),
            extended("usr_e", "req_1", datetime(2027, 2, 21, tzinfo=UTC)),  # only once
        )
        dead = await h.published(topics.deadletter, until=lambda r: len(r) >= 1)
        assert [e.type for _, e in dead] == ["request.extended.v1"]
        view = await h.get("/v1/requests/req_1")
        assert view["deadline"] == "2027-02-20T00:00:00Z"
        assert (await h.get("/v1/requests?due_within_days=7"))["requests"] == []
        assert view["extended"] is True
        assert view["reason"] == "extended: many systems"

        profile = next(j for j in jobs if j["category"] == "account_profile")
        await h.send(topics.privacy_receipts, completed("usr_e", profile["job_id"], "accounts"))
        await h.send(topics.legal_holds, release("hold_d", "usr_e"))
        support = await h.jobs("category = 'support_communications'")
        assert support[0]["request_id"] == "req_1"

        found = await statuses(h, "req_1", 4)
        last = found[-1].data
        assert last.deadline == new_deadline
        assert last.reason == "extended: many systems"
        final = {o.category: o.outcome for o in last.outcomes}
        assert final["account_profile"] == "deleted"
        assert final["support_communications"] == "pending"
        assert final["billing_records"] == "retained"
        h.clock.set(datetime(2027, 2, 21, tzinfo=UTC))  # past the extended deadline
        view = await eventually(lambda: h.get("/v1/requests/req_1"), lambda r: r["overdue"])
        assert (view["overdue"], view["status"]) == (True, "in_progress")
        near = (await h.get("/v1/requests?due_within_days=7"))["requests"]
        assert [(r["request_id"], r["overdue"]) for r in near] == [("req_1", True)]
        late = await statuses(h, "req_1", 5)
        assert late[-1].data.overdue is True
        labels = {"service": "retention", "kind": "erasure", "status": "in_progress"}
        overdue = await eventually(
            lambda: gauge(h, "pp_requests", {**labels, "overdue": "true"}), lambda v: v == 1.0
        )
        assert overdue == 1.0

        subject = await h.get("/v1/subjects/usr_e/retention")
        assert [c["job_id"] for c in subject["certificates"]] == [profile["job_id"]]
        assert "records" not in str(subject["certificates"]).replace("records_deleted", "")
    finally:
        await h.stop()


async def test_cancelled_erasure_stops_what_was_not_issued(infra, topics, schema):
    h = await Harness.start(infra, topics, schema)
    try:
        await h.send(
            topics.accounts_lifecycle, signed_up("usr_f", "acc_f"), closed("usr_f", "acc_f")
        )
        await h.send(
            topics.legal_holds,
            hold("hold_f", "usr_f", categories=["crm_data"], reason="subpoena"),
        )
        await eventually(lambda: h.get("/v1/holds"), lambda r: len(r["holds"]) == 1)
        await h.jobs("category = 'marketing_profile'")  # the closure's schedule is running
        await h.send(
            topics.privacy_requests, erasure("usr_f", "req_2", scope=["crm_data", "usage_data"])
        )
        await h.jobs("request_id = 'req_2'")  # usage_data goes at once; crm_data is held
        superseded = await h.fetch("SELECT 1 FROM timers WHERE status = 'superseded'")
        assert len(superseded) == 2  # the erasure took over the closure's crm and usage timers
        cancel = make.request_cancelled("usr_f", "req_2", source="test", at=T0)
        await h.send(topics.privacy_requests, cancel)
        view = await eventually(
            lambda: h.get("/v1/requests/req_2"), lambda r: r["status"] == "cancelled"
        )
        assert {o["category"]: o["outcome"] for o in view["outcomes"]} == {
            "crm_data": "cancelled",
            "usage_data": "pending",
        }
        await h.send(topics.legal_holds, release("hold_f", "usr_f"))
        await eventually(lambda: h.get("/v1/holds"), lambda r: r["holds"] == [])
        await h.quiet()
        rows = await h.fetch("SELECT category, request_id FROM jobs ORDER BY category")
        assert [tuple(r) for r in rows] == [("marketing_profile", None), ("usage_data", "req_2")]
        closure = await h.fetch(
            "SELECT category, status FROM timers WHERE cause = 'closure' AND category IN"
            " ('crm_data', 'usage_data') ORDER BY category"
        )
        # crm_data goes back to its closure schedule (day 30); usage_data was deleted already
        assert [tuple(r) for r in closure] == [
            ("crm_data", "pending"),
            ("usage_data", "superseded"),
        ]
    finally:
        await h.stop()
