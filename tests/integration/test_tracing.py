"""Tracing on real Kafka and PostgreSQL: an inbound event's trace reaches what it causes.

An event carrying the CloudEvents distributed-tracing extension (`traceparent`, structured or
binary mode) is handled in a span of its trace (recorded by the SDK's in-memory exporter), the
log lines written meanwhile carry its trace id, and the consent state or deletion job it causes
carries a `traceparent` of the same trace, whose parent is the handling span.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import capture_logs

from services.consent.app import spec as consent_spec
from services.consent.context import Context as ConsentContext
from services.consent.settings import ConsentSettings
from services.retention.app import spec as retention_spec
from services.retention.context import Context as RetentionContext
from shared.contract.codec import decode, event_time
from shared.contract.envelope import CloudEvent
from shared.contract.events import ConsentState, DeletionJob, RequestStatusChanged
from shared.plumbing.clock import ManualClock
from shared.plumbing.service import Runtime
from shared.plumbing.tracing import add_trace_ids
from tests.integration.retention import harness as retention
from tests.support import events as make
from tests.support.kafka import produce, read_topic

pytestmark = pytest.mark.integration


def traceparent() -> tuple[str, str, str]:
    """A fresh sampled W3C traceparent (what a caller's tracer sends): (header, trace, span)."""
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def parts(value: str) -> tuple[str, str]:
    """(trace id, parent span id) of a traceparent."""
    version, trace_id, span_id, flags = value.split("-")
    assert version == "00", value
    assert int(flags, 16) & 1, value  # sampled, as the caller's was
    return trace_id, span_id


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def handled(exporter: InMemorySpanExporter, event_type: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == f"handle {event_type}"]


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


async def test_a_withdrawal_with_a_traceparent_gives_a_consent_state_in_its_trace(
    infra, topics, schema, spans
):
    provider, exporter = spans
    settings = ConsentSettings(
        kafka_bootstrap_servers=infra.kafka,
        database_url=infra.database_url,
        db_schema=schema,
        group_id=f"g-{schema}",
        topics=topics,
        api_token="tracing-t0ken-for-tests",
        ledger_key="ledger-key-for-tracing",
        batch_timeout_ms=20,
        otel_enabled=True,
    )
    runtime = Runtime(consent_spec(ConsentContext.from_settings(settings)), provider)
    await runtime.start()
    header, trace_id, caller_span = traceparent()
    try:
        grant = make.granted("usr_traced")
        withdrawal = make.withdrawn("usr_traced").model_copy(update={"traceparent": header})
        await produce(infra.kafka, topics.consent_changes, [grant, withdrawal])

        def traced(records: list[Any]) -> list[CloudEvent[Any]]:
            events = [decode(r.value) for r in records if r.value is not None]
            return [
                e
                for e in events
                if parts((e.model_extra or {}).get("traceparent", "00-x-y-01"))[0] == trace_id
            ]

        records = await read_topic(
            infra.kafka, topics.consent_state, until=lambda r: bool(traced(r))
        )
    finally:
        await runtime.stop()

    states = traced(records)
    assert [type(e) for e in states] == [ConsentState]
    assert states[0].data.version == 2  # the withdrawal's state; the grant is in another trace
    state_trace, state_parent = parts(states[0].model_extra["traceparent"])  # type: ignore[index]
    assert state_trace == trace_id
    [span] = handled(exporter, withdrawal.type)
    assert hex_ids(span) == (trace_id, state_parent)  # the state's parent: the handling span
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == caller_span
    assert span.attributes is not None
    assert span.attributes["cloudevents.event_id"] == withdrawal.id
    # FastStream's middleware traced the batches; the handling span links to its batch's span
    batches = [s for s in exporter.get_finished_spans() if s.name.endswith(" process")]
    assert batches
    assert {link.context.span_id for link in span.links} <= {
        b.get_span_context().span_id  # type: ignore[union-attr]
        for b in batches
    }
    assert span.links
    [granting] = handled(exporter, grant.type)
    assert hex_ids(granting)[0] != trace_id  # an event without a traceparent: the batch's trace
    assert granting.parent is not None
    assert granting.parent.span_id in {
        b.get_span_context().span_id  # type: ignore[union-attr]
        for b in batches
    }


async def binary(bootstrap: str, topic: str, event: CloudEvent[Any], header: str) -> None:
    """Produce `event` in CloudEvents binary mode, its traceparent as `ce_traceparent`."""
    attributes = {
        "specversion": "1.0",
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "subject": event.subject,
        "time": event_time(event.time),
        "traceparent": header,
    }
    headers = [(f"ce_{name}", value.encode()) for name, value in attributes.items()]
    headers.append(("content-type", b"application/json"))
    value = orjson.dumps(event.data.model_dump(mode="json", exclude_none=True))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=event.subject.encode(), headers=headers)
    finally:
        await producer.stop()


async def test_an_erasure_in_binary_mode_gives_deletion_jobs_and_logs_in_its_trace(
    infra, topics, schema, spans
):
    provider, exporter = spans
    settings = retention.settings(infra, topics, schema, otel_enabled=True)
    clock = ManualClock(retention.T0)
    runtime = Runtime(retention_spec(RetentionContext.from_settings(settings, clock)), provider)
    await runtime.start()
    erasure_header, erasure_trace, _ = traceparent()
    hold_header, hold_trace, _ = traceparent()
    subject = "usr_erased"
    try:
        with capture_logs(processors=[add_trace_ids]) as logs:
            await produce(
                infra.kafka, topics.accounts_lifecycle, [retention.signed_up(subject, "acc_t")]
            )
            request = retention.erasure(subject, "req_traced")
            await binary(infra.kafka, topics.privacy_requests, request, erasure_header)
            hold = retention.hold("h_traced", "usr_other", scope="subject", reason="court_order")
            await produce(
                infra.kafka,
                topics.legal_holds,
                [hold.model_copy(update={"traceparent": hold_header})],
            )

            def jobs(records: list[Any]) -> list[CloudEvent[Any]]:
                events = [decode(r.value) for r in records if r.value is not None]
                return [e for e in events if isinstance(e, DeletionJob)]

            # the timers the erasure set fire in the loop, later: they kept the trace
            records = await read_topic(
                infra.kafka, topics.privacy_jobs, until=lambda r: bool(jobs(r))
            )
            statuses = await read_topic(infra.kafka, topics.requests_status)
            await retention.eventually(
                lambda: _noop(), lambda _: bool(handled(exporter, hold.type))
            )
    finally:
        await runtime.stop()

    deleted = jobs(records)
    assert deleted
    for job in deleted:
        assert parts(job.model_extra["traceparent"])[0] == erasure_trace  # type: ignore[index]
    status = [decode(r.value) for r in statuses]
    assert isinstance(status[0], RequestStatusChanged)
    assert parts(status[0].model_extra["traceparent"])[0] == erasure_trace  # type: ignore[index]
    [span] = handled(exporter, request.type)
    assert hex_ids(span)[0] == erasure_trace
    placed = [line for line in logs if line["event"] == "legal_hold_placed"]
    assert [line["trace_id"] for line in placed] == [hold_trace]
    [hold_span] = handled(exporter, hold.type)
    assert placed[0]["span_id"] == hex_ids(hold_span)[1]


async def _noop() -> None:
    return None
