"""The ingest hot paths give the same results as the straightforward code they replace."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from services.consent import document, ledger
from shared.contract import codec

AWARE = datetime(2026, 11, 1, 12, 30, 5, 123456, tzinfo=UTC)
PLUS_TWO = AWARE.astimezone(timezone(timedelta(hours=2)))


def reference(value: object) -> bytes:
    def ts(v: datetime) -> str:
        return v.astimezone(UTC).isoformat()

    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=ts).encode()


@pytest.mark.parametrize(
    "value",
    [
        ["p", 1, "e", "web", "consent.granted.v1", True, None, AWARE, PLUS_TWO, "0" * 64],
        ["café", 1],  # non-ASCII: escaped by json.dumps
        ["del\x7f", 2],  # DEL: escaped by json.dumps only
        ['tab\tnew\nline\x01"quote\\', False],
        [2**70, "big"],  # beyond 64 bits
        [1.5, "float"],
        ["subject", {"ip_hash": "x", "tcf": "CP", "n": 1.0}],  # evidence: a nested object
        ("tuple", AWARE),
    ],
)
def test_canonical_bytes_match_sorted_compact_json(value: object) -> None:
    assert ledger._canonical(value) == reference(value)


def test_timestamps_in_utc_whatever_the_offset() -> None:
    assert document.utc_iso(PLUS_TWO) == AWARE.isoformat() == document.utc_iso(AWARE)


def event(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "web",
        "type": "consent.granted.v1",
        "subject": "s-1",
        "time": "2026-11-01T00:00:00Z",
        "datacontenttype": "application/json",
        "data": {"purpose": "marketing_email", "source": "web_form", "consent_type": "explicit"},
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    "envelope",
    [event(), event(data=None), event(traceparent="00-abc-def-01"), event(subject=None)],
)
def test_plain_envelopes_read_as_the_sdk_reads_them(envelope: dict[str, object]) -> None:
    raw = orjson.dumps(envelope)
    assert codec._plain_envelope(raw) == codec._sdk_attributes(raw)


@pytest.mark.parametrize(
    "raw",
    [
        orjson.dumps(event(ID="x")),  # the SDK lower-cases names
        orjson.dumps(event(data_base64="e30=")),
        orjson.dumps(event(specversion="0.3")),
        orjson.dumps(event(id=None)),
        orjson.dumps(event(time=None)),
        orjson.dumps([1, 2]),
        b"{not json",
    ],
)
def test_unusual_envelopes_take_the_sdk_path(raw: bytes) -> None:
    assert codec._plain_envelope(raw) is None
