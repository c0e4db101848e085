"""Over-size input (issue #23): a record past `max_event_bytes` and a field past its bound are
dead-lettered as `too_large` with a clear reason, and the service keeps consuming."""

from __future__ import annotations

import orjson
import pytest
from prometheus_client import REGISTRY

from shared.contract.codec import encode
from tests.integration.test_plumbing import signed_up, toy_runtime, toy_settings, wait_rows
from tests.support.kafka import produce, read_topic

pytestmark = pytest.mark.integration


def too_large_count() -> float:
    value = REGISTRY.get_sample_value(
        "pp_events_deadlettered_total", {"service": "toy", "reason": "too_large"}
    )
    return value or 0.0


def altered(subject: str, **data: object) -> tuple[bytes, bytes]:
    """A valid signed-up event's (key, value) with `data` fields set past the model's checks."""
    key, value = encode(signed_up(subject))
    envelope = orjson.loads(value)
    envelope["data"].update(data)
    return key, orjson.dumps(envelope)


async def test_an_oversize_record_and_overlong_fields_are_dead_lettered_as_too_large(
    infra, topics, schema
):
    settings = toy_settings(infra, topics, schema).model_copy(update={"max_event_bytes": 65_536})
    runtime = toy_runtime(settings)
    before = too_large_count()
    await runtime.start()
    try:
        huge = altered("usr_1", padding="x" * 70_000)  # well-formed, but past the 64 KiB limit
        long_field = altered("usr_2", policy_version="v" * 51)  # maxLength 50
        long_extras = altered("usr_3", note="n" * 17_000)  # unknown fields: 16 KiB at most
        good = signed_up("usr_4")
        await produce(infra.kafka, topics.accounts_lifecycle, [huge, long_field, long_extras, good])
        rows = await wait_rows(infra, schema, 1)
        assert [r["event_id"] for r in rows] == [good.id]  # it went on consuming
        dead = await read_topic(infra.kafka, topics.deadletter, until=lambda r: len(r) >= 3)
        errors = {r.key: dict(r.headers)["error"].decode() for r in dead}
        assert errors[b"usr_1"].startswith("event of ")
        assert errors[b"usr_1"].endswith("bytes, over the limit of 65536")
        assert errors[b"usr_2"].startswith("too large account.signed_up.v1: data.policy_version")
        assert errors[b"usr_3"].startswith("too large account.signed_up.v1: data: unknown fields")
        assert {r.value for r in dead} == {huge[1], long_field[1], long_extras[1]}
        assert too_large_count() - before == 3
    finally:
        await runtime.stop()
