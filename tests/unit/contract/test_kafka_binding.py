"""The CloudEvents Kafka binding: what we publish (structured mode), what we read (both modes)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from cloudevents.http import CloudEvent as SdkEvent
from cloudevents.kafka import KafkaMessage, to_binary, to_structured

from shared.contract.codec import (
    STRUCTURED_CONTENT_TYPE,
    DecodeError,
    canonical,
    decode,
    decode_kafka,
    encode,
    kafka_headers,
)
from shared.contract.events import EVENT_TYPES
from tests.packaging.examples import EXAMPLES
from tests.support import events as make

SIGNED_UP = orjson.loads(encode(make.signed_up("usr_1"))[1])
ATTRIBUTES = {k: v for k, v in SIGNED_UP.items() if k != "data"}


def headers(message: KafkaMessage) -> list[tuple[str, bytes]]:
    return list(message.headers.items())


def value(message: KafkaMessage) -> bytes:
    raw = message.value
    return raw if isinstance(raw, bytes) else raw.encode()


def binary(attributes: dict[str, Any], data: Any = None) -> KafkaMessage:
    """A binary-mode record as the SDK 1.x makes it (keyed by subject)."""
    event = SdkEvent.create(attributes, SIGNED_UP["data"] if data is None else data)
    return to_binary(event, key_mapper=lambda e: e["subject"])


def refusal(value: bytes | None, given: list[tuple[str, bytes]]) -> tuple[str, str]:
    with pytest.raises(DecodeError) as caught:
        decode_kafka(value, given)
    return caught.value.kind, caught.value.reason


def test_our_records_are_structured_mode_with_no_ce_header():
    assert kafka_headers() == {"content-type": "application/cloudevents+json; charset=UTF-8"}
    assert kafka_headers()["content-type"] == STRUCTURED_CONTENT_TYPE
    assert not [name for name in kafka_headers() if name.lower().startswith("ce_")]


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_every_type_reads_the_same_in_binary_and_structured_mode(event_type):
    attributes = {**ATTRIBUTES, "type": event_type, "id": f"id-{event_type}"}
    structured = to_structured(SdkEvent.create(attributes, EXAMPLES[event_type]))
    as_binary = binary(attributes, EXAMPLES[event_type])
    ours = decode_kafka(value(structured), headers(structured))
    theirs = decode_kafka(value(as_binary), headers(as_binary))
    assert type(ours) is type(theirs) is EVENT_TYPES[event_type]
    assert theirs == ours
    assert canonical(theirs) == canonical(ours)


def test_the_digest_ignores_partitionkey_and_how_an_extension_value_is_typed():
    """SDK 1.x puts `partitionkey` in a structured envelope but only in the key in binary
    mode; a header carries every extension as a string."""
    with_key = {**ATTRIBUTES, "partitionkey": "usr_1", "sequence": 7, "sampled": True}
    structured = to_structured(SdkEvent.create(with_key, SIGNED_UP["data"]))
    as_text = {**with_key, "sequence": "7", "sampled": "true"}  # SDK 1.x writes strings only
    as_binary = to_binary(SdkEvent.create(as_text, SIGNED_UP["data"]))
    assert "ce_partitionkey" not in as_binary.headers
    ours = decode_kafka(value(structured), headers(structured))
    theirs = decode_kafka(value(as_binary), headers(as_binary))
    assert ours.extensions()["sequence"] == 7
    assert theirs.extensions()["sequence"] == "7"
    assert canonical(theirs) == canonical(ours)
    other = decode(orjson.dumps({**SIGNED_UP, "sequence": 8}))
    assert canonical(other) != canonical(ours)


def test_binary_mode_extensions_and_content_type_become_attributes():
    message = binary({**ATTRIBUTES, "traceparent": "00-abc-01", "datacontenttype": "text/json"})
    event = decode_kafka(value(message), [*headers(message), ("x-trace", b"\xff")])
    assert event.extensions() == {"traceparent": "00-abc-01"}
    assert event.datacontenttype == "text/json"


def test_a_structured_content_type_wins_over_ce_headers_and_old_hints_stay_structured():
    value = encode(make.signed_up("usr_1"))[1]
    both = [("content-type", STRUCTURED_CONTENT_TYPE.encode()), ("ce_specversion", b"1.0")]
    assert decode_kafka(value, both) == decode(value)
    assert decode_kafka(value, [("ce_type", b"account.signed_up.v1")]) == decode(value)


@pytest.mark.parametrize("missing", ["source", "id", "time", "type", "subject"])
def test_a_binary_event_missing_an_attribute_is_refused_as_the_structured_one_is(missing):
    structured = orjson.dumps({k: v for k, v in SIGNED_UP.items() if k != missing})
    with pytest.raises(DecodeError) as caught:
        decode(structured)
    message = binary(ATTRIBUTES)
    given = [(n, v) for n, v in headers(message) if n != f"ce_{missing}"]
    kind, reason = refusal(value(message), given)
    assert kind == caught.value.kind
    assert reason == caught.value.reason.replace("structured JSON", "binary-mode")


@pytest.mark.parametrize(
    ("change", "kind", "reason"),
    [
        ({"type": "made.up.v1"}, "unknown_type", "unknown event type 'made.up.v1'"),
        ({"specversion": "0.3"}, "invalid", "invalid account.signed_up.v1: specversion"),
        ({"datacontenttype": "text/plain"}, "invalid", "binary mode: datacontenttype must"),
    ],
)
def test_invalid_binary_events_say_why(change, kind, reason):
    message = binary({**ATTRIBUTES, **change})
    got_kind, got_reason = refusal(value(message), headers(message))
    assert (got_kind, got_reason[: len(reason)]) == (kind, reason)


def test_binary_data_is_validated_and_must_be_json():
    message = binary(ATTRIBUTES, {"account_id": 7})
    assert refusal(value(message), headers(message))[0] == "invalid"
    assert refusal(b"{not json", headers(message))[1].startswith("binary mode: the value is not")
    utf = [*headers(message)[:-1], ("ce_time", b"\xff")]
    assert refusal(value(message), utf) == ("undecodable", "binary mode: ce_time is not UTF-8")
    twice = [*headers(message), ("ce_id", b"other")]
    assert (
        refusal(value(message), twice)[1] == "binary mode: ce_id is not a single attribute header"
    )


def test_ce_headers_without_a_specversion_or_a_structured_value_are_refused_clearly():
    message = binary(ATTRIBUTES)
    given = [(n, v) for n, v in headers(message) if n != "ce_specversion"]
    assert refusal(value(message), given) == (
        "undecodable",
        "ce_* headers without ce_specversion, and the value is no structured event",
    )
