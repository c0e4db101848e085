"""The hand-encoded consent.state.v1 is a valid contract event with the domain's data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.consent import fastpath
from services.consent.context import Context
from services.consent.settings import ConsentSettings
from services.consent.state import PurposeRecord, ScopeRecord, SubjectState
from shared.catalogue import load_purposes
from shared.contract.codec import decode, encode, new_event
from shared.contract.events import ConsentState
from shared.plumbing.clock import ManualClock

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def consent() -> Context:
    settings = ConsentSettings(
        kafka_bootstrap_servers="kafka:9092",
        database_url="postgresql://u:p@db/x",
        api_token="t" * 16,
        ledger_key="k" * 16,
    )
    return Context(settings=settings, catalogue=load_purposes(), clock=ManualClock(NOW))


def a_state() -> SubjectState:
    granted = PurposeRecord(
        "granted",
        NOW - timedelta(days=1),
        "e1",
        "explicit",
        "web_form",
        "2026-10",
        NOW + timedelta(days=3),
    )
    withdrawn = PurposeRecord("withdrawn", NOW - timedelta(hours=1), "e2", "gpc", "web_form")
    restricted = ScopeRecord(True, NOW, "e3")
    return SubjectState(
        "usr_7",
        5,
        {"personalisation": granted, "marketing_email": withdrawn},
        {"usage_data": restricted},
        {},
        NOW - timedelta(hours=1),
    )


def test_the_state_row_decodes_to_the_same_event_the_models_would_build():
    c, state = consent(), a_state()
    row = c.state_row(state, NOW)
    event = decode(row.value)
    assert isinstance(event, ConsentState)
    assert row.key == b"usr_7"
    assert row.topic == "consent.state"
    assert event.id == row.event_id
    assert (event.subject, event.source, event.time) == ("usr_7", "privacy-plane.consent", NOW)
    assert event.data == fastpath.state_data(state, c.catalogue, NOW)
    via_models = new_event(
        ConsentState, subject="usr_7", data=event.data, source="privacy-plane.consent", time=NOW
    ).model_copy(update={"id": event.id})
    assert decode(encode(via_models)[1]) == event


def test_the_state_row_carries_the_decisions():
    event = decode(consent().state_row(a_state(), NOW).value)
    assert isinstance(event, ConsentState)
    data = event.data
    assert data.version == 5
    assert data.gpc is True
    assert data.restrictions == ["usage_data"]
    assert data.purposes["personalisation"].allowed is False  # restricted through usage_data
    assert data.purposes["personalisation"].expires_at == NOW + timedelta(days=3)
    assert data.purposes["marketing_email"].state == "withdrawn"
    assert data.purposes["transactional_email"].allowed is True
    assert set(data.purposes) == set(load_purposes().purposes)


def test_a_replayed_state_keeps_its_event_id():
    c, state = consent(), a_state()
    assert c.state_row(state, NOW).event_id == c.state_row(state, NOW + timedelta(hours=1)).event_id
