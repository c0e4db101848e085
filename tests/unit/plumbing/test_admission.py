"""The admission decision past the limit: a burst is let in briefly, a standing limit refuses."""

from __future__ import annotations

from shared.plumbing.admission import BURST_FACTOR, BURST_GRACE_S, CALM_S, Episode, admit

LIMIT = 12


def test_reaching_the_limit_lets_a_burst_in_for_the_grace_then_refuses():
    allowed, episode = admit(LIMIT, LIMIT, None, 100.0)
    assert allowed  # a stall's backlog: it runs
    assert episode == Episode(since=100.0, last=100.0)
    assert admit(3 * LIMIT, LIMIT, episode, 100.0 + BURST_GRACE_S / 2)[0]
    assert not admit(LIMIT, LIMIT, episode, 100.0 + 2 * BURST_GRACE_S)[0]  # it stood: overload


def test_a_burst_is_bounded_even_within_the_grace():
    assert not admit(BURST_FACTOR * LIMIT, LIMIT, None, 100.0)[0]


def test_overload_that_keeps_reaching_the_limit_stays_one_episode():
    episode = admit(LIMIT, LIMIT, None, 100.0)[1]
    now = 100.0
    for _ in range(100):  # the limit reached again every few ms, with dips in between
        now += CALM_S / 10
        allowed, episode = admit(LIMIT, LIMIT, episode, now)
        assert not allowed
    assert episode.since == 100.0


def test_after_a_calm_the_next_burst_gets_a_grace_of_its_own():
    episode = Episode(since=100.0, last=100.0)
    allowed, episode = admit(LIMIT, LIMIT, episode, 100.0 + 2 * CALM_S)
    assert allowed
    assert episode.since == 100.0 + 2 * CALM_S
