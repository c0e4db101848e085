"""Tracing without Kafka: the trace context passes through handling, logs and encodings."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import capture_logs

from services.retention import workflow
from shared.contract.codec import canonical, decode, encode, encode_envelope
from shared.plumbing import tracing
from shared.plumbing.outbox import Outbox
from tests.support import events as make

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
STATE = "vendor=opaque"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def traced_withdrawal() -> object:
    return make.withdrawn("usr_1").model_copy(update={"traceparent": PARENT, "tracestate": STATE})


def test_with_tracing_off_the_inbound_trace_context_passes_through_unchanged():
    event = traced_withdrawal()
    out = Outbox()
    with tracing.handling(tracing.NOOP, event):  # type: ignore[arg-type]
        assert tracing.outgoing() == {"traceparent": PARENT, "tracestate": STATE}
        out.publish("t", make.granted("usr_1"))
    assert tracing.outgoing() == {}  # nothing leaks past the event
    published = decode(out.rows[0].value)
    assert published.model_extra == {"traceparent": PARENT, "tracestate": STATE}


def test_an_event_without_trace_context_publishes_none_when_tracing_is_off():
    out = Outbox()
    with tracing.handling(tracing.NOOP, make.withdrawn("usr_1")):
        out.publish("t", make.granted("usr_1"))
    assert decode(out.rows[0].value).model_extra == {}


def test_with_tracing_on_the_handling_span_is_a_child_and_log_lines_carry_its_ids():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    log = structlog.get_logger("t")
    with capture_logs(processors=[tracing.add_trace_ids]) as logs:
        log.info("outside")
        with tracing.handling(tracing.tracer_of(provider), traced_withdrawal()):  # type: ignore[arg-type]
            log.info("inside")
            carried = tracing.outgoing()
    [span] = exporter.get_finished_spans()
    context = span.get_span_context()
    assert context is not None
    span_id = f"{context.span_id:016x}"
    assert f"{context.trace_id:032x}" == TRACE_ID
    assert carried == {"traceparent": f"00-{TRACE_ID}-{span_id}-01", "tracestate": STATE}
    assert "trace_id" not in logs[0]
    assert (logs[1]["trace_id"], logs[1]["span_id"]) == (TRACE_ID, span_id)


def test_the_same_event_in_another_trace_is_no_conflict():
    event = make.withdrawn("usr_1")
    assert canonical(event.model_copy(update={"traceparent": PARENT})) == canonical(event)


def test_the_fast_encodings_place_trace_context_where_the_sdk_does():
    event = make.withdrawn("usr_1").model_copy(update={"traceparent": PARENT})
    _, value = encode(event)
    fast = encode_envelope(
        event_id=event.id,
        source=event.source,
        event_type=event.type,
        subject=event.subject,
        time=value.split(b'"time":"')[1].split(b'"')[0].decode(),
        data=event.data.model_dump(mode="json", exclude_none=True),
        extensions={"traceparent": PARENT},
    )
    assert fast == value
    row = {
        "job_id": "job_1",
        "subject_id": "usr_1",
        "owner": "crm",
        "category": "crm_data",
        "mode": "delete",
        "reason": "erasure_request",
        "request_id": "req_1",
        "due_by": datetime(2026, 12, 26, tzinfo=UTC),
    }
    now = datetime(2026, 11, 26, tzinfo=UTC)
    job = workflow.deletion_row("jobs", row, 1, now, {"traceparent": PARENT})
    expected = workflow.deletion_event(row, 1, now).model_copy(update={"traceparent": PARENT})
    assert job.value == encode(expected)[1]
