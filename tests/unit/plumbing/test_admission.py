"""The admission decision: a burst past the limit is let in briefly, a standing limit refuses."""

from __future__ import annotations

from shared.plumbing.admission import BURST_FACTOR, BURST_GRACE_S, admit

LIMIT = 12


def test_under_the_limit_a_request_starts_and_no_episode_begins():
    assert admit(0, LIMIT, None, 100.0) == (True, None)
    assert admit(LIMIT - 1, LIMIT, None, 100.0) == (True, None)


def test_reaching_the_limit_lets_a_burst_in_for_the_grace_then_refuses():
    allowed, since = admit(LIMIT, LIMIT, None, 100.0)
    assert (allowed, since) == (True, 100.0)  # a stall's burst: it runs
    assert admit(3 * LIMIT, LIMIT, since, 100.0 + BURST_GRACE_S / 2) == (True, 100.0)
    assert admit(LIMIT, LIMIT, since, 100.0 + 2 * BURST_GRACE_S) == (False, 100.0)  # it stood


def test_a_burst_is_bounded_even_within_the_grace():
    assert admit(BURST_FACTOR * LIMIT, LIMIT, 100.0, 100.0) == (False, 100.0)


def test_dipping_just_under_a_standing_limit_opens_no_new_grace():
    since = 100.0
    later = 100.0 + 10 * BURST_GRACE_S
    assert admit(LIMIT - 1, LIMIT, since, later) == (True, since)  # one finished, one starts
    assert admit(LIMIT, LIMIT, since, later) == (False, since)  # still overload


def test_falling_below_half_the_limit_ends_the_episode():
    assert admit(LIMIT // 2 - 1, LIMIT, 100.0, 200.0) == (True, None)
    assert admit(LIMIT, LIMIT, None, 200.0) == (True, 200.0)  # a new burst, a new grace
