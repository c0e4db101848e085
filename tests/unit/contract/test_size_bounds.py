"""Every free-form value and list has a size bound (contract 1.2.0, lists 1.3.0); past one the
refusal is too_large."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from shared.contract.codec import DecodeError, decode, decode_kafka, encode
from shared.contract.envelope import MAX_EVENT_BYTES
from shared.contract.events import (
    EVENT_TYPES,
    MAX_ITEMS,
    ConsentSource,
    Evidence,
    ProcessingRestricted,
)
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


def _nodes(schema: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema of `schema` (its `$defs` included), with a path naming it."""
    if isinstance(schema, dict):
        yield where, schema
        for name, sub in schema.items():
            yield from _nodes(sub, f"{where}/{name}")
    elif isinstance(schema, list):
        for index, sub in enumerate(schema):
            yield from _nodes(sub, f"{where}/{index}")


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_list_and_map_in_a_schema_states_its_bound(event_type: str):
    schema = schema_for(event_type)
    unbounded = [
        where
        for where, node in _nodes(schema, event_type)
        if (node.get("type") == "array" and "maxItems" not in node)
        # a map (values of one schema); open objects' extras are bounded by x-max-extra-bytes
        or (isinstance(node.get("additionalProperties"), dict) and "maxProperties" not in node)
    ]
    assert unbounded == []


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_string_in_a_schema_states_its_bound(event_type: str):
    """A `maxLength`, or a pattern, format or enum that fixes the length."""
    fixed = ("enum", "const", "format")
    unbounded = [
        where
        for where, node in _nodes(schema_for(event_type), event_type)
        if node.get("type") == "string"
        and "maxLength" not in node
        and not any(key in node for key in fixed)
        and not re.fullmatch(r"\^[^*+]*\$", node.get("pattern", ""))  # no * or +: bounded
    ]
    assert unbounded == []


def _restricted(categories: list[str]) -> bytes:
    event = make.restricted("usr_1", at=NOW, categories=["crm_data"])
    envelope = orjson.loads(encode(event)[1])
    envelope["data"]["categories"] = categories
    return orjson.dumps(envelope)


def test_a_list_at_its_bound_is_accepted_and_one_past_it_is_too_large_and_named():
    at_bound = [f"category_{i}" for i in range(MAX_ITEMS)]
    accepted = decode(_restricted(at_bound))
    assert isinstance(accepted, ProcessingRestricted)
    assert accepted.data.categories == at_bound
    error = refusal(_restricted([*at_bound, "one_more"]))
    assert error.kind == "too_large"
    assert error.reason == (
        "too large processing.restricted.v1: data.categories: "
        f"List should have at most {MAX_ITEMS} items after validation, not {MAX_ITEMS + 1}"
    )


@pytest.mark.parametrize(
    ("event_type", "data", "where"),
    [
        (
            "account.signed_up.v1",
            {"account_id": "acc_1", "jurisdiction": "DE", "policy_version": "2026-10",
             "consents": [{"purpose": "marketing_email", "granted": True}] * (MAX_ITEMS + 1)},
            "data.consents",
        ),
        (
            "erasure.requested.v1",  # the list branch of `"all" | [categories]`
            {"request_id": "req_1", "verified_by": "portal", "scope": ["c"] * (MAX_ITEMS + 1)},
            "data.scope.list",
        ),
    ],
)  # fmt: skip
def test_a_list_of_objects_or_in_a_union_past_its_bound_is_too_large(
    event_type: str, data: dict[str, Any], where: str
):
    envelope = orjson.loads(granted_with())
    envelope["type"], envelope["data"] = event_type, data
    error = refusal(orjson.dumps(envelope))
    assert error.kind == "too_large"
    assert error.reason.startswith(f"too large {event_type}: ")
    assert where in error.reason
    assert f"at most {MAX_ITEMS} items" in error.reason
