"""The checkpoint lag a reading gives at scrape time (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.evidence.lag import Reading, lag_seconds

AT = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
FRESH = 120.0


def test_an_uncovered_entry_keeps_ageing_between_readings() -> None:
    reading = Reading(oldest=AT - timedelta(seconds=30), at=AT)
    assert lag_seconds(reading, AT, FRESH) == 30
    assert lag_seconds(reading, AT + timedelta(minutes=10), FRESH) == 630


def test_all_covered_is_zero_while_the_reading_is_fresh() -> None:
    reading = Reading(oldest=None, at=AT)
    assert lag_seconds(reading, AT + timedelta(seconds=FRESH), FRESH) == 0


def test_a_stale_all_covered_reading_reports_its_own_age() -> None:
    # the loop that read it stopped: an entry may have waited since right after it
    reading = Reading(oldest=None, at=AT)
    assert lag_seconds(reading, AT + timedelta(minutes=15), FRESH) == 900


def test_an_entry_recorded_after_the_reading_counts_no_negative_lag() -> None:
    reading = Reading(oldest=AT + timedelta(seconds=5), at=AT)
    assert lag_seconds(reading, AT, FRESH) == 0
