"""Every free-form value has a size bound (contract 1.2.0); past one the refusal is too_large."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from shared.contract.codec import DecodeError, decode, decode_kafka, encode
from shared.contract.envelope import MAX_EVENT_BYTES
from shared.contract.events import ConsentSource, Evidence
from shared.contract.schemas import schema_for
from tests.support import events as make

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def granted_with(**changes: Any) -> bytes:
    """A valid grant's value with `changes` applied to its data after the model's checks."""
    event = make.granted(
        "usr_1", via=ConsentSource.WEB_FORM, at=NOW, evidence=Evidence(ip_hash="h")
    )
    envelope = orjson.loads(encode(event)[1])
    envelope["data"].update(changes)
    return orjson.dumps(envelope)


def refusal(value: bytes, max_bytes: int = MAX_EVENT_BYTES) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode_kafka(value, (), max_bytes)
    return caught.value


def test_a_record_over_the_limit_is_too_large_without_being_parsed():
    error = refusal(b"{" + b" " * 2000 + b"}", max_bytes=1024)  # not even JSON: never parsed
    assert error.kind == "too_large"
    assert error.reason == "event of 2002 bytes, over the limit of 1024"


def test_headers_count_toward_the_record_size():
    with pytest.raises(DecodeError) as caught:
        decode_kafka(granted_with(), [("x-trace", b"t" * 2000)], len(granted_with()) + 100)
    assert caught.value.kind == "too_large"


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"notice_id": "n" * 201}, "data.notice_id"),  # maxLength 200
        ({"evidence": {"user_agent": "u" * 1001}}, "data.evidence.user_agent"),
        ({"evidence": {"ip_hash": "h", "extra": "e" * 5000}}, "data.evidence: unknown fields"),
        ({"mine": "m" * 17_000}, "data: unknown fields"),
    ],
)
def test_a_field_over_its_bound_is_too_large_and_named(changes: dict[str, Any], where: str):
    error = refusal(granted_with(**changes))
    assert error.kind == "too_large"
    assert error.reason.startswith(f"too large consent.granted.v1: {where}")


def test_within_the_bounds_unknown_fields_are_kept():
    event = decode(granted_with(mine="m" * 1000, evidence={"ip_hash": "h", "note": "n" * 1000}))
    assert event.data.model_extra == {"mine": "m" * 1000}


def test_a_bad_value_that_is_not_a_size_stays_invalid():
    assert refusal(granted_with(source="carrier_pigeon")).kind == "invalid"


def test_rectification_fields_are_bounded_in_names_and_bytes():
    base = orjson.loads(granted_with())
    base["type"] = "rectification.requested.v1"
    base["data"] = {"request_id": "req_1", "category": "crm_data"}
    base["data"]["fields"] = {f"f{i}": "v" * 300 for i in range(200)}  # 200 names, ~64 KiB
    assert decode(orjson.dumps(base)).type == "rectification.requested.v1"
    for fields in ({f"f{i}": 1 for i in range(201)}, {"blob": "b" * 70_000}):
        base["data"]["fields"] = fields
        assert refusal(orjson.dumps(base)).kind == "too_large"


def test_the_schemas_state_the_bounds():
    schema = schema_for("consent.granted.v1")
    assert schema["x-max-event-bytes"] == MAX_EVENT_BYTES
    assert schema["x-max-extra-bytes"] == 4096  # the envelope's extensions
    assert schema["$defs"]["Evidence"]["x-max-extra-bytes"] == 4096
    assert schema["$defs"]["ConsentChangeData"]["x-max-extra-bytes"] == 16_384
    fields = schema_for("rectification.requested.v1")["$defs"]["RectificationRequestedData"]
    assert fields["properties"]["fields"]["x-max-bytes"] == 65_536
    assert fields["properties"]["fields"]["maxProperties"] == 200
