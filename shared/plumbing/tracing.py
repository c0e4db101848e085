"""OpenTelemetry: a span per handled event, in the trace its CloudEvent names, carried onwards.

The CloudEvents distributed-tracing extension (`traceparent`, `tracestate`) of an inbound event
is the parent of the span its handler runs in; whatever the handler publishes through the
outbox carries that span's context in the same extension, so a deletion job or a consent state
belongs to the trace of the event that caused it. With tracing off (`<PREFIX>OTEL_ENABLED`
false, the default) the tracer records nothing but the inbound context still passes through
unchanged, so a caller's trace is never cut by us. When on, the SDK's standard `OTEL_*`
variables configure the OTLP exporter (endpoint, headers, sampler, resource).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.contract.envelope import CloudEvent

TRACE_ATTRIBUTES = ("traceparent", "tracestate")
"""The CloudEvents distributed-tracing extension attributes (binary mode: `ce_traceparent`)."""
INSTRUMENTATION = "privacy-plane"
NOOP: Tracer = trace.NoOpTracer()
"""What runs when tracing is off: no spans recorded, the inbound context passed through."""

_PROPAGATOR = TraceContextTextMapPropagator()


def provider_from_env(service: str) -> TracerProvider:
    """An SDK tracer provider exporting over OTLP/HTTP, configured by the `OTEL_*` variables.

    `OTEL_SERVICE_NAME` overrides the service name (`privacy-plane-<service>` otherwise);
    `OTEL_EXPORTER_OTLP_ENDPOINT` says where the collector is (http://localhost:4318 by default).
    """
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME over ours
    resource = Resource.create({SERVICE_NAME: f"privacy-plane-{service}"})
    provider = SdkTracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def tracer_of(provider: TracerProvider | None) -> Tracer:
    """The services' tracer from `provider`; the no-op tracer when tracing is off."""
    return NOOP if provider is None else provider.get_tracer(INSTRUMENTATION)


def shutdown(provider: TracerProvider | None) -> None:
    """Flush and stop an SDK provider's exporters (nothing for the API's own providers)."""
    stop = getattr(provider, "shutdown", None)
    if callable(stop):
        stop()


def trace_context(event: CloudEvent[Any]) -> dict[str, str]:
    """The event's distributed-tracing extension attributes that are strings."""
    extra = event.__pydantic_extra__
    if not extra:  # the common case, checked first: this runs for every consumed event
        return {}
    return {name: extra[name] for name in TRACE_ATTRIBUTES if isinstance(extra.get(name), str)}


_UNTRACED = nullcontext()


def handling(tracer: Tracer, event: CloudEvent[Any]) -> AbstractContextManager[Any]:
    """Run the handling of `event` in a span whose parent is the event's `traceparent`.

    Without one, the span is a child of what is current (FastStream's batch span), and a span
    current when the event carries its own parent (the batch) is linked, not lost. With
    tracing off only the carried context is made current: the ingest path pays next to
    nothing for an event without one.
    """
    carried = trace_context(event)
    if tracer is NOOP:
        return _carrying(carried) if carried else _UNTRACED
    return _span(tracer, event, carried)


@contextmanager
def _carrying(carried: dict[str, str]) -> Iterator[None]:
    """Tracing off: the carried context made current, so that it passes on unchanged."""
    token = otel_context.attach(_PROPAGATOR.extract(carried))
    try:
        yield
    finally:
        otel_context.detach(token)


@contextmanager
def _span(tracer: Tracer, event: CloudEvent[Any], carried: dict[str, str]) -> Iterator[None]:
    current = trace.get_current_span().get_span_context()
    parent = _PROPAGATOR.extract(carried) if carried else None
    links = [Link(current)] if parent is not None and current.is_valid else None
    with tracer.start_as_current_span(
        f"handle {event.type}",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes={
            # CloudEvents semantic conventions; the subject is an id, never personal values
            "cloudevents.event_id": event.id,
            "cloudevents.event_source": event.source,
            "cloudevents.event_type": event.type,
            "cloudevents.event_subject": event.subject,
        },
        record_exception=False,  # refusals are dead letters, reported by the pipeline
    ):
        yield


def outgoing() -> dict[str, str]:
    """The trace context to stamp on an event published now (empty outside any trace)."""
    current = otel_context.get_current()
    if not current:  # nothing attached: the hot path with tracing off
        return {}
    if not trace.get_current_span(current).get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, current)
    return carrier


def add_trace_ids(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current span's `trace_id` and `span_id` on every log line."""
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event_dict.setdefault("trace_id", trace.format_trace_id(span.trace_id))
        event_dict.setdefault("span_id", trace.format_span_id(span.span_id))
    return event_dict
