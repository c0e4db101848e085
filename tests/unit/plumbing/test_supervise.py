"""Background loops are supervised: one that fails or ends early is logged and started again."""

from __future__ import annotations

import asyncio
import itertools

from structlog.testing import capture_logs

from shared.plumbing import metrics
from shared.plumbing.supervision import supervise


def restarts(task: str) -> float:
    return float(metrics.BACKGROUND_RESTARTS.labels("test", task)._value.get())


async def test_a_loop_that_fails_or_ends_early_is_started_again_until_stop():
    stop, third = asyncio.Event(), asyncio.Event()
    runs: list[int] = []

    async def loop() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("nobody expected this")
        if len(runs) == 2:
            return  # ended although nobody asked it to
        third.set()
        await stop.wait()  # the third run is a healthy one

    before = restarts("flaky")
    with capture_logs() as logs:
        supervised = asyncio.create_task(supervise("test", "flaky", loop, stop, first_delay=0.01))
        await asyncio.wait_for(third.wait(), 5)
        assert not supervised.done()
        stop.set()
        await asyncio.wait_for(supervised, 1)
    assert runs == [0, 1, 2]
    assert restarts("flaky") - before == 2
    assert [(e["event"], e["log_level"], e["task"]) for e in logs] == [
        ("background_task_failed", "error", "flaky"),
        ("background_task_ended", "error", "flaky"),
    ]
    assert logs[0]["error"] == "RuntimeError: nobody expected this"


async def test_a_loop_ended_by_stop_is_not_restarted_and_a_failing_one_backs_off():
    stop, fifth = asyncio.Event(), asyncio.Event()
    starts: list[float] = []
    loop_time = asyncio.get_running_loop().time

    async def failing() -> None:
        starts.append(loop_time())
        if len(starts) == 5:
            fifth.set()
        raise ValueError("again")

    with capture_logs():
        supervised = asyncio.create_task(
            supervise("test", "failing", failing, stop, first_delay=0.02, max_delay=0.08)
        )
        await asyncio.wait_for(fifth.wait(), 5)
        stop.set()  # during a back-off wait: returns at once
        await asyncio.wait_for(supervised, 1)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert [round(g, 2) >= d for g, d in zip(gaps, [0.02, 0.04, 0.08, 0.08], strict=True)] == [
        True
    ] * 4
    assert gaps[3] < 1  # capped at max_delay, not doubling on


async def test_stop_before_the_start_runs_nothing():
    stop = asyncio.Event()
    stop.set()
    ran = []

    async def loop() -> None:
        ran.append(1)

    await supervise("test", "never", loop, stop)
    assert ran == []
