"""Hostile input makes no new time series: every label value comes from a vocabulary we own."""

from __future__ import annotations

import orjson
import pytest
from prometheus_client import REGISTRY

from tests.db.consent.conftest import Setup
from tests.support.records import Record

pytestmark = pytest.mark.db

ENVELOPE = {
    "specversion": "1.0",
    "source": "crm",
    "subject": "usr_1",
    "time": "2026-11-26T10:00:00Z",
}


def unknown_type(i: int) -> bytes:
    """A well-formed envelope of a made-up type (its name is echoed in the error)."""
    return orjson.dumps({**ENVELOPE, "id": f"u{i}", "type": f"x{i}.made_up.v1", "data": {}})


def malformed(i: int) -> bytes:
    """Broken JSON, a known type with bad data, or an envelope without an id, each unique."""
    if i % 3 == 0:
        return b'{"not json": ' + str(i).encode()
    if i % 3 == 1:
        bad = {**ENVELOPE, "id": f"m{i}", "type": "consent.granted.v1", "data": {"purpose": i}}
        return orjson.dumps(bad)
    return orjson.dumps({**ENVELOPE, "type": "consent.granted.v1", "data": {"n": i}})


def series() -> int:
    return sum(len(m.samples) for m in REGISTRY.collect() if m.name.startswith("pp_"))


async def feed(setup: Setup, values: list[bytes], first_offset: int) -> None:
    records = [
        Record("consent.changes", 0, first_offset + n, b"usr_1", value)
        for n, value in enumerate(values)
    ]
    await setup.pipeline.process(records)


async def test_a_thousand_made_up_types_and_malformed_payloads_add_no_series(setup: Setup):
    await feed(setup, [unknown_type(0), *(malformed(i) for i in range(3))], 0)
    after_first = series()
    hostile = [unknown_type(i) for i in range(1, 1000)] + [malformed(i) for i in range(3, 1000)]
    for start in range(0, len(hostile), 500):
        await feed(setup, hostile[start : start + 500], 4 + start)
    assert series() == after_first
    errors = [r.headers["error"] for r in await setup.outbox() if r.topic == "dead"]
    assert len(errors) == 2000
    # the detail stays in the dead letter's header
    assert "unknown event type 'x7.made_up.v1'" in errors
    assert sum(e.startswith("not a CloudEvents structured JSON event: ") for e in errors) == 334
    assert sum(e.startswith("invalid consent.granted.v1: data.") for e in errors) == 333
    assert errors.count("missing required attribute(s): id") == 333
