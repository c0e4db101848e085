"""Prometheus metrics shared by the services (labelled by service).

Every label value comes from a vocabulary we own (service names, contract types, enums), never
from the input: each new value is a new time series, so a producer could otherwise grow ours.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.contract.events import EVENT_TYPES

EVENTS_CONSUMED = Counter(
    "pp_events_consumed_total", "Kafka records read by the pipeline", ["service", "topic"]
)
EVENTS_PROCESSED = Counter(
    "pp_events_processed_total", "Events applied (first delivery)", ["service", "type"]
)
EVENTS_DUPLICATE = Counter(
    "pp_events_duplicate_total", "Events skipped as already processed", ["service", "type"]
)
EVENTS_DEADLETTERED = Counter(
    "pp_events_deadlettered_total",
    "Records sent to the dead-letter topic (once each), by kind (deadletters.DeadLetterKind)",
    ["service", "reason"],
)
EVENTS_IGNORED = Counter(
    "pp_events_ignored_total",
    "Contract events this service does not handle, by type (`other` past the contract's)",
    ["service", "type"],
)
EVENTS_SUPPRESSED = Counter(
    "pp_events_suppressed_total", "Events dropped because their subject was erased", ["service"]
)
TRANSIENT_RETRIES = Counter(
    "pp_transient_retries_total", "Batches retried after a transient failure", ["service"]
)
BATCH_SECONDS = Histogram(
    "pp_batch_seconds",
    "Time to process one consumed batch, commit included",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OUTBOX_PUBLISHED = Counter("pp_outbox_published_total", "Outbox rows published", ["service"])
OUTBOX_BACKLOG = Gauge("pp_outbox_backlog", "Outbox rows not yet published", ["service"])
OUTBOX_PRODUCER_RENEWED = Counter(
    "pp_outbox_producer_renewed_total",
    "Relay producers replaced after the broker refused a batch",
    ["service"],
)
OUTBOX_RELAY_STEPPED_DOWN = Counter(
    "pp_outbox_relay_stepped_down_total",
    "Relay tenures ended because their producer was fenced (another replica leads) or unusable",
    ["service"],
)
OUTBOX_RELAY_HEARTBEAT = Gauge(
    "pp_outbox_relay_heartbeat_timestamp_seconds",
    "When this process's relay last went round its loop (published, idle, standing by, retrying)",
    ["service"],
)
BACKGROUND_RESTARTS = Counter(
    "pp_background_restarts_total",
    "Background loops (relay, timers, expiry...) started again after failing or ending early",
    ["service", "task"],
)
BACKGROUND_FAILURES = Counter(
    "pp_background_failures_total",
    "Failed rounds of a background loop, and items a loop held back after they failed",
    ["service", "loop", "kind"],
)
REQUESTS = Gauge(
    "pp_requests",
    "Privacy requests by kind, status and overdue flag",
    ["service", "kind", "status", "overdue"],
)
REQUESTS_DUE_SOON = Gauge(
    "pp_requests_due_soon", "Open requests whose deadline is within 7 days", ["service", "kind"]
)
HTTP_REFUSED = Counter(
    "pp_http_refused_total",
    "HTTP requests refused before any route ran (shared.plumbing.limits), by a fixed reason: "
    "overloaded, body_too_large, url_too_long, headers_too_large",
    ["service", "reason"],
)
CHECKPOINT_LAG = Gauge(
    "pp_checkpoint_lag_seconds",
    "Age of the oldest audit-log entry (ledger entry, certificate) no signed checkpoint covers "
    "yet, 0 when all are; from this replica's last reading, counted at scrape time "
    "(shared.evidence.lag)",
    ["service"],
)
CONSUMER_LAG = Gauge(
    "pp_consumer_lag", "Records behind the end of each partition", ["service", "topic", "partition"]
)


def type_label(event_type: str) -> str:
    """`event_type` as a label value: a contract type keeps its name, anything else is `other`."""
    return event_type if event_type in EVENT_TYPES else "other"
