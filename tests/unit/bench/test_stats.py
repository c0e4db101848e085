"""The bench's pure figures: percentiles, ratios, the highest sustained rate."""

from __future__ import annotations

import pytest

from bench.stats import (
    Latency,
    highest_sustained,
    median_attempt,
    percentile,
    prometheus_sum,
    rate,
    ratio,
)


def test_percentile_interpolates_between_closest_ranks():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20, 30, 40, 50], 25) == 20
    assert percentile([5, 1, 3], 100) == 5
    assert percentile([5, 1, 3], 0) == 1


def test_p99_of_a_hundred_values_sits_just_below_the_largest():
    values = list(range(1, 101))
    assert percentile(values, 99) == pytest.approx(99.01)


def test_percentile_of_one_value_is_that_value():
    assert percentile([7.5], 99) == 7.5


def test_percentile_refuses_no_values_and_out_of_range_q():
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1], 101)


def test_latency_summary_reports_p50_p99_and_max():
    summary = Latency.of([1.0] * 98 + [50.0, 100.0])
    assert (summary.count, summary.p50, summary.max) == (100, 1.0, 100.0)
    assert 50.0 <= summary.p99 <= 100.0


def test_rate_and_ratio_handle_missing_or_zero_inputs():
    assert rate(1000, 2.0) == 500
    assert rate(10, 0.0) == 0.0
    assert ratio(5.0, 10.0) == 0.5
    assert ratio(None, 10.0) is None
    assert ratio(5.0, 0.0) is None


def test_highest_sustained_stops_at_the_first_step_that_misses():
    steps = [(1000, 1000, 2.0), (2000, 1995, 4.0), (3000, 2990, 12.0), (4000, 4000, 3.0)]
    assert highest_sustained(steps, 10.0) == 2000


def test_a_rate_not_kept_up_does_not_count_as_sustained():
    steps = [(1000, 1000, 2.0), (2000, 1500, 3.0)]
    assert highest_sustained(steps, 10.0) == 1000


def test_no_sustained_rate_when_the_first_step_misses():
    assert highest_sustained([(1000, 1000, 11.0)], 10.0) == 0.0


def test_prometheus_sum_adds_every_label_set_of_one_metric_only():
    text = "\n".join(
        [
            "# HELP pp_batch_seconds Time to process one consumed batch",
            'pp_batch_seconds_count{service="consent"} 40.0',
            'pp_batch_seconds_count{service="other"} 2.0',
            'pp_batch_seconds_sum{service="consent"} 1.5',
            "pp_batch_seconds_count_extra 99.0",
        ]
    )
    assert prometheus_sum(text, "pp_batch_seconds_count") == 42.0
    assert prometheus_sum(text, "pp_batch_seconds_sum") == 1.5
    assert prometheus_sum(text, "missing_metric") == 0.0


def test_median_attempt_is_the_middle_p99_so_one_stall_does_not_decide():
    stalled, fine, slower = (4000, 3990, 49.5), (4000, 3995, 4.1), (4000, 3980, 6.0)
    assert median_attempt([stalled, fine, slower]) == 2
    assert median_attempt([fine, stalled, stalled]) == 1


def test_median_attempt_counts_a_rate_not_kept_up_as_the_slowest():
    short = (5000, 4000, 2.0)  # fast answers, but only 80% of the offered rate
    assert median_attempt([short, (5000, 4990, 8.0), (5000, 4990, 9.0)]) == 2
    assert median_attempt([short, short, (5000, 4990, 9.0)]) == 0


def test_median_attempt_of_an_even_count_is_the_lower_middle_and_refuses_none():
    assert median_attempt([(1, 1, 3.0), (1, 1, 1.0)]) == 1
    with pytest.raises(ValueError, match="no attempts"):
        median_attempt([])
