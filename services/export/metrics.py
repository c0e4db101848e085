"""Prometheus metrics of the export service (no personal data: counts and durations only)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PARTS = Counter("pp_export_parts_total", "Export parts received, by outcome", ["outcome"])
BUNDLES = Counter("pp_export_bundles_total", "Bundles written, by final status", ["status"])
BUNDLE_SECONDS = Histogram(
    "pp_export_bundle_seconds",
    "Time to write one bundle",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BUNDLES_DELETED = Counter("pp_export_bundles_deleted_total", "Bundles deleted after expiry")
