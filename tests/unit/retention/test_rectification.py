"""Rectification (policy 5.2): the corrected values reach the category's owner as a job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.retention import workflow
from shared.contract.codec import decode, encode

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def test_a_rectification_job_carries_the_corrected_fields_to_the_categorys_owner():
    row = {
        "job_id": "job_r1",
        "subject_id": "usr_42",
        "request_id": "req_9",
        "owner": "crm",
        "category": "crm_data",
        "due_by": NOW + timedelta(days=30),
    }
    first = workflow.rectification_event(row, {"email": "new@example.com"}, 1, NOW)
    again = workflow.rectification_event(row, {"email": "new@example.com"}, 2, NOW)
    assert first.subject == "usr_42"
    assert (first.data.owner, first.data.category) == ("crm", "crm_data")
    assert first.data.fields == {"email": "new@example.com"}
    assert first.id != again.id  # each issue its own event, the same job
    assert (first.data.job_id, again.data.attempt) == ("job_r1", 2)
    assert decode(encode(first)[1]) == first  # a valid contract event
