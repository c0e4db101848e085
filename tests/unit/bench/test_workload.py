"""The bench's workloads are valid contract events with a known final state."""

from __future__ import annotations

from itertools import islice

from bench.workload import ConsentWorkload, export_records, matches
from shared.contract.codec import decode
from shared.contract.events import ConsentGranted, ConsentWithdrawn


def test_generated_consent_changes_decode_as_contract_events_keyed_by_subject():
    workload = ConsentWorkload(events=50, subjects=10)
    for key, value in islice(workload.messages(), 20):
        event = decode(value)
        assert isinstance(event, ConsentGranted | ConsentWithdrawn)
        assert event.subject == key.decode()


def test_changes_spread_over_every_subject_and_ids_are_unique():
    workload = ConsentWorkload(events=40, subjects=10)
    messages = list(workload.messages())
    assert len({key for key, _ in messages}) == 10
    assert len({decode(value).id for _, value in messages}) == 40


def test_final_state_is_the_last_change_per_subject_and_purpose():
    workload = ConsentWorkload(events=30, subjects=3)
    last: dict[tuple[str, str], str] = {}
    for _, value in workload.messages():
        event = decode(value)
        assert isinstance(event, ConsentGranted | ConsentWithdrawn)
        state = "granted" if isinstance(event, ConsentGranted) else "withdrawn"
        last[(event.subject, event.data.purpose)] = state
    final = workload.final_state()
    assert {(s, p): v for s, purposes in final.items() for p, v in purposes.items()} == last


def test_published_state_matches_only_when_every_expected_purpose_agrees():
    expected = {"marketing_email": "granted", "personalisation": "withdrawn"}
    published = {
        "marketing_email": {"state": "granted"},
        "personalisation": {"state": "withdrawn"},
        "analytics_cookies": {"state": "default"},
    }
    assert matches(expected, published)
    assert not matches(expected, {**published, "personalisation": {"state": "granted"}})
    assert not matches(expected, {"marketing_email": {"state": "granted"}})


def test_export_records_split_evenly_over_six_owners():
    parts = export_records(600)
    assert len(parts) == 6
    assert {len(records) for records in parts.values()} == {100}
