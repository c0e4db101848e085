"""Pure helpers for figures: percentiles, rates, latency summaries."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return float(ordered[low])
    weight = position - low
    return float(ordered[low] * (1 - weight) + ordered[high] * weight)


def rate(count: int, seconds: float) -> float:
    """Items per second; 0 when nothing was timed."""
    return count / seconds if seconds > 0 else 0.0


def ratio(figure: float | None, baseline: float | None) -> float | None:
    """figure / baseline, or None when either is missing or the baseline is 0."""
    if figure is None or baseline is None or baseline == 0:
        return None
    return figure / baseline


@dataclass(frozen=True)
class Latency:
    """A latency distribution in milliseconds."""

    count: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, millis: Sequence[float]) -> Latency:
        """Summarise latencies given in milliseconds."""
        return cls(len(millis), percentile(millis, 50), percentile(millis, 99), max(millis))


def with_failures(ok_ms: Sequence[float], failed: int, timeout_ms: float) -> Latency:
    """Latency over every request: each failed one (error, non-200 answer, past its deadline)
    counts as `timeout_ms`, so failures raise the percentiles instead of leaving them out."""
    samples = [*ok_ms, *([timeout_ms] * failed)]
    if not samples:
        return Latency(0, math.inf, math.inf, 0)
    return Latency.of(samples)


def highest_sustained(steps: Sequence[tuple[float, float, float]], p99_limit: float) -> float:
    """The highest offered rate whose p99 stayed under the limit and that was kept up.

    `steps` are (offered rate, achieved rate, p99 ms) in increasing offered rate; a step counts
    when p99 < limit and the achieved rate is at least 95% of the offered one. Steps above the
    first failing one do not count (a lucky high step after a miss is not sustained).
    """
    best = 0.0
    for offered, achieved, p99 in sorted(steps):
        if p99 < p99_limit and achieved >= 0.95 * offered:
            best = offered
        else:
            break
    return best


def median_attempt(attempts: Sequence[tuple[float, float, float]]) -> int:
    """Which of a step's attempts (offered, achieved, p99 ms) is its median: attempts ordered
    by p99, one that fell short of 95% of its offered rate counting as the slowest; the middle
    one (the lower middle of an even count). Returns its index in `attempts`."""
    if not attempts:
        raise ValueError("median of no attempts")

    def slowness(index: int) -> tuple[bool, float]:
        offered, achieved, p99 = attempts[index]
        return achieved < 0.95 * offered, p99

    ordered = sorted(range(len(attempts)), key=slowness)
    return ordered[(len(ordered) - 1) // 2]


def prometheus_sum(text: str, name: str) -> float:
    """The sum of every sample of metric `name` (all label sets) in Prometheus text format."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric = head.split("{", 1)[0]
        if metric == name:
            total += float(value)
    return total
