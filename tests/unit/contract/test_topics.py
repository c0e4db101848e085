"""The contract says which topic each event type travels on."""

from __future__ import annotations

from typing import get_args

import pytest

from shared.contract.events import EVENT_TYPES, AnyEvent
from shared.contract.topics import TOPIC_OF_TYPE, Topics


def union_types() -> set[str]:
    union, _discriminator = get_args(AnyEvent)
    return {model.model_fields["type"].default for model in get_args(union)}


def test_every_event_type_of_the_union_travels_on_a_contract_topic() -> None:
    types = union_types()
    assert types == set(EVENT_TYPES)
    assert set(TOPIC_OF_TYPE) == types
    topics = Topics().with_prefix("t_")
    for event_type in types:
        assert topics.for_type(event_type) in topics.all(), event_type


@pytest.mark.parametrize(
    ("event_type", "topic"),
    [
        ("account.closed.v1", "accounts.lifecycle"),
        ("consent.gpc_signal.v1", "consent.changes"),
        ("request.cancelled.v1", "privacy.requests"),
        ("legal_hold.released.v1", "legal.holds"),
        ("export.part_failed.v1", "privacy.receipts"),
        ("consent.state.v1", "consent.state"),
        ("rectification.job.v1", "privacy.jobs"),
        ("request.status.v1", "privacy.requests.status"),
    ],
)
def test_inbound_and_outbound_types_name_their_design_topic(event_type: str, topic: str) -> None:
    assert Topics().for_type(event_type) == topic


def test_a_type_outside_the_contract_has_no_topic() -> None:
    with pytest.raises(KeyError):
        Topics().for_type("consent.granted.v7")
