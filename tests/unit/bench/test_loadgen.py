"""The load generator's accounting: failed and late requests count in the latency figures."""

from __future__ import annotations

import asyncio
import math

import pytest

from bench.loadgen import Connection, run_step
from bench.stats import with_failures


def test_a_failed_request_counts_as_the_timeout_in_the_percentiles():
    fast = [1.0] * 98
    assert with_failures(fast, 0, 1000.0).p99 == 1.0
    # two failures in a hundred requests: the p99 is no longer the fast answers'
    summary = with_failures(fast, 2, 1000.0)
    assert summary.count == 100
    assert summary.p99 == 1000.0
    assert summary.max == 1000.0


def test_no_request_at_all_has_no_finite_latency():
    assert with_failures([], 0, 1000.0).p99 == math.inf


class Scripted(Connection):
    """A connection answering from a script: a status, an error, or a hang."""

    def __init__(self, script: list[int | str]) -> None:
        super().__init__("127.0.0.1", 1, b"\r\n")
        self.script = script

    async def get(self, path: str) -> int:
        what = self.script.pop(0) if self.script else 200
        if what == "error":
            raise ConnectionResetError("reset by peer")
        if what == "hang":
            await asyncio.sleep(10)
        assert isinstance(what, int)
        return what

    async def close(self) -> None:
        pass


async def test_errors_non_200_answers_and_timeouts_are_counted_and_raise_the_p99():
    script: list[int | str] = [200] * 10
    script += [503, "error", "hang"]
    script += [200] * 87
    conn = Scripted(script)
    step = await run_step([conn], ["/x"], offered=500, duration=0.2, timeout_ms=50)
    assert step.sent == 100
    assert step.errors == 2  # the 503 and the reset connection
    assert step.timeouts >= 1  # the hang, and the requests queued behind it past their deadline
    assert step.ok + step.errors + step.timeouts == step.sent
    assert step.p99_ms == pytest.approx(50)
    assert step.max_ms == pytest.approx(50)
