"""The loop helper: failed rounds back off, a failing item is held back while the others go on."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from structlog.testing import capture_logs

from shared.plumbing import loops, metrics
from shared.plumbing.loops import Items, Loop, run_loop


def failures(loop: str, kind: str) -> float:
    return float(metrics.BACKGROUND_FAILURES.labels("test", loop, kind)._value.get())


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def work(items: Items, keys: list[str], bad: set[str], done: list[str]) -> None:
    """One round over `keys` the way a loop's round does it: held keys left out of the claim."""
    for key in [k for k in keys if k not in items.held()]:
        async with items.isolate(key):
            if key in bad:
                raise ValueError(f"cannot handle {key}")
            done.append(key)


async def test_a_failing_item_is_held_back_with_a_doubling_delay_and_the_others_go_on():
    clock = Clock()
    items = Items("test", "isolating", first_delay=1.0, max_delay=4.0, now=clock)
    done: list[str] = []
    before = failures("isolating", "item")
    with capture_logs() as logs:
        await work(items, ["a", "b", "c"], {"b"}, done)
    assert done == ["a", "c"]
    assert items.held() == ["b"]
    assert failures("isolating", "item") - before == 1
    assert [(e["event"], e["item"], e["retry_in_s"]) for e in logs] == [
        ("background_item_failed", "b", 1.0)
    ]
    await work(items, ["b"], {"b"}, done)  # still held: not tried
    assert failures("isolating", "item") - before == 1
    delays = []
    for _ in range(3):  # each new failure doubles the wait, up to the cap
        clock.now += 10
        with capture_logs() as logs:
            await work(items, ["b"], {"b"}, done)
        delays.append(logs[0]["retry_in_s"])
    assert delays == [2.0, 4.0, 4.0]
    clock.now += 10
    with capture_logs() as logs:
        await work(items, ["b"], set(), done)  # fixed meanwhile
    assert done == ["a", "c", "b"]
    assert items.held() == []
    assert [e["event"] for e in logs] == ["background_item_recovered"]


async def test_an_outage_inside_an_item_stops_the_round_instead_of_holding_the_item_back():
    items = Items("test", "outage")
    with pytest.raises(asyncpg.CannotConnectNowError):
        async with items.isolate("a"):
            raise asyncpg.CannotConnectNowError("the database is starting up")
    assert items.held() == []


async def test_a_failed_round_is_retried_after_a_delay_and_busy_rounds_run_back_to_back(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(loops, "FIRST_DELAY", 0.01)
    stop = asyncio.Event()
    rounds: list[str] = []

    async def round_(ctx: object, items: Items) -> bool:
        rounds.append("round")
        if len(rounds) == 1:
            raise RuntimeError("nobody expected this")
        if len(rounds) == 4:
            stop.set()
        return len(rounds) < 3  # busy twice, then idle

    before = failures("flaky-round", "round")
    with capture_logs() as logs:
        await asyncio.wait_for(
            run_loop(Loop("flaky-round", round_, lambda _: 0.05), None, "test", stop), 5
        )
    assert len(rounds) == 4
    assert failures("flaky-round", "round") - before == 1
    assert [(e["event"], e["log_level"]) for e in logs] == [("background_round_failed", "error")]


async def test_a_database_outage_in_a_round_is_a_quiet_retry(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(loops, "FIRST_DELAY", 0.01)
    stop = asyncio.Event()

    async def round_(ctx: object, items: Items) -> bool:
        stop.set()
        raise ConnectionRefusedError("database down")

    with capture_logs() as logs:
        await asyncio.wait_for(
            run_loop(Loop("outage", round_, lambda _: 1.0), None, "test", stop), 5
        )
    assert [(e["event"], e["log_level"]) for e in logs] == [("background_round_retry", "warning")]
