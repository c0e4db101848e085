"""Encoding and decoding contract events through the CloudEvents SDK."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import orjson
import pytest
from pydantic import ValidationError

from shared.contract.codec import DecodeError, decode, encode
from shared.contract.events import (
    ConsentChangeData,
    ConsentSource,
    ConsentStateData,
    Evidence,
    ExportPartData,
    LegalHoldPlacedData,
    ProcessingRestrictedData,
    personal_fields,
)
from tests.support import events as make

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def granted(**data):
    return make.granted("usr_42", via=ConsentSource.WEB_FORM, at=NOW, **data)


def test_an_event_round_trips_with_the_subject_as_kafka_key():
    event = granted(evidence=Evidence(ip_hash="h", user_agent="ua"))
    key, value = encode(event)
    assert key == b"usr_42"
    assert decode(value) == event


def test_structured_mode_carries_the_cloudevents_attributes():
    _, value = encode(granted())
    body = orjson.loads(value)
    assert body["specversion"] == "1.0"
    assert body["type"] == "consent.granted.v1"
    assert body["subject"] == "usr_42"
    assert body["data"]["purpose"] == "marketing_email"


def test_unknown_fields_and_extension_attributes_are_kept():
    _, value = encode(granted())
    body = orjson.loads(value)
    body["traceparent"] = "00-abc-def-01"
    body["data"]["campaign"] = "spring"
    event = decode(orjson.dumps(body))
    assert event.extensions()["traceparent"] == "00-abc-def-01"
    assert event.data.model_extra == {"campaign": "spring"}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{", "not a CloudEvents structured JSON event"),
        (b"\xff\xfe\x00", "not a CloudEvents structured JSON event"),
        (b'{"specversion":"1.0","id":"1","source":"s"}', "not a CloudEvents structured JSON event"),
        (None, "empty value"),
    ],
)
def test_malformed_bytes_raise_a_decode_error_with_a_reason(value, reason):
    with pytest.raises(DecodeError) as caught:
        decode(value)
    assert caught.value.reason.startswith(reason)


def test_unknown_types_and_versions_are_refused_by_name():
    body = orjson.loads(encode(granted())[1])
    body["type"] = "consent.granted.v9"
    with pytest.raises(DecodeError, match=r"unknown event type 'consent.granted.v9'"):
        decode(orjson.dumps(body))


def test_invalid_data_names_the_field():
    body = orjson.loads(encode(granted())[1])
    body["data"]["source"] = "carrier_pigeon"
    with pytest.raises(DecodeError, match=r"invalid consent.granted.v1: data.source"):
        decode(orjson.dumps(body))


def test_a_naive_timestamp_is_refused():
    body = orjson.loads(encode(granted())[1])
    body["time"] = "2026-11-26T10:00:00"
    with pytest.raises(DecodeError, match="time"):
        decode(orjson.dumps(body))


def test_contract_rules_are_checked_in_the_models():
    with pytest.raises(ValidationError, match="at least one purpose or category"):
        ProcessingRestrictedData()
    with pytest.raises(ValidationError, match="account_id"):
        LegalHoldPlacedData(hold_id="h", scope="account", reason="court_order")
    with pytest.raises(ValidationError, match="exactly one of sealed"):
        ExportPartData(
            job_id="j", request_id="r", owner="crm", category="crm_data",
            part_index=0, part_count=1, sha256="0" * 64,
        )  # fmt: skip


def test_personal_fields_are_marked():
    assert personal_fields(ConsentChangeData) == {
        "evidence.ip_hash",
        "evidence.user_agent",
        "evidence.tcf_string",
    }
    assert personal_fields(ConsentStateData) == set()


def test_withdrawal_and_grant_are_distinct_types():
    withdrawn = make.withdrawn("usr_1", via=ConsentSource.API)
    assert decode(encode(withdrawn)[1]).type == "consent.withdrawn.v1"


def test_the_contract_imports_without_the_service_dependencies():
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'faststream', 'asyncpg', 'structlog', 'fastapi', 'yaml'}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import shared.contract, shared.contract.sealing, shared.contract.schemas\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr
